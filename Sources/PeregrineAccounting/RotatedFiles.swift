#if canImport(Glibc)
import Glibc
#endif

/// The names rotation gives a file (`STEM-YYYYMMDD-HHMMSS.EXT`, `-N` before the
/// extension on a clash) and the clean-up of old ones: `delete-after` in an
/// `<acct-file>`, `log-rotate N` for the log file. Shared by `AccountingWriter`
/// and the daemon's log file, so both rotate the same way.
public enum RotatedFiles {
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
