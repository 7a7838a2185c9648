import PeregrineHTTP

/// The sink's HTTP answers: `GET /stats` is the counters as JSON (`?pretty`
/// indents them). Served by PeregrineHTTP's server, the one the daemon's
/// management API uses (one connection, one request: `keepAlive` off).
enum SinkStatsHTTP {
    static func respond(to request: HTTPRequest, shared: SinkShared) -> HTTPResponse {
        guard request.method == "GET" || request.method == "HEAD" else { return .methodNotAllowed(["GET", "HEAD"]) }
        guard request.path == "/stats" || request.path == "/stats/" else { return .text("try GET /stats\n", status: 404) }
        var body = shared.statsJSON(pretty: request.query.contains { $0.name == "pretty" })
        body.append(10)
        return HTTPResponse(status: 200, headers: [("Content-Type", "application/json")], body: body)
    }
}
