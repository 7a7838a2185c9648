#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import PeregrineIO
import PeregrineSpool

/// Which recipients were sent their delay notice (`notify-of-delay-every`,
/// DSNGenerator.delayed), shared by every loop and kept in
/// `SPOOL/delay-notices`, so that a restart does not send a recipient still
/// deferred a second notice (before, the marks were in memory only, and every
/// restart sent one again to every recipient already past the interval).
///
/// The file is one line per notice, `MESSAGE-ID RECIPIENT-INDEX`, appended
/// with one write(2) once the notice is spooled: it survives the process (a
/// crash, a restart), not a power loss, which at worst costs a second notice.
/// At start-up it is read, the marks of messages no longer spooled are
/// dropped, and the rest is rewritten (a new file renamed over the old), so
/// it never holds more than the spool's deferred recipients. A file that
/// cannot be read or written is reported once and the marks are kept in
/// memory for this run, as before.
final class DelayNoticeMarks: @unchecked Sendable {
    struct Key: Hashable { var id: MessageID; var recipient: Int }

    static let fileName = "delay-notices"

    private let marks = Locked<Set<Key>>([])
    /// Number of marks: `forget` (every completed message) costs one atomic load while there are none.
    private let count = Atomic<Int>(0)
    private let fd: Int32
    private let writeFailed = Atomic<Bool>(false)
    private let report: @Sendable (String) -> Void

    /// In memory only (no spool yet, or tests).
    init() { fd = -1; report = { _ in } }

    /// Loads the marks of `SPOOL/delay-notices` for the messages in `live`
    /// (those still spooled), rewrites the file with just those, and opens it for appending.
    init(spoolDirectory: String, live: Set<MessageID>, report: @escaping @Sendable (String) -> Void) {
        self.report = report
        let path = spoolDirectory + "/" + Self.fileName
        var kept = Set<Key>()
        if let data = FileManager.default.contents(atPath: path) {
            for line in data.split(separator: UInt8(ascii: "\n")) {
                if let key = Self.parse(line), live.contains(key.id) { kept.insert(key) }
            }
        }
        var text = ""
        for key in kept { text += Self.line(key) }
        let temporary = path + ".new"
        var opened: Int32 = -1
        if FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]),
           rename(temporary, path) == 0 {
            opened = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        }
        if opened < 0 {
            report("delay-notices: cannot rewrite \(path) (\(String(cString: strerror(errno)))); "
                   + "delay notices are remembered in memory only: a restart may send a recipient a second one")
        }
        fd = opened
        marks.withLock { $0 = kept }
        count.store(kept.count, ordering: .relaxed)
    }

    deinit { if fd >= 0 { close(fd) } }

    func contains(_ id: MessageID, recipient: Int) -> Bool {
        guard count.load(ordering: .relaxed) > 0 else { return false }
        return marks.withLock { $0.contains(Key(id: id, recipient: recipient)) }
    }

    /// Marks the recipient as notified in memory (its notice is being made).
    func mark(_ id: MessageID, recipient: Int) {
        let added = marks.withLock { $0.insert(Key(id: id, recipient: recipient)).inserted }
        if added { count.add(1, ordering: .relaxed) }
    }

    /// Writes the mark to the file (the notice is spooled).
    func persist(_ id: MessageID, recipient: Int) {
        let key = Key(id: id, recipient: recipient)
        guard fd >= 0 else { return }
        // One short append to the page cache, once per notice (rare): no need for the loop's async file I/O.
        let bytes = Array(Self.line(key).utf8)
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n != bytes.count, !writeFailed.exchange(true, ordering: .relaxed) {
            report("delay-notices: cannot append to the file (\(n < 0 ? String(cString: strerror(errno)) : "short write")); "
                   + "later marks are in memory only: a restart may send those recipients a second notice")
        }
    }

    /// The message is done: its marks go (from the file at the next start).
    func forget(_ id: MessageID, recipients: Int) {
        guard count.load(ordering: .relaxed) > 0 else { return }
        let removed = marks.withLock { set -> Int in
            var n = 0
            for r in 0..<recipients where set.remove(Key(id: id, recipient: r)) != nil { n += 1 }
            return n
        }
        if removed > 0 { count.subtract(removed, ordering: .relaxed) }
    }

    static func line(_ key: Key) -> String { "\(key.id) \(key.recipient)\n" }

    /// `MESSAGE-ID RECIPIENT-INDEX` (32 hex digits, a decimal); nil for anything else (a torn last line).
    static func parse(_ line: Data) -> Key? {
        let fields = line.split(separator: UInt8(ascii: " "))
        guard fields.count == 2, let idText = String(bytes: fields[0], encoding: .ascii), let id = MessageID(hex: idText),
              let indexText = String(bytes: fields[1], encoding: .ascii), let index = Int(indexText), index >= 0
        else { return nil }
        return Key(id: id, recipient: index)
    }
}
