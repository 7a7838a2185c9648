import PeregrineHTTP

/// The sink's HTTP answers: `GET /stats` is the counters as JSON (`?pretty`
/// indents them); `POST /penalty-box/lift` ends every penalty box now (a test
/// that needs a sender boxed until it has seen the daemon react keeps the box
/// long and lifts it on that event, rather than racing a box of wall time).
/// Served by PeregrineHTTP's server, the one the daemon's management API uses
/// (one connection, one request: `keepAlive` off).
enum SinkStatsHTTP {
    static func respond(to request: HTTPRequest, shared: SinkShared) -> HTTPResponse {
        if request.path == "/penalty-box/lift" {
            guard request.method == "POST" else { return .methodNotAllowed(["POST"]) }
            let lifted = shared.liftPenaltyBoxes()
            return .json("{\"lifted\":\(lifted)}\n")
        }
        guard request.method == "GET" || request.method == "HEAD" else { return .methodNotAllowed(["GET", "HEAD"]) }
        guard request.path == "/stats" || request.path == "/stats/" else { return .text("try GET /stats\n", status: 404) }
        var body = shared.statsJSON(pretty: request.query.contains { $0.name == "pretty" })
        body.append(10)
        return HTTPResponse(status: 200, headers: [("Content-Type", "application/json")], body: body)
    }
}
