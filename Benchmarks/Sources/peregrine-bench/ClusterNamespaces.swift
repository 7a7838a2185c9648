import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The issue's rig for `peregrine-bench cluster --netns yes`: each node in
/// its own network namespace with its own address, joined by a veth pair to
/// one bridge in the bench's namespace, where the sink, Redis and the
/// loadgens are (the bridge's address, `.254`). As a real cluster: the
/// nodes reach Redis and the sink over a link, not over loopback. Needs root
/// (`ip netns`, `ip link`). Names carry the bench's pid, so two runs do not
/// collide; the subnet is 10.201.(pid mod 200 + 20).0/24.
final class ClusterNamespaces {
    let ipTool: String
    let tag: Int
    let bridge: String
    let namespaces: [String]
    let nodeIPs: [String]
    let bridgeIP: String
    let subnet: String
    private var torn = false

    struct Failure: Error, CustomStringConvertible { var description: String }

    init(nodes: Int) throws {
        guard let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw Failure(description: "--netns needs the ip tool (iproute2)")
        }
        ipTool = ip
        tag = Int(getpid()) % 100_000
        let octet = Int(getpid()) % 200 + 20
        bridge = "pgbr\(tag)"
        let tag = self.tag
        namespaces = (0..<nodes).map { "pgcl\(tag)-\($0 + 1)" }
        nodeIPs = (0..<nodes).map { "10.201.\(octet).\($0 + 1)" }
        bridgeIP = "10.201.\(octet).254"
        subnet = "10.201.\(octet).0/24"
        do { try setUp() } catch { tearDown(); throw error }
    }

    private func run(_ arguments: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ipTool)
        p.arguments = arguments
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw Failure(description: "ip \(arguments.joined(separator: " ")): \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    private func setUp() throws {
        try run(["link", "add", bridge, "type", "bridge"])
        try run(["addr", "add", bridgeIP + "/24", "dev", bridge])
        try run(["link", "set", bridge, "up"])
        for (k, ns) in namespaces.enumerated() {
            let host = "pgh\(tag)-\(k + 1)", inside = "pgn\(tag)-\(k + 1)"
            try run(["netns", "add", ns])
            try run(["link", "add", host, "type", "veth", "peer", "name", inside, "netns", ns])
            try run(["link", "set", host, "master", bridge, "up"])
            try run(["-n", ns, "addr", "add", nodeIPs[k] + "/24", "dev", inside])
            try run(["-n", ns, "link", "set", inside, "up"])
            try run(["-n", ns, "link", "set", "lo", "up"])
        }
        fputs("   network namespaces \(namespaces.joined(separator: ", ")) (\(nodeIPs.joined(separator: ", "))), bridge \(bridge) \(bridgeIP)\n", stderr)
    }

    /// Deletes the namespaces (their veth ends go with them) and the bridge.
    /// Call once the nodes have stopped.
    func tearDown() {
        guard !torn else { return }
        torn = true
        for ns in namespaces { try? run(["netns", "del", ns]) }
        try? run(["link", "del", bridge])
    }

    /// EHLO and MAIL/RSET pairs from inside namespace `k` (so from node k's
    /// address) to the penalty provider until it answers 4.7.28; that line.
    func tripPenalty(namespace k: Int, hub: String, port: UInt16) -> String? {
        let script = """
        import socket, sys
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
        s.sendall(b"EHLO trip.test\\r\\n" + b"MAIL FROM:<trip@peregrine.test>\\r\\nRSET\\r\\n" * 16)
        text = b""
        while b"4.7.28" not in text:
            chunk = s.recv(4096)
            if not chunk: break
            text += chunk
        for line in text.decode(errors="replace").split("\\r\\n"):
            if "4.7.28" in line: print(line); break
        """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: ipTool)
        p.arguments = ["netns", "exec", namespaces[k], "/usr/bin/env", "python3", "-c", script, hub, "\(port)"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return nil }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let line = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return line.isEmpty ? nil : line
    }
}
