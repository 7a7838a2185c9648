#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineIO
import PeregrineTestSupport

/// A client process that stays connected while the test goes on (see
/// `TLSReloadSupport.clientScript` with GOFILE); always reaped.
final class HeldTLSClient {
    let process = Process()
    private let pipe = Pipe()
    private(set) var output = ""
    private var started = false

    init(_ python: String, arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", TLSReloadSupport.clientScript] + arguments
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try ChildProcess.run(process)
        started = true
    }

    /// Waits (bounded) for an output line starting with `prefix`.
    func line(startingWith prefix: String, timeout: Double = 60) -> String? {
        let fd = pipe.fileHandleForReading.fileDescriptor
        let deadline = Date().addingTimeInterval(timeout)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            if let l = completeLine(startingWith: prefix) { return l }
            if Date() >= deadline { return nil }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, 100)
            if ready < 0 && errno == EINTR { continue }  // SIGCHLD from another test's child
            if ready <= 0 { continue }
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return completeLine(startingWith: prefix) }
            output += String(decoding: buffer[0..<n], as: UTF8.self)
        }
    }

    /// A line of output (newline-terminated: reads may split lines) starting with `prefix`.
    private func completeLine(startingWith prefix: String) -> String? {
        guard let end = output.lastIndex(of: "\n") else { return nil }
        return output[..<end].split(separator: "\n").first { $0.hasPrefix(prefix) }.map(String.init)
    }

    /// Waits (bounded) for the exit, killing a client that hangs; its status.
    @discardableResult
    func finish(timeout: Double = 30) -> Int32 {
        guard started else { return -1 }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { finish(timeout: 0) }
}
