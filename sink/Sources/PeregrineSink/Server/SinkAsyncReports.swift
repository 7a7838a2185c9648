#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineIO

/// Asynchronous bounces and ARF complaints, as providers send them hours
/// after accepting a message: for a set share of accepted messages the sink
/// sends an RFC 3464 bounce report (to the message's envelope sender, or
/// `--bounce-to`) and an RFC 5965 complaint (to `--complaint-to`) over SMTP
/// to `--reports-via HOST:PORT` (Peregrine's injection listener), so the
/// daemon's `<bounce-processor>` and `<feedback-loop-processor>` see real
/// traffic. Which messages is deterministic (every 100/P-th; P may be a
/// fraction such as 0.1, below a provider's complaint-penalty threshold), so
/// a run's counts are exact: reports sent + failed = messages picked, and
/// the stats count them per provider for a bench to match against the
/// daemon's `rb` and `f` records.
///
/// Reports go out from one thread of their own with a blocking client: they
/// are rare, and a slow listener must never hold up a loop.
public final class SinkAsyncReports: @unchecked Sendable {
    public struct Options: Equatable, Sendable {
        public var via: SocketAddress
        public var bouncePercent: Double = 0
        public var complaintPercent: Double = 0
        public var bounceTo: String?
        public var complaintTo: String?
        public init(via: SocketAddress) { self.via = via }
    }

    struct Report {
        var mailFrom: String
        var rcpt: String
        var data: [UInt8]
        /// The profile whose MX accepted the original (stats per provider).
        var provider: String = ""
    }

    /// Reports one provider sent (or failed to send).
    struct ProviderCounts { var bounces: UInt64 = 0, complaints: UInt64 = 0, failed: UInt64 = 0 }

    let options: Options
    private let lock = Locked<Void>()
    private var queue: [Report] = []
    private var accepted: UInt64 = 0
    private(set) var bouncesSent: UInt64 = 0
    private(set) var complaintsSent: UInt64 = 0
    private(set) var failed: UInt64 = 0
    private var byProvider: [String: ProviderCounts] = [:]
    /// A report taken off the queue and not yet answered (a reader waiting for the sink to go quiet needs it).
    private var inFlight = 0
    private var lastError: String?
    private var stopping = false
    private let wake = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    private var sequence: UInt64 = 0

    public init(options: Options) {
        self.options = options
        let thread = Thread { [self] in self.run() }
        thread.name = "sink-async-reports"
        thread.start()
    }

    /// Every message the sink accepted (from any loop): decides whether it is
    /// bounced or complained about, and queues the report. Returns whether a
    /// complaint goes back (the provider's reputation counts it).
    @discardableResult
    func accepted(sender: String, recipient: String, headers: [UInt8], reportingHost: String, peerIP: String,
                  provider: String = "") -> Bool {
        let n: UInt64 = lock.withLock { accepted &+= 1; return accepted }
        var reports: [Report] = []
        if Self.picked(n, percent: options.bouncePercent), let to = options.bounceTo ?? (sender.isEmpty ? nil : sender) {
            reports.append(Report(mailFrom: "", rcpt: to, data: bounce(recipient: recipient, headers: headers, host: reportingHost),
                                  provider: provider))
        }
        let complained = Self.picked(n, percent: options.complaintPercent) && options.complaintTo != nil
        if complained, let to = options.complaintTo {
            reports.append(Report(mailFrom: "fbl@\(reportingHost)", rcpt: to,
                                  data: complaint(sender: sender, recipient: recipient, headers: headers,
                                                  host: reportingHost, peerIP: peerIP),
                                  provider: provider))
        }
        guard !reports.isEmpty else { return complained }
        lock.withLock { queue += reports }
        wake.signal()
        return complained
    }

    /// Whether the `n`th accepted message (from 1) is picked at `percent`:
    /// when floor(n·P/100) steps, so exactly floor(N·P/100) of N are picked.
    static func picked(_ n: UInt64, percent: Double) -> Bool {
        guard percent > 0, n > 0 else { return false }
        return (Double(n) * percent / 100).rounded(.down) != (Double(n - 1) * percent / 100).rounded(.down)
    }

