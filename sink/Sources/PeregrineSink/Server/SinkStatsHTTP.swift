import PeregrineIO

/// A tiny HTTP/1.1 responder for `GET /stats` (JSON). It reads the request
/// head, looks only at the request line, answers and closes.
final class SinkStatsHTTP<Loop: EventLoop> {
    let loop: Loop
    let shared: SinkShared
    private var listener: Listener?
    private var clients: [Int32: Client] = [:]

    final class Client {
        let socket: Socket
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 8)
        var used = 0
        var response: [UInt8] = []
        var responseBuffer: UnsafeMutableRawBufferPointer?
        var busy = false
        var closed = false
        init(socket: Socket) { self.socket = socket }
        deinit {
            buffer.deallocate()
            responseBuffer?.deallocate()
        }
    }

    init(loop: Loop, shared: SinkShared) {
        self.loop = loop
        self.shared = shared
    }

    func listen(on address: SocketAddress) throws(IOError) -> SocketAddress {
        let l = try loop.listen(on: address, options: ListenOptions()) { [unowned self] r in
            guard case .success(let a) = r else { return }
            let c = Client(socket: a.socket)
            self.clients[a.socket.fd] = c
            self.read(c)
        }
        listener = l
        return l.address
    }

    private func read(_ c: Client) {
        c.busy = true
        let rest = UnsafeMutableRawBufferPointer(rebasing: c.buffer[c.used...])
        loop.receive(c.socket, into: rest) { [unowned self] r in
            c.busy = false
            if c.closed { self.release(c); return }
            switch r {
            case .failure, .success(0): self.close(c)
            case .success(let n):
                c.used += n
                let head = UnsafeRawBufferPointer(rebasing: c.buffer[0..<c.used])
                if Self.headComplete(head) || c.used == c.buffer.count {
                    self.respond(c, Self.requestLine(head))
                } else {
                    self.read(c)
                }
            }
        }
    }

    static func headComplete(_ b: UnsafeRawBufferPointer) -> Bool {
        guard b.count >= 4 else { return false }
        for i in 3..<b.count where b[i] == 10 && (b[i - 1] == 10 || (b[i - 1] == 13 && b[i - 2] == 10)) { return true }
        return false
    }

    /// (method, path) from the first line.
    static func requestLine(_ b: UnsafeRawBufferPointer) -> (String, String) {
        let end = b.firstIndex(of: 10) ?? b.count
        let line = String(decoding: b[0..<end], as: UTF8.self).trimmingCharacters(in: [" ", "\r"])
        let parts = line.split(separator: " ")
        guard parts.count >= 2 else { return ("", "") }
        return (String(parts[0]), String(parts[1]))
    }

    private func respond(_ c: Client, _ request: (String, String)) {
        let (method, path) = request
        let status: String
        var body: [UInt8]
        if method != "GET" && method != "HEAD" {
            status = "405 Method Not Allowed"; body = Array("only GET\n".utf8)
        } else if path == "/stats" || path == "/stats/" || path.hasPrefix("/stats?") {
            status = "200 OK"; body = shared.statsJSON(pretty: path.contains("pretty"))
            body.append(10)
        } else {
            status = "404 Not Found"; body = Array("try GET /stats\n".utf8)
        }
        let type = status.hasPrefix("200") ? "application/json" : "text/plain"
        var out = Array("HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n".utf8)
        if method != "HEAD" { out += body }
        let buf = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, out.count), alignment: 8)
        buf.copyBytes(from: out)
        c.responseBuffer = buf
        c.busy = true
        loop.send(c.socket, UnsafeRawBufferPointer(rebasing: buf[0..<out.count])) { [unowned self] _ in
            c.busy = false
            self.close(c)
        }
    }

    private func close(_ c: Client) {
        if !c.closed {
            c.closed = true
            loop.close(c.socket)
        }
        release(c)
    }

    private func release(_ c: Client) {
        guard c.closed, !c.busy else { return }
        clients[c.socket.fd] = nil
    }

    func shutdown() {
        if let l = listener { loop.closeListener(l); listener = nil }
        for c in Array(clients.values) { close(c) }
    }
}
