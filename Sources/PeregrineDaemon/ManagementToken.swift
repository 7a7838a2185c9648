#if canImport(Glibc)
import Glibc
#endif

/// The bearer token of the management API (`http-mgmt-token-file`, by
/// default `<spool>/mgmt-token`): created by the daemon at start-up, 32
/// random bytes as 64 hex digits, mode 0600, owned by the daemon's user; an
/// existing file is reused, so `peregrine ctl` keeps working across restarts.
/// Whoever can read the file may pause, delete and reload.
package enum ManagementToken {
    package struct Failure: Error, CustomStringConvertible {
        package var description: String
    }

    /// Reads the token at `path`, creating the file first if there is none.
    /// Refuses a file others can read or write, or one that is not a regular file.
    package static func loadOrCreate(path: String) throws(Failure) -> [UInt8] {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        if fd >= 0 {
            var generator = SystemRandomNumberGenerator()
            let hex = Array("0123456789abcdef".utf8)
            var token: [UInt8] = []
            for _ in 0..<32 {
                let b = UInt8.random(in: 0...255, using: &generator)
                token.append(hex[Int(b >> 4)])
                token.append(hex[Int(b & 15)])
            }
            let line = token + [10]
            let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            let synced = fsync(fd) == 0
            let e = errno
            close(fd)
            guard written == line.count, synced else {
                unlink(path)
                throw Failure(description: "cannot write the management token \(path): \(String(cString: strerror(e)))")
            }
            return token
        }
        guard errno == EEXIST else {
            throw Failure(description: "cannot create the management token \(path): \(String(cString: strerror(errno)))")
        }
        return try read(path: path, requireOwner: true)
    }

    /// Reads an existing token file (the daemon at start, `ctl`). The daemon
    /// also wants it to be its own: a token someone else planted is no secret.
    package static func read(path: String, requireOwner: Bool = false) throws(Failure) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else {
            throw Failure(description: "cannot read the management token \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw Failure(description: "the management token \(path) is not a regular file")
        }
        guard !requireOwner || st.st_uid == geteuid() else {
            throw Failure(description: "the management token \(path) belongs to another user (uid \(st.st_uid)): delete it and a new one is made")
        }
        guard st.st_mode & 0o077 == 0 else {
            throw Failure(description: "the management token \(path) is open to others (mode \(String(st.st_mode & 0o777, radix: 8))): "
                          + "chmod 600 it, or delete it and a new one is made")
        }
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { throw Failure(description: "the management token \(path) is empty") }
        var token = Array(buffer[0..<n])
        while let last = token.last, last == 10 || last == 13 || last == 32 || last == 9 { token.removeLast() }
        guard token.count >= 16, token.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else {
            throw Failure(description: "the management token \(path) is not a token (16 to 255 printable characters)")
        }
        return token
    }
}
