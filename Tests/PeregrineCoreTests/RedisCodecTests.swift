import Testing
import PeregrineIO
@testable import PeregrineRedis

/// The RESP2 codec, byte by byte: the encoder's exact bytes, every reply type,
/// every split of a feed, and malformed or oversized input refused.
@Suite("Redis RESP codec", .timeLimit(.minutes(10)))
struct RedisCodecTests {

    private func encoded(_ build: (inout ByteBuffer) -> Void) -> String {
        var b = ByteBuffer()
        build(&b)
        return String(decoding: b.readableBytesArray, as: UTF8.self)
    }

    @Test func encoderWritesArraysOfBulkStrings() {
        #expect(encoded { $0.appendRedisCommand(["SET", "k", "v"]) } == "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
        // Binary-safe: CRLF and NUL inside an argument are counted, not interpreted.
        #expect(encoded { $0.appendRedisCommand(["SET", "a\r\nb\0", ""]) } == "*3\r\n$3\r\nSET\r\n$5\r\na\r\nb\0\r\n$0\r\n\r\n")
        let queue: [UInt8] = Array("gmail.com/vmta1".utf8)
        let s = encoded { b in
            b.appendRedisCommand(argumentCount: 5) { w in
                w.argument("SET".utf8); w.argument(queue[0..<9]); w.argument(0); w.argument(-1500); w.argument(Int.min)
            }
            b.appendRedisCommand(argumentCount: 1) { $0.argument("PING".utf8) }
        }
        #expect(s == "*5\r\n$3\r\nSET\r\n$9\r\ngmail.com\r\n$1\r\n0\r\n$5\r\n-1500\r\n$20\r\n-9223372036854775808\r\n*1\r\n$4\r\nPING\r\n")
    }

    /// Every reply type, in one stream.
    static let stream = "+OK\r\n-ERR unknown command 'FOO'\r\n:-42\r\n$5\r\nhe\r\no\r\n$0\r\n\r\n$-1\r\n*-1\r\n*0\r\n"
        + "*3\r\n:1\r\n*2\r\n$1\r\na\r\n*1\r\n+deep\r\n$-1\r\n:9223372036854775807\r\n"
    static let expected: [RESPValue] = [
        .simple(Array("OK".utf8)), .error(Array("ERR unknown command 'FOO'".utf8)), .integer(-42),
        .bulk(Array("he\r\no".utf8)), .bulk([]), .null, .null, .array([]),
        .array([.integer(1), .array([.bulk([UInt8(ascii: "a")]), .array([.simple(Array("deep".utf8))])]), .null]),
        .integer(Int64.max),
    ]

    private func parseAll(_ chunks: [ArraySlice<UInt8>]) throws -> [RESPValue] {
        var p = RESPParser()
        var out: [RESPValue] = []
        for c in chunks {
            p.feed(c)
            while let v = try p.next() { out.append(v) }
        }
        #expect(p.isIdle)
        return out
    }

    @Test func parsesEveryTypeInOneFeed() throws {
        #expect(try parseAll([Array(Self.stream.utf8)[...]]) == Self.expected)
    }

    @Test func parsesOneByteAtATime() throws {
        let bytes = Array(Self.stream.utf8)
        #expect(try parseAll(bytes.indices.map { bytes[$0...$0] }) == Self.expected)
    }

    /// Every split point of the stream into two feeds, and into three.
    @Test func parsesEverySplit() throws {
        let bytes = Array(Self.stream.utf8)
        for i in 0...bytes.count {
            #expect(try parseAll([bytes[..<i], bytes[i...]]) == Self.expected, "split at \(i)")
        }
        for i in stride(from: 0, through: bytes.count, by: 3) {
            for j in stride(from: i, through: bytes.count, by: 5) {
                #expect(try parseAll([bytes[..<i], bytes[i..<j], bytes[j...]]) == Self.expected, "split at \(i), \(j)")
            }
        }
    }

