import Foundation
import PeregrineIO
import PeregrineSMTP
import PeregrineTLS
import PeregrineTransport

/// What a test server's connections are driven by: the session's decisions
/// and the connection's hooks, in one object per connection.
typealias PeregrineTestPolicy = SMTPServerSessionDelegate & SMTPServerConnectionHandler

/// The in-process Peregrine SMTP server of the interop and connection tests:
/// a listener on 127.0.0.1 (port chosen by the kernel) on its own loop
/// thread; every accepted socket gets a session and an `SMTPServerConnection`
/// driven by the policy `makePolicy` returns for it (called on the loop thread).
final class PeregrineTestServer<Loop: EventLoop>: @unchecked Sendable {
    struct Options {
        var configuration = SMTPServerConfiguration(hostname: "mx.test")
        var tlsContext: TLSContext?
        var implicitTLS = false
        /// ns; nil keeps the connection's default.
        var idleTimeout: UInt64?
    }

    let loop: Loop
    private let finished = DispatchSemaphore(value: 0)
    private(set) var port: UInt16 = 0
    private var listener: Listener?

    init(_ options: Options, makePolicy: @escaping (SMTPServerConnection<Loop>) -> any PeregrineTestPolicy) throws {
        loop = try Loop()
        let loop = self.loop
        let finished = self.finished
        Thread { loop.run(); finished.signal() }.start()
        let ready = DispatchSemaphore(value: 0)
        let box = TestServerBox(self)
        loop.execute {
            let me = box.server
            do {
                let l = try me.loop.listen(on: try SocketAddress(ip: "127.0.0.1", port: 0)) { result in
                    guard case .success(let accepted) = result else { return }
                    let session = SMTPServerSession(configuration: options.configuration)
                    let connection = SMTPServerConnection(loop: me.loop, socket: accepted.socket, session: session)
                    connection.tlsContext = options.tlsContext
                    connection.implicitTLS = options.implicitTLS
                    if let t = options.idleTimeout { connection.idleTimeout = t }
                    let policy = makePolicy(connection)
                    session.delegate = policy
                    connection.handler = policy   // keeps the policy alive as long as the connection
                    connection.start()
                }
                me.listener = l
                me.port = l.address.port
            } catch {}
            ready.signal()
        }
        _ = ready.wait(timeout: .now() + 10)
    }

    func stop() {
        let box = TestServerBox(self)
        loop.execute { if let l = box.server.listener { box.server.loop.closeListener(l) } }
        loop.stop()
        _ = finished.wait(timeout: .now() + 10)
    }
}

/// Hands the server to its loop thread (the loop confines it from then on).
private struct TestServerBox<Loop: EventLoop>: @unchecked Sendable {
    let server: PeregrineTestServer<Loop>
    init(_ server: PeregrineTestServer<Loop>) { self.server = server }
}
