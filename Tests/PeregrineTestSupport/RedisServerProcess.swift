#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A real `redis-server` (Debian's) for one test: bound to a loopback address
/// of the test's own (PrivateLoopback, so port 6379 is nobody else's), no
/// persistence (`--save ''`, `--appendonly no`), started with the death
/// signal like every child, killed with the test.
public final class RedisServerProcess: @unchecked Sendable {
    public let ip: String
    public let port: UInt16
    private var process: Process?

    public init(ip: String, port: UInt16 = 6379) {
        self.ip = ip
        self.port = port
    }

    public static var path: String? { findTool("redis-server") }

    /// Starts it and waits (bounded) until it accepts connections.
    public func start(seconds: Double = 30) throws {
        guard let path = Self.path else { throw RedisServerError("redis-server is not installed (scripts/setup installs it)") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = ["--bind", ip, "--port", String(port), "--save", "", "--appendonly", "no",
                       "--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning", "--logfile", ""]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try ChildProcess.run(p)
        process = p
        let deadline = Date().addingTimeInterval(seconds)
        while !PrivateLoopback.canConnect(ip, port) {
            guard p.isRunning else { throw RedisServerError("redis-server on \(ip):\(port) exited with \(p.terminationStatus)") }
            guard Date() < deadline else { throw RedisServerError("redis-server on \(ip):\(port) not accepting after \(seconds) s") }
            usleep(20_000)
        }
    }

    /// SIGKILL (a crash, not a shutdown), reaped.
    public func kill() {
        guard let p = process else { return }
        if p.isRunning { Glibc.kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        process = nil
    }

    /// Runs redis-cli against it (bounded); returns its output.
    public func cli(_ args: [String]) -> String {
        guard let cli = findTool("redis-cli") else { return "redis-cli not installed" }
        return runTool(cli, ["-h", ip, "-p", String(port)] + args, seconds: 30).1
    }

    deinit { kill() }
}

public struct RedisServerError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
