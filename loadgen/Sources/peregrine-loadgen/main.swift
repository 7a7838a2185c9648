import Foundation
import PeregrineIO

// peregrine-loadgen: injects SMTP load into any MTA and reports what it accepted.

var options: LoadgenOptions
do {
    options = try LoadgenOptions.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    fputs("peregrine-loadgen: \(error)\n", stderr)
    exit(2)
}
options.runID = String(UInt32.random(in: 0...UInt32.max), radix: 16)
Posix.ignoreSIGPIPE()

func runLoad<L: EventLoop>(_ type: L.Type) -> Int32 {
    let loop: L
    do { loop = try L() } catch {
        fputs("peregrine-loadgen: cannot start the \(L.kind) backend: \(error)\n", stderr)
        return 1
    }
    let generator = LoadGenerator(loop: loop, options: options)
    loop.execute { generator.start() }
    loop.run()
    return LoadReport.write(generator: generator, options: options)
}

exit(runLoad(options.backend.loopType))
