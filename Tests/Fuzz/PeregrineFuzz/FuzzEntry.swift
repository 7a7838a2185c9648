// One libFuzzer binary for every fuzz target: PEREGRINE_FUZZ_TARGET names the
// target (the folder of its seed corpus in Tests/Fuzz/corpus). One binary,
// because SwiftPM builds several sanitizer products into one scratch path
// inconsistently (the second lost its coverage counters), and one build is
// also faster in CI than seven.
#if canImport(Glibc)
import Glibc
#endif

let fuzzTargets: [String: (UnsafePointer<UInt8>, Int) -> CInt] = [
    "FuzzSMTPServer": fuzzSMTPServer,
    "FuzzSMTPClient": fuzzSMTPClient,
    "FuzzDNSMessage": fuzzDNSMessage,
    "FuzzHTTPRequest": fuzzHTTPRequest,
    "FuzzConfig": fuzzConfig,
    "FuzzSpoolRecords": fuzzSpoolRecords,
    "FuzzAccountingCSV": fuzzAccountingCSV,
    "FuzzRESPReply": fuzzRESPReply,
    "FuzzHTTPInjection": fuzzHTTPInjection,
    "FuzzInboundReport": fuzzInboundReport,
]

let selectedTarget: (UnsafePointer<UInt8>, Int) -> CInt = {
    let name = getenv("PEREGRINE_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = fuzzTargets[name] else {
        fputs("peregrine-fuzz: set PEREGRINE_FUZZ_TARGET to one of: \(fuzzTargets.keys.sorted().joined(separator: ", "))\n", stderr)
        exit(2)
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func peregrineFuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    selectedTarget(data, size)
}
