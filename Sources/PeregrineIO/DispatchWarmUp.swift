import Dispatch

/// libdispatch creates its event manager's descriptors (an epoll, an
/// eventfd, timerfds) lazily, the first time a global-queue worker or a
/// timer needs it, and traps (DISPATCH_INTERNAL_CRASH, SIGILL) when that
/// creation fails. A daemon whose first `DispatchQueue.global()` use came
/// while its descriptors were exhausted by connections (a SIGHUP reload, the
/// SIGTERM shutdown at the end of a loaded run: both are handed to the global
/// queue) died on the spot, and the Swift backtracer, itself short of
/// descriptors, could not even say why (issue 12 item 9; seen in
/// scripts/uring-fault-soak with a low RLIMIT_NOFILE). Called once at
/// start-up, while descriptors are plentiful: a timer on the global queue
/// makes libdispatch set all of that up before any connection exists.
public enum DispatchWarmUp {
    public static func now() {
        let ran = DispatchSemaphore(value: 0)
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(1)) { ran.signal() }
        ran.wait()
    }
}
