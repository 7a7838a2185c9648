#if canImport(Glibc)
import Glibc
#endif

/// Regular files are always "ready" to epoll, yet pwrite/pread/fdatasync can
/// block for milliseconds: they run on one writer thread per loop, in
/// submission order, and their callbacks come back through the loop's inbox.
/// Submission order is what makes `fdatasync` cover every write submitted
/// before it.
extension EpollLoop {
    public func openFile(_ path: String, create: Bool, truncate: Bool) throws(IOError) -> FileHandle {
        FileHandle(fd: try Posix.openFile(path, create: create, truncate: truncate))
    }

    public func write(_ file: FileHandle, _ buffer: UnsafeRawBufferPointer, at offset: Int64,
                      _ done: @escaping (Result<Void, IOError>) -> Void) {
        let box = UncheckedBox(done)
        let base = UncheckedBox(buffer)
        submitFileOp { waker in
            let result: Result<Void, IOError> = Result { () throws(IOError) in try Posix.writeAll(file.fd, base.value, at: offset) }
            waker.push { box.value(result) }
        }
    }

    public func read(_ file: FileHandle, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64,
                     _ done: @escaping (Result<Int, IOError>) -> Void) {
        let box = UncheckedBox(done)
        let base = UncheckedBox(buffer)
        submitFileOp { waker in
            let result: Result<Int, IOError> = Result { () throws(IOError) in try Posix.preadFull(file.fd, base.value, at: offset) }
            waker.push { box.value(result) }
        }
    }

    public func fdatasync(_ file: FileHandle, _ done: @escaping (Result<Void, IOError>) -> Void) {
        let box = UncheckedBox(done)
        submitFileOp { waker in
            var rc: Int32
            repeat { rc = Glibc.fdatasync(file.fd) } while rc != 0 && errno == EINTR
            let result: Result<Void, IOError> = rc == 0 ? .success(()) : .failure(IOError.lastErrno("fdatasync"))
            waker.push { box.value(result) }
        }
    }

    public func closeFile(_ file: FileHandle) {
        // Queued behind the file's outstanding operations.
        submitFileOp { _ in _ = Glibc.close(file.fd) }
    }

    func submitFileOp(_ op: @escaping @Sendable (EpollWaker) -> Void) {
        if fileWorker == nil { fileWorker = EpollFileWorker(waker: waker) }
        fileWorker?.submit(op)
    }
}

/// Carries a loop-thread value (a callback, a buffer) across the writer
/// thread and back; it is only ever used on one thread at a time.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// The writer thread of one epoll loop: a FIFO of file operations under a
/// mutex and a condition variable, started on first use, joined at deinit.
final class EpollFileWorker: @unchecked Sendable {
    typealias Op = @Sendable (EpollWaker) -> Void

    let waker: EpollWaker
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var queue: [Op] = []
    private var stopping = false
    private var thread: pthread_t?

    init(waker: EpollWaker) {
        self.waker = waker
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        pthread_cond_init(condition, nil)
        var tid = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&tid, nil, { raw in
            guard let raw else { return nil }
            let worker = Unmanaged<EpollFileWorker>.fromOpaque(raw).takeRetainedValue()
            worker.main()
            return nil
        }, context)
        if rc == 0 {
            thread = tid
        } else {
            Unmanaged<EpollFileWorker>.fromOpaque(context).release()
        }
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func submit(_ op: @escaping Op) {
        guard thread != nil else {
            op(waker)  // no thread could be started: degrade to running inline
            return
        }
        pthread_mutex_lock(mutex)
        queue.append(op)
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Finishes the queued operations, then ends the thread and waits for it.
    func shutdownAndJoin() {
        guard let thread else { return }
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
        pthread_join(thread, nil)
        self.thread = nil
    }

    private func main() {
        var batch: [Op] = []
        while true {
            pthread_mutex_lock(mutex)
            while queue.isEmpty && !stopping { pthread_cond_wait(condition, mutex) }
            if queue.isEmpty && stopping {
                pthread_mutex_unlock(mutex)
                return
            }
            swap(&queue, &batch)
            pthread_mutex_unlock(mutex)
            for op in batch { op(waker) }
            batch.removeAll(keepingCapacity: true)
        }
    }
}
