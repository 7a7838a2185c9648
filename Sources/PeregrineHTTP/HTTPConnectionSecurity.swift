/// A byte transform between a `ManagementServer` connection's socket and its
/// HTTP parser: TLS from the first byte (the HTTP injection API's `tls=yes`).
/// PeregrineHTTP stays free of OpenSSL: the daemon supplies the TLS one.
/// One per connection, used on the loop's thread only.
public protocol HTTPConnectionSecurity: AnyObject {
    /// Bytes from the socket. Hands every plaintext byte they complete to
    /// `deliver` (in order) and returns true; false when the connection is
    /// unusable (a failed handshake, a bad record, a plaintext client): send
    /// `takeOutgoing()` (an alert, perhaps) and close.
    func receive(_ bytes: UnsafeRawBufferPointer, deliver: (UnsafeRawBufferPointer) -> Void) -> Bool
    /// Bytes the transform wants sent now (handshake records, tickets, alerts).
    func takeOutgoing() -> [UInt8]
    /// Encrypts a response; `closing`: a close_notify follows it. nil: failed, close.
    func seal(_ plaintext: [UInt8], closing: Bool) -> [UInt8]?
    /// The peer ended its side (close_notify): no more requests will come.
    var peerClosed: Bool { get }
}
