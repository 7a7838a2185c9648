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
