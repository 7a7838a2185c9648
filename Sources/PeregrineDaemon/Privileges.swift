#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// `run-as-user` / `run-as-group`: who the daemon becomes once it has bound
/// its listeners (port 25 needs root) and opened its files as root.
///
/// The switch is for the whole process and for good: supplementary groups are
/// replaced by the one group (setgroups), then setgid, then setuid, which for
/// root sets the real, effective and saved ids alike and clears every
/// capability. glibc applies each call to every thread of the process (the
/// loops' threads were started before the switch). `drop()` then checks that
/// root cannot be regained.
struct PrivilegeDrop: Sendable, Equatable {
    let userName: String
    let uid: uid_t
    let groupName: String
    let gid: gid_t

    enum Failure: Error, CustomStringConvertible {
        case unknownUser(String)
        case unknownGroup(String)
        case notRoot(user: String)
        case call(String, errno: Int32)
        case regained(String)

        var description: String {
            switch self {
            case .unknownUser(let u): return "run-as-user: no such user '\(u)'"
            case .unknownGroup(let g): return "run-as-group: no such group '\(g)'"
            case .notRoot(let u):
                return "run-as-user \(u): the daemon was not started as root (uid \(getuid())), so it cannot switch users; "
                    + "start it as root, or as \(u) itself"
            case .call(let what, let e): return "privilege drop: \(what) failed: \(String(cString: strerror(e))) (errno \(e))"
            case .regained(let what): return "privilege drop: \(what); refusing to run"
            }
        }
    }

    /// Looks the user (name or number) and group up; the group defaults to the user's primary group.
    static func resolve(user: String, group: String?) throws(Failure) -> PrivilegeDrop {
        guard let (uid, primaryGID, name) = lookUpUser(user) else { throw .unknownUser(user) }
        var gid = primaryGID
        var groupName = lookUpGroup(String(primaryGID))?.1 ?? String(primaryGID)
        if let group {
            guard let (g, n) = lookUpGroup(group) else { throw .unknownGroup(group) }
            gid = g
            groupName = n
        }
        return PrivilegeDrop(userName: name, uid: uid, groupName: groupName, gid: gid)
    }

    /// Whether there is anything to switch: already that user, nothing to do;
    /// another user but not root, impossible (`notRoot`).
    func isNeeded() throws(Failure) -> Bool {
        if geteuid() == 0 { return uid != 0 || gid != 0 }
        if geteuid() == uid && getegid() == gid { return false }
        throw .notRoot(user: userName)
    }

    /// Makes `path` (and, when `recursive`, everything under it) belong to the
    /// user and group. Symbolic links are changed themselves, never followed.
    func chown(_ path: String, recursive: Bool) throws(Failure) {
        if lchown(path, uid, gid) != 0 && errno != ENOENT { throw .call("chown \(path)", errno: errno) }
        guard recursive else { return }
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else { return }
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return }
        for name in names { try chown(path + "/" + name, recursive: true) }
    }

    /// Switches the process to the user and group, then checks that it
    /// cannot become root again.
    func drop() throws(Failure) {
        var groups = [gid]
        if setgroups(1, &groups) != 0 { throw .call("setgroups([\(gid)])", errno: errno) }
        if setgid(gid) != 0 { throw .call("setgid(\(gid))", errno: errno) }
        if setuid(uid) != 0 { throw .call("setuid(\(uid))", errno: errno) }
        // Real, effective, saved and filesystem ids, as the kernel has them
        // (glibc does not export getresuid to Swift).
        let ids = Self.processIDs()
        guard ids.uids == [uid, uid, uid, uid], ids.gids == [gid, gid, gid, gid] else {
            throw .regained("ids after the switch are uid \(ids.uids) gid \(ids.gids), not \(uid) and \(gid)")
        }
        guard uid != 0 else { return }
        // The point of the exercise: root must be gone for good.
        if setuid(0) == 0 || seteuid(0) == 0 { throw .regained("setuid(0) succeeded after the switch") }
        if gid != 0, setgid(0) == 0 { throw .regained("setgid(0) succeeded after the switch") }
    }

    /// The `Uid:` and `Gid:` lines of /proc/self/status (real, effective, saved, filesystem).
    static func processIDs() -> (uids: [UInt32], gids: [UInt32]) {
        let text = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        func ids(_ key: String) -> [UInt32] {
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }) else { return [] }
            return line.dropFirst(key.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { UInt32($0) }
        }
        return (ids("Uid"), ids("Gid"))
    }

    var description: String { "user \(userName) (uid \(uid)), group \(groupName) (gid \(gid))" }

    private static func lookUpUser(_ text: String) -> (uid_t, gid_t, String)? {
        var pwd = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16384)
        if let n = UInt32(text) {
            if getpwuid_r(n, &pwd, &buffer, buffer.count, &result) == 0, result != nil {
                return (pwd.pw_uid, pwd.pw_gid, String(cString: pwd.pw_name))
            }
            return (n, n, text)  // a bare uid without a passwd entry: its own number as group
        }
        guard getpwnam_r(text, &pwd, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return (pwd.pw_uid, pwd.pw_gid, String(cString: pwd.pw_name))
    }

    private static func lookUpGroup(_ text: String) -> (gid_t, String)? {
        var grp = group()
        var result: UnsafeMutablePointer<group>?
        var buffer = [CChar](repeating: 0, count: 16384)
        if let n = UInt32(text) {
            if getgrgid_r(n, &grp, &buffer, buffer.count, &result) == 0, result != nil {
                return (grp.gr_gid, String(cString: grp.gr_name))
            }
            return (n, text)
        }
        guard getgrnam_r(text, &grp, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return (grp.gr_gid, String(cString: grp.gr_name))
    }
}
