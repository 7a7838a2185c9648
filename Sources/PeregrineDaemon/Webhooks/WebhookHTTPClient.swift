#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineIO
import PeregrineTLS

/// A small HTTP/1.1 client for one webhook endpoint, run on that webhook's
/// own sender thread: non-blocking socket driven with `poll` against one
/// deadline per request (`timeout`), keep-alive between requests, TLS through
/// `TLSConnection` (memory BIOs) with the certificate and host name verified.
///
/// Bounds: the request is one batch (built by the caller); the response head
/// may be at most `maxResponseHeadBytes`, its body is read and discarded up
/// to `maxResponseBodyBytes` (more: the connection is closed after the
/// status). An endpoint that never reads, never answers or sends garbage
/// costs one timeout and one closed connection, never memory.
final class WebhookHTTPClient {
    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    static let maxResponseHeadBytes = 16 * 1024
    static let maxResponseBodyBytes = 64 * 1024

    let url: WebhookURL
    let tlsContext: TLSContext?
    private var fd: Int32 = -1
    private var tls: TLSConnection?
    /// Bytes received and not yet consumed (plaintext).
    private var input: [UInt8] = []
    private var scratch = [UInt8](repeating: 0, count: 16 * 1024)
    private(set) var connectionsOpened: UInt64 = 0

    init(url: WebhookURL, tlsContext: TLSContext?) {
        self.url = url
        self.tlsContext = tlsContext
    }

    deinit { disconnect() }

    func disconnect() {
        if fd >= 0 { close(fd) }
        fd = -1
        tls = nil
        input.removeAll()
    }

    /// POSTs `body` with `headers`; returns the status code. Throws on refusal, timeout, TLS or protocol failure.
    func post(body: [UInt8], headers: [(String, String)], timeoutNanoseconds: UInt64) throws(Failure) -> Int {
        let deadline = monotonicNanoseconds() + timeoutNanoseconds
        var head = "POST \(url.path) HTTP/1.1\r\nHost: \(url.hostHeader)\r\nUser-Agent: Peregrine\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        head += "\r\n"
        let request = Array(head.utf8) + body
        // A kept-alive connection the server closed meanwhile fails on the first
        // write or read: one retry on a fresh connection (the batch is idempotent: event ids).
        let reused = fd >= 0
        do {
            return try exchange(request, deadline: deadline)
        } catch {
            disconnect()
            guard reused, monotonicNanoseconds() < deadline else { throw error }
            return try exchange(request, deadline: deadline)
        }
    }

    private func exchange(_ request: [UInt8], deadline: UInt64) throws(Failure) -> Int {
        if fd < 0 { try connect(deadline: deadline) }
        try send(request, deadline: deadline)
        return try readResponse(deadline: deadline)
    }

    // MARK: Connect

