#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO
import PeregrineSpool

/// `peregrine spool-crash-writer` (hidden): the process the spool crash test
/// kills. Appends messages through `SpoolWriter` on the chosen backend as fast
/// as it can and prints each id (hex, one per line, written straight to fd 1)
/// only after its fsync completed. Bodies and envelopes are derived from the
/// id (`SpoolTestBody`) so the test can check them after recovery. Recipient 0
/// of every third durable message (with ≥ 2 recipients) is marked delivered,
/// so outcome records are in flight when the kill lands too.
func runSpoolCrashWriter(arguments: [String]) -> Int32 {
    let cmd = "spool-crash-writer"
    guard let opts = CommandLineOptions(arguments, known: ["dir", "backend", "recipients", "body-size",
                                                           "segment-size", "in-flight", "max-messages"], command: cmd),
          let dir = opts.values["dir"], let backendName = opts.values["backend"],
          let recipients = opts.int("recipients", default: 3, command: cmd),
          let bodySize = opts.int("body-size", default: 4096, command: cmd),
          let segmentSize = opts.int("segment-size", default: 4 << 20, command: cmd),
          let inFlight = opts.int("in-flight", default: 64, command: cmd),
          let maxMessages = opts.int("max-messages", default: 1_000_000, command: cmd) else {
        fputs("usage: peregrine spool-crash-writer --dir DIR --backend B [--recipients N] [--body-size N]"
              + " [--segment-size N] [--in-flight N] [--max-messages N]\n", stderr)
        return 2
    }
    let kind: BackendKind
    switch BackendKind.parse(backendName) {
    case .success(let k): kind = k
    case .failure(let e): fputs("peregrine \(cmd): \(e)\n", stderr); return 2
    }
    let config = CrashWriterConfig(directory: dir + "/loop-0", recipients: max(1, recipients), bodySize: bodySize,
                                   segmentSize: Int64(max(segmentSize, 4096)), inFlight: max(1, inFlight),
                                   maxMessages: maxMessages)
    return runCrashWriter(kind.loopType, config)
}

struct CrashWriterConfig {
    var directory: String
    var recipients: Int
    var bodySize: Int
    var segmentSize: Int64
    var inFlight: Int
    var maxMessages: Int
}

private func runCrashWriter<L: EventLoop>(_ type: L.Type, _ config: CrashWriterConfig) -> Int32 {
    let loop: L
    do { loop = try L() } catch {
        fputs("peregrine spool-crash-writer: \(error)\n", stderr)
        return 1
    }
    let recovered: SpoolStreamRecovery
    switch SpoolRecovery.recover(directory: config.directory) {
    case .success(let r): recovered = r
    case .failure(let e): fputs("peregrine spool-crash-writer: \(e)\n", stderr); return 1
    }
    let writer: SpoolWriter<L>
    do {
        writer = try SpoolWriter(loop: loop, directory: config.directory, recovered: recovered,
                                 options: SpoolWriterOptions(segmentSize: config.segmentSize))
    } catch {
        fputs("peregrine spool-crash-writer: \(error)\n", stderr)
        return 1
    }
    let body = UnsafeMutableRawBufferPointer.allocate(byteCount: max(config.bodySize * 2, 1), alignment: 16)
    var started = 0
    var durableCount = 0
    var status: Int32 = 0
    var line = [UInt8](repeating: UInt8(ascii: "\n"), count: 33)

    func startOne() {
        guard started < config.maxMessages else { return }
        started += 1
        // The body is derived from the id, so this process picks its ids itself.
        let id = MessageID(hi: writerIDBase, lo: UInt64(started))
        let size = SpoolTestBody.size(id: id, nominal: config.bodySize)
        let slice = UnsafeMutableRawBufferPointer(rebasing: body[0 ..< size])
        SpoolTestBody.fill(id: id, slice)
        writer.append(id: id, envelope: SpoolTestBody.envelope(id: id, recipients: config.recipients), states: nil,
                      body: UnsafeRawBufferPointer(slice), place: true) { result in
            switch result {
            case .success:
                let hex = Array(id.description.utf8)
                for i in 0..<32 { line[i] = hex[i] }
                let n = line.withUnsafeBytes { write(1, $0.baseAddress, 33) }
                if n != 33 { status = 1; loop.stop(); return }
                durableCount += 1
                if config.recipients >= 2 && durableCount % 3 == 0 {
                    writer.recordOutcome(id, recipient: 0, state: .delivered)
                }
                startOne()
                if durableCount >= config.maxMessages { loop.stop() }
            case .failure(let e):
                fputs("peregrine spool-crash-writer: \(e)\n", stderr)
                status = 1
                loop.stop()
            }
        }
    }
    for _ in 0 ..< config.inFlight { startOne() }
    loop.run()
    body.deallocate()
    return status
}

/// The high half of every id this process writes: its start time, so reruns
/// on the same directory never reuse an id.
private let writerIDBase: UInt64 = {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}()
