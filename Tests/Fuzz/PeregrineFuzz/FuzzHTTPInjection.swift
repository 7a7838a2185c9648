// Fuzz target: the HTTP injection API's body path (POST /api/v1/messages):
// the JSON parser, the field checks and the message built from the content,
// for whatever JSON a client sends. Oracles besides "no crash": a refused
// body gets 400 (syntax) or 422 (a field), never another status; a JSON
// value that parses re-serialises to a value that parses to the same value;
// and every message built is well-formed RFC 5322: CRLF line ends only, no
// line over 998 octets, no NUL; and, when Peregrine built the MIME, a header
// section that ends in an empty line and is ASCII only (non-ASCII goes out as
// RFC 2047 encoded-words). A raw message may have no body, so no empty line.
@_spi(Fuzzing) import PeregrineDaemon
import PeregrineHTTP

func fuzzHTTPInjection(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let body = Array(UnsafeBufferPointer(start: data, count: size))
    if let value = try? JSONParser.parse(body) {
        let again = try? JSONParser.parse(Array(value.serialized.utf8))
        precondition(again == value, "a parsed JSON value does not survive serialisation")
    }
    let result = HTTPInjectionBodyPath.run(body: body, maxRecipients: 8, buildLimit: 3)
    precondition([200, 400, 422].contains(result.status), "status \(result.status) for a body")
    for message in result.messages { checkWellFormed(message, built: result.structured) }
    return 0
}

private func checkWellFormed(_ message: [UInt8], built: Bool) {
    var lineStart = 0
    var inHeaders = true
    var sawEmptyLine = false
    var i = 0
    while i < message.count {
        let b = message[i]
        precondition(b != 0, "NUL at \(i)")
        if b == 13 {
            precondition(i + 1 < message.count && message[i + 1] == 10, "bare CR at \(i)")
            precondition(i - lineStart <= 998, "line of \(i - lineStart) octets at \(lineStart)")
            if inHeaders && i == lineStart { inHeaders = false; sawEmptyLine = true }
            i += 2
            lineStart = i
            continue
        }
        precondition(b != 10, "bare LF at \(i)")
        if inHeaders && built { precondition(b < 0x80, "non-ASCII header byte at \(i)") }
        i += 1
    }
    precondition(lineStart == message.count, "the message does not end with CRLF")
    precondition(sawEmptyLine || !built, "no empty line after the header section")
}