    /// Sends what is queued, then stops the thread (at exit; bounded by the client's timeouts).
    public func finish() {
        lock.withLock { stopping = true }
        wake.signal()
        _ = done.wait(timeout: .now() + 30)
    }

    public var statsObject: [String: Any] {
        lock.withLock {
            var o: [String: Any] = ["bounces_sent": bouncesSent, "complaints_sent": complaintsSent, "failed": failed,
                                    "queued": queue.count, "in_flight": inFlight]
            if let e = lastError { o["last_error"] = e }
            var providers: [String: Any] = [:]
            for (name, c) in byProvider where !name.isEmpty {
                providers[name] = ["bounces_sent": c.bounces, "complaints_sent": c.complaints, "failed": c.failed]
            }
            o["providers"] = providers
            return o
        }
    }

    private func run() {
        while true {
            wake.wait()
            while true {
                let next: Report? = lock.withLock {
                    guard !queue.isEmpty else { return nil }
                    inFlight = 1
                    return queue.removeFirst()
                }
                guard let report = next else { break }
                let error = Self.send(report, to: options.via)
                lock.withLock {
                    inFlight = 0
                    if let error { failed &+= 1; lastError = error; byProvider[report.provider, default: .init()].failed &+= 1 }
                    else if report.mailFrom.isEmpty { bouncesSent &+= 1; byProvider[report.provider, default: .init()].bounces &+= 1 }
                    else { complaintsSent &+= 1; byProvider[report.provider, default: .init()].complaints &+= 1 }
                }
            }
            if lock.withLock({ stopping && queue.isEmpty }) { done.signal(); return }
        }
    }

    private func nextID() -> String {
        lock.withLock { sequence &+= 1; return "\(getpid()).\(sequence)" }
    }

    private static func date() -> String {
        var t = time(nil)
        var tm = tm()
        gmtime_r(&t, &tm)
        var buf = [Int8](repeating: 0, count: 64)
        strftime(&buf, buf.count, "%a, %d %b %Y %H:%M:%S +0000", &tm)
        return String(cString: buf)
    }

