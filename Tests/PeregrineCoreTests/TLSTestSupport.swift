import Foundation
import PeregrineTestSupport
import PeregrineSMTP
import PeregrineIO
import PeregrineTLS

/// Throwaway certificates, generated once per test process with the openssl
/// command line into a temporary directory (nothing secret is committed).
enum TLSTestCertificates {
    struct Files: Sendable {
        let directory: String
        let certificate: String
        let key: String
    }

    /// CN=mx.test, subjectAltName DNS:mx.test, valid one day.
    static let files: Files? = {
        let f = generate(commonName: "mx.test")
        // Throwaway files (and Postfix instances under them) go with the test process.
        atexit { if let d = TLSTestCertificates.files?.directory { try? FileManager.default.removeItem(atPath: d) } }
        return f
    }()

    static func generate(commonName: String) -> Files? {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("peregrine-tls-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch { return nil }
        let cert = dir + "/cert.pem", key = dir + "/key.pem"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: findTool("openssl") ?? "/usr/bin/openssl")
        p.arguments = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=\(commonName)",
                       "-addext", "subjectAltName=DNS:\(commonName)", "-days", "1", "-keyout", key, "-out", cert]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        do { try ChildProcess.run(p) } catch { return nil }
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return Files(directory: dir, certificate: cert, key: key)
    }

    static func serverContext(minimumVersion: TLSVersion = .tls12, maximumVersion: TLSVersion? = nil) throws -> TLSContext {
        guard let f = files else { throw TLSError(.configuration, operation: "test certificates", detail: "openssl req failed") }
        return try TLSContext.server(certificateFile: f.certificate, keyFile: f.key,
                                     minimumVersion: minimumVersion, maximumVersion: maximumVersion)
    }
}

/// Moves bytes between two in-memory TLS connections.
enum TLSPipe {
    /// Moves all pending ciphertext from `from` to `to`. Returns the count.
    @discardableResult
    static func transfer(_ from: TLSConnection, _ to: TLSConnection) -> Int {
        var buffer = ByteBuffer(capacity: 4096)
        let n = from.takeCiphertext(appendingTo: &buffer)
        buffer.withUnsafeReadableBytes { to.feedCiphertext($0) }
        return n
    }

    /// Runs both handshakes to completion (bounded rounds).
    static func handshake(client: TLSConnection, server: TLSConnection) -> (TLSConnection.HandshakeResult, TLSConnection.HandshakeResult) {
        var c = client.handshake(), s = TLSConnection.HandshakeResult.wantIO
        for _ in 0..<20 {
            transfer(client, server)
            s = server.handshake()
            transfer(server, client)
            c = client.handshake()
            if case .failed = c { break }
            if case .failed = s { break }
            if c == .done && s == .done { break }
        }
        return (c, s)
    }

    /// Sends `bytes` from one side and reads them all on the other.
    static func send(_ bytes: [UInt8], from: TLSConnection, to: TLSConnection) throws -> [UInt8] {
        try bytes.withUnsafeBytes { try from.writePlaintext($0) }
        transfer(from, to)
        return try readAll(to)
    }

    static func readAll(_ c: TLSConnection) throws -> [UInt8] {
        var out: [UInt8] = []
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 16)
        defer { buf.deallocate() }
        while true {
            let n = try c.readPlaintext(into: buf)
            if n == 0 { return out }
            out.append(contentsOf: buf[0..<n])
        }
    }
}
