import PeregrineIO

/// An RFC 3463 enhanced status code: class.subject.detail, e.g. 4.7.28.
public struct EnhancedStatusCode: Hashable, Sendable, CustomStringConvertible {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    public var statusClass: UInt8
    public var subject: UInt16
    public var detail: UInt16

    public init(_ statusClass: UInt8, _ subject: UInt16, _ detail: UInt16) {
        self.statusClass = statusClass; self.subject = subject; self.detail = detail
    }

    /// Parses "c.s.d" (c in 2,4,5; s and d at most three digits).
    public init?(_ text: some StringProtocol) {
        guard let parsed = Array(text.utf8).withUnsafeBytes({ EnhancedStatusCode.parse($0) }),
              parsed.length == text.utf8.count else { return nil }
        self = parsed.code
    }

    public var description: String { "\(statusClass).\(subject).\(detail)" }

    /// Parses an enhanced code at the start of `bytes`; returns it and its length.
    static func parse(_ bytes: UnsafeRawBufferPointer) -> (code: EnhancedStatusCode, length: Int)? {
        var i = 0
        func number(maxDigits: Int) -> Int? {
            var value = 0, n = 0
            while i < bytes.count, n < maxDigits, bytes[i] >= 0x30, bytes[i] <= 0x39 {
                value = value * 10 + Int(bytes[i] - 0x30); i += 1; n += 1
            }
            if n == 0 { return nil }
            if i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 { return nil }
            return value
        }
        guard let c = number(maxDigits: 1), c == 2 || c == 4 || c == 5 else { return nil }
        guard i < bytes.count, bytes[i] == UInt8(ascii: ".") else { return nil }
        i += 1
        guard let s = number(maxDigits: 3) else { return nil }
        guard i < bytes.count, bytes[i] == UInt8(ascii: ".") else { return nil }
        i += 1
        guard let d = number(maxDigits: 3) else { return nil }
        return (EnhancedStatusCode(UInt8(c), UInt16(s), UInt16(d)), i)
    }

    func write(into buffer: inout ByteBuffer) {
        buffer.append(UInt8(ascii: "0") + statusClass)
        buffer.append(UInt8(ascii: "."))
        buffer.appendDecimal(Int(subject))
        buffer.append(UInt8(ascii: "."))
        buffer.appendDecimal(Int(detail))
    }
}
