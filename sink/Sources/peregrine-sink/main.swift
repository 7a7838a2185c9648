#if canImport(Glibc)
import Glibc
#endif
import PeregrineSink

exit(SinkMain.run(arguments: Array(CommandLine.arguments.dropFirst())))
