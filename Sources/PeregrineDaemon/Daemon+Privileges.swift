#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// `run-as-user`, `run-as-group`, `run-as-root` at start-up (Privileges.swift does the switch).
extension Daemon {
    /// What `run()` will do about root, decided before it touches anything:
    /// `.success(nil)` keeps the current user; a failure has been logged.
    func planPrivileges() -> Result<PrivilegeDrop?, PrivilegeDrop.Failure> {
        let runtime = config.runtime
        guard let user = runtime.runAsUser else {
            if geteuid() == 0 && runtime.runAsRoot != true {
                // PowerMTA's own daemon switches to its user by default; Peregrine
                // has no user of its own to assume, so it warns rather than guesses.
                log("warning: running as root: set run-as-user (and run-as-group) to drop root once the listeners "
                    + "are bound, or run-as-root yes to keep root on purpose")
            }
            return .success(nil)
        }
        do throws(PrivilegeDrop.Failure) {
            let drop = try PrivilegeDrop.resolve(user: user, group: runtime.runAsGroup)
            return .success(try drop.isNeeded() ? drop : nil)
        } catch {
            log("\(error)")
            return .failure(error)
        }
    }

    /// Hands the spool (all of it), the accounting files and the log file to
    /// the user, switches to it, and says where rotation will fail (a
    /// directory the user cannot write). Called once every listener is bound
    /// and every file is open, before any mail moves. False: the daemon must stop.
    func dropPrivileges(_ drop: PrivilegeDrop) -> Bool {
        let files = config.accountingFiles.filter { $0.pipeProgram == nil }.map(\.path) + (config.runtime.logFile.map { [$0.path] } ?? [])
        do throws(PrivilegeDrop.Failure) {
            try drop.chown(config.spoolPath, recursive: true)
            if !config.managementTokenPath.hasPrefix(config.spoolPath + "/") {
                try drop.chown(config.managementTokenPath, recursive: false)
            }
            for f in files { try drop.chown(f, recursive: false) }
            try drop.drop()
        } catch {
            log("\(error)")
            return false
        }
        log("dropped root: now running as \(drop.description)")
        // access(2) checks the real ids: the user's, from here on.
        for f in files {
            let dir = f.lastIndex(of: "/").map { String(f[..<$0]) } ?? "."
            if access(dir.isEmpty ? "/" : dir, W_OK | X_OK) != 0 {
                log("warning: \(dir) is not writable by \(drop.userName): rotating \(f) will fail "
                    + "(make the directory the user's, e.g. install -d -o \(drop.userName) \(dir))")
            }
        }
        return true
    }
}
