import Foundation
import Testing
@testable import PeregrineDaemon

/// The example the README points operators at must stay valid.
@Suite struct ConfigExampleTests {
    static var examplePath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("examples/peregrine.conf").path
    }

    @Test func exampleConfigLoadsAndResolves() throws {
        let config = try PeregrineConfig.load(path: Self.examplePath)
        #expect(config.smtpListeners.count == 1)
        #expect(config.virtualMTANames(for: "pool1") == ["vmta1", "vmta2"])
        let gmail = config.settings(forDomain: "gmail.com", vmta: "vmta1")
        #expect(gmail.maxSMTPOut == 5 && gmail.maxMsgPerConnection == 50)
        #expect(gmail.smtpPatternList == "consumer-deferrals")
        let yahoo = config.settings(forDomain: "yahoo.com", vmta: "vmta2")
        #expect(yahoo.maxMsgPerConnection == 20)
        #expect(config.settings(forDomain: "yahoo.com", vmta: "vmta1").maxMsgPerConnection == 0)
        #expect(config.settings(forDomain: "example.org").maxSMTPOut == 20)
    }
}
