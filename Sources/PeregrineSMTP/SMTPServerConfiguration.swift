/// Limits and advertised features of a server session.
public struct SMTPServerConfiguration: Sendable {
    /// What a text line in DATA longer than `maxDataLineLength` leads to.
    public enum LongDataLinePolicy: Sendable {
        /// Refuse the message at end of DATA with 500 5.5.6 (the default).
        case reject
        /// Accept it; `SMTPMessageInfo.sawOverlongLine` tells the owner.
        case accept
    }
    /// What a bare LF inside DATA leads to. In both cases it is content, never a line end
    /// (so "\n.\n" cannot end DATA: the SMTP smuggling defence).
    public enum BareLineFeedPolicy: Sendable {
        /// Keep the message; `SMTPMessageInfo.sawBareLineFeed` tells the owner (the default).
        case accept
        /// Refuse the message at end of DATA with 554 5.5.2.
        case reject
    }

    /// Name in the greeting and the EHLO reply.
    public var hostname: String = "localhost"
    /// Text after the hostname in the 220 greeting.
    public var banner: String = "ESMTP Peregrine"
    /// Longest command line including CRLF (RFC 5321: 512).
    public var maxCommandLineLength: Int = 512
    /// Longest DATA text line including CRLF (RFC 5321: 1000).
    public var maxDataLineLength: Int = 1000
    public var longDataLinePolicy: LongDataLinePolicy = .reject
    public var bareLineFeedPolicy: BareLineFeedPolicy = .accept
    /// Recipients per transaction; more get 452 4.5.3.
    public var maxRecipients: Int = 1000
    /// Largest message in bytes (advertised as SIZE); larger gets 552 5.3.4.
    public var maxMessageSize: Int = 50 * 1024 * 1024
    /// Protocol errors per session; at this count the session says 421 4.7.0 and closes.
    public var maxErrors: Int = 10
    /// Reply bytes waiting in `output` above which the session stops
    /// processing commands: a client that pipelines without reading its
    /// replies gets no further than this. The rest of its input waits in
    /// `bufferedInputBytes` until the owner takes the output and calls
    /// `processBufferedInput()`. `output` never holds more than this plus one
    /// reply (`SMTPServerSession.longestOwnReply` for the session's own).
    public var maxPendingOutput: Int = 64 * 1024
    /// Advertise and accept AUTH PLAIN LOGIN (the owner checks credentials).
    /// Offered only over TLS (after STARTTLS, or with `implicitTLS`) unless
    /// `allowUnencryptedAuth`: elsewhere AUTH gets 538 5.7.11 (RFC 4954 §4).
    public var authEnabled: Bool = false
    /// AUTH before TLS too (PowerMTA's `allow-unencrypted-plain-auth`): the
    /// password crosses the network in clear text, so it is an explicit choice.
    public var allowUnencryptedAuth: Bool = false
    /// The connection was encrypted before the greeting (port 465 style):
    /// the session starts with `isTLSActive` set.
    public var implicitTLS: Bool = false
    /// MAIL is refused with 530 5.7.0 until AUTH succeeded.
    public var requireAuth: Bool = false
    /// Advertise and accept STARTTLS (the owner runs the handshake).
    public var startTLSEnabled: Bool = false
    /// Advertise XVERP in the EHLO reply (Postfix's extension; MAIL FROM's
    /// XVERP parameter is parsed either way, the owner decides what it may do).
    public var advertiseXVERP: Bool = false

    public init(hostname: String = "localhost") {
        self.hostname = hostname
    }
}

/// What the server session knows about a finished DATA body.
public struct SMTPMessageInfo: Sendable, Hashable {
    /// Body bytes after dot-unstuffing (what was handed to the owner).
    public var size: Int
    public var sawBareLineFeed: Bool
    public var sawOverlongLine: Bool
    /// The body handed over is its own wire form (`DotUnstuffer.contentIsWireForm`).
    public var isWireForm: Bool
    public init(size: Int, sawBareLineFeed: Bool = false, sawOverlongLine: Bool = false, isWireForm: Bool = false) {
        self.size = size; self.sawBareLineFeed = sawBareLineFeed; self.sawOverlongLine = sawOverlongLine
        self.isWireForm = isWireForm
    }
}

/// The accepted envelope of the current transaction.
public struct SMTPTransaction: Sendable, Hashable {
    public var mailFrom: SMTPMailFrom?
    public var recipients: [SMTPRcptTo] = []
    public init() {}
}
