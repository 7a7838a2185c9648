#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
import PeregrineTestSupport

/// DKIM end to end (issue 15): messages injected into the real `peregrine run`
/// are signed at injection and delivered to a capturing receiver; every
/// signature of every captured message is then checked by dkimpy and by
/// opendkim-testmsg on its own, and the same messages with one body byte or
/// one Subject letter changed fail both. Four recipient domains, one per
/// canonicalisation pair, each dual-signed (RSA-2048 and Ed25519 for the From
/// domain) plus the ESP's own RSA signature (`dkim-also-sign-as`).
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonDKIMTests {
    static let canonicalizations = ["relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"]

    /// Stores every message it receives, byte for byte as it came off the wire
    /// (dot-unstuffed), one file per recipient domain and message.
    static let receiverScript = #"""
    import os, socket, sys, threading
    ip, directory = sys.argv[1], sys.argv[2]
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ip, 0))
    srv.listen(64)
    print('port', srv.getsockname()[1], flush=True)
    counter = [0]
    lock = threading.Lock()
    def serve(conn):
        f = conn.makefile('rb')
        def say(text):
            conn.sendall(text.encode() + b'\r\n')
        say('220 receiver.test ESMTP')
        rcpts = []
        while True:
            line = f.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b'EHLO', b'HELO'):
                say('250-receiver.test'); say('250-PIPELINING'); say('250 8BITMIME')
            elif verb == b'MAIL':
                rcpts = []; say('250 2.1.0 ok')
            elif verb == b'RCPT':
                rcpts.append(line.split(b'<', 1)[1].split(b'>', 1)[0].decode()); say('250 2.1.5 ok')
            elif verb == b'DATA':
                say('354 go ahead')
                data = bytearray()
                while True:
                    l = f.readline()
                    if not l or l == b'.\r\n':
                        break
                    if l.startswith(b'.'):
                        l = l[1:]
                    data += l
                with lock:
                    counter[0] += 1
                    n = counter[0]
                domain = rcpts[0].rsplit('@', 1)[1] if rcpts else 'none'
                path = os.path.join(directory, '%s-%05d.eml' % (domain, n))
                with open(path + '.tmp', 'wb') as out:
                    out.write(data)
                os.rename(path + '.tmp', path)
                say('250 2.0.0 stored')
            elif verb == b'QUIT':
                say('221 bye'); conn.close(); return
            else:
                say('250 ok')
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
    """#

    final class Receiver {
        let process = Process()
        let directory: String
        let port: UInt16
        init(ip: String, directory: String) throws {
            self.directory = directory
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let python = try DKIMExternalVerifiers.python3()
            process.executableURL = URL(fileURLWithPath: python)
            process.arguments = ["-u", "-c", DaemonDKIMTests.receiverScript, ip, directory]
            let out = Pipe()
            process.standardOutput = out
            try ChildProcess.run(process)
            // The first line, whole (a pipe read may return part of it); EOF ends the wait.
            var data = Data()
            while !data.contains(10) {
                let chunk = out.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                data.append(chunk)
            }
            let line = String(decoding: data, as: UTF8.self)
            guard line.hasPrefix("port "), let p = UInt16(line.dropFirst(5).trimmingCharacters(in: .whitespacesAndNewlines)) else {
                stopProcess(process)
                throw SinkTestError("receiver did not start: \(line)")
            }
            port = p
        }
        var messages: [(name: String, bytes: [UInt8])] {
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".eml") }.sorted()
            return names.compactMap { n in FileManager.default.contents(atPath: directory + "/" + n).map { (n, [UInt8]($0)) } }
        }
        deinit { stopProcess(process) }
    }

    /// Sends one raw message (dot-stuffed here, as any client must).
    static func inject(_ client: SinkTestClient, from: String, to: String, _ message: [UInt8]) throws -> WireReply? {
        guard try client.command("MAIL FROM:<\(from)>")?.code == 250 else { throw SinkTestError("MAIL refused") }
        guard try client.command("RCPT TO:<\(to)>")?.code == 250 else { throw SinkTestError("RCPT refused") }
        guard try client.command("DATA")?.code == 354 else { throw SinkTestError("DATA refused") }
        var wire = ""
        for line in String(decoding: message, as: UTF8.self).components(separatedBy: "\r\n").dropLast() {
            wire += (line.hasPrefix(".") ? "." : "") + line + "\r\n"
        }
        try client.send(wire + ".\r\n")
        return try client.reply()
    }

    @Test(arguments: BackendKind.testable)
    func everyDeliveredSignatureVerifiesWithDkimpyAndOpenDKIM(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("dkim-\(kind.rawValue)")
        let listenIP = E2E.ip(120, kind, host: 9), receiverIP = E2E.ip(120, kind, host: 1)
        let rsa = try DKIMExternalVerifiers.makeKey(.rsa2048, name: "rsa", in: dir.path)
        let ed = try DKIMExternalVerifiers.makeKey(.ed25519, name: "ed", in: dir.path)
        let esp = try DKIMExternalVerifiers.makeKey(.rsa2048, name: "esp", in: dir.path)
        let receiver = try Receiver(ip: receiverIP, directory: dir.file("captured"))
        var domains = ""
        for (n, c) in Self.canonicalizations.enumerated() {
            domains += """
            <domain c\(n).test>
                route [\(receiverIP)]:\(receiver.port)
                domain-key rsa,example.com,\(rsa.privateKeyPath)
                domain-key ed,example.com,\(ed.privateKeyPath)
                domain-key esp,esp.test,\(esp.privateKeyPath)
                dkim-also-sign-as esp.test
                dkim-sign yes
                dkim-canonicalization \(c)
                retry-after 1s
            </domain>

            """
        }
        let config = daemonConfig(dir, listen: listenIP, domains + """
            <domain required.test>
                route [\(receiverIP)]:\(receiver.port)
                domain-key rsa,example.com,\(rsa.privateKeyPath)
                dkim-required yes
            </domain>
            """)
        let daemon = try DaemonProcess(configPath: try dir.write("peregrine.conf", config), backend: kind,
                                       logPath: dir.file("daemon.log"))
        defer { daemon.terminate() }
        let client = try SinkTestClient(daemon.listenIP, daemon.listenPort)
        guard try client.start()?.code == 220, try client.command("EHLO injector.test")?.code == 250 else {
            throw SinkTestError("no greeting from the daemon")
        }
        let corpus = DKIMTestCorpus.messages(fromDomain: "example.com")
        for n in Self.canonicalizations.indices {
            for m in corpus {
                let reply = try Self.inject(client, from: "bounce@example.com", to: "\(m.name)@c\(n).test", m.bytes)
                #expect(reply?.code == 250, "\(m.name) to c\(n).test: \(String(describing: reply))")
            }
        }
        // dkim-required: a From domain with no key is refused at end of DATA; an aligned one passes.
        var other = corpus[0].bytes
        other = Array(String(decoding: other, as: UTF8.self).replacingOccurrences(of: "@example.com>", with: "@other.example>").utf8)
        let refused = try Self.inject(client, from: "b@other.example", to: "x@required.test", other)
        #expect(refused?.code == 550 && refused?.text.contains("dkim-required") == true, "\(String(describing: refused))")
        #expect(try Self.inject(client, from: "b@example.com", to: "y@required.test", corpus[0].bytes)?.code == 250)
        _ = try? client.command("QUIT")

        let expected = Self.canonicalizations.count * corpus.count + 1
        let arrived = E2E.waitUntil(120, every: 0.2) { receiver.messages.count >= expected }
        #expect(arrived, "captured \(receiver.messages.count) of \(expected): \(daemon.log.suffix(2000))")
        let captured = receiver.messages
        let records = ["rsa._domainkey.example.com": rsa.record, "ed._domainkey.example.com": ed.record,
                       "esp._domainkey.esp.test": esp.record]
        var good: [(String, [UInt8])] = [], bad: [(String, [UInt8])] = []
        for (name, bytes) in captured {
            let signatures = String(decoding: bytes, as: UTF8.self).components(separatedBy: "\r\nDKIM-Signature:").count - 1
                + (String(decoding: bytes.prefix(15), as: UTF8.self) == "DKIM-Signature:" ? 1 : 0)
            let want = name.hasPrefix("required.test") ? 1 : 3
            #expect(signatures == want, "\(name): \(signatures) DKIM-Signature fields")
            for i in 0..<signatures {
                let single = DKIMExternalVerifiers.keepingOnlySignature(i, of: bytes)
                good.append(("\(name) signature \(i)", single))
                bad.append(("\(name) signature \(i), body tampered", DKIMTestCorpus.tamperedBody(single)))
                bad.append(("\(name) signature \(i), header tampered", DKIMTestCorpus.tamperedHeader(single)))
            }
        }
        #expect(good.count == Self.canonicalizations.count * corpus.count * 3 + 1)
        let all = good + bad
        let scratch = dir.file("verify")
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        let py = try DKIMExternalVerifiers.dkimpy(all.map(\.1), records: records, directory: scratch)
        let od = try DKIMExternalVerifiers.opendkim(all.map(\.1), records: records, directory: scratch)
        for (i, m) in all.enumerated() {
            let shouldPass = i < good.count
            #expect(py[i] == shouldPass, "dkimpy: \(m.0)")
            #expect(od[i].pass == shouldPass, "opendkim-testmsg: \(m.0): \(od[i].output)")
        }
    }
}
