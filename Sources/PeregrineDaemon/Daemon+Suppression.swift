import Foundation
import PeregrineIO
import PeregrineSMTP
import PeregrineHTTP
import PeregrineSpool
import PeregrineAccounting

/// The suppression list in the daemon (issue 16): opened from
/// `SPOOL/suppression.log` at start, filled from hard bounces and
/// complaints, checked at RCPT (InjectionHandler) and before a DSN
/// (DSNGenerator), and managed through `/api/v1/suppressions`.
extension Daemon {
    /// Where the list lives: beside the spool's streams (recovery reads only `loop-N`).
    static func suppressionPath(spool: String) -> String { spool + "/suppression.log" }

    /// Opens and loads the list; false (logged) when it cannot be used.
    func openSuppressionList() -> Bool {
        let path = Self.suppressionPath(spool: config.spoolPath)
        do {
            let (list, report) = try SuppressionList.open(path: path)
            list.report = { [weak self] in self?.log($0) }
            if let damage = report.damage {
                log("suppression list \(path): \(report.damagedBytes) byte(s) after the last whole record cut off (\(damage))")
            }
            log("suppression list \(path): \(report.entries) entr\(report.entries == 1 ? "y" : "ies") loaded "
                + "from \(report.records) record(s) in \(String(format: "%.2f", report.seconds)) s")
            suppression = list
            return true
        } catch {
            log("cannot open the suppression list \(path): \(error)")
            return false
        }
    }

    /// Bounce categories that put the recipient on the list: the address
    /// itself, never its whole domain (one `bad-domain` answer, perhaps a DNS
    /// failure, must not stop a domain; the operator can add it).
    static func suppressesRecipient(bounceCategory: String) -> Bool {
        bounceCategory == "bad-mailbox" || bounceCategory == "inactive-mailbox" || bounceCategory == "bad-domain"
    }

    /// A `b` or `rb` record's recipient after a hard bounce.
    func suppressAfterBounce(recipient: String, category: String) {
        guard Self.suppressesRecipient(bounceCategory: category) else { return }
        suppress(recipient, reason: .bounce)
    }

    /// Adds `address` if it is one (records carry what peers sent).
    func suppress(_ address: String, reason: SuppressionReason) {
        guard let list = suppression, let text = SuppressionKey.normalise(address), !SuppressionKey.isDomain(text) else { return }
        let now = wallClockSeconds()
        if list.apply(.add, normalised: text, reason: reason, time: now) { publishSuppression(.add, text, reason, now) }
    }

    /// The list's records from inbound reports: `rb` hard bounces and `f` complaints.
    func suppress(from record: AccountingRecord) {
        switch record.type {
        case .remoteBounce: suppressAfterBounce(recipient: record.rcpt, category: record.bounceCat)
        case .feedbackLoop: suppress(record.rcpt, reason: .complaint)
        default: break
        }
    }

    /// The 550 a suppressed recipient gets at RCPT. Bytes a peer could use to
    /// break the reply line are never in `address` (the SMTP parser refuses them);
    /// anything non-printable is replaced anyway.
    static func suppressedReply(_ address: String, _ reason: SuppressionReason, tenant: String? = nil) -> SMTPReply {
        let shown = String(decoding: address.utf8.prefix(SuppressionKey.maxLength).map { $0 < 0x20 || $0 == 0x7f ? UInt8(ascii: "?") : $0 },
                           as: UTF8.self)
        return SMTPReply(code: 550, enhancedCode: EnhancedStatusCode(5, 7, 1),
                         "<\(shown)>: recipient is suppressed (\(reason.name)\(tenant.map { ", tenant \($0)" } ?? ""))")
    }

    /// The `s` accounting record of a refused recipient (`srcType` `smtp`, or `api` for HTTP injection).
    func logSuppressed(sender: String, recipient: String, reason: SuppressionReason, reply: SMTPReply, peer: String,
                       srcType: String = "smtp") {
        guard accounting.accepts(.suppressed) else { return }
        accounting.log(AccountingRecord(
            type: .suppressed, timeLogged: wallClockSeconds(), orig: sender, rcpt: recipient, dsnAction: "failed",
            dsnStatus: AccountingRecord.dsnStatus(enhancedCode: "5.7.1", replyCode: 550),
            dsnDiag: "smtp;\(reply.code) \(reply.enhancedCode.map { "\($0) " } ?? "")\(reply.lines.joined(separator: " "))",
            bounceCat: reason.name, srcType: srcType, srcMta: peer))
    }

