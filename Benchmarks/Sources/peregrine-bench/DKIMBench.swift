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

/// The calling thread's CPU time in seconds (CLOCK_THREAD_CPUTIME_ID): what
/// this thread ran, not the time it waited for a core on a loaded machine.
func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// `peregrine-bench dkim-sign`: PeregrineDKIM's cost to sign one message
/// (4 KB, relaxed/relaxed, the default header list; the whole signing call:
/// parsing, body and header hashing, the private-key operation, the field),
/// next to `openssl speed`'s raw sign rate measured in the same run. The
/// ratio is the overhead of everything around the raw signature.
///
/// Timed with the thread's CPU clock, in rounds that alternate the whole
/// signature with its parts (the raw private-key operation as the signer
/// performs it, the body hash relaxed and simple), so that every figure of a
/// round saw the same machine load; each figure is the median over rounds.
/// "rest" = whole − raw − relaxed body hash: the header side (canonical
/// fields, `h=`, their SHA-256, the field text, base64).
func runDKIMSignBench(arguments: [String]) -> Int32 {
    var size = 4096, count = 2000, rounds = 10, outputDir = "results", write = true
    var algorithms = ["rsa2048", "ed25519"]
    var i = 0
    while i < arguments.count {
        let a = arguments[i], v = i + 1 < arguments.count ? arguments[i + 1] : nil
        switch a {
        case "--size": guard let v, let n = Int(v), n > 0 else { return 2 }; size = n
        case "--count": guard let v, let n = Int(v), n > 0 else { return 2 }; count = n
        case "--rounds": guard let v, let n = Int(v), n > 0 else { return 2 }; rounds = n
        case "--output-dir": guard let v else { return 2 }; outputDir = v
        case "--algorithms":
            // One algorithm alone, e.g. under `perf record`.
            guard let v, !v.isEmpty, v.split(separator: ",").allSatisfy({ $0 == "rsa2048" || $0 == "ed25519" }) else { return 2 }
            algorithms = v.split(separator: ",").map(String.init)
        case "--no-results": write = false; i += 1; continue
        default:
            fputs("usage: peregrine-bench dkim-sign [--size BYTES] [--count N] [--rounds R] [--algorithms rsa2048,ed25519] [--output-dir DIR] [--no-results]\n", stderr)
            return 2
        }
        i += 2
    }
    let dir = NSTemporaryDirectory() + "peregrine-bench-dkim-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var message = Array(("From: <bench@bench.test>\r\nTo: <rcpt@example.net>\r\nSubject: Peregrine DKIM bench\r\n"
                         + "Date: Sat, 05 Dec 2026 12:00:00 +0000\r\nMessage-ID: <1@bench.test>\r\n\r\n").utf8)
    while message.count < size { message += Array("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n".utf8) }
    let perRound = max(1, count / rounds)
    var doc: [String: Any] = ["scenario": "dkim-sign", "messageSize": message.count, "count": perRound * rounds,
                              "rounds": rounds, "clock": "CLOCK_THREAD_CPUTIME_ID, median of rounds",
                              "date": BenchEnvironment.today(), "machine": BenchEnvironment.machine(),
                              "gitCommit": BenchEnvironment.gitCommit()]
    fputs("== openssl speed rsa2048 ed25519 (same run)\n", stderr)
    guard let speed = OpenSSLSpeed.measure() else { fputs("openssl speed failed\n", stderr); return 1 }
    doc["opensslSpeed"] = speed.json
    print("\ndkim-sign: \(message.count) byte message, \(rounds) rounds of \(perRound) per algorithm, relaxed/relaxed, thread CPU µs")
    print("algorithm   whole   raw sign   body relaxed   body simple   rest   openssl speed   ÷ speed   ÷ raw")
    func median(_ v: [Double]) -> Double {
        let s = v.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
    for kind in algorithms {
        guard let path = makeBenchDKIMKey(kind, in: dir), let key = try? DKIMPrivateKey.load(path: path) else {
            fputs("cannot make a \(kind) key\n", stderr); return 1
        }
        let signer = DKIMSigner()
        let identity = DKIMSigningIdentity(domain: "bench.test", selector: "bench", key: key)
        let identities = [identity]
        var out: [UInt8] = []
        out.reserveCapacity(1024)
        let digest = [UInt8](repeating: 0xA5, count: 32)
        var bodyDigest = [UInt8](repeating: 0, count: 32)
        /// µs per operation of `body` run `perRound` times, on this thread's CPU clock.
        func timed(_ body: (Int) throws -> Void) rethrows -> Double {
            let t0 = threadCPUSeconds()
            for n in 0..<perRound { try body(n) }
            return (threadCPUSeconds() - t0) / Double(perRound) * 1e6
        }
        var whole: [Double] = [], raw: [Double] = [], bodyRelaxed: [Double] = [], bodySimple: [Double] = [], rest: [Double] = []
        var usage0 = rusage(), usage1 = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage0)
        let start = Date()
        do {
            // Warm-up: contexts created, buffers grown.
            for _ in 0..<20 { out.removeAll(keepingCapacity: true); try message.withUnsafeBytes { try signer.sign(message: $0, identities: identities, now: 1, into: &out) } }
            for _ in 0..<rounds {
                let w = try timed { n in
                    out.removeAll(keepingCapacity: true)
                    try message.withUnsafeBytes { try signer.sign(message: $0, identities: identities, now: Int64(n), into: &out) }
                }
                let r = try timed { _ in _ = try signer.rawSignature(ofDigest: digest, with: key) }
                let br = timed { _ in message.withUnsafeBytes { m in bodyDigest.withUnsafeMutableBytes { signer.bodyHash(message: m, .relaxed, into: $0) } } }
                let bs = timed { _ in message.withUnsafeBytes { m in bodyDigest.withUnsafeMutableBytes { signer.bodyHash(message: m, .simple, into: $0) } } }
                whole.append(w); raw.append(r); bodyRelaxed.append(br); bodySimple.append(bs); rest.append(w - r - br)
            }
        } catch {
            fputs("signing failed: \(error)\n", stderr); return 1
        }
        let wall = Date().timeIntervalSince(start)
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage1)
        func secs(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        let processCPU = secs(usage1.ru_utime) + secs(usage1.ru_stime) - secs(usage0.ru_utime) - secs(usage0.ru_stime)
        let perMessage = median(whole)
        let speedRaw = 1e6 / (kind == "rsa2048" ? speed.rsa2048SignsPerSecond : speed.ed25519SignsPerSecond)
        let ratioToRaw = median(zip(whole, raw).map { $0 / $1 })
        doc[kind] = ["cpuMicrosecondsPerMessage": perMessage, "rawSignMicroseconds": median(raw),
                     "bodyHashRelaxedMicroseconds": median(bodyRelaxed), "bodyHashSimpleMicroseconds": median(bodySimple),
                     "restMicroseconds": median(rest), "opensslSignMicroseconds": speedRaw,
                     "ratioToOpenSSLSign": perMessage / speedRaw, "ratioToInProcessRawSign": ratioToRaw,
                     "rounds": ["whole": whole, "raw": raw, "bodyRelaxed": bodyRelaxed, "bodySimple": bodySimple],
                     "processCPUSeconds": processCPU, "wallSeconds": wall]
        print(String(format: "%-10@ %7.1f %10.1f %14.2f %13.2f %6.2f %15.1f %9.3f %7.3f", kind as NSString, perMessage, median(raw),
                     median(bodyRelaxed), median(bodySimple), median(rest), speedRaw, perMessage / speedRaw, ratioToRaw))
    }
    if write {
        let path = "\(outputDir)/dkim-sign-\(BenchEnvironment.today()).json"
        if BenchEnvironment.writeJSON(doc, to: path) { fputs("   wrote \(path)\n", stderr) } else { fputs("cannot write \(path)\n", stderr) }
    }
    return 0
}
