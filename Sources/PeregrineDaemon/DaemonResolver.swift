import PeregrineIO
import PeregrineDNS
import PeregrineEngine

/// Adapts the project's DNS client to the router: MX hosts (A fallback) in
/// preference order, every address of each host tried in turn, port 25.
/// Permanent DNS answers (NXDOMAIN, no MX/A, null MX) are `noMailHost`, the
/// rest temporary. Without a DNS server configured or found in
/// /etc/resolv.conf, every lookup fails temporarily with that reason.
final class DaemonResolver<Loop: EventLoop> {
    private var resolver: DNSResolver<Loop>?
    private let setupError: String?

    init(loop: Loop, servers: [SocketAddress]) {
        let list = servers.isEmpty ? DNSServers.fromResolvConf() : servers
        if list.isEmpty {
            resolver = nil
            setupError = "no DNS server (set dns-server or /etc/resolv.conf)"
            return
        }
        do {
            resolver = try DNSResolver(loop: loop, options: DNSResolver<Loop>.Options(servers: list))
            setupError = nil
        } catch {
            resolver = nil
            setupError = "DNS client: \(error)"
        }
    }

    var mxLookup: DaemonRouter.Lookup {
        return { [self] domain, done in
            guard let resolver else { done(.failure(.temporary(setupError ?? "no DNS"))); return }
            resolver.resolveMX(domain) { result in
                switch result {
                case .success(let mx):
                    var hosts: [RouteHost] = []
                    for h in mx { for a in h.addresses { hosts.append(RouteHost(name: h.name, address: a.withPort(25))) } }
                    done(hosts.isEmpty ? .failure(.noMailHost("\(domain): no address for any MX")) : .success(hosts))
                case .failure(let e):
                    done(.failure(e.isPermanent ? .noMailHost(e.description) : .temporary(e.description)))
                }
            }
        }
    }

    var addressLookup: DaemonRouter.AddressLookup {
        return { [self] host, port, done in
            guard let resolver else { done(.failure(.temporary(setupError ?? "no DNS"))); return }
            resolver.resolveA(host) { result in
                switch result {
                case .success(let addresses) where !addresses.isEmpty:
                    done(.success(addresses.map { RouteHost(name: host, address: $0.withPort(port)) }))
                case .success:
                    done(.failure(.temporary("route host \(host) has no address")))
                case .failure(let e):
                    done(.failure(.temporary("route host \(host): \(e)")))
                }
            }
        }
    }
}
