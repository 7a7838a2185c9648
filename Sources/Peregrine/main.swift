#if canImport(Glibc)
import Glibc
#endif

// peregrine SUBCOMMAND [options]. Each subcommand lives in its own file as a
// `run…(arguments:) -> Int32` function and is listed in `subcommands` below;
// adding one (run, check-config, ctl, …) is one line here.

struct Subcommand {
    let name: String
    let usage: String
    let summary: String
    /// Hidden subcommands (test helpers) are not listed in the usage text.
    var hidden = false
    let run: ([String]) -> Int32
}

let subcommands: [Subcommand] = [
    Subcommand(name: "run", usage: "run --config FILE [--backend B] [--threads N]",
               summary: "run the MTA daemon (backend: io_uring, epoll or dispatch)", run: runDaemon(arguments:)),
    Subcommand(name: "check-config", usage: "check-config [--strict] [--json] FILE",
               summary: "validate a configuration file without starting", run: runCheckConfig(arguments:)),
    Subcommand(name: "ctl", usage: "ctl [--config FILE] [--port N] COMMAND",
               summary: "operator console: show status|queues|topqueues, pause, resume, schedule, set-mode, delete, reload",
               run: runCtl(arguments:)),
    Subcommand(name: "passwd", usage: "passwd [--iterations N]",
               summary: "hash a password (stdin or prompt) into an <smtp-user> password-hash line", run: runPasswd(arguments:)),
    Subcommand(name: "spool-check", usage: "spool-check DIR",
               summary: "show what a spool directory holds: segments, live messages, recipients by state, bytes",
               run: runSpoolCheck(arguments:)),
    Subcommand(name: "spool-crash-writer",
               usage: "spool-crash-writer --dir DIR --backend B [--recipients N] [--body-size N]",
               summary: "crash-test helper: spool messages as fast as possible, print each id once durable",
               hidden: true, run: runSpoolCrashWriter(arguments:)),
]

func usageText() -> String {
    var s = "usage: peregrine SUBCOMMAND [options] | peregrine --version\nsubcommands:\n"
    for c in subcommands where !c.hidden {
        s += "  " + c.usage.padding(toLength: 28) + "  " + c.summary + "\n"
    }
    return s
}

extension String {
    func padding(toLength n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}

let arguments = Array(CommandLine.arguments.dropFirst())
guard let name = arguments.first else {
    fputs(usageText(), stderr)
    exit(2)
}
if name == "--version" || name == "version" {
    print(VersionCommand.text)
    exit(0)
}
if name == "-h" || name == "--help" || name == "help" {
    print(usageText(), terminator: "")
    exit(0)
}
guard let command = subcommands.first(where: { $0.name == name }) else {
    fputs("peregrine: unknown subcommand '\(name)'\n" + usageText(), stderr)
    exit(2)
}
let rest = Array(arguments.dropFirst())
// `peregrine SUBCOMMAND --help` prints that subcommand's usage and exits 0 (ctl has its own, longer one).
if command.name != "ctl", rest.contains("--help") || rest.contains("-h") {
    print("usage: peregrine \(command.usage)\n  \(command.summary)")
    exit(0)
}
exit(command.run(rest))
