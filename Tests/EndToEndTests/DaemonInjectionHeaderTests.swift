#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import PeregrineIO
import PeregrineAccounting

/// The header work a `<source>` asks for at injection, judged by what a
/// Python receiver got: `add-message-id-header`, `add-date-header` (only
/// when missing), `remove-received-headers` (the application's hops gone,
/// Peregrine's own Received kept), `retain-x-virtual-mta`. Scenario 17.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct DaemonInjectionHeaderTests {
    @Test(arguments: BackendKind.testable)
    func sourceAddsMissingHeadersAndDropsTheInjectorsHops(_ kind: BackendKind) throws {
        try kind.requireAvailable()
        let dir = try TestDirectory("inject-headers-\(kind.rawValue)")
        let receiver = try RecordingReceiver(dir, ip: E2E.ip(17, kind, host: 1))
        defer { receiver.terminate() }
        let listen = E2E.ip(17, kind, host: 9)
        let config = daemonConfig(dir, listen: listen, """
            host-name mta.headers.test
            <source 127.0.0.0/9>
                always-allow-relaying yes
                process-x-virtual-mta yes
                retain-x-virtual-mta yes
                default-virtual-mta vmta1
                add-message-id-header yes
                add-date-header yes
                remove-received-headers yes
            </source>
            <domain headers.test>
                route [\(receiver.ip)]:\(receiver.port)
            </domain>
            """)
        let d = try DaemonProcess(configPath: try dir.write("peregrine.conf", config), backend: kind, threads: 2,
                                  logPath: dir.file("daemon.log"))
        defer { d.terminate() }
        let c = try d.client()
        #expect(try c.send(to: ["bare@headers.test"], id: "bare", headers: [
            "Received: from app1.internal (10.0.0.5) by app2.internal", "Received: from laptop by app1.internal",
            "X-Virtual-MTA: vmta2",
        ]) == nil)
        #expect(try c.send(to: ["own@headers.test"], id: "own", headers: [
            "Message-ID: <kept.1@app.example>", "Date: Fri, 4 Dec 2026 10:00:00 +0000",
        ]) == nil)
        c.quit()
        #expect(E2E.waitUntil(60) { receiver.messages.count == 2 }, "\(d.log)")
        let byRcpt = Dictionary(uniqueKeysWithValues: receiver.messages.map { ($0.rcpts.first ?? "", $0.data) })
        let bare = try #require(byRcpt["bare@headers.test"]), own = try #require(byRcpt["own@headers.test"])
        let bareHeaders = bare.components(separatedBy: "\r\n\r\n")[0]
        func fields(_ name: String, _ h: String) -> [String] {
            h.components(separatedBy: "\r\n").filter { $0.lowercased().hasPrefix(name.lowercased() + ":") }
        }
        #expect(fields("Received", bareHeaders).count == 1 && bareHeaders.hasPrefix("Received: from "), "\(bareHeaders)")
        #expect(!bare.contains("app1.internal") && !bare.contains("laptop"), "\(bareHeaders)")
        let messageID = try #require(fields("Message-ID", bareHeaders).first)
        #expect(messageID.hasPrefix("Message-ID: <") && messageID.hasSuffix("@mta.headers.test>"), "\(messageID)")
        let date = try #require(fields("Date", bareHeaders).first)
        #expect(date.range(of: #"^Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000$"#,
                           options: .regularExpression) != nil, "\(date)")
        #expect(fields("X-Virtual-MTA", bareHeaders) == ["X-Virtual-MTA: vmta2"], "\(bareHeaders)")
        // A message with its own Message-ID and Date keeps them, once each.
        let ownHeaders = own.components(separatedBy: "\r\n\r\n")[0]
        #expect(fields("Message-ID", ownHeaders) == ["Message-ID: <kept.1@app.example>"], "\(ownHeaders)")
        #expect(fields("Date", ownHeaders) == ["Date: Fri, 4 Dec 2026 10:00:00 +0000"], "\(ownHeaders)")
        // The retained header still chose the VMTA. The receiver has the message once it answered 250; the
        // daemon writes its d record after reading that 250, so wait for the record (seen missing under load).
        var records: [AccountingRecord] = []
        #expect(E2E.waitUntil(30) {
            records = accounting(dir.file("acct.csv"))
            return records.contains { $0.type == .delivered && $0.rcpt == "bare@headers.test" }
        }, "no d record for bare@headers.test: \(records)")
        #expect(records.first { $0.type == .delivered && $0.rcpt == "bare@headers.test" }?.vmta == "vmta2", "\(records)")
    }
}
