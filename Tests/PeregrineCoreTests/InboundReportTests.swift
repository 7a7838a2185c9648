import Foundation
import Testing
import PeregrineIO
import PeregrineSMTP
import PeregrineSpool
import PeregrineConfig
import PeregrineAccounting
import PeregrineEngine
@testable import PeregrineDaemon

/// Reports that come back: RFC 3464 bounces, the common non-standard
/// bounce texts, ARF complaints (RFC 5965), and the processors' config.
@Suite struct InboundReportTests {
    static func lines(_ s: String) -> [UInt8] { Array(s.replacingOccurrences(of: "\n", with: "\r\n").utf8) }

    /// Postfix's shape of an RFC 3464 report (text from a real Postfix bounce, names changed).
    static let postfixReport = lines("""
        Return-Path: <>
        From: MAILER-DAEMON@mx.dest.test (Mail Delivery System)
        Subject: Undelivered Mail Returned to Sender
        To: bounces+bad=dest.test@bounce.peregrine.test
        Auto-Submitted: auto-replied
        MIME-Version: 1.0
        Content-Type: multipart/report; report-type=delivery-status;
        \tboundary="5C1B6C0A2F.1733400000/mx.dest.test"
        Message-Id: <20261205100000.5C1B6C0A2F@mx.dest.test>

        This is a MIME-encapsulated message.

        --5C1B6C0A2F.1733400000/mx.dest.test
        Content-Description: Notification
        Content-Type: text/plain; charset=us-ascii

        This is the mail system at host mx.dest.test.

        <bad@dest.test>: host store.dest.test[192.0.2.7] said: 550 5.1.1 <bad@dest.test>:
            Recipient address rejected: User unknown in local recipient table (in reply to RCPT TO command)

        --5C1B6C0A2F.1733400000/mx.dest.test
        Content-Description: Delivery report
        Content-Type: message/delivery-status

        Reporting-MTA: dns; mx.dest.test
        X-Postfix-Queue-ID: 5C1B6C0A2F
        Original-Envelope-Id: job7-msg1
        Arrival-Date: Sat,  5 Dec 2026 10:00:00 +0000 (UTC)

        Final-Recipient: rfc822; bad@dest.test
        Original-Recipient: rfc822;bad@dest.test
        Action: failed
        Status: 5.1.1
        Remote-MTA: dns; store.dest.test
        Diagnostic-Code: smtp; 550 5.1.1 <bad@dest.test>: Recipient address rejected:
            User unknown in local recipient table

        Final-Recipient: rfc822; later@dest.test
        Action: delayed
        Status: 4.2.1
        Diagnostic-Code: smtp; 450 4.2.1 try later

        --5C1B6C0A2F.1733400000/mx.dest.test
        Content-Description: Undelivered Message Headers
        Content-Type: text/rfc822-headers

        Return-Path: <bounces+bad=dest.test@bounce.peregrine.test>
        From: <news@peregrine.test>
        To: <bad@dest.test>
        Subject: the news
        X-Job: job7
        Message-ID: <m1@peregrine.test>

        --5C1B6C0A2F.1733400000/mx.dest.test--
        """)

    @Test func rfc3464ReportGivesFailedRecipientsOnly() throws {
        let b = InboundReportParser.bounces(in: Self.postfixReport)
        #expect(b.count == 1)
        let first = try #require(b.first)
        #expect(first.recipient == "bad@dest.test")
        #expect(first.originalRecipient == "rfc822;bad@dest.test")
        #expect(first.status == "5.1.1")
        #expect(first.diagnostic == "smtp;550 5.1.1 <bad@dest.test>: Recipient address rejected: User unknown in local recipient table")
        #expect(first.remoteMTA == "store.dest.test")
        #expect(first.envelopeID == "job7-msg1")
        #expect(first.jobID == "job7")
        #expect(first.messageID == "m1@peregrine.test")
        #expect(first.originalSender == "bounces+bad=dest.test@bounce.peregrine.test")
        #expect(first.category == .badMailbox)
        #expect(first.format == "rfc3464")
    }

    /// Peregrine's own reports read back: what one MTA writes, the processor reads.
    @Test func ownReportReadsBack() {
        let report = DeliveryStatusReport(
            reportingMTA: "mta.peregrine.test", from: "MAILER-DAEMON@mta.peregrine.test", to: "s@senders.test",
            envelopeID: "E 1", arrivalDate: 1_796_472_000,
            recipients: [.init(finalRecipient: "full@dest.test", originalRecipient: nil, action: .failed,
                               reply: SMTPReply(code: 552, enhancedCode: EnhancedStatusCode(5, 2, 2), "mailbox full"),
                               remoteMTA: "mx.dest.test", lastAttempt: 1_796_472_060)], ret: .headers)
        let bytes = Array("X-Job: j9\r\nSubject: s\r\n\r\nbody\r\n".utf8).withUnsafeBytes {
            report.render(original: $0, messageID: "x@y", date: 1_796_472_100)
        }
        let b = InboundReportParser.bounces(in: bytes)
        #expect(b.map(\.recipient) == ["full@dest.test"])
        #expect(b.first?.status == "5.2.2")
        #expect(b.first?.category == .quotaIssues)
        #expect(b.first?.jobID == "j9")
        #expect(b.first?.envelopeID == "E 1", "the ENVID, xtext decoded")
        #expect(b.first?.diagnostic == "smtp;552 5.2.2 mailbox full")
    }

