#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineTestSupport
import PeregrineIO
import PeregrineAccounting

/// Throwaway certificate for the end-to-end TLS tests: generated once per
/// test process with the openssl command line, removed at exit.
enum E2ETLSCertificates {
    struct Files: Sendable { let directory, certificate, key: String }

    static let files: Files? = {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("peregrine-e2e-tls-\(getpid())").path
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch { return nil }
        let cert = dir + "/cert.pem", key = dir + "/key.pem"
        let (status, _) = runTool(findTool("openssl") ?? "/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.test",
                                                          "-addext", "subjectAltName=DNS:mx.test", "-days", "1",
                                                          "-keyout", key, "-out", cert], seconds: 60)
        guard status == 0 else { return nil }
        atexit { if let d = E2ETLSCertificates.files?.directory { try? FileManager.default.removeItem(atPath: d) } }
        return Files(directory: dir, certificate: cert, key: key)
    }()
}

/// Runs the real `peregrine run` on loopback with a config written for the
/// test (listeners on port 0, spool and accounting in a temporary
/// directory); always terminated (SIGTERM, then SIGKILL) and cleaned up.
final class TLSDaemonProcess {
    private(set) var process = Process()
    let directory: String
    private var errPipe = Pipe()
    /// Bound listener addresses, in config order ("127.0.0.1:PORT").
    private(set) var listeners: [(ip: String, port: UInt16)] = []
    private var finished = false
    private var log = ""

    static var executable: String { E2E.executable("peregrine") }

    /// `config` is everything after the listeners, spool and accounting lines.
    init(backend: String, listeners: [String] = ["127.0.0.1:0"], config: String) throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("peregrine-e2e-daemon-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // The daemon wants real ports: ":0" becomes a port free right now. The
        // port may be taken before the daemon binds it (a client's ephemeral
        // port, a parallel test); then the daemon exits and we start again.
        for attempt in 1...4 {
            try start(backend: backend, listeners: listeners, config: config)
            guard !log.contains("listening on"), log.contains("Address already in use"), attempt < 4 else { break }
            process.waitUntilExit()
            process = Process()
            errPipe = Pipe()
            log = ""
        }
        guard let line = log.split(separator: "\n").first(where: { $0.contains("listening on") }),
              let range = line.range(of: "listening on ") else {
            terminate()
            throw SinkTestError("peregrine did not start: \(log)")
        }
        for a in line[range.upperBound...].split(separator: ",") {
            let addr = a.trimmingCharacters(in: .whitespaces)
            if addr.contains(" ") { continue } // "management on …"
            guard let colon = addr.lastIndex(of: ":"), let port = UInt16(addr[addr.index(after: colon)...]) else { continue }
            self.listeners.append((ip: String(addr[..<colon]), port: port))
        }
        // Keep draining stderr so the daemon never blocks on a full pipe.
        let handle = errPipe.fileHandleForReading
        Thread { _ = handle.readDataToEndOfFile() }.start()
    }

    private func start(backend: String, listeners: [String], config: String) throws {
        let specs = listeners.map { spec -> String in
            guard let r = spec.range(of: ":0"), r.upperBound == spec.endIndex || spec[r.upperBound] == " " else { return spec }
            return spec.replacingCharacters(in: r, with: ":\(e2eFreePort())")
        }
        let text = specs.map { "smtp-listener \($0)" }.joined(separator: "\n") + """

            spool \(directory)/spool
            host-name mta.peregrine.test
            threads 1
            <acct-file \(directory)/acct.csv>
                records d,b,t,tq
            </acct-file>
            \(config)
            """
        let path = directory + "/peregrine.conf"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: Self.executable)
        process.arguments = ["run", "--config", path, "--backend", backend]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errPipe
        try ChildProcess.run(process)
        let fd = errPipe.fileHandleForReading.fileDescriptor
        let deadline = Date().addingTimeInterval(30)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !log.contains("listening on") || !log.hasSuffix("\n") {
            guard Date() < deadline else { break }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard Glibc.poll(&p, 1, 100) > 0 else { if !process.isRunning { break }; continue }
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            log += String(decoding: buffer[0..<n], as: UTF8.self)
        }
    }

    var port: UInt16 { listeners.first?.port ?? 0 }

    /// Accounting rows written so far (the daemon flushes every ~100 ms).
    /// The accounting rows (none before the first flush); a file that exists but
    /// cannot be read or parsed is an Issue, never an empty list.
    func records(sourceLocation: SourceLocation = #_sourceLocation) -> [AccountingCSVRow] {
        let path = directory + "/acct.csv"
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        do {
            guard let data = FileManager.default.contents(atPath: path) else { throw SinkTestError("unreadable") }
            return try AccountingCSVReader.parse(Array(data))
        } catch {
            Issue.record("cannot read the accounting file \(path): \(error)", sourceLocation: sourceLocation)
            return []
        }
    }

    func records(_ type: String, sourceLocation: SourceLocation = #_sourceLocation) -> [AccountingCSVRow] {
        records(sourceLocation: sourceLocation).filter { $0["type"] == type }
    }

    func terminate() {
        guard !finished else { return }
        finished = true
        stopProcess(process)
        try? FileManager.default.removeItem(atPath: directory)
    }

    deinit { terminate() }
}

func e2eEventually(_ seconds: Double = 30, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline { if condition() { return true }; usleep(50_000) }
    return condition()
}

/// smtplib: `python3 -c script PORT MODE(starttls|implicit|plain) RCPT[,RCPT]...`; one message per argument.
let e2eSmtplibScript = #"""
import smtplib, ssl, sys
port, mode, rcpts = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=30) if mode == "implicit" else smtplib.SMTP("127.0.0.1", port, timeout=30)
s.ehlo("client.test")
if mode == "starttls":
    assert s.has_extn("starttls"), "STARTTLS not advertised"
    s.starttls(context=ctx); s.ehlo("client.test")
    assert not s.has_extn("starttls"), "STARTTLS advertised again after TLS"
for r in rcpts:
    s.sendmail("sender@client.test", r.split(","), "Subject: tls test\r\nX-Loadgen-Id: %s\r\n\r\nhello over %s\r\n" % (r, mode))
s.quit()
print("SENT", len(rcpts))
"""#

/// A loopback TCP port nobody listens on right now.
func e2eFreePort() -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
    }
    return bound ? UInt16(bigEndian: addr.sin_port) : 0
}
