import Testing
import Foundation
#if canImport(Glibc)
import Glibc
#endif
@testable import PeregrineIO

/// `Posix.writeAll` / `Posix.preadFull`, the one write-everything and
/// read-everything loop every file writer and reader shares.
@Suite("PosixFilesTests")
struct PosixFilesTests {
    private func withTempFile(_ body: (Int32) throws -> Void) throws {
        let path = NSTemporaryDirectory() + "peregrine-posix-files-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).dat"
        let fd = try Posix.openFile(path, create: true, truncate: true)
        defer { close(fd); unlink(path) }
        try body(fd)
    }

    @Test func writesAtOffsetsAndReadsBackShortOnlyAtEndOfFile() throws {
        try withTempFile { fd in
            let data: [UInt8] = Array(0..<200).map { UInt8($0) }
            try data.withUnsafeBytes { try Posix.writeAll(fd, $0, at: 0) }
            try [UInt8](repeating: 0xAA, count: 10).withUnsafeBytes { try Posix.writeAll(fd, $0, at: 50) }

            var buffer = [UInt8](repeating: 0, count: 300)
            let full = try buffer.withUnsafeMutableBytes { try Posix.preadFull(fd, $0, at: 0) }
            #expect(full == 200)
            #expect(Array(buffer[0..<50]) == Array(data[0..<50]))
            #expect(Array(buffer[50..<60]) == [UInt8](repeating: 0xAA, count: 10))
            #expect(Array(buffer[60..<200]) == Array(data[60..<200]))

            let tail = try buffer.withUnsafeMutableBytes { try Posix.preadFull(fd, $0, at: 190) }
            #expect(tail == 10)
            let past = try buffer.withUnsafeMutableBytes { try Posix.preadFull(fd, $0, at: 1000) }
            #expect(past == 0)
        }
    }

    @Test func appendsAtTheFilePositionWithoutAnOffset() throws {
        try withTempFile { fd in
            var written = 0
            let first = [UInt8]("abc".utf8).withUnsafeBytes { Posix.writeAll(fd, $0, written: &written) }
            #expect(first == nil)
            #expect(written == 3)
            let second = [UInt8]("def".utf8).withUnsafeBytes { Posix.writeAll(fd, $0, written: &written) }
            #expect(second == nil)
            var buffer = [UInt8](repeating: 0, count: 6)
            let n = try buffer.withUnsafeMutableBytes { try Posix.preadFull(fd, $0, at: 0) }
            #expect(n == 6)
            #expect(String(decoding: buffer, as: UTF8.self) == "abcdef")
        }
    }

    @Test func aFullDeviceIsAnErrorValueNamingTheCall() throws {
        let fd = open("/dev/full", O_WRONLY | O_CLOEXEC)
        try #require(fd >= 0, "/dev/full is not available")
        defer { close(fd) }
        var written = -1
        let error = [UInt8](repeating: 1, count: 4096).withUnsafeBytes { Posix.writeAll(fd, $0, written: &written) }
        #expect(error == IOError(.errno(ENOSPC), "write"))
        #expect(written == 0)
        #expect(throws: IOError(.errno(ENOSPC), "pwrite")) {
            try [UInt8](repeating: 1, count: 16).withUnsafeBytes { try Posix.writeAll(fd, $0, at: 0) }
        }
    }

    @Test func aReadFailureIsAnErrorValue() {
        // A directory cannot be read with pread: EISDIR, as a value.
        let fd = open("/", O_RDONLY | O_CLOEXEC | O_DIRECTORY)
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(throws: IOError(.errno(EISDIR), "pread")) {
            _ = try buffer.withUnsafeMutableBytes { try Posix.preadFull(fd, $0, at: 0) }
        }
    }

    @Test func emptyBuffersDoNothing() throws {
        try withTempFile { fd in
            try [UInt8]().withUnsafeBytes { try Posix.writeAll(fd, $0, at: 0) }
            var empty: [UInt8] = []
            let n = try empty.withUnsafeMutableBytes { try Posix.preadFull(fd, $0, at: 0) }
            #expect(n == 0)
        }
    }

    @Test func readsAWholeFileOrItsFirstBytes() throws {
        let path = NSTemporaryDirectory() + "peregrine-posix-readfile-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).dat"
        let fd = try Posix.openFile(path, create: true, truncate: true)
        defer { close(fd); unlink(path) }
        // Longer than one 64 KiB read, so the loop runs more than once.
        let data: [UInt8] = (0..<150_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try data.withUnsafeBytes { try Posix.writeAll(fd, $0, at: 0) }
        #expect(try Posix.readFile(path) == data)
        #expect(try Posix.readFile(path, maxBytes: 70_000) == Array(data[0..<70_000]))
        #expect(try Posix.readFile(path, maxBytes: 0) == [])
    }

    @Test func aMissingFileIsAnOpenError() {
        #expect(throws: IOError(.errno(ENOENT), "open")) {
            _ = try Posix.readFile("/nonexistent-peregrine-\(getpid())/file")
        }
    }
}
