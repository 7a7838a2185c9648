/// The three interchangeable I/O backends. Executables pick one at start-up
/// (`--backend io_uring|epoll|dispatch`) and run a specialised engine on it.
public enum BackendKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case ioUring = "io_uring"
    case epoll = "epoll"
    case dispatch = "dispatch"

    public var description: String { rawValue }

    /// Parses a user-supplied backend name. Accepts `io_uring`, `iouring`,
    /// `uring`, `epoll`, `dispatch` (case-insensitive).
    public static func parse(_ text: String) -> Result<BackendKind, IOError> {
        switch text.lowercased() {
        case "io_uring", "iouring", "io-uring", "uring": return .success(.ioUring)
        case "epoll": return .success(.epoll)
        case "dispatch", "libdispatch": return .success(.dispatch)
        default:
            let names = BackendKind.allCases.map(\.rawValue).joined(separator: ", ")
            return .failure(IOError(.invalidArgument("unknown backend '\(text)' (expected one of: \(names))"), "backend"))
        }
    }
}