    /// For injection paths other than SMTP (the HTTP API's per-recipient
    /// status): the refusal text for a suppressed `recipient`, with its `s`
    /// record logged; nil when it is not suppressed.
    func suppressionRefusal(recipient: String, sender: String, peer: String, srcType: String, tenant: String? = nil) -> String? {
        guard let match = suppression?.match(recipient: recipient, tenant: tenant.flatMap { SuppressionKey.normaliseTenant($0) }) else {
            return nil
        }
        let reply = Self.suppressedReply(recipient, match.reason, tenant: match.scoped ? tenant : nil)
        logSuppressed(sender: sender, recipient: recipient, reason: match.reason, reply: reply, peer: peer, srcType: srcType)
        return reply.lines.joined(separator: " ")
    }

    // MARK: Management API

    /// `/api/v1/suppressions`: GET lists (`offset`, `limit`) or checks one
    /// `address`; POST adds `{"entries": [...], "reason": "operator"}` (or
    /// `address`); DELETE removes the same. Adds and removes are answered
    /// after the list's fsync covered them. False when the path is another.
    func handleSuppressionAPI(_ request: HTTPRequest, respond: @escaping (HTTPResponse) -> Void) -> Bool {
        guard request.path == "/api/v1/suppressions" else { return false }
        guard let list = suppression else {
            respond(.error(503, "the suppression list is not open"))
            return true
        }
        let home = workers[0]
        let reply = LoopConfined(respond)
        // Called on the list's writer thread: the answer goes out on the management loop.
        let answer: (HTTPResponse) -> Void = { response in home.loop.execute { reply.value(response) } }
        switch request.method {
        case "GET", "HEAD":
            let tenantName = request.queryParameter("tenant")
            let tenant = tenantName.flatMap { SuppressionKey.normaliseTenant($0) }
            if let tenantName, tenant == nil {
                respond(.error(400, "'tenant' is not a tenant name (1-128 printable ASCII characters without spaces): \(tenantName)"))
                return true
            }
            if let address = request.queryParameter("address") {
                guard SuppressionKey.normalise(address) != nil else {
                    respond(.error(400, "'address' is not an address or domain: \(address)"))
                    return true
                }
                // As the tenant's mail sees it: its own entries, then the global ones.
                let match = list.match(recipient: address.contains("@") ? address : "@" + address, tenant: tenant)
                var body: [String: Any] = ["address": address, "suppressed": match != nil]
                if let match {
                    body["reason"] = match.reason.name
                    body["scope"] = match.scoped ? "tenant" : "global"
                }
                if let tenantName { body["tenant"] = tenantName }
                respond(Self.json(body))
                return true
            }
            let offset = request.queryParameter("offset").flatMap { Int($0) } ?? 0
            let limit = request.queryParameter("limit").flatMap { Int($0) } ?? 1000
            guard offset >= 0, limit >= 0, limit <= 100_000 else {
                respond(.error(400, "offset must be 0 or more and limit 0 to 100000"))
                return true
            }
            let total = list.count
            // ?tenant=NAME: that tenant's own entries only; else every entry, scoped ones with their tenant.
            let prefix = tenant.map { $0 + [0x20] }
            let including: ((UnsafeRawBufferPointer) -> Bool)? = prefix.map { p in { $0.starts(with: p) } }
            list.entries(offset: offset, limit: limit, including: including) { result in
                switch result {
                case .success(let entries):
                    answer(Self.json(["count": total, "offset": offset,
                                      "entries": entries.map { e -> [String: Any] in
                                          let (t, entry) = SuppressionKey.split(Array(e.text.utf8))
                                          var o: [String: Any] = ["entry": entry, "reason": e.reason.name, "time": e.time]
                                          if let t { o["tenant"] = t }
                                          return o
                                      }]))
                case .failure(let e):
                    answer(.error(500, "cannot read the suppression list: \(e)"))
                }
            }
        case "POST", "DELETE":
            let adding = request.method == "POST"
            let parsed: (entries: [String], reason: SuppressionReason, tenant: [UInt8]?)
            switch Self.suppressionEntries(request) {
            case .failure(let problem):
                respond(.error(400, problem.description))
                return true
            case .success(let p):
                parsed = p
            }
            var invalid: [String] = []
            var valid: [[UInt8]] = []
            for e in parsed.entries {
                if let text = SuppressionKey.normalise(e) {
                    valid.append(SuppressionKey.scoped(text, tenant: parsed.tenant))
                } else {
                    invalid.append(e)
                }
            }
            guard invalid.isEmpty else {
                // Nothing changes when any entry is bad: the caller fixes the list and sends it again.
                respond(.error(422, "not an address or domain: " + invalid.prefix(10).map { "'\($0)'" }.joined(separator: ", ")
                               + (invalid.count > 10 ? " and \(invalid.count - 10) more" : "") + "; nothing was changed"))
                return true
            }
            var changed = 0
            let now = wallClockSeconds()
            for text in valid where list.apply(adding ? .add : .remove, normalised: text, reason: parsed.reason, time: now) {
                changed += 1
                publishSuppression(adding ? .add : .remove, text, parsed.reason, now)
            }
            let unchanged = valid.count - changed
            list.sync { error in
                if let error {
                    answer(.error(500, "the suppression list could not be written (\(error)); the change holds until a restart"))
                } else {
                    answer(Self.json(adding ? ["added": changed, "unchanged": unchanged, "count": list.count]
                                            : ["removed": changed, "absent": unchanged, "count": list.count]))
                }
            }
        default:
            respond(.methodNotAllowed(["GET", "HEAD", "POST", "DELETE"]))
        }
        return true
    }