    /// The original's header section as it may sit in a report: CRLF lines, ending in one blank line.
    private static func headerText(_ headers: [UInt8]) -> String {
        var text = String(decoding: headers, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
            .replacingOccurrences(of: "\n", with: "\r\n")
        while text.hasSuffix("\r\n") { text.removeLast() }
        return text + "\r\n"
    }

    func bounce(recipient: String, headers: [UInt8], host: String) -> [UInt8] {
        let id = nextID()
        let boundary = "sink-bounce-\(id)"
        let text = """
            From: Mail Delivery System <MAILER-DAEMON@\(host)>\r
            Subject: Undelivered Mail Returned to Sender\r
            Date: \(Self.date())\r
            Message-ID: <bounce.\(id)@\(host)>\r
            Auto-Submitted: auto-replied\r
            MIME-Version: 1.0\r
            Content-Type: multipart/report; report-type=delivery-status; boundary="\(boundary)"\r
            \r
            --\(boundary)\r
            Content-Type: text/plain; charset=us-ascii\r
            \r
            The mailbox <\(recipient)> accepted your message earlier, then found it\r
            no longer exists.\r
            \r
            --\(boundary)\r
            Content-Type: message/delivery-status\r
            \r
            Reporting-MTA: dns; \(host)\r
            \r
            Final-Recipient: rfc822; \(recipient)\r
            Action: failed\r
            Status: 5.1.1\r
            Remote-MTA: dns; \(host)\r
            Diagnostic-Code: smtp; 550 5.1.1 <\(recipient)>: mailbox no longer exists\r
            \r
            --\(boundary)\r
            Content-Type: text/rfc822-headers\r
            \r
            \(Self.headerText(headers))\r
            --\(boundary)--\r

            """
        return Array(text.utf8)
    }

    func complaint(sender: String, recipient: String, headers: [UInt8], host: String, peerIP: String) -> [UInt8] {
        let id = nextID()
        let boundary = "sink-arf-\(id)"
        let text = """
            From: <fbl@\(host)>\r
            Subject: Abuse report\r
            Date: \(Self.date())\r
            Message-ID: <arf.\(id)@\(host)>\r
            MIME-Version: 1.0\r
            Content-Type: multipart/report; report-type=feedback-report; boundary="\(boundary)"\r
            \r
            --\(boundary)\r
            Content-Type: text/plain; charset=us-ascii\r
            \r
            A user of \(host) reported this message as spam.\r
            \r
            --\(boundary)\r
            Content-Type: message/feedback-report\r
            \r
            Feedback-Type: abuse\r
            User-Agent: peregrine-sink/1\r
            Version: 1\r
            Original-Mail-From: <\(sender)>\r
            Original-Rcpt-To: <\(recipient)>\r
            Reporting-MTA: dns; \(host)\r
            Source-IP: \(peerIP)\r
            \r
            --\(boundary)\r
            Content-Type: text/rfc822-headers\r
            \r
            \(Self.headerText(headers))\r
            --\(boundary)--\r

            """
        return Array(text.utf8)
    }

    /// One plain SMTP transaction (EHLO, MAIL, RCPT, DATA, QUIT); nil on success, else what failed.
    static func send(_ report: Report, to address: SocketAddress) -> String? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return "socket: errno \(errno)" }
        defer { close(fd) }
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = address.port.bigEndian
        guard inet_pton(AF_INET, address.ip, &sa.sin_addr) == 1 else { return "not an IPv4 address: \(address.ip)" }
        var rc: Int32
        repeat {
            rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        } while rc != 0 && errno == EINTR
        guard rc == 0 else { return "connect \(address): errno \(errno)" }
        var pending: [UInt8] = []
        func reply() -> Int? {
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                // A reply ends with a line whose fourth byte is a space.
                while let nl = pending.firstIndex(of: 10) {
                    let line = Array(pending[..<nl])
                    pending.removeSubrange(...nl)
                    if line.count >= 4, line[3] == 32 || line.count == 4 { return Int(String(decoding: line[0..<3], as: UTF8.self)) }
                    if line.count == 3 { return Int(String(decoding: line, as: UTF8.self)) }
                }
                let n = recv(fd, &buf, buf.count, 0)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return nil }
                pending += buf[0..<n]
            }
        }
        func write(_ bytes: [UInt8]) -> Bool {
            var off = 0
            while off < bytes.count {
                let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                off += n
            }
            return true
        }
        func step(_ line: String, expect: ClosedRange<Int>) -> String? {
            guard write(Array((line + "\r\n").utf8)) else { return "\(line): write failed" }
            guard let code = reply() else { return "\(line): no reply" }
            return expect.contains(code) ? nil : "\(line): \(code)"
        }
        guard let greeting = reply(), greeting == 220 else { return "no 220 greeting" }
        if let e = step("EHLO reports.sink", expect: 250...250) { return e }
        if let e = step("MAIL FROM:<\(report.mailFrom)>", expect: 250...250) { return e }
        if let e = step("RCPT TO:<\(report.rcpt)>", expect: 250...251) { return e }
        if let e = step("DATA", expect: 354...354) { return e }
        // Dot-stuffing (RFC 5321 §4.5.2): a line starting with '.' gets one more.
        var stuffed: [UInt8] = []
        stuffed.reserveCapacity(report.data.count + 16)
        var atLineStart = true
        for b in report.data {
            if atLineStart && b == 46 { stuffed.append(46) }
            stuffed.append(b)
            atLineStart = b == 10
        }
        if !atLineStart { stuffed += [13, 10] }
        stuffed += Array(".\r\n".utf8)
        guard write(stuffed) else { return "body: write failed" }
        guard let code = reply(), code == 250 else { return "end of data refused" }
        _ = step("QUIT", expect: 221...221)
        return nil
    }
}
