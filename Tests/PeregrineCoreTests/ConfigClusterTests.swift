import Testing
import PeregrineIO
@testable import PeregrineDaemon

/// The cluster directives (CLUSTER.md): read, defaulted, and bad values
/// refused with file:line.
@Suite struct ConfigClusterTests {
    struct Refused: Error { let text: String }
    func parse(_ text: String) -> Result<PeregrineConfig, Refused> {
        do { return .success(try PeregrineConfig.parse(text, file: "c.conf")) } catch { return .failure(Refused(text: error.description)) }
    }

    @Test func clusterDirectivesAreRead() throws {
        let c = try parse("cluster-redis 127.0.0.5\ncluster-node-name mta-1\ncluster-node-count 3\n").get()
        #expect(c.cluster.redis == (try SocketAddress(ip: "127.0.0.5", port: 6379)))
        #expect(c.cluster.nodeName == "mta-1")
        #expect(c.cluster.nodeCount == 3)
        let other = try parse("cluster-redis 10.0.0.5:7000\n").get()
        #expect(other.cluster.redis == (try SocketAddress(ip: "10.0.0.5", port: 7000)))
        #expect(other.cluster.nodeName == nil && other.cluster.nodeCount == 1)
        #expect(other.cluster.leaseTTL == .seconds(10))
        #expect(try parse("cluster-redis 127.0.0.5\ncluster-lease-ttl 2s\n").get().cluster.leaseTTL == .seconds(2))
        // Without cluster-redis: not a cluster.
        #expect(try parse("").get().cluster.redis == nil)
    }

    @Test func badValuesAreRefusedWithTheLine() {
        func error(_ text: String) -> String? {
            if case .failure(let e) = parse(text) { return e.text } else { return nil }
        }
        #expect(error("\ncluster-redis redis.example:6379\n")?.hasPrefix("c.conf:2: cluster-redis: 'redis.example:6379' is not an IP address") == true)
        #expect(error("cluster-node-count 0\n")?.hasPrefix("c.conf:1: cluster-node-count") == true)
        #expect(error("cluster-node-count many\n")?.hasPrefix("c.conf:1: cluster-node-count") == true)
        #expect(error("cluster-lease-ttl 500ms\n") == "c.conf:1: cluster-lease-ttl: between 1s and 10m")
        #expect(error("cluster-lease-ttl 1h\n") == "c.conf:1: cluster-lease-ttl: between 1s and 10m")
        #expect(error("cluster-lease-ttl soon\n")?.hasPrefix("c.conf:1: cluster-lease-ttl") == true)
        #expect(error("cluster-node-name \"a b\"\n") == "c.conf:1: cluster-node-name: 'a b' must be printable ASCII without spaces")
        // A per-domain cap at the top level says where it belongs.
        #expect(error("cluster-max-smtp-out 5\n") == "c.conf:1: cluster-max-smtp-out is not allowed at the top level (it belongs in <domain>)")
    }

    @Test func perDomainClusterCapsAreReadAndInherited() throws {
        let c = try parse("""
            cluster-redis 127.0.0.5
            <domain *>
                cluster-max-msg-rate 3600/h
            </domain>
            <domain gmail.test>
                cluster-max-smtp-out 40
                cluster-max-msg-rate 100000/h
            </domain>

            """).get()
        let gmail = c.settings(forDomain: "gmail.test")
        #expect(gmail.clusterMaxSMTPOut == 40)
        #expect(gmail.clusterMaxMsgRate == .limited(count: 100_000, per: .seconds(3600)))
        // The wildcard's rate applies to every other domain, each its own cap; no connection cap there.
        let other = c.settings(forDomain: "other.test")
        #expect(other.clusterMaxSMTPOut == nil)
        #expect(other.clusterMaxMsgRate == .limited(count: 3600, per: .seconds(3600)))
    }

    @Test func perDomainClusterCapsNeedClusterRedis() {
        func error(_ text: String) -> String? {
            if case .failure(let e) = parse(text) { return e.text } else { return nil }
        }
        // Refused at the directive's line, not parsed and ignored.
        #expect(error("<domain gmail.test>\n    max-smtp-out 5\n    cluster-max-smtp-out 40\n</domain>\n")
                == "c.conf:3: cluster-max-smtp-out needs cluster-redis (the cluster's shared limits live in Redis; CLUSTER.md)")
        #expect(error("<domain *>\n    cluster-max-msg-rate 100/h\n</domain>\n")?.hasPrefix("c.conf:2: cluster-max-msg-rate needs cluster-redis") == true)
        #expect(error("cluster-redis 127.0.0.5\n<domain a.test>\n    cluster-max-smtp-out 0\n</domain>\n")?.hasPrefix("c.conf:3: cluster-max-smtp-out") == true)
        #expect(error("cluster-redis 127.0.0.5\n<domain a.test>\n    cluster-max-msg-rate fast\n</domain>\n")?.hasPrefix("c.conf:3: cluster-max-msg-rate") == true)
    }
}
