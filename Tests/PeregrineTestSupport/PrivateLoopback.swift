#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

/// A /16 of 127.0.0.0/8 that this test process holds for its lifetime, so
/// that the fixed ports its tests give to children (a daemon's 2525, a
/// Postfix smtpd) are nobody else's: not another suite's port-0 listener on
/// 127.0.0.1, not a second `swift test` on the same machine, not the bench
/// (which uses 127.128-191.x.y).
///
/// The lease is a TCP socket bound (never listening) to 127.P.255.254:64999
/// without SO_REUSEADDR: a second process trying the same P gets EADDRINUSE
/// and moves on; the kernel releases it when this process dies.
public enum PrivateLoopback {
    /// "127.P", P in 64...127 (skipping 77-79, the fixed prefixes of older test code).
    public static let prefix: String = {
        let candidates = Array(64...127).filter { !(77...79).contains($0) }
        let start = Int(getpid()) % candidates.count
        for i in 0..<candidates.count {
            let p = candidates[(start + i) % candidates.count]
            if let fd = lease("127.\(p).255.254") {
                leaseSocket = fd
                return "127.\(p)"
            }
        }
        // Every prefix taken (60 test processes at once): share one; readiness
        // checks by connection then still see only whoever binds first.
        return "127.\(candidates[start])"
    }()

    /// An address of this process's own: 127.P.a.b. `a` is a scenario number
    /// that belongs to one test file (COMMON.md hands out the ranges); a second
    /// file using it fails loudly, naming both (ScenarioNumbers).
    public static func address(_ a: Int, _ b: Int, file: String = #fileID) -> String {
        ScenarioNumbers.claim(a, by: file)
        return "\(prefix).\(a).\(b)"
    }

    nonisolated(unsafe) private static var leaseSocket: Int32 = -1

    private static func lease(_ ip: String) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = UInt16(64999).bigEndian
        inet_pton(AF_INET, ip, &sa.sin_addr)
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc == 0 { return fd }
        close(fd)
        return nil
    }

    /// True when something accepts TCP connections on ip:port. On an address
    /// of this process's own that can only be the child the test started.
    public static func canConnect(_ ip: String, _ port: UInt16) -> Bool {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        inet_pton(AF_INET, ip, &sa.sin_addr)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        // EINTR (another test's child exited) counts as "not yet": the caller polls again.
        return withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    /// Polls until `ip:port` accepts connections or `process` exits or `seconds` pass.
    public static func waitForListener(_ ip: String, _ port: UInt16, process: Process? = nil, seconds: Double = 30) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if canConnect(ip, port) { return true }
            if let process, !process.isRunning { return false }
            usleep(20_000)
        }
        return canConnect(ip, port)
    }
}

/// Which test file owns each scenario number (the third octet of
/// PrivateLoopback's addresses) in this process. Two suites on one number
/// share addresses and ports and fail only when they happen to overlap in
/// time, so the second file to use a number fails at once instead, with both
/// names. Helpers take the caller's `#fileID` and pass it on, so the owner is
/// the file that chose the number.
public enum ScenarioNumbers {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var owners: [Int: String] = [:]

    /// Records `file` as the owner of `number`, or records an issue (the
    /// current test fails) when another file already owns it.
    public static func claim(_ number: Int, by file: String) {
        if let clash = register(number, by: file) {
            let message = "scenario number \(number) is used by both \(clash) and \(file): give one of them its own number (COMMON.md lists the ranges)"
            FileHandle.standardError.write(Data(("peregrine tests: " + message + "\n").utf8))
            Issue.record(Comment(rawValue: message))
        }
    }

    /// The other file that owns `number`, or nil once `file` owns it.
    public static func register(_ number: Int, by file: String) -> String? {
        lock.lock()
        defer { lock.unlock() }
        if let owner = owners[number] { return owner == file ? nil : owner }
        owners[number] = file
        return nil
    }
}
