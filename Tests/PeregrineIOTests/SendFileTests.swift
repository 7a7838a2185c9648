import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO
#if canImport(Glibc)
import Glibc
#endif

/// `EventLoop.sendFile` on every backend (sendfile on epoll and Dispatch,
/// IORING_OP_SPLICE through a pipe on io_uring): a range far larger than
/// the socket buffers arrives intact between two plain sends (partial sends,
/// EAGAIN or io-wq blocking on the way), a file that ends before the range
/// fails the send, a peer that resets mid-range fails it, and a close
/// cancels one in flight with exactly one callback.
@Suite("SendFileTests", .timeLimit(.minutes(5)), .blockingIO)
struct SendFileTests {
    @Test(arguments: conformanceBackends)
    func rangeArrivesIntactBetweenSends(_ kind: BackendKind) throws {
        try kind.requireAvailable(); checkSendFileRange(kind.loopType)
    }

    @Test(arguments: conformanceBackends)
    func fileShorterThanTheRangeFails(_ kind: BackendKind) throws {
        try kind.requireAvailable(); checkSendFileShortFile(kind.loopType)
    }

    @Test(arguments: conformanceBackends)
    func peerResetMidRangeFails(_ kind: BackendKind) throws {
        try kind.requireAvailable(); checkSendFilePeerReset(kind.loopType)
    }

    @Test(arguments: conformanceBackends)
    func closeCancelsAStalledSendFile(_ kind: BackendKind) throws {
        try kind.requireAvailable(); checkSendFileCloseCancels(kind.loopType)
    }
}

/// A temporary file holding `bytes`, opened read-only; removed by the caller.
private func makeFile(_ bytes: Bytes, _ tag: String) -> (path: String, fd: Int32)? {
    let path = NSTemporaryDirectory() + "peregrine-sendfile-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).dat"
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes.raw)) else { return nil }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    return fd >= 0 ? (path, fd) : nil
}

/// Connects a client to a fresh listener; `serve` gets the accepted socket, `client` the connected one.
private func withPair<L: EventLoop>(_ loop: L, _ failures: Failures, finish: @escaping () -> Void,
                                    serve: @escaping (Socket) -> Void, client: @escaping (Socket, Listener) -> Void) {
    let listener: Listener
    do {
        listener = try loop.listen(on: .loopback()) { accepted in
            guard case .success(let c) = accepted else { failures.add("accept: \(accepted)"); return finish() }
            serve(c.socket)
        }
    } catch { failures.add("listen: \(error)"); return finish() }
    loop.connect(to: listener.address, from: nil, timeout: 5 * seconds) { connected in
        guard case .success(let socket) = connected else { failures.add("connect: \(connected)"); return finish() }
        client(socket, listener)
    }
}

/// "HEAD" + 3 MiB of the file from offset 1000 + "TAIL", each started when
/// the previous completed (as SMTPClientConnection chains them).
func checkSendFileRange<L: EventLoop>(_: L.Type) {
    let content = Bytes(count: 4 << 20, pattern: true)
    guard let file = makeFile(content, "\(L.kind)") else { Issue.record("cannot create the file"); return }
    defer { close(file.fd); unlink(file.path) }
    let offset = 1000, count = 3 << 20
    let head = Bytes("HEAD"), tail = Bytes("TAIL")
    let total = 4 + count + 4
    let received = Bytes(count: total)
    let failures = Failures()
    let sendDone = Box(false)
    LoopHarness.run(L.self, timeout: 30) { loop, finish in
        withPair(loop, failures, finish: finish, serve: { s in
            loop.send(s, head.raw) { r in
                if case .failure(let e) = r { failures.add("send head: \(e)"); return }
                loop.sendFile(s, PeregrineIO.FileHandle(fd: file.fd), offset: Int64(offset), count: count) { r in
                    if case .failure(let e) = r { failures.add("sendFile: \(e)"); return }
                    loop.send(s, tail.raw) { r in
                        if case .failure(let e) = r { failures.add("send tail: \(e)") }
                        sendDone.value = true
                        loop.close(s)
                    }
                }
            }
        }, client: { socket, listener in
            receiveExactly(loop, socket, received, count: total) { r in
                if case .failure(let e) = r { failures.add("receive: \(e)") }
                loop.close(socket)
                loop.closeListener(listener)
                finish()
            }
        })
    }
    #expect(failures.messages == [])
    #expect(received.string(4) == "HEAD")
    #expect(memcmp(received.buffer.baseAddress! + 4, content.buffer.baseAddress! + offset, count) == 0,
            "the file range arrived altered")
    #expect(String(decoding: received.buffer[(4 + count)..<total], as: UTF8.self) == "TAIL")
}