    @Test func incompleteReplyWaits() throws {
        var p = RESPParser()
        p.feed(Array("*2\r\n$3\r\nfoo\r\n$3\r\nba".utf8))
        #expect(try p.next() == nil)
        #expect(!p.isIdle)
        p.feed(Array("r\r".utf8))
        #expect(try p.next() == nil)
        p.feed(Array("\n+next".utf8))
        #expect(try p.next() == .array([.bulk(Array("foo".utf8)), .bulk(Array("bar".utf8))]))
        #expect(try p.next() == nil)
        p.feed(Array("\r\n".utf8))
        #expect(try p.next() == .simple(Array("next".utf8)))
    }

    private func refusal(_ text: String, limits: RESPParser.Limits = .init()) -> String? {
        var p = RESPParser(limits: limits)
        p.feed(Array(text.utf8))
        do {
            while try p.next() != nil {}
            return nil
        } catch {
            // Once failed, always failed: the stream cannot be trusted again.
            p.feed(Array("+OK\r\n".utf8))
            #expect(throws: RESPProtocolError.self) { try p.next() }
            return error.reason
        }
    }

    @Test func malformedInputIsRefused() {
        #expect(refusal("?what\r\n") == "unknown reply type byte 63")
        #expect(refusal("\r\n") == "empty line where a reply was expected")
        #expect(refusal(":12a\r\n") == "bad integer \"12a\"")
        #expect(refusal(":\r\n") == "bad integer \"\"")
        #expect(refusal(":-\r\n") == "bad integer \"-\"")
        #expect(refusal(":9223372036854775808\r\n") == "bad integer \"9223372036854775808\"")
        #expect(refusal("$-2\r\n") == "bad bulk length \"-2\"")
        #expect(refusal("$+3\r\nabc\r\n") == "bad bulk length \"+3\"")
        #expect(refusal("$3\r\nabcd\r\n") == "bulk string of 3 bytes not followed by CRLF")
        #expect(refusal("*x\r\n") == "bad array length \"x\"")
        #expect(refusal("*-5\r\n") == "bad array length \"-5\"")
        // A complete, valid stream is not refused.
        #expect(refusal("*1\r\n:1\r\n") == nil)
    }

    /// Huge lengths are refused from the header alone, before any byte of the
    /// body arrives and before anything is allocated for it.
    @Test func hugeLengthsAreRefusedFromTheHeader() {
        let limits = RESPParser.Limits(maxLineLength: 32, maxBulkLength: 1000, maxArrayCount: 100, maxDepth: 3)
        #expect(refusal("$1001\r\n", limits: limits) == "bulk string of 1001 bytes exceeds the limit of 1000")
        #expect(refusal("$9223372036854775807\r\n") == "bulk string of 9223372036854775807 bytes exceeds the limit of 16777216")
        #expect(refusal("*101\r\n", limits: limits) == "array of 101 elements exceeds the limit of 100")
        #expect(refusal("*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", limits: limits) == "arrays nested deeper than 3")
        #expect(refusal("*1\r\n*1\r\n*1\r\n:1\r\n", limits: limits) == nil)
        // A line without its CRLF cannot grow without bound either.
        #expect(refusal("+" + String(repeating: "x", count: 40), limits: limits) == "line longer than 32 bytes")
        #expect(refusal("+" + String(repeating: "x", count: 40) + "\r\n", limits: limits) == "line longer than 32 bytes")
        #expect(refusal("$1000\r\n" + String(repeating: "x", count: 1000) + "\r\n", limits: limits) == nil)
    }

    /// What the encoder writes, a server-side RESP reader reads back (the
    /// request format is the reply format's array of bulk strings).
    @Test func encoderOutputParsesBack() throws {
        var b = ByteBuffer()
        b.appendRedisCommand(argumentCount: 4) { w in
            w.argument("EVALSHA".utf8); w.argument([0, 13, 10, 255]); w.argument(1); w.argument(-7)
        }
        var p = RESPParser()
        b.withUnsafeReadableBytes { p.feed($0) }
        #expect(try p.next() == .array([.bulk(Array("EVALSHA".utf8)), .bulk([0, 13, 10, 255]), .bulk([49]), .bulk(Array("-7".utf8))]))
    }
}
