/// Limits that keep a misbehaving client from growing the parser's memory.
public struct HTTPParserLimits: Hashable, Sendable {
    /// Longest request line (method, target, version).
    public var maxRequestLineBytes: Int
    /// Longest request head (request line plus header fields).
    public var maxHeadBytes: Int
    public var maxHeaderCount: Int
    public var maxBodyBytes: Int

    public init(maxRequestLineBytes: Int = 8 * 1024, maxHeadBytes: Int = 32 * 1024,
                maxHeaderCount: Int = 100, maxBodyBytes: Int = 1 << 20) {
        self.maxRequestLineBytes = maxRequestLineBytes; self.maxHeadBytes = maxHeadBytes
        self.maxHeaderCount = maxHeaderCount; self.maxBodyBytes = maxBodyBytes
    }
}

/// Why a request was rejected: the status to answer with and a reason for the body and logs.
public struct HTTPParseError: Error, Hashable, Sendable, CustomStringConvertible {
    /// 400, 413, 414, 431, 501 or 505.
    public var status: Int
    public var reason: String
    public init(status: Int, reason: String) { self.status = status; self.reason = reason }
    public var description: String { "HTTP \(status): \(reason)" }

    /// The response a server sends before closing the connection.
    public var response: HTTPResponse { .error(status, reason) }
}

/// One parser step's outcome.
public enum HTTPParseResult: Hashable, Sendable {
    case request(HTTPRequest)
    /// The request is malformed or over a limit; answer with `error.status` and close.
    case failure(HTTPParseError)
}

/// A sans-I/O HTTP/1.1 request parser: feed it bytes as they arrive, take
/// complete requests out. Handles requests split at any byte and several
/// pipelined requests in one read. Bodies by `Content-Length` only
/// (`Transfer-Encoding` is answered with 501). After a failure it stays failed:
/// the connection must be closed, since the message framing is lost.
///
/// Strict where RFC 9112 says MUST: no whitespace between a field name and its
/// colon, no obsolete line folding, a `Host` field on HTTP/1.1 requests,
/// conflicting `Content-Length` values rejected. Lenient where it says MAY:
/// bare LF line ends, empty lines before the request line.
public struct HTTPRequestParser: Sendable {
    public let limits: HTTPParserLimits
    private var buffer: [UInt8] = []
    /// Bytes of `buffer` already consumed by returned requests.
    private var start = 0
    /// Where to resume searching for the end of the head.
    private var scanFrom = 0
    private var pendingHead: HTTPRequest? = nil
    private var pendingBodyLength = 0
    private var failed: HTTPParseError? = nil

    public init(limits: HTTPParserLimits = HTTPParserLimits()) {
        self.limits = limits
    }

    /// Bytes received but not yet returned as part of a request.
    public var bufferedByteCount: Int { buffer.count - start }
    /// True between requests (nothing buffered, no request half-read).
    public var isIdle: Bool { bufferedByteCount == 0 && pendingHead == nil }

