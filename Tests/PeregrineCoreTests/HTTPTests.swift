import Testing
import Foundation
import PeregrineIO
@testable import PeregrineHTTP

private func parseAll(_ chunks: [[UInt8]], limits: HTTPParserLimits = HTTPParserLimits()) -> [HTTPParseResult] {
    var p = HTTPRequestParser(limits: limits)
    var out: [HTTPParseResult] = []
    for c in chunks {
        p.feed(c)
        while let r = p.next() {
            out.append(r)
            if case .failure = r { return out }
        }
    }
    return out
}

private func requests(_ results: [HTTPParseResult]) -> [HTTPRequest] {
    results.compactMap { if case .request(let r) = $0 { return r } else { return nil } }
}

private func failureStatus(_ text: String, limits: HTTPParserLimits = HTTPParserLimits()) -> Int? {
    for r in parseAll([Array(text.utf8)], limits: limits) {
        if case .failure(let e) = r { return e.status }
    }
    return nil
}

let pipelined = Array((
    "GET /queues?pattern=gmail.com%2F*&verbose HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n" +
    "POST /queues/pause HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 23\r\n\r\nqueue=yahoo.com%2F*&x=1" +
    "\r\nGET /metrics HTTP/1.0\n\n"
).utf8)

@Suite("HTTP request parser")
struct HTTPParserTests {
    @Test func parsesPipelinedRequests() throws {
        let reqs = requests(parseAll([pipelined]))
        #expect(reqs.count == 3)
        let get = try #require(reqs.first)
        #expect(get.method == "GET")
        #expect(get.path == "/queues")
        #expect(get.queryParameter("pattern") == "gmail.com/*")
        #expect(get.queryParameter("verbose") == "")
        #expect(get.header("accept") == "application/json")
        #expect(get.keepAlive)
        let post = reqs[1]
        #expect(post.method == "POST")
        #expect(post.bodyText == "queue=yahoo.com%2F*&x=1")
        #expect(post.formParameters.first?.value == "yahoo.com/*")
        let old = reqs[2]
        #expect(old.version == (1, 0) as (Int, Int))
        #expect(!old.keepAlive)
        #expect(old.path == "/metrics")
    }

    @Test func everySplitPointGivesTheSameRequests() {
        let whole = requests(parseAll([pipelined]))
        for i in 0...pipelined.count {
            let split = requests(parseAll([Array(pipelined[..<i]), Array(pipelined[i...])]))
            #expect(split == whole, "split at \(i)")
        }
        // Byte by byte.
        #expect(requests(parseAll(pipelined.map { [$0] })) == whole)
        // Three pieces at every pair of points of a shorter request.
        let short = Array("POST /x?a=b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc".utf8)
        let expected = requests(parseAll([short]))
        #expect(expected.count == 1)
        for i in 0...short.count {
            for j in i...short.count {
                let got = requests(parseAll([Array(short[..<i]), Array(short[i..<j]), Array(short[j...])]))
                #expect(got == expected, "split at \(i), \(j)")
            }
        }
    }

    /// RFC 9110 section 8.6: a Content-Length list of identical values, or the
    /// field repeated with the same value, frames the body as that one value
    /// (the fuzzer's FuzzHTTPRequest finding was its own oracle not knowing this).
    @Test func identicalContentLengthListsFrameOneBody() throws {
        for head in ["Content-Length: 4,4", "Content-Length: 4 , 4", "Content-Length: 4\r\nContent-Length: 4"] {
            let got = requests(parseAll([Array("POST / HTTP/1.1\r\nHost: h\r\n\(head)\r\n\r\nabcdGET / HTTP/1.1\r\nHost: h\r\n\r\n".utf8)]))
            #expect(got.count == 2, "\(head)")
            #expect(got.first?.body == Array("abcd".utf8), "\(head)")
        }
    }

