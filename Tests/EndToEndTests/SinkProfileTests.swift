import Foundation
import Testing
@testable import PeregrineSink

/// The profile syntax and the shipped profiles.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct SinkProfileTests {
    static var profilesDir: String {
        // Tests/EndToEndTests/SinkProfileTests.swift → repository root.
        let here = URL(fileURLWithPath: #filePath)
        return here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("sink/profiles").path
    }

    @Test func shippedProfilesLoadWithTheirProviders() throws {
        let set = try SinkProfileParser.load(path: Self.profilesDir + "/all.conf")
        #expect(set.timeScale == 0.01)
        #expect(set.profiles.map(\.name) == ["gmail", "yahoo", "outlook", "icloud", "comcast", "gmx", "orange", "accept-all"])
        let gmail = try #require(set.profiles.first { $0.name == "gmail" })
        #expect(gmail.domains == ["gmail.com", "googlemail.com"])
        #expect(gmail.mx == ["127.0.1.1", "127.0.1.2"] && gmail.port == 2525)
        // Google's connection text is seen in reply to EHLO [G5].
        #expect(gmail.maxConnections?.value == 5 && gmail.maxConnections?.phase == .helo)
        #expect(gmail.messageRate?.phase == .data && gmail.domainRate?.phase == .data)
        #expect(gmail.maxMessageSize == 157_286_400 && gmail.maxRecipients?.value == 100)
        #expect(gmail.banner == "mx.google.com ESMTP {session} - gsmtp" && gmail.greetingIsWhole)
        #expect(gmail.maxConnections?.reply.enhanced == "4.7.0")
        #expect(gmail.messageRate?.penalty == true && gmail.messageRate?.rate.burst == 100)
        #expect(gmail.penaltyBox?.seconds == 900)
        #expect(gmail.recipientRules.map(\.kind) == [.unknownUser, .mailboxFull, .inactive])
        let yahoo = try #require(set.profiles.first { $0.name == "yahoo" })
        #expect(yahoo.domains.contains("aol.com") && yahoo.penaltyBox?.seconds == 7200)
        #expect(yahoo.maxMessagesPerConnection?.value == 20 && yahoo.maxMessagesPerConnection?.reply.silent == true)
        #expect(yahoo.penaltyBox?.escalateReply?.code == 553 && yahoo.penaltyBox?.escalateAfter == 50)
        #expect(yahoo.recipientRules.first { $0.kind == .mailboxFull }?.phase == .data)
        let orange = try #require(set.profiles.first { $0.name == "orange" })
        #expect(orange.maxConnections?.value == 3 && orange.maxConnections?.perMX == true)
        #expect(orange.connectionRate?.rate.count == 1000 && orange.connectionRate?.rate.seconds == 3600)
        let outlook = try #require(set.profiles.first { $0.name == "outlook" })
        #expect(Set(outlook.domains) == ["outlook.com", "hotmail.com", "live.com", "msn.com"])
        #expect(outlook.penaltyBox?.allow?.count == 1)
        let gmx = try #require(set.profiles.first { $0.name == "gmx" })
        #expect(gmx.maxConnections?.reply.lines.count == 4 && gmx.penaltyBox?.phase == .greeting)
        // GMX's limits are told apart by their text, and every one ends with the explanation line [X1].
        let gmxReplies = [gmx.maxConnections?.reply, gmx.maxMessagesPerConnection?.reply, gmx.messageRate?.reply].compactMap { $0 }
        #expect(Set(gmxReplies.map { $0.lines.dropLast().last ?? "" }).count == 3)
        #expect(gmxReplies.allSatisfy { $0.enhanced == nil && $0.lines.last?.hasPrefix("For explanation visit https://postmaster.gmx.net/") == true })
        // Every provider's MX addresses are distinct loopback addresses.
        let all = set.profiles.flatMap(\.mx)
        #expect(Set(all).count == all.count && all.allSatisfy { $0.hasPrefix("127.") })
    }

    @Test func eachShippedFileLoadsAlone() throws {
        for name in ["gmail", "yahoo", "outlook", "icloud", "comcast", "gmx", "orange", "accept-all"] {
            let set = try SinkProfileParser.load(path: Self.profilesDir + "/\(name).conf")
            #expect(set.profiles.map(\.name) == [name])
        }
    }

    func error(_ text: String) -> String? {
        do {
            _ = try SinkProfileParser.parse(text, file: "p.conf")
            return nil
        } catch {
            return error.description
        }
    }

    @Test func badLinesNameTheFileAndLine() {
        #expect(error("<isp x>\n  domains x.com\n  max-connections five greeting \"421 busy\"\n</isp>")?
            .hasPrefix("p.conf:3: max-connections: 'five' is not a whole number") == true)
        #expect(error("<isp x>\n  domains x.com\n  frobnicate 3\n</isp>") == "p.conf:3: unknown directive 'frobnicate' in <isp x>")
        #expect(error("<isp x>\n  domains x.com\n  max-connections 5 greeting\n</isp>")?.hasPrefix("p.conf:3: max-connections needs a quoted reply") == true)
        #expect(error("<isp x>\n  domains x.com\n  mx 300.1.1.1\n</isp>") == "p.conf:3: mx: '300.1.1.1' is not a numeric IPv4 or IPv6 address")
        #expect(error("<isp x>\n  mx 127.0.0.1\n</isp>") == "p.conf:1: <isp x> needs a domains line")
        #expect(error("<isp x>\n  domains x.com\n  max-msg-rate 10/q mail \"421 slow\"\n</isp>")?.hasPrefix("p.conf:3: max-msg-rate:") == true)
        #expect(error("<isp x>\n  domains x.com\n  latency banner gaussian 1s\n</isp>")?.hasPrefix("p.conf:3: latency:") == true)
        #expect(error("<isp x>\n  domains x.com\n  random-failure 1.5 data \"451 x\"\n</isp>")?.hasPrefix("p.conf:3:") == true)
        #expect(error("<isp x>\n  domains x.com\n  unknown-user \"hello\" u*\n</isp>")?.hasPrefix("p.conf:3: unknown-user needs exactly one quoted reply") == true)
        #expect(error("<isp x>\n  domains x.com\n</isp>\n<isp x>\n  domains y.com\n</isp>") == "p.conf:4: <isp x> is defined twice")
        #expect(error("<isp x>\n  domains x.com\n") == "p.conf:1: <isp x> is not closed (missing </isp>)")
        #expect(error("include nowhere.conf")?.hasPrefix("p.conf:1: include: no such file") == true)
        #expect(error("time-scale 0") != nil)
    }

    @Test func limitArgumentsMayComeInAnyOrder() throws {
        let set = try SinkProfileParser.parse("""
            <isp x>
              domains x.com
              max-msg-rate 10/s penalty "451 4.7.1 slow down {ip}" burst 3 rcpt
              penalty-box 90m allow 1/m "451 4.7.650 boxed" mail
              greylist 5m "450 4.2.0 grey"
              latency data uniform 10ms 20ms
            </isp>
            """, file: "p.conf")
        let p = try #require(set.profiles.first)
        #expect(p.messageRate?.phase == .rcpt && p.messageRate?.rate.burst == 3 && p.messageRate?.penalty == true)
        #expect(p.messageRate?.rate.seconds == 1 && p.messageRate?.rate.count == 10)
        #expect(p.penaltyBox?.allow?.seconds == 60 && p.penaltyBox?.seconds == 5400)
        #expect(p.greylist?.patterns.map(\.text) == ["*"])
        #expect(p.dataLatency == .uniform(0.01, 0.02))
    }
}