    public mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        guard failed == nil else { return }
        compactIfUseful()
        buffer.append(contentsOf: bytes)
    }

    public mutating func feed<C: Sequence>(_ bytes: C) where C.Element == UInt8 {
        guard failed == nil else { return }
        compactIfUseful()
        buffer.append(contentsOf: bytes)
    }

    /// The next complete request, a failure, or nil when more bytes are needed.
    public mutating func next() -> HTTPParseResult? {
        if let f = failed { return .failure(f) }
        do throws(HTTPParseError) {
            if pendingHead == nil {
                guard let head = try parseHead() else { return nil }
                pendingHead = head.0
                pendingBodyLength = head.1
            }
            guard buffer.count - start >= pendingBodyLength, var req = pendingHead else { return nil }
            req.body = Array(buffer[start..<(start + pendingBodyLength)])
            start += pendingBodyLength
            scanFrom = start
            pendingHead = nil
            pendingBodyLength = 0
            return .request(req)
        } catch {
            failed = error
            buffer = []
            start = 0
            return .failure(error)
        }
    }

    private mutating func compactIfUseful() {
        if start > 0 && (start == buffer.count || start >= 4096) {
            buffer.removeFirst(start)
            scanFrom -= start
            start = 0
        }
    }

    // MARK: Head

    /// Finds and parses a complete head; returns it with the body length, nil if incomplete.
    private mutating func parseHead() throws(HTTPParseError) -> (HTTPRequest, Int)? {
        // Skip empty lines before the request line (RFC 9112 §2.2).
        while start < buffer.count, buffer[start] == 13 || buffer[start] == 10 {
            if buffer[start] == 13 {
                guard start + 1 < buffer.count else { return nil }
                guard buffer[start + 1] == 10 else { throw HTTPParseError(status: 400, reason: "bare CR") }
                start += 2
            } else {
                start += 1
            }
        }
        if scanFrom < start { scanFrom = start }
        // Find the empty line that ends the head: LF (CR)? LF.
        var i = scanFrom
        var headEnd = -1     // index just past the terminating empty line
        var firstLineEnd = -1
        let n = buffer.count
        while i < n {
            if buffer[i] == 10 {
                if firstLineEnd < 0 { firstLineEnd = i }
                if i + 1 < n, buffer[i + 1] == 10 { headEnd = i + 2; break }
                if i + 2 < n, buffer[i + 1] == 13, buffer[i + 2] == 10 { headEnd = i + 3; break }
                if i + 1 >= n || (i + 2 >= n && buffer[i + 1] == 13) { break }  // need more bytes to decide
            }
            i += 1
        }
        if headEnd < 0 {
            // Remember where to resume (back up over a possible partial terminator).
            scanFrom = max(start, i - 1)
            if firstLineEnd < 0 {
                // Still in the request line.
                if let lf = buffer[start..<n].firstIndex(of: 10) { firstLineEnd = lf }
            }
            if firstLineEnd < 0 && n - start > limits.maxRequestLineBytes {
                throw HTTPParseError(status: 414, reason: "request line longer than \(limits.maxRequestLineBytes) bytes")
            }
            if n - start > limits.maxHeadBytes {
                throw HTTPParseError(status: 431, reason: "request head longer than \(limits.maxHeadBytes) bytes")
            }
            return nil
        }
        if headEnd - start > limits.maxHeadBytes {
            throw HTTPParseError(status: 431, reason: "request head longer than \(limits.maxHeadBytes) bytes")
        }
        let result = try parseHead(from: start, to: headEnd)
        start = headEnd
        scanFrom = headEnd
        return result
    }

    private func parseHead(from: Int, to end: Int) throws(HTTPParseError) -> (HTTPRequest, Int) {
        // Split into lines without their CRLF / LF.
        var lines: [Range<Int>] = []
        var lineStart = from
        var i = from
        while i < end {
            if buffer[i] == 10 {
                var lineEnd = i
                if lineEnd > lineStart, buffer[lineEnd - 1] == 13 { lineEnd -= 1 }
                lines.append(lineStart..<lineEnd)
                lineStart = i + 1
            }
            i += 1
        }
        // The last line is the empty terminator.
        if let last = lines.last, last.isEmpty { lines.removeLast() }
        guard let requestLine = lines.first else { throw HTTPParseError(status: 400, reason: "empty request") }
        if requestLine.count > limits.maxRequestLineBytes {
            throw HTTPParseError(status: 414, reason: "request line longer than \(limits.maxRequestLineBytes) bytes")
        }
        for r in lines where buffer[r].contains(13) {
            throw HTTPParseError(status: 400, reason: "bare CR in the request head")
        }
        var request = try parseRequestLine(buffer[requestLine])
        let fieldLines = lines.dropFirst()
        if fieldLines.count > limits.maxHeaderCount {
            throw HTTPParseError(status: 431, reason: "more than \(limits.maxHeaderCount) header fields")
        }
        var headers: [(name: String, value: String)] = []
        headers.reserveCapacity(fieldLines.count)
        var contentLength: Int? = nil
        var hasHost = false
        for r in fieldLines {
            let line = buffer[r]
            guard let first = line.first else { continue }
            if first == 32 || first == 9 {
                throw HTTPParseError(status: 400, reason: "obsolete line folding in header fields")
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else {
                throw HTTPParseError(status: 400, reason: "header field without a colon")
            }
            let nameBytes = buffer[r.lowerBound..<colon]
            guard !nameBytes.isEmpty, nameBytes.allSatisfy(HTTPRequestParser.isTokenChar) else {
                throw HTTPParseError(status: 400, reason: "invalid header field name")
            }
            var vs = colon + 1, ve = r.upperBound
            while vs < ve, buffer[vs] == 32 || buffer[vs] == 9 { vs += 1 }
            while ve > vs, buffer[ve - 1] == 32 || buffer[ve - 1] == 9 { ve -= 1 }
            let valueBytes = buffer[vs..<ve]
            if valueBytes.contains(where: { $0 == 0 || ($0 < 32 && $0 != 9) || $0 == 127 }) {
                throw HTTPParseError(status: 400, reason: "control character in a header field value")
            }
            let name = String(decoding: nameBytes, as: UTF8.self)
            let value = String(decoding: valueBytes, as: UTF8.self)
            let lower = name.lowercased()
            if lower == "content-length" {
                for part in value.split(separator: ",", omittingEmptySubsequences: false) {
                    let t = part.trimmingSpaces
                    guard !t.isEmpty, t.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), t.utf8.count <= 18, let v = Int(t) else {
                        throw HTTPParseError(status: 400, reason: "invalid Content-Length '\(value)'")
                    }
                    if let c = contentLength, c != v {
                        throw HTTPParseError(status: 400, reason: "conflicting Content-Length values")
                    }
                    contentLength = v
                }
            } else if lower == "transfer-encoding" {
                throw HTTPParseError(status: 501, reason: "Transfer-Encoding is not supported; send Content-Length")
            } else if lower == "host" {
                if hasHost { throw HTTPParseError(status: 400, reason: "more than one Host field") }
                hasHost = true
            }
            headers.append((name, value))
        }
        if request.version.major == 1 && request.version.minor >= 1 && !hasHost {
            throw HTTPParseError(status: 400, reason: "HTTP/1.1 request without a Host field")
        }
        let length = contentLength ?? 0
        if length > limits.maxBodyBytes {
            throw HTTPParseError(status: 413, reason: "body of \(length) bytes is over the \(limits.maxBodyBytes)-byte limit")
        }
        request.headers = headers
        return (request, length)
    }

    private func parseRequestLine(_ line: ArraySlice<UInt8>) throws(HTTPParseError) -> HTTPRequest {
        guard let sp1 = line.firstIndex(of: 32) else { throw HTTPParseError(status: 400, reason: "malformed request line") }
        guard let sp2 = line[(sp1 + 1)...].firstIndex(of: 32),
              line[(sp2 + 1)...].firstIndex(of: 32) == nil else {
            throw HTTPParseError(status: 400, reason: "malformed request line")
        }
        let methodBytes = line[line.startIndex..<sp1]
        let targetBytes = line[(sp1 + 1)..<sp2]
        let versionBytes = line[(sp2 + 1)...]
        guard !methodBytes.isEmpty, methodBytes.allSatisfy(HTTPRequestParser.isTokenChar) else {
            throw HTTPParseError(status: 400, reason: "invalid method")
        }
        guard !targetBytes.isEmpty, targetBytes.allSatisfy({ $0 > 32 && $0 < 127 }) else {
            throw HTTPParseError(status: 400, reason: "invalid request target")
        }
        let version = try parseVersion(versionBytes)
        let method = String(decoding: methodBytes, as: UTF8.self)
        let target = String(decoding: targetBytes, as: UTF8.self)

        // origin-form "/path?query", absolute-form "http://host/path?query", asterisk-form "*".
        var pathAndQuery = Substring(target)
        if target == "*" {
            return HTTPRequest(method: method, target: target, path: "*", version: version)
        }
        if !target.hasPrefix("/") {
            let lower = target.lowercased()
            guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
                throw HTTPParseError(status: 400, reason: "request target must start with '/'")
            }
            guard let colon = pathAndQuery.firstIndex(of: ":") else {
                throw HTTPParseError(status: 400, reason: "request target must start with '/'")
            }
            let afterScheme = pathAndQuery[pathAndQuery.index(colon, offsetBy: 3)...]
            if let slash = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) {
                pathAndQuery = afterScheme[slash...]
                if pathAndQuery.first == "?" { pathAndQuery = "/" + pathAndQuery }
            } else {
                pathAndQuery = "/"
            }
        }
        let rawPath: Substring, rawQuery: Substring
        if let q = pathAndQuery.firstIndex(of: "?") {
            rawPath = pathAndQuery[..<q]
            rawQuery = pathAndQuery[pathAndQuery.index(after: q)...]
        } else {
            rawPath = pathAndQuery
            rawQuery = ""
        }
        let rawPathNoFragment = rawPath.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? rawPath
        guard let path = HTTPRequest.percentDecode(rawPathNoFragment, plusAsSpace: false) else {
            throw HTTPParseError(status: 400, reason: "malformed percent-encoding in the path")
        }
        let queryNoFragment = rawQuery.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? rawQuery
        return HTTPRequest(method: method, target: target, path: path,
                           query: HTTPRequest.parseQuery(queryNoFragment), version: version)
    }

    private func parseVersion(_ v: ArraySlice<UInt8>) throws(HTTPParseError) -> (major: Int, minor: Int) {
        let bytes = Array(v)
        guard bytes.count == 8, bytes[0..<5].elementsEqual("HTTP/".utf8), bytes[6] == UInt8(ascii: "."),
              (48...57).contains(bytes[5]), (48...57).contains(bytes[7]) else {
            throw HTTPParseError(status: 400, reason: "malformed HTTP version")
        }
        let major = Int(bytes[5] - 48), minor = Int(bytes[7] - 48)
        guard major == 1 else {
            throw HTTPParseError(status: 505, reason: "HTTP/\(major).\(minor) is not supported")
        }
        return (major, minor)
    }

    /// RFC 9110 tchar.
    @inline(__always)
    static func isTokenChar(_ c: UInt8) -> Bool {
        switch c {
        case 48...57, 65...90, 97...122: return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
             UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
             UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default: return false
        }
    }
}
