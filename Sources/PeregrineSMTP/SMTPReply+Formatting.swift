import PeregrineIO

extension SMTPReply {
    /// Writes the reply in wire format. Multi-line replies use "code-" on all
    /// lines but the last and repeat the enhanced code on every line (as Gmail does).
    public func write(into buffer: inout ByteBuffer) {
        let last = lines.count - 1
        for (i, line) in lines.enumerated() {
            buffer.appendDecimal(code)
            buffer.append(i == last ? UInt8(ascii: " ") : UInt8(ascii: "-"))
            if let e = enhancedCode {
                e.write(into: &buffer)
                if !line.isEmpty { buffer.append(UInt8(ascii: " ")) }
            }
            buffer.append(string: line)
            buffer.append(13); buffer.append(10)
        }
    }

    /// The wire bytes of the reply.
    public var wireBytes: [UInt8] {
        var b = ByteBuffer(capacity: 64)
        write(into: &b)
        return b.readableBytesArray
    }
}
