#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing

/// A test server written in Python that binds, prints its port on the first
/// line of its output (or, with `until`, lines up to a ready line) and serves
/// until terminated: the start-up and teardown the receivers in this target
/// (RecordingReceiver, FailingReceiver, ClusterReceiver) share.
final class PythonServerProcess {
    let process = Process()
    /// The port the script reported.
    private(set) var port: UInt16 = 0
    /// What the script printed up to its ready line (with `until`).
    private(set) var startupOutput = ""
    private let stdoutPipe = Pipe()
    private var finished = false

    /// Writes `script` to `dir` as `TAG.py`, runs it with `arguments`, and
    /// waits (bounded) for the port line, or with `until` for that line (the
    /// script prints its own facts before it); throws when none comes.
    init(_ dir: TestDirectory, tag: String, script: String, arguments: [String], what: String, until ready: String? = nil) throws {
        let python = try #require(findTool("python3"), "python3 not installed")
        let scriptPath = try dir.write("\(tag).py", script)
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [scriptPath] + arguments
        process.standardOutput = stdoutPipe
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        let fd = stdoutPipe.fileHandleForReading.fileDescriptor
        var text = ""
        var buffer = [UInt8](repeating: 0, count: 256)
        let deadline = Date().addingTimeInterval(20)
        let done = { (text: String) in ready.map { text.hasPrefix($0 + "\n") || text.contains("\n" + $0 + "\n") } ?? text.contains("\n") }
        while !done(text) && Date() < deadline && process.isRunning {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard Glibc.poll(&p, 1, 100) > 0 else { continue }
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            text += String(decoding: buffer[0..<n], as: UTF8.self)
        }
        startupOutput = text
        if ready != nil {
            guard done(text) else {
                terminate()
                throw SinkTestError("\(what) did not start: '\(text)'")
            }
            return
        }
        guard let p = UInt16(text.trimmingCharacters(in: .whitespacesAndNewlines)), p != 0 else {
            terminate()
            throw SinkTestError("\(what) did not start: '\(text)'")
        }
        port = p
    }

    func terminate() {
        guard !finished else { return }
        finished = true
        stopProcess(process, grace: 5)
    }

    deinit { terminate() }
}
