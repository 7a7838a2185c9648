#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// `<acct-file |/path/to/program>`: the records go to a program's standard
/// input instead of a file (a bounce processor, a loader into a database).
///
/// The program is started at start-up (a program that cannot be started
/// stops the daemon, like a file that cannot be opened) and gets the header
/// line first. Writes are non-blocking: a program that reads slowly or not
/// at all never holds a loop; its records wait in the writer's buffer, up to
/// `maxPipeBuffered` bytes, beyond which the oldest whole lines are dropped
/// and counted (`droppedBytes`). A program that exits (its pipe reports
/// EPIPE) is started again, at most once a second, and gets the header
/// again; a line it had half read is not resent. Records in the pipe's
/// kernel buffer when it exited are lost with it: pipes keep no receipts.
final class AccountingPipe {
    let program: String
    var fd: Int32 = -1
    var pid: pid_t = 0
    /// Monotonic time of the last start (restarts wait a second).
    var lastStart: UInt64 = 0
    /// Starts, the first one included.
    var starts = 0
    /// The last byte written was not the end of a line.
    var midLine = false

    init(program: String) {
        self.program = program
        // A write to a program that exited must be EPIPE, not the end of the daemon.
        Posix.ignoreSIGPIPE()
    }

    static let restartInterval: UInt64 = 1_000_000_000

    /// Starts the program with a new pipe on its stdin; returns errno on failure.
    func start() -> Int32? {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return errno }
        let (readEnd, writeEnd) = (fds[0], fds[1])
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFL, fcntl(writeEnd, F_GETFL) | O_NONBLOCK)
        // Posix.spawn gives the program an empty signal mask and default dispositions.
        let spawned = Posix.spawn(program, stdin: readEnd)
        Glibc.close(readEnd)
        lastStart = monotonicNanoseconds()
        starts += 1
        let child: pid_t
        switch spawned {
        case .success(let p): child = p
        case .failure(let e):
            Glibc.close(writeEnd)
            if case .errno(let code) = e.kind { return code }
            return EINVAL
        }
        fd = writeEnd
        pid = child
        midLine = false
        return nil
    }

    /// The program is gone (or going): closes our end and reaps it if it has exited.
    func lost() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
        if pid > 0 {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) != 0 { pid = 0 }
        }
    }

    /// Shutdown: closes the pipe (end of input), gives the program a second
    /// to finish, then SIGTERM, then SIGKILL; always reaps it.
    func stop() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
        guard pid > 0 else { return }
        var status: Int32 = 0
        for (signal, polls) in [(Int32(0), 100), (SIGTERM, 100), (SIGKILL, 1000)] {
            if signal != 0 { kill(pid, signal) }
            for _ in 0..<polls {
                let r = waitpid(pid, &status, WNOHANG)
                if r == pid || (r < 0 && errno == ECHILD) { pid = 0; return }
                usleep(10_000)
            }
        }
    }
}

extension AccountingWriter.State {
    mutating func openPipe(now: Int64) throws(AccountingError) {
        guard let pipe else { return }
        if let e = pipe.start() { throw AccountingError.io(path: options.path, operation: "start the program", errno: e) }
        buffer.insert(contentsOf: columns.header, at: 0)
    }

    /// Writes what the program takes without waiting; restarts it when it exited.
    mutating func writePipe() -> AccountingError? {
        guard let pipe, !closed || pipe.fd >= 0 else { buffer.removeAll(); return nil }
        var failure: AccountingError?
        if pipe.fd < 0 && !closed && monotonicNanoseconds() &- pipe.lastStart >= AccountingPipe.restartInterval {
            if pipe.midLine, let lf = buffer.firstIndex(of: 10) {
                // The rest of a line the last program half read: the new one would see garbage.
                dropped += Int64(lf + 1)
                buffer.removeFirst(lf + 1)
            }
            if let e = pipe.start() {
                failure = .io(path: options.path, operation: "restart the program", errno: e)
            } else {
                buffer.insert(contentsOf: columns.header, at: 0)
            }
        }
        if pipe.fd >= 0 && !buffer.isEmpty {
            var written = 0
            let count = buffer.count
            let fd = pipe.fd
            let err: Int32? = buffer.withUnsafeBytes { raw in
                while written < count {
                    let n = Glibc.write(fd, raw.baseAddress! + written, count - written)
                    if n > 0 { written += n; continue }
                    if n < 0 && errno == EINTR { continue }
                    if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return nil }
                    return n < 0 ? errno : EIO
                }
                return nil
            }
            if written > 0 {
                pipe.midLine = buffer[written - 1] != 10
                buffer.removeFirst(written)
            }
            if let err {
                pipe.lost()
                if err != EPIPE { failure = .io(path: options.path, operation: "write to the program", errno: err) }
            }
        }
        // Bounded: beyond the cap the oldest whole lines go (the header of a restart stays whole too).
        if buffer.count > options.maxPipeBuffered {
            let excess = buffer.count - options.maxPipeBuffered
            let cut = buffer[excess...].firstIndex(of: 10).map { $0 + 1 } ?? buffer.count
            dropped += Int64(cut)
            buffer.removeFirst(cut)
        }
        return failure
    }

    /// Shutdown: gives the program up to two seconds to take what is buffered, then stops it.
    mutating func closePipe() {
        guard let pipe else { return }
        var polls = 0
        while !buffer.isEmpty && pipe.fd >= 0 && polls < 200 {
            _ = writePipe()
            if buffer.isEmpty { break }
            usleep(10_000)
            polls += 1
        }
        pipe.stop()
    }
}
