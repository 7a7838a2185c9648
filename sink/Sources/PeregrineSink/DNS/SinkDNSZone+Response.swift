import PeregrineDNS

extension SinkDNSZone {
    /// The reply to one datagram, through PeregrineDNS's codec: nil for
    /// what is not a query at all (too short, or a response); FORMERR when
    /// only the header could be read.
    public func reply(to packet: [UInt8]) -> [UInt8]? {
        guard packet.count >= 12, packet[2] & 0x80 == 0 else { return nil }
        let query: DNSMessage
        do { query = try DNSMessage(decoding: packet) } catch {
            let id = UInt16(packet[0]) << 8 | UInt16(packet[1])
            return try? DNSMessage(id: id, isResponse: true, responseCode: .formatError).encode()
        }
        guard let q = query.questions.first, query.questions.count == 1 else {
            return try? DNSMessage.response(to: query, code: .formatError).encode()
        }
        guard q.recordClass == 1 || q.recordClass == 255 else {
            return try? DNSMessage.response(to: query, code: .notImplemented).encode()
        }
        var response: DNSMessage
        switch answer(name: q.name, type: q.type.rawValue) {
        case .nxDomain:
            response = .response(to: query, code: .nameError)
        case .serverFailure:
            response = .response(to: query, code: .serverFailure)
        case .noReply:
            return nil
        case .noData:
            response = .response(to: query)
        case .a(let bytes):
            response = .response(to: query, answers: [
                DNSResourceRecord(name: q.name, ttl: 300, data: bytes.count == 4 ? .a(bytes) : .aaaa(bytes))])
        case .mx(let hosts):
            response = .response(to: query, answers: hosts.enumerated().map { i, h in
                DNSResourceRecord(name: q.name, ttl: 300, data: .mx(preference: UInt16(10 * (i + 1)), exchange: h.name))
            })
            // No glue for a host with a --dns-fault: the MTA must ask for its address and meet the fault.
            response.additionals = hosts.filter { faults[$0.name] == nil }.map { h in
                DNSResourceRecord(name: h.name, ttl: 300, data: h.address.count == 4 ? .a(h.address) : .aaaa(h.address))
            }
        }
        return try? response.encodeForUDP()
    }
}
