#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// DKIM verification by programs that share no code with PeregrineDKIM:
/// Python's dkimpy and OpenDKIM's `opendkim-testmsg`. Keys are generated at
/// test time with the `openssl` command; the DNS records they need are
/// served from memory (dkimpy's `dnsfunc`) or by a UDP responder on a
/// private loopback address that `opendkim-testmsg` reaches through its own
/// mount namespace's /etc/resolv.conf (libopendkim has no key-file option
/// in verify mode; it asks the system resolver).
public enum DKIMExternalVerifiers {
    /// A key pair made by `openssl genpkey` in `directory`.
    public struct TestKey: Sendable {
        public var privateKeyPath: String
        public var publicKeyPath: String
        /// The TXT record text (`v=DKIM1; k=…; p=…`), built from openssl's DER output.
        public var record: String
    }

    public enum KeyKind: String, Sendable { case rsa1024, rsa2048, rsa4096, ed25519 }

    /// Generates a key with the openssl command line (not with the code under test).
    public static func makeKey(_ kind: KeyKind, name: String, in directory: String) throws -> TestKey {
        guard let openssl = findTool("openssl") else { throw ToolError("openssl is not installed") }
        let priv = "\(directory)/\(name).key.pem", pub = "\(directory)/\(name).pub.pem", der = "\(directory)/\(name).pub.der"
        let algorithm: [String]
        switch kind {
        case .rsa1024: algorithm = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"]
        case .rsa2048: algorithm = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        case .rsa4096: algorithm = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"]
        case .ed25519: algorithm = ["-algorithm", "ED25519"]
        }
        for args in [["genpkey"] + algorithm + ["-out", priv], ["pkey", "-in", priv, "-pubout", "-out", pub],
                     ["pkey", "-in", priv, "-pubout", "-outform", "DER", "-out", der]] {
            let (rc, out) = runTool(openssl, args, seconds: 120)
            guard rc == 0 else { throw ToolError("openssl \(args.joined(separator: " ")): \(out)") }
        }
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: der)))
        let record: String
        if kind == .ed25519 {
            // RFC 8463 §4.2: p= is the raw 32-byte key, the tail of the SubjectPublicKeyInfo.
            bytes = Array(bytes.suffix(32))
            record = "v=DKIM1; k=ed25519; p=\(Data(bytes).base64EncodedString())"
        } else {
            record = "v=DKIM1; k=rsa; p=\(Data(bytes).base64EncodedString())"
        }
        return TestKey(privateKeyPath: priv, publicKeyPath: pub, record: record)
    }

    public struct ToolError: Error, CustomStringConvertible {
        public var description: String
        public init(_ d: String) { description = d }
    }

    /// The message with only its `index`-th DKIM-Signature field kept (so
    /// each signature of a dual-signed message is checked on its own).
    public static func keepingOnlySignature(_ index: Int, of message: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        var seen = 0
        var inHeader = true
        while i < message.count {
            var j = i
            while j < message.count && message[j] != 10 { j += 1 }
            if inHeader {
                // The whole field, with continuation lines.
                while j + 1 < message.count && (message[j + 1] == 32 || message[j + 1] == 9) {
                    j += 1
                    while j < message.count && message[j] != 10 { j += 1 }
                }
            }
            let end = min(j + 1, message.count)
            let line = message[i..<end]
            if inHeader && (line.first == 13 || line.first == 10) { inHeader = false }
            let isSignature = inHeader && String(decoding: line.prefix(15), as: UTF8.self).lowercased() == "dkim-signature:"
            if isSignature {
                if seen == index { out.append(contentsOf: line) }
                seen += 1
            } else {
                out.append(contentsOf: line)
            }
            i = end
        }
        return out
    }

    /// dkimpy's verdict for each message (the first DKIM-Signature of each):
    /// true = pass. `records` maps `selector._domainkey.domain` to TXT text.
    public static func dkimpy(_ messages: [[UInt8]], records: [String: String], directory: String) throws -> [Bool] {
        let python = try python3()
        var args = ["-c", dkimpyScript, "\(directory)/dkimpy-records.json"]
        let json = try JSONSerialization.data(withJSONObject: records)
        try json.write(to: URL(fileURLWithPath: args[2]))
        for (n, m) in messages.enumerated() {
            let path = "\(directory)/dkimpy-\(n).eml"
            try Data(m).write(to: URL(fileURLWithPath: path))
            args.append(path)
        }
        let (rc, out) = runTool(python, args, seconds: 300)
        let lines = out.split(separator: "\n").filter { $0.hasPrefix("RESULT ") }
        guard rc == 0, lines.count == messages.count else { throw ToolError("dkimpy run failed (\(rc)): \(out)") }
        return lines.map { $0.hasSuffix(" pass") }
    }

    /// `opendkim-testmsg`'s verdict for each message: exit 0 = pass (it then
    /// prints nothing); anything else = fail, with its message.
    public static func opendkim(_ messages: [[UInt8]], records: [String: String], directory: String) throws -> [(pass: Bool, output: String)] {
        guard findTool("opendkim-testmsg") != nil else { throw ToolError("opendkim-testmsg is not installed (opendkim-tools)") }
        let python = try python3()
        guard let unshare = findTool("unshare") else {
            throw ToolError("python3 and unshare are needed to serve the test keys to opendkim-testmsg")
        }
        let address = PrivateLoopback.address(253, nextResponder())
        var zone = ""
        for (name, text) in records { zone += "\(name)\t\(text)\n" }
        try zone.write(toFile: "\(directory)/opendkim-zone", atomically: true, encoding: .utf8)
        try "nameserver \(address)\noptions attempts:1 timeout:5\n".write(toFile: "\(directory)/resolv.conf", atomically: true, encoding: .utf8)
        try txtResponderScript.write(toFile: "\(directory)/txt_responder.py", atomically: true, encoding: .utf8)
        var files: [String] = []
        for (n, m) in messages.enumerated() {
            let path = "\(directory)/opendkim-\(n).eml"
            try Data(m).write(to: URL(fileURLWithPath: path))
            files.append(path)
        }
        // One namespace for the batch: the responder starts, says "ready", every
        // message is checked, the responder is killed.
        let script = """
        set -u
        mount --bind '\(directory)/resolv.conf' /etc/resolv.conf || exit 90
        '\(python)' '\(directory)/txt_responder.py' '\(address)' '\(directory)/opendkim-zone' > '\(directory)/responder.out' 2>&1 &
        R=$!
        n=0
        while ! grep -q ready '\(directory)/responder.out' 2>/dev/null; do
          n=$((n+1)); [ $n -gt 500 ] && { cat '\(directory)/responder.out'; kill $R; exit 91; }
          kill -0 $R 2>/dev/null || { cat '\(directory)/responder.out'; exit 92; }
          sleep 0.02
        done
        for f in \(files.map { "'\($0)'" }.joined(separator: " ")); do
          out=$(opendkim-testmsg < "$f" 2>&1); rc=$?
          echo "RESULT $rc $(printf '%s' "$out" | tr '\\n' ' ')"
        done
        kill $R
        """
        let (rc, out) = runTool(unshare, ["-m", "sh", "-c", script], seconds: 600)
        let lines = out.split(separator: "\n").filter { $0.hasPrefix("RESULT ") }
        guard rc == 0, lines.count == messages.count else { throw ToolError("opendkim-testmsg run failed (\(rc)): \(out)") }
        return lines.map { line in
            let parts = line.split(separator: " ", maxSplits: 2)
            return (parts[1] == "0", parts.count > 2 ? String(parts[2]) : "")
        }
    }

    /// Signs `message` with dkimpy (for the corpus the verifiers must agree on):
    /// the DKIM-Signature field dkimpy makes, prepended.
    public static func dkimpySign(_ message: [UInt8], selector: String, domain: String, keyPath: String,
                                  canonicalization: String, ed25519: Bool, directory: String, name: String) throws -> [UInt8] {
        try dkimpySignAll([SignJob(message: message, selector: selector, domain: domain, keyPath: keyPath,
                                   canonicalization: canonicalization, ed25519: ed25519, name: name)],
                          directory: directory)[0]
    }

    /// One message for dkimpySignAll to sign.
    public struct SignJob {
        public var message: [UInt8], selector: String, domain: String, keyPath: String
        public var canonicalization: String, ed25519: Bool, name: String
        public init(message: [UInt8], selector: String, domain: String, keyPath: String,
                    canonicalization: String, ed25519: Bool, name: String) {
            self.message = message; self.selector = selector; self.domain = domain; self.keyPath = keyPath
            self.canonicalization = canonicalization; self.ed25519 = ed25519; self.name = name
        }
    }

    /// Signs every job with dkimpy in one python3 process, results in job
    /// order. One process, not one per message: python's start and dkimpy's
    /// import per message made the corpus test the suite's longest (minutes).
    public static func dkimpySignAll(_ jobs: [SignJob], directory: String) throws -> [[UInt8]] {
        let python = try python3()
        var seeds: [String: String] = [:]
        var lines: [String] = []
        for job in jobs {
            let input = "\(directory)/\(job.name).in", output = "\(directory)/\(job.name).out"
            try Data(job.message).write(to: URL(fileURLWithPath: input))
            var key = job.keyPath
            if job.ed25519 {
                if let seed = seeds[job.keyPath] {
                    key = seed
                } else {
                    // dkimpy takes an Ed25519 key as the base64 32-byte seed: the tail of openssl's PKCS#8 DER.
                    guard let openssl = findTool("openssl") else { throw ToolError("openssl is not installed") }
                    let der = "\(directory)/\(job.name).seed.der"
                    let (rc, out) = runTool(openssl, ["pkey", "-in", job.keyPath, "-outform", "DER", "-out", der])
                    guard rc == 0 else { throw ToolError("openssl pkey: \(out)") }
                    let seed = [UInt8](try Data(contentsOf: URL(fileURLWithPath: der))).suffix(32)
                    key = "\(directory)/\(job.name).seed"
                    try Data(seed).base64EncodedString().write(toFile: key, atomically: true, encoding: .utf8)
                    seeds[job.keyPath] = key
                }
            }
            lines.append([input, output, job.selector, job.domain, key, job.canonicalization, job.ed25519 ? "1" : "0"]
                .joined(separator: "\t"))
        }
        let list = "\(directory)/sign-\(UUID().uuidString).jobs"
        try (lines.joined(separator: "\n") + "\n").write(toFile: list, atomically: true, encoding: .utf8)
        let script = #"""
        import sys, dkim
        for line in open(sys.argv[1]):
            inp, out, sel, dom, keypath, canon, ed = line.rstrip('\n').split('\t')
            msg = open(inp, 'rb').read()
            key = open(keypath, 'rb').read().strip()
            h, b = canon.split('/')
            sig = dkim.sign(msg, sel.encode(), dom.encode(), key, canonicalize=(h.encode(), b.encode()),
                            signature_algorithm=b'ed25519-sha256' if ed == '1' else b'rsa-sha256',
                            include_headers=[b'from', b'to', b'subject', b'date'])
            open(out, 'wb').write(sig + msg)
        """#
        let (rc, out) = runTool(python, ["-c", script, list], seconds: 300)
        guard rc == 0 else { throw ToolError("dkimpy signing failed: \(out)") }
        return try jobs.map { [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\($0.name).out"))) }
    }

    /// The python3 that has dkimpy: PATH's first (pyenv's, where scripts/setup
    /// installs it), then the system's.
    public static func python3() throws -> String {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        for candidate in path.map({ $0 + "/python3" }) + ["/usr/local/bin/python3", "/usr/bin/python3"]
        where FileManager.default.isExecutableFile(atPath: candidate) {
            if runTool(candidate, ["-c", "import dkim, nacl"], seconds: 60).0 == 0 { return candidate }
        }
        throw ToolError("no python3 with dkimpy and pynacl (scripts/setup installs them)")
    }

    nonisolated(unsafe) private static var responderCount = 0
    private static let lock = NSLock()
    private static func nextResponder() -> Int {
        lock.lock(); defer { lock.unlock() }
        responderCount += 1
        return 1 + responderCount % 250
    }

    static let dkimpyScript = #"""
    import json, sys, dkim
    records = json.load(open(sys.argv[1]))
    def dnsfunc(name, timeout=5):
        n = name.decode() if isinstance(name, bytes) else name
        r = records.get(n.rstrip('.').lower())
        return r.encode() if r is not None else None
    for path in sys.argv[2:]:
        msg = open(path, 'rb').read()
        try:
            ok = dkim.verify(msg, dnsfunc=dnsfunc)
        except Exception as e:
            print('ERROR', path, e, file=sys.stderr)
            ok = False
        print('RESULT', path, 'pass' if ok else 'fail')
    """#

    static let txtResponderScript = #"""
    import socket, struct, sys
    # A DNS responder for TXT queries only: NAME<TAB>TEXT lines; anything else is NXDOMAIN.
    addr, path = sys.argv[1], sys.argv[2]
    records = {}
    for line in open(path):
        line = line.rstrip('\n')
        if '\t' in line:
            n, t = line.split('\t', 1)
            records[n.lower().rstrip('.')] = t.encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 53))
    print('ready', flush=True)
    while True:
        q, peer = s.recvfrom(4096)
        if len(q) < 17:
            continue
        tid = struct.unpack('>H', q[:2])[0]
        i = 12
        labels = []
        while i < len(q) and q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode('ascii', 'replace'))
            i += 1 + q[i]
        qtype = struct.unpack('>H', q[i + 1:i + 3])[0]
        question = q[12:i + 5]
        txt = records.get('.'.join(labels).lower())
        if txt is not None and qtype == 16:
            data = b''.join(bytes([len(txt[k:k + 255])]) + txt[k:k + 255] for k in range(0, len(txt), 255))
            answer = b'\xc0\x0c' + struct.pack('>HHIH', 16, 1, 60, len(data)) + data
            s.sendto(struct.pack('>HHHHHH', tid, 0x8580, 1, 1, 0, 0) + question + answer, peer)
        else:
            s.sendto(struct.pack('>HHHHHH', tid, 0x8583, 1, 0, 0, 0) + question, peer)
    """#
}
