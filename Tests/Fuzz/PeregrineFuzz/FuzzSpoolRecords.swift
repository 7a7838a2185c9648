// Fuzz target: spool segment bytes as a torn write, a bit flip or a
// foreign file leaves them, walked the way recovery walks a segment.
// Oracles besides "no crash": a record that frames is never longer than the
// bytes left, and a decoded message re-encodes to a record that frames and
// decodes to the same envelope (the format is a function of its content).
import PeregrineSpool


func fuzzSpoolRecords(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let segment = UnsafeRawBufferPointer(start: data, count: size)
    var offset = 0
    while offset < size {
        let rest = UnsafeRawBufferPointer(rebasing: segment[offset...])
        switch SpoolRecordFormat.frame(rest) {
        case .incomplete, .invalid:
            return 0
        case .record(let kind, let payloadLength):
            let total = SpoolRecordFormat.headerSize + payloadLength
            precondition(total <= rest.count, "record longer than the segment")
            let payload = UnsafeRawBufferPointer(rebasing: rest[SpoolRecordFormat.headerSize..<total])
            if kind == .message, let message = SpoolRecordFormat.decodeMessage(record: UnsafeRawBufferPointer(rebasing: rest[..<total])) {
                let body = UnsafeRawBufferPointer(rebasing: rest[message.bodyOffset..<total])
                let length = SpoolRecordFormat.headerSize + SpoolRecordFormat.envelopeSize(message.envelope) + body.count
                let again = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 8)
                defer { again.deallocate() }
                let written = SpoolRecordFormat.encodeMessage(id: message.id, envelope: message.envelope,
                                                              states: message.states, body: body, into: again.baseAddress!)
                precondition(written == length, "encoded length \(written) differs from the computed \(length)")
                let bytes = UnsafeRawBufferPointer(again)
                guard case .record(.message, let payloadLength) = SpoolRecordFormat.frame(bytes),
                      let decoded = SpoolRecordFormat.decodeMessage(record: UnsafeRawBufferPointer(
                          rebasing: bytes[..<(SpoolRecordFormat.headerSize + payloadLength)])) else {
                    preconditionFailure("re-encoded message record does not frame or decode")
                }
                precondition(decoded.id == message.id && decoded.envelope == message.envelope,
                             "re-encoded message differs")
            } else if kind == .outcome {
                _ = SpoolRecordFormat.decodeOutcome(payload: payload)
            } else if kind == .segmentStart {
                _ = SpoolRecordFormat.decodeSegmentStart(payload: payload)
            } else if kind == .segmentDeleted {
                _ = SpoolRecordFormat.decodeSegmentDeleted(payload: payload)
            }
            offset += total
        }
    }
    return 0
}
