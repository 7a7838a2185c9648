#if canImport(Glibc)
import Glibc
#endif

/// An I/O failure as a value: which operation failed and the errno it failed with.
/// Backends never trap on a failing syscall; they hand one of these to the caller.
public struct IOError: Error, Hashable, CustomStringConvertible, Sendable {
    public enum Kind: Hashable, Sendable {
        /// A syscall failed with `errno`.
        case errno(Int32)
        /// The operation was cancelled because its socket or file was closed
        /// (or the loop stopped) before it completed.
        case cancelled
        /// A connect or other timed operation ran out of time.
        case timedOut
        /// The backend cannot run here (kernel too old, feature disabled).
        case unsupported(String)
        /// A caller mistake detectable without a syscall (bad address text, …).
        case invalidArgument(String)
    }

    public var kind: Kind
    /// The operation that failed, e.g. "connect", "io_uring_queue_init".
    public var operation: String

    public init(_ kind: Kind, _ operation: String) {
        self.kind = kind
        self.operation = operation
    }

    /// Captures the calling thread's errno.
    public static func lastErrno(_ operation: String) -> IOError {
        IOError(.errno(errno), operation)
    }

    public var errnoValue: Int32? {
        if case .errno(let e) = kind { return e }
        return nil
    }

    public var isCancelled: Bool { kind == .cancelled }

    public var description: String {
        switch kind {
        case .errno(let e):
            return "\(operation): \(String(cString: strerror(e))) (errno \(e))"
        case .cancelled:
            return "\(operation): cancelled"
        case .timedOut:
            return "\(operation): timed out"
        case .unsupported(let why):
            return "\(operation): unsupported: \(why)"
        case .invalidArgument(let why):
            return "\(operation): \(why)"
        }
    }
}
