#if canImport(Glibc)
import Glibc
#endif
import PeregrineSpool

/// `peregrine spool-check DIR`: a read-only report of a spool directory (the
/// directory holding `loop-N` streams, or one stream directory itself).
/// Exit status 0 when every record checked out, 1 when damage was found
/// (including segments missing from a stream's catalogue, empty ones, and
/// anything start-up recovery moved to a stream's quarantine directory), 2 on usage errors.
func runSpoolCheck(arguments: [String]) -> Int32 {
    guard arguments.count == 1, let dir = arguments.first, !dir.hasPrefix("-") else {
        fputs("usage: peregrine spool-check DIR\n", stderr)
        return 2
    }
    var isDir = stat()
    guard stat(dir, &isDir) == 0, (isDir.st_mode & S_IFMT) == S_IFDIR else {
        fputs("peregrine spool-check: \(dir): not a directory\n", stderr)
        return 2
    }
    var streams = SpoolRecovery.listStreams(spoolDirectory: dir)
    if streams.isEmpty && !SpoolRecovery.listSegments(directory: dir).isEmpty { streams = [dir] }

    var totalSegments = 0, totalLive = 0, totalProblems = 0
    var totalBytes: Int64 = 0, totalLiveBytes: Int64 = 0
    var byState = [Int](repeating: 0, count: RecipientState.allCases.count)
    var lines: [String] = ["spool \(dir): \(streams.count) stream(s)"]
    for s in streams {
        let r: SpoolStreamRecovery
        switch SpoolRecovery.recover(directory: s, mode: .readOnly, log: { _ in }) {
        case .success(let v): r = v
        case .failure(let e):
            fputs("peregrine spool-check: \(e)\n", stderr)
            return 1
        }
        let segBytes = r.segments.reduce(Int64(0)) { $0 + $1.bytes }
        let liveBytes = r.messages.reduce(Int64(0)) { $0 + Int64($1.location.recordLength) }
        lines.append("stream \(s): \(r.segments.count) segment(s), \(r.messages.count) live message(s), "
                     + "\(formatBytes(segBytes)) on disk, \(formatBytes(liveBytes)) live")
        for seg in r.segments {
            let st = r.liveSet.segments[seg.number]
            let ratio = st.map { String(Int(($0.liveRatio * 100).rounded())) + "%" } ?? "-"
            lines.append("  \(lastComponent(seg.path))  \(formatBytes(seg.bytes))  messages \(seg.messageRecords)  "
                         + "outcomes \(seg.outcomeRecords)  live \(st?.liveMessages ?? 0) (\(ratio) of bytes)")
        }
        for name in SpoolRecovery.scanSegments(directory: s).strays {
            lines.append("  ignored: \(name) (not a segment name this spool writes; not read)")
        }
        for p in r.problems { lines.append("  problem: \(p)") }
        // What start-up recovery moved aside (damaged segments, markers of missing
        // ones) stays a problem until an operator has dealt with it.
        let quarantine = SpoolRecovery.quarantineDirectory(stream: s)
        let quarantined = (PosixSpoolFileSystem().listDirectory(quarantine) ?? []).sorted()
        for name in quarantined {
            lines.append("  problem: \(quarantine)/\(name): "
                         + (name.hasSuffix(".missing") ? "marks a segment found missing at start-up"
                                                       : "damaged segment moved aside at start-up"))
        }
        totalProblems += quarantined.count
        for m in r.messages { for i in 0..<m.states.count { byState[Int(m.states[i].rawValue)] += 1 } }
        totalSegments += r.segments.count
        totalLive += r.messages.count
        totalProblems += r.problems.count
        totalBytes += segBytes
        totalLiveBytes += liveBytes
    }
    lines.append("segments: \(totalSegments)")
    lines.append("live messages: \(totalLive)")
    lines.append("recipients of live messages: "
                 + RecipientState.allCases.map { "\($0) \(byState[Int($0.rawValue)])" }.joined(separator: ", "))
    lines.append("bytes: \(totalBytes) on disk (\(formatBytes(totalBytes))), \(totalLiveBytes) live (\(formatBytes(totalLiveBytes)))")
    lines.append("problems: \(totalProblems)")
    print(lines.joined(separator: "\n"))
    return totalProblems == 0 ? 0 : 1
}

func formatBytes(_ n: Int64) -> String {
    if n < 1024 { return "\(n) B" }
    let units = ["KiB", "MiB", "GiB", "TiB"]
    var v = Double(n) / 1024
    var u = 0
    while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
    return String(Int(v * 10) / 10) + "." + String(Int(v * 10) % 10) + " " + units[u]
}

func lastComponent(_ path: String) -> String {
    path.split(separator: "/").last.map(String.init) ?? path
}
