#if canImport(Glibc)
import Glibc
#endif

extension Posix {
    /// The signals the programs ignore or take themselves (`ignoreSIGPIPE`,
    /// `ProcessSignals`): a child gets their default action back.
    static let signalsResetForChildren: [Int32] = [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2]

    /// Starts `program` (a path; `argv[0]` is the program) as a child with
    /// `stdin` (if given) as its standard input. The one way the daemon and
    /// the sink start a program: the child gets an empty signal mask and
    /// default dispositions, since every thread of theirs has the signals
    /// they handle blocked (`ProcessSignals.block`) and SIGPIPE ignored, and
    /// both survive `exec` — a child that inherited them would ignore the
    /// SIGTERM that stops it and never see SIGPIPE. ETXTBSY (the program file
    /// still open for writing somewhere, e.g. just installed) is retried
    /// briefly. Returns the child's pid or the errno.
    public static func spawn(_ program: String, arguments: [String] = [], stdin: Int32? = nil) -> Result<pid_t, IOError> {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin { posix_spawn_file_actions_adddup2(&actions, stdin, 0) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in signalsResetForChildren { sigaddset(&defaults, sig) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        let argv: [UnsafeMutablePointer<CChar>?] = ([program] + arguments).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var child: pid_t = 0
        var rc = posix_spawn(&child, program, &actions, &attr, argv, environ)
        var retries = 0
        while rc == ETXTBSY && retries < 25 {
            usleep(20_000)
            retries += 1
            rc = posix_spawn(&child, program, &actions, &attr, argv, environ)
        }
        guard rc == 0 else { return .failure(IOError(.errno(rc), "posix_spawn \(program)")) }
        return .success(child)
    }
}
