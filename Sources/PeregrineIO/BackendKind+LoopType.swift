extension BackendKind {
    /// The loop type for this backend. Generic code opens the existential
    /// once at start-up (`func run<L: EventLoop>(_: L.Type)` called with
    /// `kind.loopType`) and is specialised from there on.
    public var loopType: any EventLoop.Type {
        switch self {
        case .ioUring: return URingLoop.self
        case .epoll: return EpollLoop.self
        case .dispatch: return DispatchLoop.self
        }
    }
}

extension BackendKind {
    /// Whether this backend runs here: builds one loop on the calling thread
    /// and drops it. io_uring fails on a kernel without it (or with it
    /// disabled by sysctl); the error says why. Keeps executables free of
    /// backend-specific code.
    public func probe() throws(IOError) {
        _ = try loopType.init()
    }
}
