/// Streaming DATA encoder for the client side: normalises line ends to CRLF
/// (bare LF and bare CR become CRLF), doubles a dot at the start of a line,
/// and finishes with "<CRLF>.<CRLF>" (adding the CRLF when the body does not
/// end with one).
public struct DotStuffer: Sendable {
    private var atLineStart = true
    private var pendingCR = false

    public init() {}

    public mutating func reset() { atLineStart = true; pendingCR = false }

    /// Encodes `chunk` onto the end of `output`.
    public mutating func stuff(_ chunk: UnsafeRawBufferPointer, into output: inout ByteBuffer) {
        let n = chunk.count
        guard n > 0 else { return }
        var runStart = 0
        var i = 0
        while i < n {
            let b = chunk[i]
            if pendingCR {
                pendingCR = false
                if b == 10 {
                    // CRLF: the CR was held back; write both.
                    output.append(13); output.append(10)
                    i += 1; runStart = i
                    atLineStart = true
                    continue
                }
                output.append(13); output.append(10)   // bare CR -> CRLF
                atLineStart = true
            }
            if atLineStart && b == UInt8(ascii: ".") {
                output.append(UInt8(ascii: "."))
            }
            atLineStart = false
            if b == 13 || b == 10 {
                if i > runStart { output.append(UnsafeRawBufferPointer(rebasing: chunk[runStart..<i])) }
                if b == 13 {
                    pendingCR = true
                } else {
                    output.append(13); output.append(10)   // bare LF -> CRLF
                    atLineStart = true
                }
                i += 1; runStart = i
                continue
            }
            // Fast run to the next CR/LF.
            var j = i + 1
            while j < n, chunk[j] != 13, chunk[j] != 10 { j += 1 }
            if runStart < i { /* nothing */ }
            output.append(UnsafeRawBufferPointer(rebasing: chunk[runStart..<j]))
            i = j; runStart = j
        }
        if runStart < n { output.append(UnsafeRawBufferPointer(rebasing: chunk[runStart..<n])) }
    }

    public mutating func stuff(_ chunk: [UInt8], into output: inout ByteBuffer) {
        chunk.withUnsafeBytes { stuff($0, into: &output) }
    }

    /// Ends the message: pending line end, final CRLF when needed, ".\r\n".
    public mutating func finish(into output: inout ByteBuffer) {
        if pendingCR { output.append(13); output.append(10); atLineStart = true; pendingCR = false }
        if !atLineStart { output.append(13); output.append(10) }
        output.append(UInt8(ascii: ".")); output.append(13); output.append(10)
        reset()
    }
}
