#if canImport(Glibc)
import Glibc
#endif
import PeregrineSpool

/// A fresh temporary directory, removed by `remove()`.
struct SpoolTempDir {
    let path: String
    init(_ tag: String = "spool") {
        var template = Array("/tmp/peregrine-\(tag)-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = p.map { String(cString: $0) } ?? "/tmp/peregrine-\(tag)-\(getpid())"
    }
    func remove() {
        _ = system("rm -rf '\(path)'")
    }
}

enum SpoolFixtures {
    static func envelope(_ i: Int, recipients: Int = 2) -> SpoolEnvelope {
        SpoolEnvelope(sender: Array("sender\(i)@example.com".utf8),
                      recipients: (0..<recipients).map { SpoolRecipient("rcpt\($0)-\(i)@dest\($0 % 3).example",
                                                                      orcpt: $0 == 0 ? "rfc822;orig\(i)@x" : "",
                                                                      notify: [.failure, .delay]) },
                      vmta: Array("vmta-\(i % 4)".utf8), jobID: Array("job-\(i % 7)".utf8),
                      envID: i % 2 == 0 ? Array("env\(i)".utf8) : [],
                      // Both record versions (RET or not) go through every spool test.
                      ret: [DSNReturn.unspecified, .full, .headers][i % 3],
                      receivedAt: 1_700_000_000_000 + Int64(i),
                      // And the VERP flag (record version 2) on some.
                      verp: i % 5 == 4)
    }

    static func id(_ i: Int) -> MessageID { MessageID(hi: 0xABCD, lo: UInt64(i)) }

    /// Deterministic body derived from the id (xorshift), of `size` bytes.
    static func body(for id: MessageID, size: Int) -> [UInt8] {
        SpoolTestBody.make(id: id, size: size)
    }

    static func fileSize(_ path: String) -> Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : -1
    }

    static func readFile(_ path: String) -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        let n = fileSize(path)
        var b = [UInt8](repeating: 0, count: max(n, 0))
        let r = b.withUnsafeMutableBytes { read(fd, $0.baseAddress, n) }
        return r == n ? b : []
    }

    static func writeFile(_ path: String, _ bytes: [UInt8]) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { return }
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }
}
