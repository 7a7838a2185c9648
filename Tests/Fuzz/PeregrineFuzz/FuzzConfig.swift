// Fuzz target: the config lexer and the PowerMTA-style config parser,
// as an operator's broken or hostile file reaches them. Oracle besides "no
// crash": every error names the file and a line inside it (`fuzz.conf:N:`).
import PeregrineConfig
import PeregrineDaemon


func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let lineCount = text.reduce(1) { $0 + ($1 == "\n" ? 1 : 0) }
    do {
        _ = try PeregrineConfig.parse(text, file: "fuzz.conf")
    } catch {
        precondition(error.location.file == "fuzz.conf", "error without the file: \(error)")
        precondition(error.location.line >= 0 && error.location.line <= lineCount + 1,
                     "error line \(error.location.line) outside 1...\(lineCount): \(error)")
    }
    return 0
}
