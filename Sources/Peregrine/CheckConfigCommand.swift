#if canImport(Glibc)
import Glibc
#endif
import PeregrineDaemon

/// `peregrine check-config [--strict] [--json] FILE`: parses and validates
/// without starting. Prints every error, then every warning; exit 0 with
/// warnings only, 1 with errors (`--strict`: warnings are errors), 2 on usage.
func runCheckConfig(arguments: [String]) -> Int32 {
    var strict = false, json = false
    var files: [String] = []
    for a in arguments {
        switch a {
        case "--strict": strict = true
        case "--json": json = true
        default:
            if a.hasPrefix("-") && a.count > 1 {
                fputs("peregrine: check-config: unknown option '\(a)' (expected --strict, --json)\n", stderr)
                return 2
            }
            files.append(a)
        }
    }
    guard files.count == 1 else {
        fputs("peregrine: check-config takes one FILE\n", stderr)
        return 2
    }
    let (report, config) = ConfigReport.check(path: files[0], strict: strict)
    if json {
        print(report.json)
    } else {
        for line in report.lines { fputs("\(line)\n", stderr) }
        if report.hasErrors {
            fputs("\(report.summary)\n", stderr)
        } else {
            let listening = config.effectiveSMTPListeners.map(\.description).joined(separator: ", ")
            print("\(files[0]): OK (listening on \(listening), \(config.virtualMTAs.count) virtual-mta(s), "
                  + "\(config.domains.count) domain block(s), \(config.patternLists.count) pattern list(s)"
                  + (report.warnings.isEmpty ? "" : ", \(report.warnings.count) warning(s)") + ")")
        }
    }
    return report.hasErrors ? 1 : 0
}