    /// The entries of a POST or DELETE: a JSON body `{"entries": [...]}` or
    /// `{"address": "..."}`, else the `address` query or form parameter;
    /// `reason` (operator, hard-bounce, complaint) defaults to operator.
    static func suppressionEntries(_ request: HTTPRequest)
        -> Result<(entries: [String], reason: SuppressionReason, tenant: [UInt8]?), SuppressionRequestError> {
        var entries: [String] = []
        var reasonName = request.queryParameter("reason")
        var tenantName = request.queryParameter("tenant")
        if !request.body.isEmpty && ManagementRequestGuard.mediaType(request.header("Content-Type")) == "application/json" {
            guard let object = try? JSONSerialization.jsonObject(with: Data(request.body)) as? [String: Any] else {
                return .failure(SuppressionRequestError("the body is not a JSON object"))
            }
            if let list = object["entries"] {
                guard let strings = list as? [String] else { return .failure(SuppressionRequestError("'entries' must be an array of strings")) }
                entries = strings
            }
            if let one = object["address"] {
                guard let s = one as? String else { return .failure(SuppressionRequestError("'address' must be a string")) }
                entries.append(s)
            }
            if let r = object["reason"] {
                guard let s = r as? String else { return .failure(SuppressionRequestError("'reason' must be a string")) }
                reasonName = s
            }
            if let t = object["tenant"] {
                guard let s = t as? String else { return .failure(SuppressionRequestError("'tenant' must be a string")) }
                tenantName = s
            }
        } else {
            let params = parameters(request)
            if let a = params["address"] { entries.append(a) }
            if let r = params["reason"] { reasonName = r }
            if let t = params["tenant"] { tenantName = t }
        }
        var tenant: [UInt8]?
        if let tenantName {
            guard let t = SuppressionKey.normaliseTenant(tenantName) else {
                return .failure(SuppressionRequestError("'tenant' is not a tenant name (1-128 printable ASCII characters without spaces)"))
            }
            tenant = t
        }
        guard !entries.isEmpty else { return .failure(SuppressionRequestError("no entries given ('entries' or 'address')")) }
        guard let reason = reasonName.map({ SuppressionReason(name: $0) }) ?? .manual else {
            return .failure(SuppressionRequestError("'reason' must be operator, hard-bounce or complaint"))
        }
        return .success((entries, reason, tenant))
    }
}

/// Why a suppression request's body was refused (the 400's text).
struct SuppressionRequestError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
