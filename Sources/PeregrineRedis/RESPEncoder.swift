import PeregrineIO

/// Writes one Redis command as a RESP array of bulk strings straight into a
/// `ByteBuffer`: arguments are byte collections (a `String`'s `utf8` view, a
/// slice of a queue name, a static `[UInt8]`) or integers, never converted to
/// a `String` or an array per argument. Use it through
/// `ByteBuffer.appendRedisCommand(argumentCount:_:)`.
///
/// RESP puts the argument count in the header, so the caller states it
/// first; a mismatch is a programmer error and traps.
package struct RESPCommandWriter {
    var buffer: ByteBuffer
    var remaining: Int

    init(argumentCount: Int, taking target: inout ByteBuffer) {
        precondition(argumentCount > 0, "a Redis command has at least its name")
        buffer = ByteBuffer(capacity: 0)
        swap(&buffer, &target)   // O(1): the writer appends into the caller's storage
        remaining = argumentCount
        buffer.append(UInt8(ascii: "*"))
        buffer.appendDecimal(argumentCount)
        buffer.append(13); buffer.append(10)
    }

    /// Appends one argument.
    package mutating func argument(_ bytes: some Collection<UInt8>) {
        precondition(remaining > 0, "more Redis arguments than announced")
        remaining -= 1
        buffer.append(UInt8(ascii: "$"))
        buffer.appendDecimal(bytes.count)
        buffer.append(13); buffer.append(10)
        buffer.append(contentsOf: bytes)
        buffer.append(13); buffer.append(10)
    }

    /// Appends one argument that is a decimal integer (counts, milliseconds).
    package mutating func argument(_ value: Int) {
        precondition(remaining > 0, "more Redis arguments than announced")
        remaining -= 1
        var digits = 1, v = value.magnitude
        while v >= 10 { v /= 10; digits += 1 }
        buffer.append(UInt8(ascii: "$"))
        buffer.appendDecimal(digits + (value < 0 ? 1 : 0))
        buffer.append(13); buffer.append(10)
        if value < 0 { buffer.append(UInt8(ascii: "-")) }
        if value.magnitude <= UInt(Int.max) {
            buffer.appendDecimal(Int(value.magnitude))
        } else {   // Int.min: its magnitude does not fit an Int
            buffer.appendDecimal(Int(value.magnitude / 10))
            buffer.append(UInt8(ascii: "0") + UInt8(value.magnitude % 10))
        }
        buffer.append(13); buffer.append(10)
    }

    mutating func finish(into target: inout ByteBuffer) {
        precondition(remaining == 0, "fewer Redis arguments than announced")
        swap(&buffer, &target)
    }
}

extension ByteBuffer {
    /// Appends one command of `argumentCount` arguments (its name included),
    /// written by `write`.
    package mutating func appendRedisCommand(argumentCount: Int, _ write: (inout RESPCommandWriter) -> Void) {
        var w = RESPCommandWriter(argumentCount: argumentCount, taking: &self)
        write(&w)
        w.finish(into: &self)
    }

    /// Appends one command whose arguments are at hand as text (tests, rare commands).
    package mutating func appendRedisCommand(_ arguments: [String]) {
        appendRedisCommand(argumentCount: arguments.count) { w in
            for a in arguments { w.argument(a.utf8) }
        }
    }
}
