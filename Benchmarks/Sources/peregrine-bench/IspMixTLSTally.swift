/// The isp-mix deliveries by provider and TLS protocol, from the `d` records'
/// `dlvTlsProtocol` (empty: delivered in plain text).
struct IspMixTLSTally {
    struct Count {
        var delivered = 0
        var overTLS = 0
        var protocols: [String: Int] = [:]

        var plain: Int { delivered - overTLS }
        /// "TLSv1.3=120,TLSv1.2=3", most used first ("-" when none).
        var protocolList: String {
            protocols.isEmpty ? "-" : protocols.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        }
        var json: [String: Any] { ["delivered": delivered, "overTLS": overTLS, "plain": plain, "protocols": protocols] }
    }

    private(set) var byProvider: [String: Count] = [:]
    private(set) var overall = Count()

    init(deliveryProtocols: [String: [String: Int]]) {
        for (domain, protocols) in deliveryProtocols {
            let name = IspMixProvider.name(ofDomain: domain)
            for (proto, n) in protocols {
                byProvider[name, default: Count()].delivered += n
                overall.delivered += n
                guard !proto.isEmpty else { continue }
                byProvider[name, default: Count()].overTLS += n
                byProvider[name, default: Count()].protocols[proto, default: 0] += n
                overall.overTLS += n
                overall.protocols[proto, default: 0] += n
            }
        }
    }

    var gmail: Count { byProvider["gmail"] ?? Count() }

    /// "overTLS/delivered".
    static func ratio(_ c: Count) -> String { "\(c.overTLS)/\(c.delivered)" }

    var json: [String: Any] {
        ["overall": overall.json, "byProvider": byProvider.mapValues(\.json)]
    }

    /// One line per provider for the run's log.
    var lines: [String] {
        byProvider.sorted { $0.key < $1.key }.map { "\($0.key) \(Self.ratio($0.value)) over TLS (\($0.value.protocolList))" }
    }
}
