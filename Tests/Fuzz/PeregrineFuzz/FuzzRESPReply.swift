// Fuzz target: the Redis RESP2 reply parser, fed in chunks (byte 0 picks the
// chunk size) as a broken or hostile server would send them. Oracles besides
// "no crash": buffered bytes stay within the line and bulk limits plus one
// chunk, and a failed parser stays failed (the stream's framing is lost).
import PeregrineRedis

func fuzzRESPReply(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let limits = RESPParser.Limits(maxLineLength: 64, maxBulkLength: 256, maxArrayCount: 32, maxDepth: 4)
    var parser = RESPParser(limits: limits)
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let chunk = Int(input[0] % 32) + 1
    var offset = 1
    var failed = false
    while offset < size && !failed {
        let end = min(size, offset + chunk)
        parser.feed(UnsafeRawBufferPointer(rebasing: input[offset..<end]))
        offset = end
        do {
            while try parser.next() != nil {}
        } catch {
            failed = true
            do { _ = try parser.next(); preconditionFailure("parser recovered after a failure") } catch {}
        }
        precondition(failed || parser.bufferedBytes <= limits.maxLineLength + limits.maxBulkLength + 2 + chunk,
                     "parser buffers \(parser.bufferedBytes) bytes")
    }
    return 0
}
