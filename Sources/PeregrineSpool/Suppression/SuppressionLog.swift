#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// The suppression list's file: an append-only log of add and remove records.
///
///     file    = magic record*
///     magic   = "PGSUPP01"                       8 bytes
///     record  = length:u32le crc:u32le payload   crc = CRC32C(payload)
///     payload = op:u8 reason:u8 time:i64le text   length = 10 + text bytes
///     op      = 1 (add) | 2 (remove); text is the entry's normal form (SuppressionKey)
///
/// Replayed in order, the records give the list. A record whose length is
/// out of range, whose CRC does not match, or that the file ends inside
/// ends the log: it and everything after it are cut off at load (reported),
/// since a torn append can only be at the tail and nothing after damage can
/// be trusted to be framed right.
package enum SuppressionLog {
    package static let magic: [UInt8] = Array("PGSUPP01".utf8)
    package static let headerBytes = 8
    package static let maxPayload = 10 + SuppressionKey.maxLength

    package enum Op: UInt8 { case add = 1, remove = 2 }

    package struct Record {
        package var op: Op
        package var reason: SuppressionReason
        package var time: Int64
        /// The normalised entry text, valid only during the callback.
        package var text: UnsafeRawBufferPointer
    }

    /// Appends one encoded record to `out`.
    package static func encode(_ op: Op, reason: SuppressionReason, time: Int64, text: some Collection<UInt8>,
                               into out: inout [UInt8]) {
        let start = out.count
        let length = UInt32(10 + text.count)
        withUnsafeBytes(of: length.littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: [0, 0, 0, 0])
        out.append(op.rawValue)
        out.append(reason.rawValue)
        withUnsafeBytes(of: time.littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: text)
        let crc = out.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[(start + 8)...])) }
        withUnsafeBytes(of: crc.littleEndian) { b in
            for k in 0..<4 { out[start + 4 + k] = b[k] }
        }
    }

    /// What a scan found.
    package struct ScanResult: Equatable {
        /// Valid records read.
        package var records = 0
        /// Where the valid log ends (the header included); appends go here.
        package var validEnd: Int64 = 0
        /// Bytes after `validEnd` (a torn or damaged tail), 0 when the file is whole.
        package var damagedBytes: Int64 = 0
        /// Why the tail was cut, when it was.
        package var damage: String?
    }

    /// Reads the log in `fd` from the start, calling `body` for each valid
    /// record in order, in chunks (the file is never held whole in memory).
    /// A file shorter than the header, or empty, is an empty log; a wrong
    /// magic is an error (it is not our file: nothing is cut).
    package static func scan(fd: Int32, body: (Record) -> Void) throws -> ScanResult {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw IOError.lastErrno("fstat") }
        let size = Int64(st.st_size)
        var result = ScanResult()
        if size == 0 { return result }
        var head = [UInt8](repeating: 0, count: headerBytes)
        let got = try head.withUnsafeMutableBytes { (b) throws -> Int in try Posix.preadFull(fd, b, at: 0) }
        if got < headerBytes {
            result.damagedBytes = size
            result.damage = "file shorter than its header"
            return result
        }
        guard head == magic else { throw IOError(.invalidArgument("not a suppression log (bad magic)"), "scan") }
        let chunkSize = 1 << 20
        var buffer = [UInt8](repeating: 0, count: chunkSize + maxPayload + 8)
        var filled = 0         // bytes in buffer
        var bufferOffset: Int64 = Int64(headerBytes)  // file offset of buffer[0]
        var eof = false
        var position = 0       // parse position in buffer
        result.validEnd = Int64(headerBytes)
        while true {
            // Keep at least one whole record in the buffer.
            if !eof && filled - position < maxPayload + 8 {
                let keep = filled - position
                buffer.withUnsafeMutableBytes { b in
                    if keep > 0 && position > 0 { b.baseAddress!.copyMemory(from: b.baseAddress! + position, byteCount: keep) }
                }
                bufferOffset += Int64(position)
                position = 0
                filled = keep
                let n = try buffer.withUnsafeMutableBytes { (b) throws -> Int in
                    try Posix.preadFull(fd, UnsafeMutableRawBufferPointer(rebasing: b[filled..<(filled + chunkSize)]),
                                        at: bufferOffset + Int64(filled))
                }
                filled += n
                if n < chunkSize { eof = true }
            }
            let available = filled - position
            if available == 0 { break }
            let bad: String? = buffer.withUnsafeBytes { b -> String? in
                guard available >= 8 else { return "a record header cut short" }
                let length = Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: position, as: UInt32.self)))
                let crc = UInt32(littleEndian: b.loadUnaligned(fromByteOffset: position + 4, as: UInt32.self))
                guard length >= 11, length <= maxPayload else { return "a record length of \(length) bytes" }
                guard available >= 8 + length else { return "a record cut short" }
                let payload = UnsafeRawBufferPointer(rebasing: b[(position + 8)..<(position + 8 + length)])
                guard CRC32C.checksum(payload) == crc else { return "a checksum mismatch" }
                guard let op = Op(rawValue: payload[0]), let reason = SuppressionReason(rawValue: payload[1]) else {
                    return "an unknown record kind"
                }
                let time = Int64(littleEndian: payload.loadUnaligned(fromByteOffset: 2, as: Int64.self))
                body(Record(op: op, reason: reason, time: time, text: UnsafeRawBufferPointer(rebasing: payload[10...])))
                position += 8 + length
                return nil
            }
            if let bad {
                result.damage = bad
                break
            }
            result.records += 1
            result.validEnd = bufferOffset + Int64(position)
        }
        result.damagedBytes = size - result.validEnd
        return result
    }
}
