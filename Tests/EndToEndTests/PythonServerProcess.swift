#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing

/// A test server written in Python that binds, prints its port on the first
/// line of its output and serves until terminated: the start-up and teardown
/// the receivers in this target (RecordingReceiver, FailingReceiver) share.
final class PythonServerProcess {
    let process = Process()
    /// The port the script reported.
    private(set) var port: UInt16 = 0
    private let stdoutPipe = Pipe()
    private var finished = false

    /// Writes `script` to `dir` as `TAG.py`, runs it with `arguments`, and
    /// waits (bounded) for the port line; throws when none comes.
    init(_ dir: TestDirectory, tag: String, script: String, arguments: [String], what: String) throws {
        let python = try #require(findTool("python3"), "python3 not installed")
        let scriptPath = try dir.write("\(tag).py", script)
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [scriptPath] + arguments
        process.standardOutput = stdoutPipe
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        let fd = stdoutPipe.fileHandleForReading.fileDescriptor
        var text = ""
        var buffer = [UInt8](repeating: 0, count: 64)
        let deadline = Date().addingTimeInterval(20)
        while !text.contains("\n") && Date() < deadline && process.isRunning {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard Glibc.poll(&p, 1, 100) > 0 else { continue }
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            text += String(decoding: buffer[0..<n], as: UTF8.self)
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
