import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PeregrineConfig
import PeregrineDaemon
import PeregrineSpool

/// `peregrine ctl …`: the operator's console. Talks JSON to the daemon's
/// management port (http-mgmt-port) and prints tables, or the raw JSON with --json.
///
///   ctl show status|queues|topqueues|vmtas|webhooks|cluster, ctl show domain NAME, ctl trace ADDRESS
///   ctl pause|resume|schedule|delete QUEUE        (QUEUE may be a pattern: gmail.com/*)
///   ctl delete --job-id ID, ctl reset counters
///   ctl set-mode normal|backoff QUEUE
///   ctl reload
///   ctl suppress add|remove|list|check|import (the suppression list, /api/v1/suppressions)
/// Options: --config FILE (the daemon's: its http-mgmt-port and token file),
/// --token-file FILE, --host ADDR (default 127.0.0.1), --port N (default 8080), --json.
/// Every call sends `Authorization: Bearer` with the token when there is one;
/// the daemon requires it for everything but reads.
enum CtlCommand {
    static let usage = """
    usage: peregrine ctl [--config FILE] [--token-file FILE] [--host ADDR] [--port N] [--json] COMMAND
      show status | show queues | show topqueues | show vmtas | show webhooks | show cluster
      show domain NAME [--vmta VMTA]      the settings a queue for NAME gets, as resolved
      trace ADDRESS [--vmta VMTA]         the queue, VMTA, route, throttles and rules ADDRESS would get
      pause QUEUE | resume QUEUE | schedule QUEUE | delete QUEUE
      delete --job-id ID                  every pending recipient of the messages of job ID
      set-mode normal|backoff QUEUE
      reset counters                      the totals of show status and /metrics
      reload
      suppress add|remove ENTRY... [--reason R]   addresses, or whole domains (example.com)
      suppress list [--limit N] [--offset N]      the suppression list (1000 entries by default)
      suppress check ADDRESS                      whether ADDRESS (or its domain) is suppressed
      suppress ... --tenant NAME                  add, remove, list or check in one tenant's
                                                  scope (its own entries; the global ones apply to it too)
      suppress import FILE [--reason R]           one entry a line (# comments); nothing is
                                                  imported when a line is bad (FILE:LINE says which)
    QUEUE is domain/vmta and may use * (gmail.com/*); a pause also holds matching queues
    that appear later, until resumed.
    The daemon is found from its configuration: --config FILE, else $PEREGRINE_CONFIG,
    else \(defaultConfigPath) when it exists; ctl reads http-mgmt-port and the management
    token (http-mgmt-token-file, by default SPOOL/mgmt-token) from it. --host/--port/--token-file
    override it. Without a token, only show and trace work.
    Tables by default; --json prints the daemon's JSON for scripts.
    """

    /// Where ctl looks for the daemon's configuration when not told (PowerMTA keeps its in /etc/pmta/config).
    static let defaultConfigPath = "/etc/peregrine/peregrine.conf"

