import PeregrineIO
import Testing
import PeregrineHTTP

// Issue 12 item 5: what the management API lets through, request by request
// (the daemon end-to-end tests drive the same checks over a socket with curl).
@Suite struct ManagementRequestGuardTests {
    static let token = Array("0123456789abcdef0123456789abcdef".utf8)
    let guardian = ManagementRequestGuard(allowedHosts: ["mta.example.com"], token: token)

    func request(_ method: String = "POST", _ path: String = "/queues/pause", headers: [(String, String)] = [],
                 body: String = "", local: String = "127.0.0.1") -> HTTPRequest {
        var r = HTTPRequest(method: method, target: path, path: path, headers: headers.map { (name: $0.0, value: $0.1) },
                            body: Array(body.utf8))
        r.localAddress = try? SocketAddress(ip: local, port: 8125)
        return r
    }

    var auth: (String, String) { ("Authorization", "Bearer " + String(decoding: Self.token, as: UTF8.self)) }

    @Test func theIssuesCrossSiteFormPostIsRefusedBeforeAnythingElse() {
        let r = request(headers: [("Host", "127.0.0.1:8125"), ("Origin", "http://evil.example"),
                                  ("Content-Type", "text/plain")], body: "queue=*")
        #expect(guardian.refusal(for: r)?.status == 403)
        // Even with the token (a page cannot have it, but the Origin alone decides).
        let withToken = request(headers: [("Host", "127.0.0.1:8125"), ("Origin", "http://evil.example"), auth,
                                          ("Content-Type", "application/json")], body: "{\"queue\":\"*\"}")
        #expect(guardian.refusal(for: withToken)?.status == 403)
    }

    @Test func mutatingCallsNeedTheBearerToken() {
        let host = ("Host", "127.0.0.1:8125"), json = ("Content-Type", "application/json")
        let none = guardian.refusal(for: request(headers: [host, json], body: "{}"))
        #expect(none?.status == 401)
        #expect(none?.headers.contains { $0.name == "WWW-Authenticate" } == true)
        #expect(guardian.refusal(for: request(headers: [host, json, ("Authorization", "Bearer wrong")], body: "{}"))?.status == 401)
        #expect(guardian.refusal(for: request(headers: [host, json, ("Authorization", "Basic abc")], body: "{}"))?.status == 401)
        let shorter = "Bearer " + String(decoding: Self.token.dropLast(), as: UTF8.self)
        #expect(guardian.refusal(for: request(headers: [host, json, ("Authorization", shorter)], body: "{}"))?.status == 401)
        #expect(guardian.refusal(for: request(headers: [host, json, auth], body: "{}")) == nil)
        #expect(guardian.refusal(for: request("DELETE", headers: [host]))?.status == 401)
        // Reads need none.
        #expect(guardian.refusal(for: request("GET", "/status", headers: [host])) == nil)
        #expect(guardian.refusal(for: request("HEAD", "/status", headers: [host])) == nil)
        // A daemon without a token accepts no mutating call at all.
        let tokenless = ManagementRequestGuard(token: nil)
        #expect(tokenless.refusal(for: request(headers: [host, json, auth], body: "{}"))?.status == 401)
    }

    @Test func onlyJSONAndFormBodiesAreAccepted() {
        let host = ("Host", "localhost:8125")
        for type in ["application/json", "application/json; charset=utf-8", "Application/JSON",
                     "application/x-www-form-urlencoded"] {
            #expect(guardian.refusal(for: request(headers: [host, auth, ("Content-Type", type)], body: "queue=x")) == nil, "\(type)")
        }
        for type in ["text/plain", "multipart/form-data; boundary=x", "application/xml", ""] {
            let headers = type.isEmpty ? [host, auth] : [host, auth, ("Content-Type", type)]
            #expect(guardian.refusal(for: request(headers: headers, body: "queue=x"))?.status == 415, "\(type)")
        }
        // No body: nothing to type (POST /reload with no content).
        #expect(guardian.refusal(for: request("POST", "/reload", headers: [host, auth])) == nil)
    }

    @Test func hostMustNameThisListener() {
        for host in ["127.0.0.1:8125", "127.0.0.1", "localhost", "LOCALHOST:8125", "[::1]:8125", "mta.example.com:8125",
                     "127.0.0.9"] {
            #expect(guardian.refusal(for: request("GET", "/status", headers: [("Host", host)])) == nil, "\(host)")
        }
        // The address the client connected to, whatever it is.
        #expect(guardian.refusal(for: request("GET", "/status", headers: [("Host", "192.0.2.7:8125")], local: "192.0.2.7")) == nil)
        for host in ["evil.example", "evil.example:8125", "192.0.2.7", "127.0.0.1.evil.example", "a b", "x@127.0.0.1", "[::1"] {
            #expect(guardian.refusal(for: request("GET", "/status", headers: [("Host", host)]))?.status == 403, "\(host)")
        }
    }

    @Test func originMustBeThisListener() {
        let host = ("Host", "127.0.0.1:8125")
        #expect(guardian.refusal(for: request("GET", "/status", headers: [host, ("Origin", "http://127.0.0.1:8125")])) == nil)
        #expect(guardian.refusal(for: request(headers: [host, auth, ("Origin", "http://localhost:8125")])) == nil)
        for origin in ["http://evil.example", "null", "https://127.0.0.1:8125", "http://127.0.0.1:8125/x", "file://", ""] {
            #expect(guardian.refusal(for: request("GET", "/status", headers: [host, ("Origin", origin)]))?.status == 403, "\(origin)")
        }
        for site in ["cross-site", "same-site"] {
            #expect(guardian.refusal(for: request("GET", "/status", headers: [host, ("Sec-Fetch-Site", site)]))?.status == 403)
        }
        #expect(guardian.refusal(for: request("GET", "/status", headers: [host, ("Sec-Fetch-Site", "same-origin")])) == nil)
    }
}
