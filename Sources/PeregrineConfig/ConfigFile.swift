#if canImport(Glibc)
import Glibc
#endif

/// Reading a config file with answers an operator can act on: why a file
/// cannot be read (`No such file or directory (ENOENT)`), and which line
/// holds bytes that are not UTF-8.
public enum ConfigFile {
    /// Files larger than this are refused: a config is kilobytes; this is a wrong path (a log, a disk image).
    public static let maximumSize = 64 << 20

    /// The file's text, or nil after recording why not. Lines that are not
    /// valid UTF-8 are each reported at their own line and read as empty, so
    /// the rest of the file is still checked. `location` is where the file was
    /// named (an `include` line); nil for the main file.
    public static func read(path: String, at location: ConfigLocation? = nil,
                            diagnostics: inout ConfigDiagnostics) -> String? {
        let whole = ConfigLocation(file: path, line: 0)
        func fail(_ what: String, _ code: Int32) {
            let reason = "\(String(cString: strerror(code))) (\(errnoName(code)))"
            if let location {
                diagnostics.record(ConfigError(location, "cannot \(what) '\(path)': \(reason)", directive: "include"))
            } else {
                diagnostics.record(ConfigError(whole, "cannot \(what) the config file: \(reason)"))
            }
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { fail("open", errno); return nil }
        defer { Glibc.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                fail("read", errno)
                return nil
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > maximumSize {
                diagnostics.record(ConfigError(location ?? whole, "'\(path)' is larger than \(maximumSize >> 20) MiB: not a config file",
                                               directive: location == nil ? nil : "include"))
                return nil
            }
        }
        return text(bytes, file: path, diagnostics: &diagnostics)
    }

    /// Decodes line by line so that invalid UTF-8 is reported where it is.
    public static func text(_ bytes: [UInt8], file: String, diagnostics: inout ConfigDiagnostics) -> String {
        if let whole = String(validating: bytes, as: UTF8.self) { return whole }
        var lines: [String] = []
        for (index, line) in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            if let text = String(validating: line, as: UTF8.self) {
                lines.append(text)
            } else {
                let column = firstInvalidOffset(Array(line)) + 1
                diagnostics.record(ConfigError(ConfigLocation(file: file, line: index + 1),
                                               "line is not valid UTF-8 (byte \(column) is not part of a UTF-8 character)"))
                lines.append("")
            }
        }
        return lines.joined(separator: "\n")
    }

    private static func firstInvalidOffset(_ line: [UInt8]) -> Int {
        var offset = 0
        var iterator = line.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue(let scalar): offset += UTF8.width(scalar)
            case .emptyInput: return offset
            case .error: return offset
            }
        }
    }

    /// The symbolic name of the errors a config read can meet, for the message.
    static func errnoName(_ code: Int32) -> String {
        switch code {
        case ENOENT: return "ENOENT"
        case EACCES: return "EACCES"
        case EPERM: return "EPERM"
        case EISDIR: return "EISDIR"
        case ENOTDIR: return "ENOTDIR"
        case ELOOP: return "ELOOP"
        case ENAMETOOLONG: return "ENAMETOOLONG"
        case EMFILE: return "EMFILE"
        case ENFILE: return "ENFILE"
        case EIO: return "EIO"
        case ENXIO: return "ENXIO"
        default: return "errno \(code)"
        }
    }
}
