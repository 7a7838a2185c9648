// Fuzz target: DNS responses as a hostile or broken resolver sends them.
// Oracles besides "no crash": a packet that decodes re-encodes, and the
// re-encoded packet decodes to the same message (compression pointers,
// label lengths and counts survive the round trip).
import PeregrineDNS


func fuzzDNSMessage(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let message = try? DNSMessage(decoding: bytes) else { return 0 }
    // A decoded name may exceed what encoding allows (e.g. 255 bytes after
    // expanding pointers); refusing to encode it is correct, trapping is not.
    guard let encoded = try? message.encode() else { return 0 }
    guard let again = try? DNSMessage(decoding: encoded) else {
        preconditionFailure("re-encoded message does not decode")
    }
    precondition(again == message, "round trip changed the message")
    return 0
}
