/// BODY= of MAIL FROM (RFC 6152).
public enum SMTPBodyType: String, Sendable, Hashable {
    case sevenBit = "7BIT"
    case eightBitMIME = "8BITMIME"
}

/// RET= of MAIL FROM (RFC 3461).
public enum SMTPDSNReturn: String, Sendable, Hashable {
    case full = "FULL"
    case headers = "HDRS"
}

/// NOTIFY= of RCPT TO (RFC 3461). An empty set with `never` means NEVER.
public struct SMTPDSNNotify: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let never = SMTPDSNNotify(rawValue: 1)
    public static let success = SMTPDSNNotify(rawValue: 2)
    public static let failure = SMTPDSNNotify(rawValue: 4)
    public static let delay = SMTPDSNNotify(rawValue: 8)
}

/// A MAIL FROM command: reverse path ("" for the null sender <>) and parameters.
public struct SMTPMailFrom: Sendable, Hashable {
    public var reversePath: String
    public var size: Int?
    public var body: SMTPBodyType?
    /// ENVID, xtext-decoded.
    public var envelopeID: String?
    public var ret: SMTPDSNReturn?
    /// AUTH= (RFC 4954), kept verbatim.
    public var auth: String?
    /// XVERP (Postfix's and PowerMTA's extension): deliver one recipient per
    /// transaction with the recipient encoded in the return path.
    public var xverp = false

    public init(reversePath: String, size: Int? = nil, body: SMTPBodyType? = nil,
                envelopeID: String? = nil, ret: SMTPDSNReturn? = nil, auth: String? = nil) {
        self.reversePath = reversePath; self.size = size; self.body = body
        self.envelopeID = envelopeID; self.ret = ret; self.auth = auth
    }
}

/// A RCPT TO command: forward path and DSN parameters.
public struct SMTPRcptTo: Sendable, Hashable {
    public var forwardPath: String
    public var notify: SMTPDSNNotify?
    /// ORCPT: address type (e.g. "rfc822") and xtext-decoded address.
    public var originalRecipient: OriginalRecipient?

    public struct OriginalRecipient: Sendable, Hashable {
        public var addressType: String
        public var address: String
        public init(addressType: String, address: String) { self.addressType = addressType; self.address = address }
    }

    public init(forwardPath: String, notify: SMTPDSNNotify? = nil, originalRecipient: OriginalRecipient? = nil) {
        self.forwardPath = forwardPath; self.notify = notify; self.originalRecipient = originalRecipient
    }
}

/// The greeting the client gave.
public struct SMTPHelo: Sendable, Hashable {
    public var domain: String
    /// EHLO (true) or HELO (false).
    public var isExtended: Bool
    public init(domain: String, isExtended: Bool) { self.domain = domain; self.isExtended = isExtended }
}

/// Credentials from AUTH PLAIN or LOGIN, for the owner to check.
public struct SMTPAuthCredentials: Sendable, Hashable {
    public enum Mechanism: String, Sendable { case plain = "PLAIN", login = "LOGIN" }
    public var mechanism: Mechanism
    public var authorizationIdentity: String
    public var username: String
    public var password: String
    public init(mechanism: Mechanism, authorizationIdentity: String = "", username: String, password: String) {
        self.mechanism = mechanism; self.authorizationIdentity = authorizationIdentity
        self.username = username; self.password = password
    }
}
