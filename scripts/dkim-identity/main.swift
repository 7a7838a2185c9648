// The harness of scripts/dkim-identity/run.sh: signs a fixed, seeded set of
// messages and prints the first signatures and an FNV-1a of every output byte.
import Glibc

struct Gen { var s: UInt64; mutating func next() -> UInt64 { s = s &* 6364136223846793005 &+ 1442695040888963407; return s >> 33 }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) } }
var g = Gen(s: 42)
let alphabet: [UInt8] = Array(" \t\r\n  aZ:;,.-\u{7f}".utf8)
func randomText(_ n: Int) -> [UInt8] { (0..<n).map { _ in g.below(3) == 0 ? alphabet[g.below(alphabet.count)] : UInt8(ascii: "a") + UInt8(g.below(26)) } }
let names = ["From", "from", "FROM ", "To", "Subject", "Date", "Message-ID", "Cc", "Reply-To", "X-Other", "List-Unsubscribe", "Content-Type", "MIME-Version", "sender", "References"]
var messages: [[UInt8]] = []
messages.append(Array("From: <a@b.test>\r\nTo: <c@d.test>\r\nSubject:  Hello   world \r\n\tfolded  line\r\n\r\nBody  line \r\n\r\n\r\n".utf8))
messages.append(Array("From: a@b.test\r\nSubject: x\r\n\r\n".utf8))
messages.append(Array("From: a@b.test\r\nSubject: x\r\n\r\nno final crlf   ".utf8))
messages.append(Array("FROM :  A <a@b.test> \r\nfrom: second@b.test\r\nsubject:\tTabs\t\there\r\n\r\n \t \r\nx\ry\r\n".utf8))
for _ in 0..<400 {
    var m: [UInt8] = []
    var hasFrom = false
    for _ in 0..<(1 + g.below(8)) {
        let n = names[g.below(names.count)]
        if n.lowercased().hasPrefix("from") { hasFrom = true }
        m += Array(n.utf8) + [UInt8(ascii: ":")] + randomText(g.below(60)).filter { $0 != 13 && $0 != 10 }
        if g.below(4) == 0 { m += Array("\r\n\t  folded ".utf8) + randomText(g.below(20)).filter { $0 != 13 && $0 != 10 } }
        m += [13, 10]
    }
    if !hasFrom { m += Array("From: x@y.test\r\n".utf8) }
    m += [13, 10]
    let bodyLength = g.below(5) == 0 ? g.below(20000) : g.below(300)
    m += randomText(bodyLength)
    messages.append(m)
}
let keys = [try! DKIMPrivateKey.load(path: "ed.pem"), try! DKIMPrivateKey.load(path: "rsa.pem")]
let signer = DKIMSigner()
var out: [UInt8] = []
var checksum: UInt64 = 1469598103934665603
var lines = 0
for (k, m) in messages.enumerated() {
    for c in [DKIMCanonicalizations(header: .relaxed, body: .relaxed), DKIMCanonicalizations(header: .simple, body: .simple),
              DKIMCanonicalizations(header: .relaxed, body: .simple), DKIMCanonicalizations(header: .simple, body: .relaxed)] {
        var ids: [DKIMSigningIdentity] = []
        for key in keys {
            var id = DKIMSigningIdentity(domain: "b.test", selector: "s\(k % 3)", key: key, canonicalization: c,
                                         headers: k % 5 == 0 ? ["subject", "from", "to", "x-other", "from"] : DKIMSigningIdentity.defaultHeaders,
                                         bodyLengthLimit: k % 7 == 0, expireAfterSeconds: k % 4 == 0 ? 3600 : nil)
            if k % 6 == 0 { id.agentIdentifier = "@b.test" }
            ids.append(id)
        }
        out.removeAll()
        do {
            try m.withUnsafeBytes { try signer.sign(message: $0, identities: ids, now: Int64(1_700_000_000 + k), into: &out) }
        } catch { out = Array("error: \(error)".utf8) }
        for b in out { checksum = (checksum ^ UInt64(b)) &* 1099511628211 }
        if k < 6 { print(String(decoding: out, as: UTF8.self)) }
        lines += 1
    }
}
print("signatures:", lines, "FNV-1a of every output:", checksum)
