// Fuzz target: the management API's HTTP/1.1 request parser, fed in
// chunks (byte 0 picks the chunk size) as a hostile client would send them.
// Oracles besides "no crash": buffered bytes stay within the configured
// limits, a request's body length equals its Content-Length, and a failed
// parser stays failed (the framing of the connection is lost).
import Foundation
import PeregrineHTTP


func fuzzHTTPRequest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let limits = HTTPParserLimits(maxRequestLineBytes: 256, maxHeadBytes: 1024, maxHeaderCount: 16, maxBodyBytes: 2048)
    var parser = HTTPRequestParser(limits: limits)
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let chunk = Int(input[0] % 32) + 1
    var offset = 1
    var failed = false
    while offset < size {
        let end = min(size, offset + chunk)
        parser.feed(UnsafeRawBufferPointer(rebasing: input[offset..<end]))
        offset = end
        while !failed, let result = parser.next() {
            switch result {
            case .request(let request):
                let lengths = request.headers.filter { $0.name.lowercased() == "content-length" }
                if !lengths.isEmpty {
                    // RFC 9110 section 8.6: a list of identical values ("4, 4", or the field
                    // twice) counts as one, so every element must name the body's length.
                    let elements = lengths.flatMap { $0.value.split(separator: ",", omittingEmptySubsequences: false) }
                    precondition(elements.allSatisfy { Int($0.trimmingCharacters(in: .whitespaces)) == request.body.count },
                                 "body length differs from Content-Length")
                } else {
                    precondition(request.body.isEmpty, "body without Content-Length")
                }
            case .failure(let error):
                precondition((400...599).contains(error.status), "failure status \(error.status)")
                failed = true
                guard case .failure = parser.next() else { preconditionFailure("parser recovered after a failure") }
            }
        }
        // Unparsed input is bounded by the head and body limits plus one read.
        precondition(failed || parser.bufferedByteCount <= limits.maxHeadBytes + limits.maxBodyBytes + chunk,
                     "parser buffers \(parser.bufferedByteCount) bytes")
    }
    return 0
}
