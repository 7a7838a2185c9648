#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// A tool whose reader has gone away (the bench or a shell pipe closed
/// stdout) must still shut down cleanly: Foundation's FileHandle.write traps
/// on EPIPE, which once turned the sink's SIGTERM summary into a SIGILL.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct BrokenStdoutTests {
    @Test func sinkShutsDownCleanlyWhenItsStdoutReaderIsGone() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: E2E.executable("peregrine-sink"))
        p.arguments = ["--accept-all", "--listen", "127.0.0.1:0", "--stats-port", "127.0.0.1:0", "--backend", "epoll"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try ChildProcess.run(p)
        // Wait until it is serving (it prints its listening line), then close the reader.
        let fd = out.fileHandleForReading.fileDescriptor
        var buffer = [UInt8](repeating: 0, count: 512)
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&pfd, 1, 20_000) > 0 && read(fd, &buffer, buffer.count) > 0
        #expect(ready, "the sink printed nothing within 20 s")
        try out.fileHandleForReading.close()
        kill(p.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(20)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        #expect(p.terminationReason == .exit, "ended by signal \(p.terminationStatus)")
        #expect(p.terminationStatus == 0)
    }
}