    static func run(_ arguments: [String]) -> Int32 {
        var host = "127.0.0.1", port: UInt16 = 8080, json = false
        var hostGiven = false, portGiven = false
        var configPath: String?, tokenPath: String?, vmta: String?, jobID: String?
        var limit: Int?, offset: Int?, reason: String?, tenant: String?
        var words: [String] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            switch a {
            case "--host":
                guard i + 1 < arguments.count else { return fail("--host needs a value") }
                host = arguments[i + 1]; hostGiven = true; i += 2
            case "--port":
                guard i + 1 < arguments.count, let p = UInt16(arguments[i + 1]) else { return fail("--port needs a number 1-65535") }
                port = p; portGiven = true; i += 2
            case "--config":
                guard i + 1 < arguments.count else { return fail("--config needs a FILE") }
                configPath = arguments[i + 1]; i += 2
            case "--token-file":
                guard i + 1 < arguments.count else { return fail("--token-file needs a FILE") }
                tokenPath = arguments[i + 1]; i += 2
            case "--json":
                json = true; i += 1
            case "--vmta":
                guard i + 1 < arguments.count else { return fail("--vmta needs a VMTA name") }
                vmta = arguments[i + 1]; i += 2
            case "--job-id":
                guard i + 1 < arguments.count, !arguments[i + 1].isEmpty else { return fail("--job-id needs an ID") }
                jobID = arguments[i + 1]; i += 2
            case "--limit", "--offset":
                guard i + 1 < arguments.count, let n = Int(arguments[i + 1]), n >= 0 else { return fail("\(a) needs a number") }
                if a == "--limit" { limit = n } else { offset = n }
                i += 2
            case "--reason":
                guard i + 1 < arguments.count, ["operator", "hard-bounce", "complaint"].contains(arguments[i + 1]) else {
                    return fail("--reason takes operator, hard-bounce or complaint")
                }
                reason = arguments[i + 1]; i += 2
            case "--tenant":
                guard i + 1 < arguments.count, SuppressionKey.normaliseTenant(arguments[i + 1]) != nil else {
                    return fail("--tenant needs a tenant name (printable ASCII without spaces)")
                }
                tenant = arguments[i + 1]; i += 2
            case "-h", "--help":
                print(usage); return 0
            default:
                words.append(a); i += 1
            }
        }
        let request: (method: String, path: String, body: String?)
        /// More requests after `request` (an import sent in batches).
        var more: [(method: String, path: String, body: String?)] = []
        switch words.first {
        case "suppress":
            switch suppressRequests(Array(words.dropFirst()), limit: limit, offset: offset, reason: reason, tenant: tenant) {
            case .failure(let message):
                return message.hasPrefix("usage:") ? fail(String(message.dropFirst("usage:".count))) : failPlain(message.description)
            case .success(let list):
                request = list[0]
                more = Array(list.dropFirst())
            }
        case "show" where words.count == 3 && words[1] == "domain":
            request = ("GET", "/domain?name=\(query(words[2]))" + (vmta.map { "&vmta=\(query($0))" } ?? ""), nil)
        case "show":
            guard words.count == 2, ["status", "queues", "topqueues", "vmtas", "webhooks", "cluster"].contains(words[1]) else {
                return fail("show takes status, queues, topqueues, vmtas, webhooks, cluster or domain NAME")
            }
            request = ("GET", "/" + words[1], nil)
        case "trace":
            guard words.count == 2, words[1].contains("@") else { return fail("trace takes one ADDRESS (user@domain)") }
            request = ("GET", "/trace?address=\(query(words[1]))" + (vmta.map { "&vmta=\(query($0))" } ?? ""), nil)
        case "delete" where jobID != nil:
            guard words.count == 1 else { return fail("delete takes a QUEUE or --job-id ID, not both") }
            request = ("POST", "/jobs/delete", jsonObject(["job": jobID ?? ""]))
        case "reset":
            guard words.count == 2, words[1] == "counters" else { return fail("reset takes 'counters'") }
            request = ("POST", "/counters/reset", "{}")
        case "pause", "resume", "schedule", "delete":
            guard words.count == 2 else { return fail("\(words[0]) takes one QUEUE (domain/vmta, * allowed)") }
            request = ("POST", "/queues/\(words[0])", jsonObject(["queue": words[1]]))
        case "set-mode":
            guard words.count == 3, ["normal", "backoff"].contains(words[1]) else {
                return fail("set-mode takes normal|backoff and a QUEUE")
            }
            request = ("POST", "/queues/set-mode", jsonObject(["queue": words[2], "mode": words[1]]))
        case "reload":
            request = ("POST", "/reload", "{}")
        case nil:
            return fail("missing command")
        default:
            return fail("unknown command '\(words[0])'")
        }
        // Not told where the daemon is: its configuration at the usual place says.
        if configPath == nil && !hostGiven && !portGiven {
            if let env = ProcessInfo.processInfo.environment["PEREGRINE_CONFIG"], !env.isEmpty { configPath = env }
            else if FileManager.default.fileExists(atPath: defaultConfigPath) { configPath = defaultConfigPath }
        }
        if let configPath {
            let config: PeregrineConfig
            do { config = try PeregrineConfig.load(path: configPath) } catch {
                fputs("peregrine ctl: \(error)\n", stderr)
                return 1
            }
            guard let mgmt = config.httpManagement else {
                fputs("peregrine ctl: \(configPath) has no http-mgmt-port: the daemon serves no management API\n", stderr)
                return 1
            }
            if !hostGiven { host = mgmt.ip == "0.0.0.0" ? "127.0.0.1" : mgmt.ip }
            if !portGiven { port = mgmt.port }
            if tokenPath == nil { tokenPath = config.managementTokenPath }
        }
        var token: String?
        if let tokenPath {
            do { token = String(decoding: try ManagementToken.read(path: tokenPath), as: UTF8.self) } catch {
                // Reads need no token; anything else would only get a 401.
                guard request.method == "GET" else {
                    fputs("peregrine ctl: \(error) (run ctl as the daemon's user, or give --token-file)\n", stderr)
                    return 1
                }
            }
        }
        var added = 0
        for (n, r) in ([request] + more).enumerated() {
            switch httpRequest(host: host, port: port, method: r.method, path: r.path, body: r.body, token: token) {
            case .failure(let message):
                fputs("peregrine ctl: \(message)\n", stderr)
                if n > 0 { fputs("peregrine ctl: \(added) entries were added before the failure\n", stderr) }
                return 1
            case .success(let (status, body)):
                if json || status >= 300 {
                    print(body)
                    if status >= 300 { return 1 }
                    continue
                }
                if more.isEmpty {
                    print(render(path: r.path, body: body))
                } else if let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] {
                    added += (object["added"] as? Int) ?? 0
                    if n == more.count { print("imported: \(added) added, list now holds \(describe(object["count"])) entries") }
                }
            }
        }
        return 0
    }

    static func failPlain(_ message: String) -> Int32 {
        fputs("peregrine ctl: \(message)\n", stderr)
        return 1
    }

    /// Entries an import sends per request (well inside the management server's 1 MiB body limit).
    static let importBatch = 5000

    /// The requests of `ctl suppress ...`; a failure starting with `usage:` is a usage error.
    static func suppressRequests(_ words: [String], limit: Int?, offset: Int?, reason: String?, tenant: String? = nil)
        -> Result<[(method: String, path: String, body: String?)], CtlError> {
        let path = "/api/v1/suppressions"
        let tenantQuery = tenant.map { "&tenant=\(query($0))" } ?? ""
        func body(_ entries: [String]) -> String {
            var object: [String: Any] = ["entries": entries]
            if let reason { object["reason"] = reason }
            if let tenant { object["tenant"] = tenant }
            return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
                .flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
        }
        switch words.first {
        case "add", "remove":
            guard words.count >= 2 else { return .failure(CtlError("usage:suppress \(words[0]) takes one or more addresses or domains")) }
            return .success([(words[0] == "add" ? "POST" : "DELETE", path, body(Array(words.dropFirst())))])
        case "list":
            guard words.count == 1 else { return .failure(CtlError("usage:suppress list takes --limit N and --offset N only")) }
            return .success([("GET", path + "?limit=\(limit ?? 1000)&offset=\(offset ?? 0)" + tenantQuery, nil)])
        case "check":
            guard words.count == 2 else { return .failure(CtlError("usage:suppress check takes one ADDRESS or domain")) }
            return .success([("GET", path + "?address=\(query(words[1]))" + tenantQuery, nil)])
        case "import":
            guard words.count == 2 else { return .failure(CtlError("usage:suppress import takes one FILE")) }
            let file = words[1]
            guard let data = FileManager.default.contents(atPath: file) else { return .failure(CtlError("cannot read \(file)")) }
            var entries: [String] = [], bad: [String] = []
            for (i, raw) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
                if line.isEmpty || line.hasPrefix("#") { continue }
                if SuppressionKey.normalise(line) == nil {
                    bad.append("\(file):\(i + 1): not an address or domain: \(line.prefix(80))")
                } else {
                    entries.append(line)
                }
            }
            guard bad.isEmpty else {
                return .failure(CtlError(bad.prefix(20).joined(separator: "\n") + (bad.count > 20 ? "\n… \(bad.count - 20) more" : "")
                                         + "\nnothing was imported"))
            }
            guard !entries.isEmpty else { return .failure(CtlError("\(file) holds no entries")) }
            return .success(stride(from: 0, to: entries.count, by: importBatch).map {
                ("POST", path, body(Array(entries[$0..<min($0 + importBatch, entries.count)])))
            })
        default:
            return .failure(CtlError("usage:suppress takes add, remove, list, check or import"))
        }
    }

    struct CtlError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
        func hasPrefix(_ p: String) -> Bool { description.hasPrefix(p) }
        func dropFirst(_ k: Int) -> Substring { description.dropFirst(k) }
    }

    static func fail(_ message: String) -> Int32 {
        fputs("peregrine ctl: \(message)\n\(usage)\n", stderr)
        return 2
    }

    /// A query-string value, percent-encoded.
    static func query(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~@*")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }

    static func jsonObject(_ fields: [String: String]) -> String {
        (try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]))
            .flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
    }

    enum HTTPResult { case success((Int, String)), failure(String) }

    /// A blocking HTTP/1.0 exchange (the CLI edge: one request, then exit).
    static func httpRequest(host: String, port: UInt16, method: String, path: String, body: String?,
                            token: String? = nil) -> HTTPResult {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { return .failure("'\(host)' is not a numeric IPv4 address") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .failure("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            return .failure("cannot reach the management port \(host):\(port): \(String(cString: strerror(errno))) (is the daemon running? http-mgmt-port)")
        }
        let payload = body ?? ""
        var text = "\(method) \(path) HTTP/1.0\r\nHost: \(host)\r\nAccept: application/json\r\n"
        if let token { text += "Authorization: Bearer \(token)\r\n" }
        if body != nil { text += "Content-Type: application/json\r\nContent-Length: \(payload.utf8.count)\r\n" }
        text += "\r\n" + payload
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return .failure("send: \(String(cString: strerror(errno)))") }
            sent += n
        }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { return .failure("recv: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            response.append(contentsOf: chunk[0..<n])
        }
        let whole = String(decoding: response, as: UTF8.self)
        guard let headerEnd = whole.range(of: "\r\n\r\n") else { return .failure("malformed HTTP response") }
        let statusLine = whole[..<headerEnd.lowerBound].split(separator: "\r\n").first ?? ""
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { return .failure("malformed status line '\(statusLine)'") }
        return .success((status, String(whole[headerEnd.upperBound...])))
    }

    /// Tables for people; scripts use --json.
    static func render(path: String, body: String) -> String {
        guard let data = body.data(using: .utf8),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return body }
        switch path.split(separator: "?").first.map(String.init) ?? path {
        case "/api/v1/suppressions" where object["entries"] != nil:
            var rows = [["ENTRY", "TENANT", "REASON", "SINCE"]]
            for e in object["entries"] as? [[String: Any]] ?? [] {
                let t = (e["time"] as? Int).map { ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval($0))) } ?? ""
                rows.append([describe(e["entry"]), (e["tenant"] as? String) ?? "(global)", describe(e["reason"]), t])
            }
            return table(rows) + "\n(\(describe(object["count"])) entries on the list)"
        case "/webhooks":
            var rows = [["WEBHOOK", "URL", "BACKLOG", "OLDEST", "SENT", "FAILURES", "EXPIRED", "LAST ERROR"]]
            for w in object["webhooks"] as? [[String: Any]] ?? [] {
                rows.append([describe(w["name"]), describe(w["url"]), num(w["backlog"]), num(w["oldestPendingSeconds"]) + "s",
                             num(w["sent"]), num(w["failures"]), num(w["expired"]), describe(w["lastError"])])
            }
            return table(rows)
        case "/cluster":
            guard object["enabled"] as? Bool == true else { return "not a cluster (no cluster-redis)" }
            var lines = [
                "node: \(describe(object["node"])) (1 of \(num(object["nodeCount"])) configured)",
                "mode: \(describe(object["mode"]))",
                "redis: \(describe(object["redis"])) \(object["connected"] as? Bool == true ? "connected" : "not connected")"
                    + ((object["lastError"] as? String).flatMap { $0.isEmpty ? nil : " (last error: \($0))" } ?? ""),
                "redis latency: \(num(object["latencyMicroseconds"])) us",
                "nodes seen: \(num(object["nodesSeen"]))",
                "round trips: \(num(object["roundTrips"])) (rate refills \(num(object["rateRoundTrips"])))",
            ]
            var rows = [["SITE", "LEASES", "TOKENS"]]
            for site in object["sites"] as? [[String: Any]] ?? [] {
                rows.append([describe(site["site"]), num(site["leases"]), num(site["tokensGranted"])])
            }
            if rows.count > 1 { lines.append(table(rows)) }
            return lines.joined(separator: "\n")
        case "/vmtas":
            var rows = [["VMTA", "SOURCE IP", "HOST NAME", "POOLS", "CONN", "QUEUED"]]
            for v in object["vmtas"] as? [[String: Any]] ?? [] {
                rows.append([describe(v["name"]), describe(v["sourceIP"]), describe(v["hostName"]),
                             (v["pools"] as? [String] ?? []).joined(separator: ","), num(v["connections"]), num(v["queued"])])
            }
            return table(rows)
        case "/domain", "/trace":
            var rows = [["KEY", "VALUE"]]
            for key in object.keys.sorted() where key != "settings" && key != "queueNow" {
                rows.append([key, describe(object[key])])
            }
            for (prefix, nestedKey) in [("queue now.", "queueNow"), ("", "settings")] {
                let nested = object[nestedKey] as? [String: Any] ?? [:]
                for k in nested.keys.sorted() { rows.append([prefix + k, describe(nested[k])]) }
            }
            return table(rows)
        case "/queues", "/topqueues":
            let queues = object["queues"] as? [[String: Any]] ?? []
            var rows = [["QUEUE", "MODE", "READY", "DELAYED", "CONN", "RATE", "DELIVERED", "BOUNCED", "DEFERRED", "SITE", "LAST REPLY"]]
            for q in queues {
                var mode = q["mode"] as? String ?? "?"
                if (q["paused"] as? Bool) == true { mode += ",paused" }
                if let s = q["suspendedSeconds"] as? Double, s > 0 { mode += ",suspended \(Int(s))s" }
                if let src = q["disabledSource"] as? String, !src.isEmpty { mode += ",source \(src) disabled" }
                rows.append([q["queue"] as? String ?? "?", mode, num(q["ready"]), num(q["delayed"]), num(q["connections"]),
                             describe(q["rate"]), num(q["delivered"]), num(q["bounced"]), num(q["deferred"]),
                             q["site"] as? String ?? "", String((q["lastReply"] as? String ?? "").prefix(60))])
            }
            return table(rows)
        case "/status":
            var rows = [["KEY", "VALUE"]]
            for key in object.keys.sorted() {
                if let nested = object[key] as? [String: Any] {
                    for k in nested.keys.sorted() {
                        if let list = nested[k] as? [[String: Any]] {
                            // e.g. spool.streams[0].state
                            for (i, e) in list.enumerated() {
                                for f in e.keys.sorted() { rows.append(["\(key).\(k)[\(i)].\(f)", describe(e[f])]) }
                            }
                        } else {
                            rows.append(["\(key).\(k)", describe(nested[k])])
                        }
                    }
                } else {
                    rows.append([key, describe(object[key])])
                }
            }
            return table(rows)
        default:
            return object.keys.sorted().map { "\($0): \(describe(object[$0]))" }.joined(separator: "\n")
        }
    }

    static func num(_ v: Any?) -> String { describe(v) }

    static func describe(_ v: Any?) -> String {
        switch v {
        case let n as NSNumber: return n.stringValue
        case let s as String: return s
        case let other?: return "\(other)"
        case nil: return ""
        }
    }

    static func table(_ rows: [[String]]) -> String {
        guard let first = rows.first else { return "" }
        var widths = Array(repeating: 0, count: first.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        return rows.map { r in
            r.enumerated().map { i, c in i == r.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }.joined(separator: "\n")
    }
}
