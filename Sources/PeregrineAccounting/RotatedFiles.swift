#if canImport(Glibc)
import Glibc
#endif

/// The names rotation gives a file (`STEM-YYYYMMDD-HHMMSS.EXT`, `-N` before the
/// extension on a clash) and the clean-up of old ones: `delete-after` in an
/// `<acct-file>`, `log-rotate N` for the log file. Shared by `AccountingWriter`
/// and the daemon's log file, so both rotate the same way.
public enum RotatedFiles {
    /// Opens (creating) the current file for appending, with mode 0644 or
    /// 0640 also on an existing file (the umask does not narrow it further),
    /// and returns its descriptor and size.
    public static func openForAppend(_ path: String, worldReadable: Bool) throws(AccountingError) -> (fd: Int32, size: Int64) {
        let mode: mode_t = worldReadable ? 0o644 : 0o640
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, mode)
        guard fd >= 0 else { throw AccountingError.io(path: path, operation: "open", errno: errno) }
        _ = fchmod(fd, mode)
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno
            close(fd)
            throw AccountingError.io(path: path, operation: "fstat", errno: e)
        }
        return (fd, Int64(st.st_size))
    }

    /// When a file rotated every `interval` seconds (on multiples of it, UTC)
    /// next rotates after `now`; nil when it does not rotate by time.
    public static func nextIntervalRotation(after now: Int64, interval: Int64?) -> Int64? {
        guard let iv = interval, iv > 0 else { return nil }
        return (AccountingTimestamp.floorDiv(now, iv) + 1) * iv
    }

    /// The name `path` is renamed to when rotated at `now` (UTC seconds): the
    /// first of `STEM-YYYYMMDD-HHMMSS.EXT`, `…-1.EXT`, `…-2.EXT` that does not exist.
    public static func name(for path: String, now: Int64) -> String {
        let (dir, stem, ext) = split(path)
        let base = "\(dir)\(stem)-\(AccountingTimestamp.compact(now))"
        var candidate = "\(base)\(ext)"
        var n = 1
        while access(candidate, F_OK) == 0 {
            candidate = "\(base)-\(n)\(ext)"
            n += 1
        }
        return candidate
    }

    /// Rotated files of `path` found in its directory, oldest first (by the
    /// time in their names, then the clash number). Only names rotation makes
    /// are listed: another file in the same directory is never touched.
    public static func list(for path: String) -> [String] {
        let (dir, stem, ext) = split(path)
        let directory = dir.isEmpty ? "." : String(dir)
        guard let d = opendir(directory) else { return [] }
        defer { closedir(d) }
        var found: [(key: String, n: Int, path: String)] = []
        while let entry = readdir(d) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            guard let (stamp, n) = parse(name, stem: stem, ext: ext) else { continue }
            found.append((stamp, n, "\(dir)\(name)"))
        }
        found.sort { $0.key != $1.key ? $0.key < $1.key : $0.n < $1.n }
        return found.map(\.path)
    }

    /// Deletes rotated files of `path` last modified more than `maxAgeSeconds`
    /// before `now` (`delete-after`), then all but the newest `keep` (`log-rotate N`).
    /// Returns the paths deleted and the errors (a file that cannot be removed stays).
    @discardableResult
    public static func prune(for path: String, now: Int64, maxAgeSeconds: Int64?, keep: Int?) -> (deleted: [String], errors: [AccountingError]) {
        var files = list(for: path)
        var deleted: [String] = [], errors: [AccountingError] = []
        func remove(_ p: String) {
            if unlink(p) == 0 || errno == ENOENT { deleted.append(p) } else {
                errors.append(.io(path: p, operation: "unlink (rotated file clean-up)", errno: errno))
            }
        }
        if let maxAge = maxAgeSeconds {
            var kept: [String] = []
            for f in files {
                var st = stat()
                if stat(f, &st) == 0, now - Int64(st.st_mtim.tv_sec) > maxAge { remove(f) } else { kept.append(f) }
            }
            files = kept
        }
        if let keep, files.count > keep {
            for f in files.prefix(files.count - max(0, keep)) { remove(f) }
        }
        return (deleted, errors)
    }

    /// (directory with its trailing slash, or empty; stem; extension with its dot, or empty).
    static func split(_ path: String) -> (Substring, Substring, Substring) {
        let slash = path.lastIndex(of: "/")
        let nameStart = slash.map { path.index(after: $0) } ?? path.startIndex
        let name = path[nameStart...]
        let dir = path[..<nameStart]
        if let dot = name.lastIndex(of: "."), dot != name.startIndex {
            return (dir, name[..<dot], name[dot...])
        }
        return (dir, name, "")
    }

    /// `STEM-YYYYMMDD-HHMMSS[-N]EXT` → ("YYYYMMDD-HHMMSS", N or 0); nil for any other name.
    static func parse(_ name: String, stem: Substring, ext: Substring) -> (String, Int)? {
        guard name.hasPrefix(stem + "-"), name.hasSuffix(ext) else { return nil }
        let middle = name.dropFirst(stem.count + 1).dropLast(ext.count)
        let stamp = middle.prefix(15)
        guard stamp.count == 15 else { return nil }
        for (i, c) in stamp.enumerated() {
            if i == 8 { guard c == "-" else { return nil } } else { guard c.isASCII && c.isNumber else { return nil } }
        }
        let rest = middle.dropFirst(15)
        if rest.isEmpty { return (String(stamp), 0) }
        guard rest.first == "-", let n = Int(rest.dropFirst()), n > 0 else { return nil }
        return (String(stamp), n)
    }
}
