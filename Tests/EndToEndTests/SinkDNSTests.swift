import Testing
@testable import PeregrineSink
import PeregrineDNS

/// The sink's DNS zone and replies, through PeregrineDNS's codec, without sockets.
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct SinkDNSTests {
    static func zone() throws -> SinkDNSZone {
        let set = try SinkProfileParser.load(path: SinkProfileTests.profilesDir + "/all.conf")
        return SinkDNSZone(profiles: set.profiles)
    }

    func ask(_ zone: SinkDNSZone, _ name: String, _ type: DNSRecordType) throws -> DNSMessage {
        let bytes = try #require(zone.reply(to: try DNSMessage.query(id: 7, name: name, type: type).encode()))
        return try DNSMessage(decoding: bytes)
    }

    @Test func mxAndGlueForAProfileDomain() throws {
        let r = try ask(try Self.zone(), "Hotmail.com", .mx)
        #expect(r.isResponse && r.isAuthoritative && r.id == 7 && r.responseCode == .noError)
        #expect(r.mxRecords.map(\.exchange) == ["mx1.outlook.sink", "mx2.outlook.sink", "mx3.outlook.sink", "mx4.outlook.sink"])
        #expect(r.additionals.compactMap(\.ipAddress) == ["127.0.3.1", "127.0.3.2", "127.0.3.3", "127.0.3.4"])
    }

    @Test func aRecordsNoDataAndNXDOMAIN() throws {
        let zone = try Self.zone()
        #expect(try ask(zone, "mx1.yahoo.sink", .a).addresses() == ["127.0.2.1"])
        let noData = try ask(zone, "gmail.com", .a)
        #expect(noData.responseCode == .noError && noData.answers.isEmpty)
        #expect(try ask(zone, "mx9.gmail.sink", .a).responseCode == .nameError)
        // accept-all serves "*": any other domain gets its MX.
        #expect(try ask(zone, "example.org", .mx).mxRecords.map(\.exchange) == ["mx1.accept-all.sink"])
    }

    @Test func malformedQueriesGetFORMERROrNothing() throws {
        let zone = try Self.zone()
        #expect(zone.reply(to: [1, 2, 3]) == nil)
        var query = try DNSMessage.query(id: 9, name: "gmail.com", type: .mx).encode()
        query[2] |= 0x80   // a response, not a query
        #expect(zone.reply(to: query) == nil)
        let truncated: [UInt8] = [0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, 0x67]
        let r = try DNSMessage(decoding: try #require(zone.reply(to: truncated)))
        #expect(r.id == 9 && r.responseCode == .formatError)
    }
}
