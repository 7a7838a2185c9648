import PeregrineIO
import PeregrineEngine
import PeregrineConfig

/// Where a queue's mail goes: the `route` directive first (a numeric host is
/// used as is, a name is resolved), otherwise the domain's MX hosts through
/// `lookup` (the DNS client). Port 25 unless the route says otherwise.
public final class DaemonRouter: DeliveryRouter {
    public typealias Lookup = (_ domain: String, _ done: @escaping (Result<[RouteHost], RouteFailure>) -> Void) -> Void
    public typealias AddressLookup = (_ host: String, _ port: UInt16, _ done: @escaping (Result<[RouteHost], RouteFailure>) -> Void) -> Void
    let policies: DeliveryPolicySource
    let mxLookup: Lookup?
    let addressLookup: AddressLookup?

    public init(policies: DeliveryPolicySource, mxLookup: Lookup?, addressLookup: AddressLookup?) {
        self.policies = policies
        self.mxLookup = mxLookup
        self.addressLookup = addressLookup
    }

    public func hosts(for queue: QueueKey, _ done: @escaping (Result<[RouteHost], RouteFailure>) -> Void) {
        let policy = policies.policy(for: queue)
        if !policy.smtpHosts.isEmpty {
            resolve(policy.smtpHosts[...], found: [], failures: [], done)
            return
        }
        if let route = policy.route {
            let port = route.port ?? 25
            if route.isNumeric, let address = try? SocketAddress(ip: route.host, port: port) {
                done(.success([RouteHost(name: route.host, address: address)]))
            } else if let addressLookup {
                addressLookup(route.host, port, done)
            } else {
                done(.failure(.temporary("route host \(route.host) needs DNS, and no DNS client is configured")))
            }
            return
        }
        guard let mxLookup else {
            done(.failure(.temporary("no route for \(queue.domain) and no DNS client configured (dns-server)")))
            return
        }
        mxLookup(queue.domain, done)
    }

    /// `smtp-hosts`: each entry in order, its addresses appended to the list
    /// the connection tries. Entries that fail are left out; only when all
    /// fail does the queue fail (no mail host only if every entry had none).
    private func resolve(_ rest: ArraySlice<HostPort>, found: [RouteHost], failures: [RouteFailure],
                         _ done: @escaping (Result<[RouteHost], RouteFailure>) -> Void) {
        guard let entry = rest.first else {
            if !found.isEmpty { done(.success(found)); return }
            let reasons = failures.map { f -> String in
                switch f { case .noMailHost(let w), .temporary(let w): return w }
            }.joined(separator: "; ")
            let allPermanent = failures.allSatisfy { if case .noMailHost = $0 { return true } else { return false } }
            done(.failure(allPermanent ? .noMailHost("smtp-hosts: \(reasons)") : .temporary("smtp-hosts: \(reasons)")))
            return
        }
        let next = rest.dropFirst()
        let collect: (Result<[RouteHost], RouteFailure>) -> Void = { [self] result in
            switch result {
            case .success(let hosts): resolve(next, found: found + hosts, failures: failures, done)
            case .failure(let f): resolve(next, found: found, failures: failures + [f], done)
            }
        }
        let port = entry.port ?? 25
        if entry.isNumeric, let address = try? SocketAddress(ip: entry.host, port: port) {
            collect(.success([RouteHost(name: entry.host, address: address)]))
        } else if entry.isLiteral {
            guard let addressLookup else { collect(.failure(.temporary("\(entry.host) needs DNS, and no DNS client is configured"))); return }
            addressLookup(entry.host, port, collect)
        } else {
            // A bare name is a mail domain: its MX hosts (A fallback), on the entry's port if it has one.
            guard let mxLookup else { collect(.failure(.temporary("\(entry.host) needs DNS, and no DNS client is configured"))); return }
            mxLookup(entry.host) { result in
                guard let p = entry.port else { collect(result); return }
                collect(result.map { hosts in hosts.map { RouteHost(name: $0.name, address: $0.address.withPort(p)) } })
            }
        }
    }
}