    @Test func incompleteRequestsWaitForMoreBytes() {
        var p = HTTPRequestParser()
        p.feed(Array("GET / HTTP/1.1\r\nHost: h\r\n".utf8))
        #expect(p.next() == nil)
        p.feed(Array("\r".utf8))
        #expect(p.next() == nil)
        p.feed(Array("\n".utf8))
        if case .request(let r)? = p.next() { #expect(r.path == "/") } else { Issue.record("expected a request") }
        #expect(p.next() == nil)
        #expect(p.isIdle)
        p.feed(Array("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n12345".utf8))
        #expect(p.next() == nil)
        #expect(!p.isIdle)
    }

    @Test(arguments: [
        ("GARBAGE\r\n\r\n", 400),
        ("GET /\r\n\r\n", 400),
        ("GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n", 400),
        ("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        ("GET / HTTX/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\n\r\n", 400),                                   // no Host
        ("GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),                       // space before colon
        ("GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  folded\r\n\r\n", 400),  // obs-fold
        ("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400),                  // bare CR
        ("GET / HTTP/1.1\r\nHost: h\r\nX: a\u{01}b\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2, 3\r\n\r\nabc", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2,\r\n\r\nab", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\n\r\n", 413),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        ("GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET relative HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET /\u{7f} HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ])
    func malformedRequestsGetTheRightStatus(_ text: String, _ status: Int) {
        #expect(failureStatus(text) == status)
    }

    @Test func limits() {
        let small = HTTPParserLimits(maxRequestLineBytes: 32, maxHeadBytes: 128, maxHeaderCount: 3, maxBodyBytes: 10)
        #expect(failureStatus("GET /" + String(repeating: "a", count: 40), limits: small) == 414)
        #expect(failureStatus("GET /" + String(repeating: "a", count: 40) + " HTTP/1.1\r\nHost: h\r\n\r\n", limits: small) == 414)
        #expect(failureStatus("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits: small) == 431)
        #expect(failureStatus("GET / HTTP/1.1\r\nHost: h\r\nX: " + String(repeating: "v", count: 200), limits: small) == 431)
        #expect(failureStatus("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n", limits: small) == 413)
        #expect(failureStatus("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789", limits: small) == nil)
    }

    @Test func failureIsSticky() {
        var p = HTTPRequestParser()
        p.feed(Array("BAD\r\n\r\n".utf8))
        guard case .failure(let e)? = p.next() else { Issue.record("expected failure"); return }
        p.feed(Array("GET / HTTP/1.1\r\nHost: h\r\n\r\n".utf8))
        #expect(p.next() == .failure(e))
    }

    @Test func lenientWhereAllowed() {
        let reqs = requests(parseAll([Array("\r\n\nGET http://localhost:8080/status?x=1 HTTP/1.1\nHost: h\n\n".utf8)]))
        #expect(reqs.count == 1)
        #expect(reqs.first?.path == "/status")
        #expect(reqs.first?.queryParameter("x") == "1")
        let plus = requests(parseAll([Array("GET /q?name=a+b%20c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".utf8)]))
        #expect(plus.first?.queryParameter("name") == "a b c")
        #expect(plus.first?.keepAlive == false)
    }
}

@Suite("HTTP response and Prometheus text")
struct HTTPResponseTests {
    @Test func serializesWithLengthAndConnection() {
        let r = HTTPResponse.json("{\"ok\":true}")
        let text = String(decoding: r.serialize(keepAlive: true), as: UTF8.self)
        #expect(text == "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nConnection: keep-alive\r\n\r\n{\"ok\":true}")
        let head = String(decoding: r.serialize(keepAlive: false, includeBody: false), as: UTF8.self)
        #expect(head.hasSuffix("Content-Length: 11\r\nConnection: close\r\n\r\n"))
        var split = HTTPResponse(status: 200, headers: [("X-Evil", "a\r\nSet-Cookie: x")])
        split.headers.append(("Content-Length", "999"))
        let s = String(decoding: split.serialize(keepAlive: false), as: UTF8.self)
        #expect(s.contains("X-Evil: a  Set-Cookie: x\r\n"))
        #expect(!s.contains("999"))
        #expect(HTTPResponse.error(404, "no \"queue\"\n").bodyText == "{\"error\":\"no \\\"queue\\\"\\n\"}")
    }

    @Test func prometheusText() {
        var p = PrometheusText()
        p.counter("peregrine_delivered_total", help: "Recipients delivered.\nPer queue", value: 3,
                  labels: [("queue", "gmail.com/vmta1")])
        p.counter("peregrine_delivered_total", value: 4, labels: [("queue", "x\"y\\z\nw")])
        p.gauge("peregrine_queue_ready", value: 1.5)
        p.gauge("bad-name.x", value: Double.infinity, labels: [("0label", "v")])
        p.gauge("nan", value: Double.nan)
        #expect(p.text == """
        # HELP peregrine_delivered_total Recipients delivered.\\nPer queue
        # TYPE peregrine_delivered_total counter
        peregrine_delivered_total{queue="gmail.com/vmta1"} 3
        peregrine_delivered_total{queue="x\\"y\\\\z\\nw"} 4
        # TYPE peregrine_queue_ready gauge
        peregrine_queue_ready 1.5
        # TYPE bad_name_x gauge
        bad_name_x{_label="v"} +Inf
        # TYPE nan gauge
        nan NaN

        """)
        #expect(p.response.headers.first?.1 == PrometheusText.contentType)
    }
}

extension HTTPResponse {
    var bodyText: String { String(decoding: body, as: UTF8.self) }
}

@Suite("HTTP management server", .timeLimit(.minutes(10)), .blockingIO)
struct HTTPServerTests {
    @Test(arguments: BackendKind.testable)
    func roundTripWithCurlAndPython(_ kind: BackendKind) throws {
        try roundTrip(kind.loopType)
    }

    func roundTrip<L: EventLoop>(_ type: L.Type) throws {
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let started: ManagementServer<L>?? = h.sync { loop -> ManagementServer<L>? in
            let server = ManagementServer(loop: loop, options: .loopback(port: 0)) { req in
                switch (req.method, req.path) {
                case ("GET", "/status"):
                    return .json("{\"backend\":\"\(L.kind)\",\"q\":\"\(HTTPResponse.jsonEscape(req.queryParameter("q") ?? ""))\"}")
                case ("POST", "/queues/pause"):
                    return .json("{\"paused\":\"\(HTTPResponse.jsonEscape(req.queryParameter("queue") ?? ""))\",\"body\":\"\(HTTPResponse.jsonEscape(req.bodyText))\"}")
                case ("GET", "/metrics"):
                    var p = PrometheusText()
                    p.counter("peregrine_requests_total", value: 7)
                    return p.response
                default:
                    return .notFound(req.path)
                }
            }
            do { try server.start() } catch { return nil }
            return server
        }
        // The test holds the server (the listener's closure holds it weakly).
        let server = try #require(started ?? nil)
        let p = try #require(h.sync { _ in server.boundAddress?.port } ?? nil)
        let base = "http://127.0.0.1:\(p)"

        // curl and python3 are installed by scripts/setup: a missing one fails, never skips its checks.
        do {
            let curl = try #require(findExecutable("curl"), "curl is not installed (scripts/setup installs it)")
            // Two URLs in one invocation: curl reuses the connection (keep-alive).
            let (rc, out) = try runProcess(curl, ["-sS", "--max-time", "10", "\(base)/status?q=a%20b", "\(base)/metrics"])
            #expect(rc == 0)
            #expect(out.contains("{\"backend\":\"\(L.kind)\",\"q\":\"a b\"}"))
            #expect(out.contains("peregrine_requests_total 7"))
            let (rc2, out2) = try runProcess(curl, ["-sS", "--max-time", "10", "-X", "POST", "--data", "why=maintenance",
                                                    "\(base)/queues/pause?queue=gmail.com%2F*"])
            #expect(rc2 == 0)
            #expect(out2 == "{\"paused\":\"gmail.com/*\",\"body\":\"why=maintenance\"}")
            let (_, code) = try runProcess(curl, ["-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", "\(base)/nope"])
            #expect(code == "404")
        }
        do {
            let python = try #require(findExecutable("python3"), "python3 is not installed")
            let script = """
            import urllib.request, sys
            r = urllib.request.urlopen(sys.argv[1] + "/status?q=py", timeout=10)
            print(r.status, r.headers["Content-Type"], r.read().decode())
            req = urllib.request.Request(sys.argv[1] + "/queues/pause?queue=yahoo.com/vmta1", data=b"x=1", method="POST")
            print(urllib.request.urlopen(req, timeout=10).read().decode())
            """
            let (rc, out) = try runProcess(python, ["-c", script, base])
            #expect(rc == 0)
            #expect(out == "200 application/json {\"backend\":\"\(L.kind)\",\"q\":\"py\"}\n{\"paused\":\"yahoo.com/vmta1\",\"body\":\"x=1\"}\n")
        }

        // Malformed input over the wire: a 400 and the connection closed.
        let bad = String(decoding: rawTCPExchange(port: p, Array("BOGUS\r\n\r\n".utf8)), as: UTF8.self)
        #expect(bad.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(bad.contains("Connection: close"))
        // Pipelined requests, then the client's FIN: both answered, in order.
        let two = String(decoding: rawTCPExchange(port: p, Array(
            "GET /status?q=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /status?q=2 HTTP/1.1\r\nHost: x\r\n\r\n".utf8), halfClose: true), as: UTF8.self)
        let first = try #require(two.range(of: "\"q\":\"1\""))
        let second = try #require(two.range(of: "\"q\":\"2\""))
        #expect(first.lowerBound < second.lowerBound)

        // Stop: the listener closes, connections are dropped.
        let served: Int? = h.sync { _ in
            server.stop()
            return server.requestsServed
        }
        #expect((served ?? 0) >= 9)
    }
}

@Suite("HTTP management server, deferred answers", .timeLimit(.minutes(10)), .blockingIO)
struct HTTPDeferredServerTests {
    @Test(arguments: BackendKind.testable)
    func deferredHandlerAnswersLater(_ kind: BackendKind) throws { try deferred(kind.loopType) }

    func deferred<L: EventLoop>(_ type: L.Type) throws {
        let peerBox = HTTPTestPeers()
        let h = try CoreLoopHarness(type)
        defer { h.stop() }
        let started: ManagementServer<L>?? = h.sync { loop -> ManagementServer<L>? in
            // Answers from a timer, as the daemon does after gathering counters from its other loops.
            let server = ManagementServer(loop: loop, options: .loopback(port: 0)) { req, respond in
                loop.scheduleTimer(after: 5_000_000) {
                    respond(.json("{\"path\":\"\(req.path)\"}"))
                    peerBox.list.append(req.remoteAddress?.ip ?? "none")
                    respond(.json("{\"ignored\":true}"))   // a second answer is dropped
                }
            }
            do { try server.start() } catch { return nil }
            return server
        }
        let server = try #require(started ?? nil)
        let port = try #require(h.sync { _ in server.boundAddress?.port } ?? nil)
        defer { _ = h.sync { _ in peerBox.list.removeAll() } }
        let reply = String(decoding: rawTCPExchange(port: port, Array(
            "GET /queues HTTP/1.1\r\nHost: x\r\n\r\nHEAD /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)), as: UTF8.self)
        #expect(reply.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(reply.contains("{\"path\":\"/queues\"}HTTP/1.1 200 OK\r\n"))
        #expect(!reply.contains("ignored"))
        // HEAD: headers with the length, no body, then the connection closes.
        #expect(reply.hasSuffix("Content-Length: 18\r\nConnection: close\r\n\r\n"))
        #expect(h.sync { _ in peerBox.list } == ["127.0.0.1", "127.0.0.1"])
        _ = h.sync { _ in server.stop() }
    }
}

/// Peer addresses the handler saw (touched only on the loop thread).
final class HTTPTestPeers: @unchecked Sendable { var list: [String] = [] }