/// A 1000-byte file asked for 2000 bytes: the 1000 arrive, the send fails with EIO.
func checkSendFileShortFile<L: EventLoop>(_: L.Type) {
    let content = Bytes(count: 1000, pattern: true)
    guard let file = makeFile(content, "short-\(L.kind)") else { Issue.record("cannot create the file"); return }
    defer { close(file.fd); unlink(file.path) }
    let received = Bytes(count: 1000)
    let failures = Failures()
    let result = Box<Result<Void, IOError>?>(nil)
    LoopHarness.run(L.self, timeout: 20) { loop, finish in
        var pending = 2
        func done() { pending -= 1; if pending == 0 { finish() } }
        withPair(loop, failures, finish: finish, serve: { s in
            loop.sendFile(s, PeregrineIO.FileHandle(fd: file.fd), offset: 0, count: 2000) { r in
                result.value = r
                loop.close(s)
                done()
            }
        }, client: { socket, listener in
            receiveExactly(loop, socket, received, count: 1000) { r in
                if case .failure(let e) = r { failures.add("receive: \(e)") }
                loop.close(socket)
                loop.closeListener(listener)
                done()
            }
        })
    }
    #expect(failures.messages == [])
    #expect(sameBytes(content, received, 1000), "the bytes the file has arrived altered")
    switch result.value {
    case .failure(let e)?: #expect(e.errnoValue == EIO, "expected EIO, got \(e)")
    case .success?: Issue.record("a sendFile past the end of the file reported success")
    case nil: Issue.record("the sendFile never completed")
    }
}

/// 32 MiB from the file to a peer that reads 4 KiB and closes (a reset): the send fails.
func checkSendFilePeerReset<L: EventLoop>(_: L.Type) {
    let content = Bytes(count: 32 << 20, pattern: true)
    guard let file = makeFile(content, "reset-\(L.kind)") else { Issue.record("cannot create the file"); return }
    defer { close(file.fd); unlink(file.path) }
    let failures = Failures()
    let result = Box<Result<Void, IOError>?>(nil)
    LoopHarness.run(L.self, timeout: 20) { loop, finish in
        withPair(loop, failures, finish: finish, serve: { s in
            loop.sendFile(s, PeregrineIO.FileHandle(fd: file.fd), offset: 0, count: 32 << 20) { r in
                result.value = r
                loop.close(s)
                finish()
            }
        }, client: { socket, listener in
            let some = Bytes(count: 4096)
            loop.receive(socket, into: some.buffer) { _ in
                _ = some
                loop.close(socket)   // unread data: the kernel resets the connection
                loop.closeListener(listener)
            }
        })
    }
    #expect(failures.messages == [])
    switch result.value {
    case .failure(let e)?:
        #expect(e.errnoValue == EPIPE || e.errnoValue == ECONNRESET, "expected EPIPE or ECONNRESET, got \(e)")
    case .success?: Issue.record("a sendFile of 32 MiB to a reset peer reported success")
    case nil: Issue.record("the sendFile never completed")
    }
}

/// A peer that never reads stalls a 32 MiB sendFile; closing the socket
/// ends it with one failure callback (cancelled on io_uring, whose splice
/// waits in an io-wq worker), and the loop goes on (a timer still fires).
func checkSendFileCloseCancels<L: EventLoop>(_: L.Type) {
    let content = Bytes(count: 32 << 20, pattern: true)
    guard let file = makeFile(content, "cancel-\(L.kind)") else { Issue.record("cannot create the file"); return }
    defer { close(file.fd); unlink(file.path) }
    let failures = Failures()
    let callbacks = Box(0)
    let failed = Box(false)
    let firstByte = Bytes(count: 1)
    let serverSocket = Box<Socket?>(nil)
    LoopHarness.run(L.self, timeout: 20) { loop, finish in
        withPair(loop, failures, finish: finish, serve: { s in
            serverSocket.value = s
            loop.sendFile(s, PeregrineIO.FileHandle(fd: file.fd), offset: 0, count: 32 << 20) { r in
                callbacks.value += 1
                if case .failure = r { failed.value = true }
                // A second callback would come before this timer fires.
                loop.scheduleTimer(after: 50 * milliseconds) { finish() }
            }
        }, client: { socket, listener in
            // One byte read proves the send started; nothing more is read: 32 MiB cannot all be taken.
            loop.receive(socket, into: firstByte.buffer) { r in
                _ = firstByte
                if case .failure(let e) = r { failures.add("receive: \(e)") }
                loop.closeListener(listener)
                if let s = serverSocket.value { loop.close(s) } else { failures.add("no accepted socket") }
            }
        })
    }
    #expect(failures.messages == [])
    #expect(callbacks.value == 1, "the sendFile's callback ran \(callbacks.value) times")
    #expect(failed.value, "a sendFile cut short by close reported success")
}
