import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PeregrineDKIM

/// `openssl speed rsa2048 ed25519`, run in the same invocation as the
/// measurement it is compared with (same machine load, same CPU state).
struct OpenSSLSpeed {
    var rsa2048SignsPerSecond: Double
    var ed25519SignsPerSecond: Double
    var seconds: Int

    static func measure(seconds: Int = 3) -> OpenSSLSpeed? {
        guard let out = BenchEnvironment.commandOutput("/usr/bin/openssl", ["speed", "-seconds", "\(seconds)", "-mr", "rsa2048", "ed25519"])
        else { return nil }
        var rsa: Double?, ed: Double?
        // -mr lines: +F2:n:2048:SIGN/s:VERIFY/s (RSA), +F6:n:253:Ed25519:SIGN/s:VERIFY/s.
        for line in out.split(separator: "\n") {
            let f = line.split(separator: ":")
            if f.first == "+F2", f.count >= 5, f[2] == "2048" { rsa = Double(f[3]) }
            if f.first == "+F6", f.count >= 6, f[3] == "Ed25519" { ed = Double(f[4]) }
        }
        guard let rsa, let ed else { return nil }
        return OpenSSLSpeed(rsa2048SignsPerSecond: rsa, ed25519SignsPerSecond: ed, seconds: seconds)
    }

    var json: [String: Any] {
        ["rsa2048SignsPerSecond": rsa2048SignsPerSecond, "rsa2048SignMicroseconds": 1e6 / rsa2048SignsPerSecond,
         "ed25519SignsPerSecond": ed25519SignsPerSecond, "ed25519SignMicroseconds": 1e6 / ed25519SignsPerSecond,
         "seconds": seconds]
    }
}

/// A key made with the openssl command for a bench run: `rsa2048` or `ed25519`.
func makeBenchDKIMKey(_ kind: String, in directory: String) -> String? {
    let path = directory + "/dkim-\(kind).pem"
    let args = kind == "ed25519" ? ["genpkey", "-algorithm", "ED25519", "-out", path]
        : ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path]
    guard BenchEnvironment.commandOutput("/usr/bin/openssl", args) != nil, FileManager.default.fileExists(atPath: path) else { return nil }
    return path
}

/// `peregrine-bench dkim-sign`: PeregrineDKIM's cost to sign one message
/// (4 KB, relaxed/relaxed, the default header list; the whole signing call:
/// parsing, body and header hashing, the private-key operation, the field),
/// next to `openssl speed`'s raw sign rate measured in the same run. The
/// ratio is the overhead of everything around the raw signature.
func runDKIMSignBench(arguments: [String]) -> Int32 {
    var size = 4096, count = 2000, outputDir = "results", write = true
    var i = 0
    while i < arguments.count {
        let a = arguments[i], v = i + 1 < arguments.count ? arguments[i + 1] : nil
        switch a {
        case "--size": guard let v, let n = Int(v), n > 0 else { return 2 }; size = n
        case "--count": guard let v, let n = Int(v), n > 0 else { return 2 }; count = n
        case "--output-dir": guard let v else { return 2 }; outputDir = v
        case "--no-results": write = false; i += 1; continue
        default: fputs("usage: peregrine-bench dkim-sign [--size BYTES] [--count N] [--output-dir DIR] [--no-results]\n", stderr); return 2
        }
        i += 2
    }
    let dir = NSTemporaryDirectory() + "peregrine-bench-dkim-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var message = Array(("From: <bench@bench.test>\r\nTo: <rcpt@example.net>\r\nSubject: Peregrine DKIM bench\r\n"
                         + "Date: Sat, 05 Dec 2026 12:00:00 +0000\r\nMessage-ID: <1@bench.test>\r\n\r\n").utf8)
    while message.count < size { message += Array("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n".utf8) }
    var doc: [String: Any] = ["scenario": "dkim-sign", "messageSize": message.count, "count": count,
                              "date": BenchEnvironment.today(), "machine": BenchEnvironment.machine(),
                              "gitCommit": BenchEnvironment.gitCommit()]
    fputs("== openssl speed rsa2048 ed25519 (same run)\n", stderr)
    guard let speed = OpenSSLSpeed.measure() else { fputs("openssl speed failed\n", stderr); return 1 }
    doc["opensslSpeed"] = speed.json
    print("\ndkim-sign: \(message.count) byte message, \(count) signatures per algorithm, relaxed/relaxed")
    print("algorithm   PeregrineDKIM µs/msg   openssl speed µs/sign   ratio")
    for kind in ["rsa2048", "ed25519"] {
        guard let path = makeBenchDKIMKey(kind, in: dir), let key = try? DKIMPrivateKey.load(path: path) else {
            fputs("cannot make a \(kind) key\n", stderr); return 1
        }
        let signer = DKIMSigner()
        let identity = DKIMSigningIdentity(domain: "bench.test", selector: "bench", key: key)
        var out: [UInt8] = []
        out.reserveCapacity(1024)
        // Warm-up: contexts created, buffers grown.
        for _ in 0..<20 { out.removeAll(keepingCapacity: true); _ = try? message.withUnsafeBytes { try signer.sign(message: $0, identities: [identity], now: 1, into: &out) } }
        var usage0 = rusage(), usage1 = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage0)
        let start = Date()
        for n in 0..<count {
            out.removeAll(keepingCapacity: true)
            do { try message.withUnsafeBytes { try signer.sign(message: $0, identities: [identity], now: Int64(n), into: &out) } } catch {
                fputs("signing failed: \(error)\n", stderr); return 1
            }
        }
        let wall = Date().timeIntervalSince(start)
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage1)
        func secs(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        let cpu = secs(usage1.ru_utime) + secs(usage1.ru_stime) - secs(usage0.ru_utime) - secs(usage0.ru_stime)
        let perMessage = cpu / Double(count) * 1e6
        let raw = 1e6 / (kind == "rsa2048" ? speed.rsa2048SignsPerSecond : speed.ed25519SignsPerSecond)
        doc[kind] = ["cpuMicrosecondsPerMessage": perMessage, "wallMicrosecondsPerMessage": wall / Double(count) * 1e6,
                     "opensslSignMicroseconds": raw, "ratioToOpenSSLSign": perMessage / raw]
        print(String(format: "%-10@  %20.1f   %21.1f   %5.2f", kind as NSString, perMessage, raw, perMessage / raw))
    }
    if write {
        let path = "\(outputDir)/dkim-sign-\(BenchEnvironment.today()).json"
        if BenchEnvironment.writeJSON(doc, to: path) { fputs("   wrote \(path)\n", stderr) } else { fputs("cannot write \(path)\n", stderr) }
    }
    return 0
}