    @Test func qmailBounce() {
        let text = Self.lines("""
            From: MAILER-DAEMON@mx.qmail.test
            Subject: failure notice

            Hi. This is the qmail-send program at mx.qmail.test.
            I'm afraid I wasn't able to deliver your message to the following addresses.
            This is a permanent error; I've given up. Sorry it didn't work out.

            <gone@qmail.test>:
            192.0.2.9 does not like recipient.
            Remote host said: 550 5.1.1 sorry, no mailbox here by that name
            Giving up on 192.0.2.9.

            --- Below this line is a copy of the message.
            """)
        let b = InboundReportParser.bounces(in: text)
        #expect(b.map(\.recipient) == ["gone@qmail.test"])
        #expect(b.first?.status == "5.1.1")
        #expect(b.first?.diagnostic == "smtp;550 5.1.1 sorry, no mailbox here by that name")
        #expect(b.first?.format == "qmail")
        #expect(b.first?.category == .badMailbox)
    }

    @Test func eximBounce() {
        let text = Self.lines("""
            From: Mail Delivery System <Mailer-Daemon@mx.exim.test>
            Subject: Mail delivery failed: returning message to sender

            This message was created automatically by mail delivery software.

            A message that you sent could not be delivered to one or more of its
            recipients. This is a permanent error. The following address(es) failed:

              full@exim.test
                host mx.exim.test [192.0.2.10]
                SMTP error from remote mail server after RCPT TO:<full@exim.test>:
                552 Mailbox quota exceeded

              ok-later@exim.test
                retry timeout exceeded
            """)
        let b = InboundReportParser.bounces(in: text)
        #expect(b.map(\.recipient) == ["full@exim.test"], "only the address with a 5xx reply")
        #expect(b.first?.status == "5.0.0")
        #expect(b.first?.diagnostic == "smtp;552 Mailbox quota exceeded")
        #expect(b.first?.category == .quotaIssues)
        #expect(b.first?.format == "exim")
    }

    @Test func mailThatIsNoBounceGivesNothing() {
        #expect(InboundReportParser.bounces(in: Self.lines("Subject: hello\n\nI am out of the office until 550 days from now.\n")).isEmpty)
        #expect(InboundReportParser.complaint(in: Self.postfixReport) == nil)
    }

    @Test func verpNamesTheOriginalRecipient() {
        #expect(InboundReportParser.verpRecipient("bounces+bad=dest.test@bounce.peregrine.test") == "bad@dest.test")
        #expect(InboundReportParser.verpRecipient("b-user.name=x.example@bounce.test") == "user.name@x.example")
        #expect(InboundReportParser.verpRecipient("bounces@bounce.test") == nil)
        #expect(InboundReportParser.verpRecipient("bounces+nothing@bounce.test") == nil)
    }

    /// RFC 5965 §B.1's example, names changed.
    static let arf = lines("""
        From: <abusedesk@fbl.example>
        Date: Thu, 8 Mar 2005 17:40:36 EDT
        Subject: FW: Earn money
        To: <fbl@fbl.peregrine.test>
        MIME-Version: 1.0
        Content-Type: multipart/report; report-type=feedback-report;
             boundary="part1_13d.2e68ed54_boundary"

        --part1_13d.2e68ed54_boundary
        Content-Type: text/plain; charset="US-ASCII"
        Content-Transfer-Encoding: 7bit

        This is an email abuse report for an email message received from IP
        192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.

        --part1_13d.2e68ed54_boundary
        Content-Type: message/feedback-report

        Feedback-Type: abuse
        User-Agent: SomeGenerator/1.0
        Version: 1
        Original-Mail-From: <news@peregrine.test>
        Original-Rcpt-To: <complainer@fbl.example>
        Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT
        Reporting-MTA: dns; mail.fbl.example
        Source-IP: 192.0.2.1

        --part1_13d.2e68ed54_boundary
        Content-Type: message/rfc822
        Content-Disposition: inline

        From: <news@peregrine.test>
        Received: from mailserver.peregrine.test by fbl.example with SMTP
        To: <complainer@fbl.example>
        Subject: Earn money
        X-Job: job42
        Message-ID: <8787KJKJ3K4J3K4J3K4J3.mail@peregrine.test>
        Date: Thu, 02 Sep 2004 12:31:03 -0500

        Spam Spam Spam
        --part1_13d.2e68ed54_boundary--
        """)

