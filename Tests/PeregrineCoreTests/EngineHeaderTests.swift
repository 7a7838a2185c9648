import Testing
@testable import PeregrineEngine

@Suite struct EngineHeaderTests {
    @Test func findsFoldedFieldsCaseInsensitively() {
        let msg = Array("From: a@b\r\nX-Virtual-MTA: vmta2\r\nSubject: hello\r\n  world\r\nx-job: J42\r\n\r\nbody: not a header\r\n".utf8)
        let h = HeaderSection(msg)
        #expect(h.fields.count == 4)
        let v = h.first(named: "X-Virtual-MTA", in: msg)
        #expect(v.map { HeaderSection.string($0.value, in: msg) } == "vmta2")
        let s = h.first(named: "subject", in: msg)
        #expect(s.map { HeaderSection.string($0.value, in: msg) } == "hello  world")
        #expect(h.first(named: "X-JOB", in: msg).map { HeaderSection.string($0.value, in: msg) } == "J42")
        #expect(Array(msg[h.bodyStart...]) == Array("body: not a header\r\n".utf8))
        #expect(h.first(named: "body", in: msg) == nil)
    }

    @Test func malformedHeaderEndsSection() {
        let msg = Array("From: a@b\r\nthis line has no colon\r\nX-Job: 1\r\n".utf8)
        let h = HeaderSection(msg)
        #expect(h.fields.count == 1)
        #expect(h.first(named: "X-Job", in: msg) == nil)
    }

    @Test func messageWithoutBody() {
        let msg = Array("Subject: x\r\n".utf8)
        let h = HeaderSection(msg)
        #expect(h.fields.count == 1 && h.bodyStart == msg.count)
    }

    /// Offsets are indexes of the collection given: a slice that does not start
    /// at 0, a raw buffer (injection's case) and a non-contiguous collection
    /// (copied first) give the same fields as the array.
    @Test func offsetsFollowTheCollectionsIndexes() {
        let text = Array("From: a@b\r\nSubject: hello\r\n  world\r\n\r\nbody\r\n".utf8)
        let whole = HeaderSection(text)
        let padded = Array("junk".utf8) + text
        let slice = padded[4...]
        let h = HeaderSection(slice)
        #expect(h.fields.map(\.range) == whole.fields.map { ($0.range.lowerBound + 4)..<($0.range.upperBound + 4) })
        #expect(h.bodyStart == whole.bodyStart + 4)
        #expect(h.first(named: "subject", in: slice).map { HeaderSection.string($0.value, in: slice) } == "hello  world")
        let raw = text.withUnsafeBytes { HeaderSection($0) }
        #expect(raw.fields.map(\.value) == whole.fields.map(\.value) && raw.bodyStart == whole.bodyStart)
        let lazy = HeaderSection(text.lazy.map { $0 })
        #expect(lazy.fields.map(\.name) == whole.fields.map(\.name) && lazy.bodyStart == whole.bodyStart)
    }
}
