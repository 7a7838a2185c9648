#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Where an external program the tests drive (openssl, swaks, Postfix's
/// tools, python3) is installed: the usual system directories, then PATH.
public func findTool(_ name: String) -> String? {
    let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] + path {
        let p = dir + "/" + name
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    return nil
}

/// Runs an external program with a deadline; returns (exit status,
/// stdout+stderr). Always reaps it. Output is drained on its own thread
/// before stdin is written, so a chatty program cannot deadlock the test;
/// stdin goes through write(2), which returns EPIPE when the program exits
/// without reading it (Foundation's FileHandle.write would trap).
///
/// `environment` is added to the child's environment only: never setenv in
/// the test process, whose other suites start children concurrently.
public func runTool(_ path: String, _ args: [String], stdin: String? = nil, environment: [String: String] = [:],
                    seconds: Double = 60) -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    if !environment.isEmpty {
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    }
    let out = Pipe()
    p.standardOutput = out
    p.standardError = out
    let input = Pipe()
    p.standardInput = input
    do { try ChildProcess.run(p) } catch { return (-1, "cannot start \(path): \(error)") }
    let collected = Unchecked(NSMutableData())
    let done = DispatchSemaphore(value: 0)
    Thread {
        collected.value.append(out.fileHandleForReading.readDataToEndOfFile())
        done.signal()
    }.start()
    if let stdin {
        let fd = input.fileHandleForWriting.fileDescriptor
        var bytes = Array(stdin.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n > 0 { bytes = bytes.dropFirst(n) } else if n < 0 && errno == EINTR { continue } else { break }
        }
    }
    try? input.fileHandleForWriting.close()
    let deadline = Date().addingTimeInterval(seconds)
    while p.isRunning && Date() < deadline { usleep(20_000) }
    if p.isRunning { p.terminate(); usleep(200_000); if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
    p.waitUntilExit()
    _ = done.wait(timeout: .now() + 5)
    return (p.terminationStatus, String(decoding: collected.value as Data, as: UTF8.self))
}

/// A value handed across threads where the test orders the accesses itself
/// (a join, a semaphore) and the compiler cannot see it.
public final class Unchecked<T>: @unchecked Sendable {
    public var value: T
    public init(_ value: T) { self.value = value }
}

/// Stops a child the test started: SIGTERM, a bounded wait, SIGKILL if it
/// is still there; always reaps it.
public func stopProcess(_ process: Process, grace seconds: Double = 20) {
    if process.isRunning { kill(process.processIdentifier, SIGTERM) }
    let deadline = Date().addingTimeInterval(seconds)
    while process.isRunning && Date() < deadline { usleep(20_000) }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    process.waitUntilExit()
}
