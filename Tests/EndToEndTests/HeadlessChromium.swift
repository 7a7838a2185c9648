#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing

/// Debian's `chromium` in headless mode, for tests that check a page the way a
/// browser lays it out and runs it (issue 17): `--dump-dom` gives the DOM after
/// the page's scripts ran, `--screenshot` a PNG. Each call gets its own profile
/// directory, so parallel tests never share (or lock) one.
enum HeadlessChromium {
    static var executable: String? { findTool("chromium") }

    /// The serialised DOM of `url` after `budgetMilliseconds` of virtual time
    /// (the page's timers and fetches run within it, without wall-clock waits).
    static func dumpDOM(_ url: String, budgetMilliseconds: Int = 5_000, seconds: Double = 120) throws -> String {
        let chromium = try #require(executable, "chromium is not installed (scripts/setup installs it)")
        let profile = scratch()
        defer { try? FileManager.default.removeItem(atPath: profile) }
        let (status, output) = runToolStdout(chromium, commonArguments(profile) + ["--virtual-time-budget=\(budgetMilliseconds)",
                                                                               "--dump-dom", url], seconds: seconds)
        #expect(status == 0, "chromium --dump-dom exited \(status)")
        return output
    }

    /// Writes a PNG screenshot of `url` to `path`.
    static func screenshot(_ url: String, to path: String, width: Int = 1200, height: Int = 2400, seconds: Double = 120) throws {
        let chromium = try #require(executable, "chromium is not installed (scripts/setup installs it)")
        let profile = scratch()
        defer { try? FileManager.default.removeItem(atPath: profile) }
        let (status, output) = runTool(chromium, commonArguments(profile) + ["--virtual-time-budget=3000", "--screenshot=\(path)",
                                                                          "--window-size=\(width),\(height)", url], seconds: seconds)
        #expect(status == 0, "chromium --screenshot exited \(status): \(output.suffix(2000))")
    }

    /// --no-sandbox: the tests run as root in a container, where Chromium's sandbox cannot start.
    static func commonArguments(_ profile: String) -> [String] {
        ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--user-data-dir=\(profile)", "--hide-scrollbars"]
    }

    static func scratch() -> String {
        var chars = Array((NSTemporaryDirectory() + "chromium-test-XXXXXX").utf8CString)
        guard let made = mkdtemp(&chars) else { return NSTemporaryDirectory() + "chromium-test-\(getpid())" }
        return String(cString: made)
    }

    /// Like runTool, but stdout only (Chromium logs to stderr; the DOM is on stdout).
    static func runToolStdout(_ path: String, _ args: [String], seconds: Double) -> (Int32, String) {
        let dir = scratch()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        _ = FileManager.default.createFile(atPath: dir + "/out", contents: nil)
        p.standardOutput = FileHandle(forWritingAtPath: dir + "/out")
        p.standardError = FileHandle.nullDevice
        do { try ChildProcess.run(p) } catch { return (-1, "cannot start \(path): \(error)") }
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning && Date() < deadline { usleep(50_000) }
        if p.isRunning { stopProcess(p, grace: 5) }
        p.waitUntilExit()
        return (p.terminationStatus, (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? "")
    }

    /// The attributes of the first element with `id` in a dumped DOM.
    static func attributes(ofID id: String, in dom: String) -> [String: String] {
        guard let start = dom.range(of: "id=\"\(id)\"") else { return [:] }
        let open = dom[..<start.lowerBound].lastIndex(of: "<") ?? start.lowerBound
        guard let close = dom[start.upperBound...].firstIndex(of: ">") else { return [:] }
        return attributes(String(dom[open..<close]))
    }

    /// Every start tag `<name ...>` whose class list contains `className`, as attribute maps.
    static func elements(_ name: String, class className: String, in dom: String) -> [[String: String]] {
        var out: [[String: String]] = []
        var rest = dom[...]
        while let r = rest.range(of: "<\(name) ") {
            guard let close = rest[r.upperBound...].firstIndex(of: ">") else { break }
            let attrs = attributes(String(rest[r.lowerBound..<close]))
            if (attrs["class"] ?? "").split(separator: " ").contains(Substring(className)) { out.append(attrs) }
            rest = rest[close...]
        }
        return out
    }

    static func attributes(_ tag: String) -> [String: String] {
        var out: [String: String] = [:]
        var rest = tag[...]
        while let eq = rest.range(of: "=\"") {
            let key = rest[..<eq.lowerBound].split(separator: " ").last.map(String.init) ?? ""
            guard let end = rest[eq.upperBound...].firstIndex(of: "\"") else { break }
            out[key] = String(rest[eq.upperBound..<end])
            rest = rest[rest.index(after: end)...]
        }
        return out
    }
}
