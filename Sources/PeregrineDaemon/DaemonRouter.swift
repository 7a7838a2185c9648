import PeregrineIO
import PeregrineEngine

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
        if let route = policies.policy(for: queue).route {
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
}
