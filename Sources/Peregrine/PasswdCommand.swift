#if canImport(Glibc)
import Glibc
#endif
import PeregrineDaemon

/// `peregrine passwd [--iterations N]`: reads a password and prints the
/// `password-hash` directive for an `<smtp-user>` block. From a terminal it
/// asks twice without echo; otherwise it reads stdin to the end and drops
/// one trailing line break (so `printf 'pw' |` and `echo pw |` agree).
func runPasswd(arguments: [String]) -> Int32 {
    var iterations = SMTPUserSettings.defaultHashIterations
    var rest = arguments[...]
    while let arg = rest.popFirst() {
        switch arg {
        case "--iterations":
            let range = SMTPUserSettings.hashIterationRange
            guard let text = rest.popFirst(), let n = Int(text), range.contains(n) else {
                fputs("peregrine passwd: --iterations needs a number from \(range.lowerBound) to \(range.upperBound)\n", stderr)
                return 2
            }
            iterations = n
        case "-h", "--help":
            print("usage: peregrine passwd [--iterations N]\n"
                  + "reads a password (stdin, or asked twice on a terminal) and prints\n"
                  + "  password-hash $pbkdf2-sha256$ITERATIONS$SALT$HASH\n"
                  + "for an <smtp-user NAME> block (default \(SMTPUserSettings.defaultHashIterations) iterations)")
            return 0
        default:
            fputs("peregrine passwd: unknown argument '\(arg)' (usage: peregrine passwd [--iterations N])\n", stderr)
            return 2
        }
    }
    let password: [UInt8]
    if isatty(STDIN_FILENO) == 1 {
        guard let first = promptWithoutEcho("Password: "), let second = promptWithoutEcho("Again: ") else {
            fputs("peregrine passwd: could not read the password from the terminal\n", stderr)
            return 1
        }
        guard first == second else { fputs("peregrine passwd: the passwords differ\n", stderr); return 1 }
        password = first
    } else {
        var bytes = readAllStandardInput()
        if bytes.last == 10 { bytes.removeLast(); if bytes.last == 13 { bytes.removeLast() } }
        password = bytes
    }
    guard !password.isEmpty else { fputs("peregrine passwd: the password is empty\n", stderr); return 1 }
    guard let value = SMTPUserSettings.hashDirectiveValue(password: password, iterations: iterations) else {
        fputs("peregrine passwd: hashing failed (no randomness from /dev/urandom?)\n", stderr)
        return 1
    }
    print("password-hash \(value)")
    return 0
}

private func readAllStandardInput() -> [UInt8] {
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        out.append(contentsOf: chunk[0..<n])
        if out.count > 1 << 16 { break }   // a password, not a file
    }
    return out
}

/// One line from the terminal with echo off (restored afterwards, also on error).
private func promptWithoutEcho(_ prompt: String) -> [UInt8]? {
    fputs(prompt, stderr)
    var saved = termios()
    guard tcgetattr(STDIN_FILENO, &saved) == 0 else { return nil }
    var quiet = saved
    quiet.c_lflag &= ~tcflag_t(ECHO)
    guard tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0 else { return nil }
    defer { tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved); fputs("\n", stderr) }
    var line: [UInt8] = []
    var byte: UInt8 = 0
    while true {
        let n = read(STDIN_FILENO, &byte, 1)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return line.isEmpty ? nil : line }
        if byte == 10 { break }
        line.append(byte)
    }
    if line.last == 13 { line.removeLast() }
    return line
}
