#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing
import PeregrineIO

/// The loadgen against a target that takes the envelope, answers DATA with
/// 354 and never reads again (issue 12, item 1, the client side): the body
/// stalls in the loadgen's send. Its `--timeout` must end the session
/// (reported as a session failure with the body-send reason) and the
/// connection must close although the send never completes: the loadgen
/// then finishes on its own. It used to wait for that send forever, so the
/// run never ended. Every backend of the loadgen. Scenario 182: 127.P.182.x.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct LoadgenStalledTargetTests {
    @Test(arguments: BackendKind.testable)
    func aTargetThatStopsReadingTimesTheLoadgenOutAndItFinishes(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("loadgen-stalled-\(kind.rawValue)")
        let receiver = try FailingReceiver(dir, ip: E2E.ip(182, kind, host: 1), mode: .stopReading)
        defer { receiver.terminate() }
        let summary = dir.file("loadgen.json")
        let loadgen = Process()
        loadgen.executableURL = URL(fileURLWithPath: E2E.executable("peregrine-loadgen"))
        loadgen.arguments = ["--target", "\(receiver.ip):\(receiver.port)", "--count", "1", "--connections", "1",
                             "--size", "8m", "--timeout", "2", "--domains", "stalled.test", "--json", summary,
                             "--no-progress", "--backend", kind.rawValue]
        FileManager.default.createFile(atPath: dir.file("loadgen.log"), contents: nil)
        loadgen.standardOutput = FileHandle(forWritingAtPath: dir.file("loadgen.log"))
        loadgen.standardError = loadgen.standardOutput
        try ChildProcess.run(loadgen)
        defer { if loadgen.isRunning { stopProcess(loadgen) } }
        // A bound against hanging, not a timing: before the fix it never ended.
        let ended = E2E.waitUntil(120) { !loadgen.isRunning }
        let log = (try? String(contentsOfFile: dir.file("loadgen.log"), encoding: .utf8)) ?? ""
        try #require(ended, "the loadgen did not finish against a target that stopped reading: \(log.suffix(1000))")
        loadgen.waitUntilExit()
        let data = try #require(FileManager.default.contents(atPath: summary), "no summary: \(log.suffix(1000))")
        let json = try E2E.json(data)
        #expect(json["sent"] as? Int == 1, "\(json)")
        #expect(json["accepted"] as? Int == 0, "\(json)")
        #expect(json["sessionFailures"] as? Int == 1, "\(json)")
        let why = json["lastSessionFailure"] as? String ?? ""
        #expect(why.contains("timeout waiting for the message body to be sent"), "\(json)")
        #expect(receiver.connections == 1, "\(receiver.connections) connections for one message")
    }
}
