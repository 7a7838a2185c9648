// Fuzz target: the config lexer and the PowerMTA-style config parser,
// as an operator's broken or hostile file reaches them. Oracle besides "no
// crash": every error names the file and a line inside it (`fuzz.conf:N:`).
import PeregrineConfig
import PeregrineDaemon


func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    // Lines by bytes: "\r\n" is one Character, so counting "\n" Characters misses it.
    let lineCount = UnsafeBufferPointer(start: data, count: size).reduce(1) { $0 + ($1 == 10 ? 1 : 0) }
    do {
        _ = try PeregrineConfig.parse(text, file: "fuzz.conf")
    } catch {
        precondition(error.location.file == "fuzz.conf", "error without the file: \(error)")
        precondition(error.location.line >= 0 && error.location.line <= lineCount + 1,
                     "error line \(error.location.line) outside 1...\(lineCount): \(error)")
        precondition(!error.description.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F },
                     "error line holds control characters: \(error.description.debugDescription)")
    }
    return 0
}