    @Test func arfComplaint() throws {
        let c = try #require(InboundReportParser.complaint(in: Self.arf))
        #expect(c.feedbackType == "abuse")
        #expect(c.reportingMTA == "mail.fbl.example")
        #expect(c.userAgent == "SomeGenerator/1.0")
        #expect(c.recipient == "complainer@fbl.example")
        #expect(c.originalSender == "news@peregrine.test")
        #expect(c.sourceIP == "192.0.2.1")
        #expect(c.jobID == "job42")
        #expect(c.messageID == "8787KJKJ3K4J3K4J3K4J3.mail@peregrine.test")
    }

    @Test func processorSplitsRecipientsAndGivesRecords() throws {
        let config = try PeregrineConfig.parse("""
            <bounce-processor>
                <address-list>
                    address /^bounces[+-].*@bounce\\.peregrine\\.test$/
                </address-list>
            </bounce-processor>
            <feedback-loop-processor>
                deliver-matched-email yes
                <address-list>
                    address /^fbl@fbl\\.peregrine\\.test$/
                </address-list>
            </feedback-loop-processor>
            """, file: "t.conf")
        let p = InboundReportProcessor(bounce: config.bounceProcessor, feedbackLoop: config.feedbackLoopProcessor,
                                       classifier: config.bounceClassifier)
        let bounce = p.process(Self.postfixReport, recipients: ["bounces+bad=dest.test@bounce.peregrine.test", "someone@else.test"],
                               peer: "mx.dest.test (192.0.2.7)", now: 1_796_472_000)
        #expect(bounce.processed)
        #expect(bounce.relay == [1])
        #expect(bounce.records.count == 1)
        let rb = try #require(bounce.records.first)
        #expect(rb.type == .remoteBounce)
        #expect(rb.rcpt == "bad@dest.test")
        #expect(rb.dsnStatus == "5.1.1 (bad destination mailbox address)")
        #expect(rb.bounceCat == "bad-mailbox")
        #expect(rb.jobId == "job7")
        #expect(rb.envId == "job7-msg1")
        #expect(rb.srcMta == "mx.dest.test (192.0.2.7)")
        #expect(rb.orig == "bounces+bad=dest.test@bounce.peregrine.test", "the address the report came to")
        // The line encodes and reads back as an `rb` record.
        let back = try AccountingCSVReader.parse(Array(AccountingRecord.csvHeader) + Array(rb.csvLine.utf8)).first?.record()
        #expect(back == rb)

        let fbl = p.process(Self.arf, recipients: ["fbl@fbl.peregrine.test"], peer: "p", now: 1)
        #expect(fbl.relay == [0], "deliver-matched-email yes relays the report too")
        let f = try #require(fbl.records.first)
        #expect(f.type == .feedbackLoop)
        #expect(f.rcpt == "complainer@fbl.example")
        #expect(f.bounceCat == "abuse")
        #expect(f.dsnMta == "mail.fbl.example")
        #expect(f.dlvSourceIp == "192.0.2.1")
        #expect(f.jobId == "job42")

        // Not a report: dropped (deliver-unmatched-email no), and said so.
        let junk = p.process(Self.lines("Subject: hi\n\nhello\n"), recipients: ["bounces-x@bounce.peregrine.test"], peer: "p", now: 1)
        #expect(junk.processed && junk.relay.isEmpty && junk.records.isEmpty)
        #expect(junk.log.first?.contains("dropped") == true)

        let none = p.process(Self.postfixReport, recipients: ["a@b.test"], peer: "p", now: 1)
        #expect(!none.processed && none.relay == [0])
    }

    @Test func processorConfigErrorsHaveTheirLine() {
        let cases: [(String, Int, String)] = [
            ("<bounce-processor>\n    forward-unmatched-to a@b.test\n    <address-list>\n        address /x/\n    </address-list>\n</bounce-processor>",
             2, "not supported"),
            ("<feedback-loop-processor>\n    deliver-matched-email yes\n</feedback-loop-processor>", 1, "needs an <address-list>"),
            ("<bounce-processor>\n    <address-list>\n        domain x.test\n    </address-list>\n</bounce-processor>", 3, "unknown directive 'domain'"),
            ("<bounce-processor>\n    <address-list>\n        address /(/\n    </address-list>\n</bounce-processor>", 3, "regular expression"),
        ]
        for (text, line, words) in cases {
            do {
                _ = try PeregrineConfig.parse(text, file: "t.conf")
                Issue.record("accepted: \(text)")
            } catch {
                #expect("\(error)".hasPrefix("t.conf:\(line):") && "\(error)".contains(words), "\(error)")
            }
        }
    }
}
