// Live set memory at N messages: the old Dictionary<MessageID, Slot> vs LiveMessageTable
// (compiled from Sources/PeregrineSpool by scripts/liveset-memory/run). RSS and peak RSS (VmHWM) from /proc/self/status, in a
// fresh process per variant. Usage: liveset dict|table N
import Foundation
#if canImport(Glibc)
import Glibc
#endif

func status(_ key: String) -> Int {
    let text = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    for line in text.split(separator: "\n") where line.hasPrefix(key) {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
    }
    return 0
}

struct OldSlot { var offset: Int64; var segment: UInt32; var recordLength: UInt32; var bodyOffset: UInt32; var count: UInt32; var word: UInt64 }

let args = CommandLine.arguments
let n = Int(args[2])!
let rss0 = status("VmRSS:"), hwm0 = status("VmHWM:")
let hi: UInt64 = 1_733_400_000_000_000_000
if args[1] == "dict" {
    var d: [MessageID: OldSlot] = [:]
    for i in 0..<n { d[MessageID(hi: hi, lo: UInt64(i))] = OldSlot(offset: Int64(i) * 4300, segment: 1, recordLength: 4300, bodyOffset: 200, count: 1, word: 0) }
    let rss = status("VmRSS:"), hwm = status("VmHWM:")
    print("dict  n=\(n) live MB \(Double(rss - rss0) / 1024) peak MB \(Double(hwm - hwm0) / 1024) B/msg \((rss - rss0) * 1024 / n) peak B/msg \((hwm - hwm0) * 1024 / n) capacity \(d.capacity)")
} else {
    let t = LiveMessageTable()
    for i in 0..<n { t[MessageID(hi: hi, lo: UInt64(i))] = LiveMessageTable.Slot(offset: Int64(i) * 4300, segment: 1, recordLength: 4300, bodyOffset: 200, count: 1, word: 0) }
    let rss = status("VmRSS:"), hwm = status("VmHWM:")
    print("table n=\(n) live MB \(Double(rss - rss0) / 1024) peak MB \(Double(hwm - hwm0) / 1024) B/msg \((rss - rss0) * 1024 / n) peak B/msg \((hwm - hwm0) * 1024 / n) allocated \(t.allocatedBytes)")
}