    private func connect(deadline: UInt64) throws(Failure) {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_ADDRCONFIG
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(url.host, String(url.port), &hints, &list)
        guard rc == 0, let first = list else {
            throw Failure("cannot resolve \(url.host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var ai: UnsafeMutablePointer<addrinfo>? = first
        while let a = ai {
            ai = a.pointee.ai_next
            let s = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if s < 0 { lastError = String(cString: strerror(errno)); continue }
            var one: Int32 = 1
            _ = setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            if Glibc.connect(s, a.pointee.ai_addr, a.pointee.ai_addrlen) != 0 && errno != EINPROGRESS {
                lastError = "connect: \(String(cString: strerror(errno)))"
                close(s); continue
            }
            guard wait(s, events: Int16(POLLOUT), deadline: deadline) else {
                lastError = "connect: timed out"; close(s); continue
            }
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            _ = getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 { lastError = "connect: \(String(cString: strerror(err)))"; close(s); continue }
            fd = s
            connectionsOpened += 1
            if url.scheme == .https { try handshake(deadline: deadline) }
            return
        }
        throw Failure("\(url.host):\(url.port): \(lastError)")
    }

    private func handshake(deadline: UInt64) throws(Failure) {
        guard let context = tlsContext else { throw Failure("https without a TLS context") }
        let t: TLSConnection
        do { t = try context.makeClientConnection(serverName: isIPLiteral(url.host) ? nil : url.host, verifyHostname: url.host) }
        catch { throw Failure("TLS: \(error)") }
        tls = t
        while true {
            let r = t.handshake()
            try flushCiphertext(deadline: deadline)
            switch r {
            case .done: return
            case .failed(let e): throw Failure("TLS handshake with \(url.host): \(e)")
            case .wantIO:
                let n = try receiveRaw(deadline: deadline)
                if n == 0 { throw Failure("TLS handshake: connection closed by \(url.host)") }
                scratch.withUnsafeBytes { t.feedCiphertext(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            }
        }
    }

    private func isIPLiteral(_ h: String) -> Bool {
        h.contains(":") || (h.split(separator: ".").count == 4 && h.allSatisfy { $0.isNumber || $0 == "." })
    }

    // MARK: Bytes

    private func wait(_ s: Int32, events: Int16, deadline: UInt64) -> Bool {
        while true {
            let now = monotonicNanoseconds()
            guard now < deadline else { return false }
            var p = pollfd(fd: s, events: events, revents: 0)
            let ms = Int32(min(UInt64(Int32.max), (deadline - now + 999_999) / 1_000_000))
            let r = poll(&p, 1, ms)
            if r > 0 { return true }
            if r < 0 && errno != EINTR { return true }  // let the next call report the error
        }
    }

    private func sendRaw(_ bytes: [UInt8], deadline: UInt64) throws(Failure) {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
            if n > 0 { done += n; continue }
            if n < 0 && (errno == EAGAIN || errno == EINTR) {
                guard wait(fd, events: Int16(POLLOUT), deadline: deadline) else {
                    throw Failure("timed out sending to \(url.host) (the endpoint does not read)")
                }
                continue
            }
            throw Failure("send: \(String(cString: strerror(errno)))")
        }
    }

    private func flushCiphertext(deadline: UInt64) throws(Failure) {
        guard let t = tls else { return }
        while true {
            let n = scratch.withUnsafeMutableBytes { t.takeCiphertext(into: $0) }
            if n == 0 { return }
            try sendRaw(Array(scratch[0..<n]), deadline: deadline)
        }
    }

    private func send(_ bytes: [UInt8], deadline: UInt64) throws(Failure) {
        if let t = tls {
            let failure = bytes.withUnsafeBytes { (b) -> TLSError? in
                do throws(TLSError) { try t.writePlaintext(b); return nil } catch { return error }
            }
            if let failure { throw Failure("TLS: \(failure)") }
            try flushCiphertext(deadline: deadline)
        } else {
            try sendRaw(bytes, deadline: deadline)
        }
    }

    /// Reads raw bytes into `scratch`; 0 at end of stream.
    private func receiveRaw(deadline: UInt64) throws(Failure) -> Int {
        while true {
            let n = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n >= 0 { return n }
            if errno == EAGAIN || errno == EINTR {
                guard wait(fd, events: Int16(POLLIN), deadline: deadline) else {
                    throw Failure("timed out waiting for \(url.host)'s response")
                }
                continue
            }
            throw Failure("recv: \(String(cString: strerror(errno)))")
        }
    }

    /// Appends more plaintext to `input`; false at end of stream.
    private func receiveMore(deadline: UInt64) throws(Failure) -> Bool {
        while true {
            let n = try receiveRaw(deadline: deadline)
            guard let t = tls else {
                if n == 0 { return false }
                input += scratch[0..<n]
                return true
            }
            if n == 0 { return false }
            scratch.withUnsafeBytes { t.feedCiphertext(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            var plain = [UInt8](repeating: 0, count: 16 * 1024)
            var got = 0
            while true {
                let read = plain.withUnsafeMutableBytes { (b) -> Result<Int, TLSError> in
                    do throws(TLSError) { return .success(try t.readPlaintext(into: b)) } catch { return .failure(error) }
                }
                let m: Int
                switch read {
                case .success(let count): m = count
                case .failure(let e): throw Failure("TLS: \(e)")
                }
                if m == 0 { break }
                input += plain[0..<m]
                got += m
                if input.count > Self.maxResponseHeadBytes + Self.maxResponseBodyBytes { break }
            }
            try flushCiphertext(deadline: deadline)  // TLS 1.3 may answer post-handshake messages
            if got > 0 { return true }
            if t.receivedCloseNotify { return false }
        }
    }

    // MARK: Response

    private func readResponse(deadline: UInt64) throws(Failure) -> Int {
        // Head.
        var headEnd: Int?
        while true {
            if let r = Self.find([13, 10, 13, 10], in: input) { headEnd = r; break }
            guard input.count <= Self.maxResponseHeadBytes else {
                throw Failure("response head from \(url.host) over \(Self.maxResponseHeadBytes) bytes")
            }
            guard try receiveMore(deadline: deadline) else { throw Failure("connection closed by \(url.host) before a response") }
        }
        guard let end = headEnd, end <= Self.maxResponseHeadBytes else {
            throw Failure("response head from \(url.host) over \(Self.maxResponseHeadBytes) bytes")
        }
        let head = String(decoding: input[0..<end], as: UTF8.self)
        input.removeFirst(end + 4)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusParts = lines[0].split(separator: " ", maxSplits: 2)
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]),
              (100...599).contains(status) else {
            throw Failure("malformed status line from \(url.host): \(String(lines[0].prefix(80)).debugDescription)")
        }
        var contentLength: Int?
        var chunked = false, closeAfter = statusParts[0] == "HTTP/1.0"
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else {
                throw Failure("malformed header line from \(url.host): \(String(line.prefix(80)).debugDescription)")
            }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces).lowercased()
            switch name {
            case "content-length":
                guard let n = Int(value), n >= 0 else { throw Failure("bad Content-Length from \(url.host)") }
                contentLength = n
            case "transfer-encoding": chunked = value.contains("chunked")
            case "connection": if value.contains("close") { closeAfter = true }
            default: break
            }
        }
        if status < 200 { throw Failure("unexpected interim response \(status) from \(url.host)") }
        // Body: read and dropped, within bounds; beyond them the connection is closed.
        if chunked {
            try skipChunked(deadline: deadline)
        } else if let n = contentLength {
            if n > Self.maxResponseBodyBytes { closeAfter = true } else {
                while input.count < n {
                    guard try receiveMore(deadline: deadline) else { throw Failure("response body from \(url.host) cut short") }
                }
                input.removeFirst(n)
            }
        } else if status != 204 && status != 304 {
            closeAfter = true  // body until close: not worth reading
        }
        if closeAfter || !input.isEmpty { disconnect() }
        return status
    }

    private func skipChunked(deadline: UInt64) throws(Failure) {
        var total = 0
        while true {
            var lineEnd = Self.find([13, 10], in: input)
            while lineEnd == nil {
                guard input.count < 1024 else { throw Failure("bad chunk size line from \(url.host)") }
                guard try receiveMore(deadline: deadline) else { throw Failure("chunked body from \(url.host) cut short") }
                lineEnd = Self.find([13, 10], in: input)
            }
            let sizeText = String(decoding: input[0..<lineEnd!], as: UTF8.self).split(separator: ";")[0]
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16), size >= 0 else {
                throw Failure("bad chunk size from \(url.host)")
            }
            input.removeFirst(lineEnd! + 2)
            total += size
            guard total <= Self.maxResponseBodyBytes else { disconnect(); return }
            if size == 0 {
                // Trailers end with an empty line.
                while Self.find([13, 10], in: input) == nil {
                    guard try receiveMore(deadline: deadline) else { return }
                }
                input.removeFirst(Self.find([13, 10], in: input)! + 2)
                return
            }
            while input.count < size + 2 {
                guard try receiveMore(deadline: deadline) else { throw Failure("chunked body from \(url.host) cut short") }
            }
            input.removeFirst(size + 2)
        }
    }

    static func find(_ needle: [UInt8], in hay: [UInt8]) -> Int? {
        guard hay.count >= needle.count else { return nil }
        var i = 0
        while i + needle.count <= hay.count {
            if hay[i] == needle[0] && Array(hay[i..<i + needle.count]) == needle { return i }
            i += 1
        }
        return nil
    }
}
