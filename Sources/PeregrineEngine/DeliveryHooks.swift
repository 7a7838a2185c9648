#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO
import PeregrineSMTP

/// A virtual MTA: the source IP a queue's connections bind to and the name
/// they say in EHLO (`smtp-source-host IP HOSTNAME`).
public struct VirtualMTA: Sendable, Equatable {
    public var name: String
    public var sourceAddress: SocketAddress?
    public var hostname: String
    public init(name: String, sourceAddress: SocketAddress?, hostname: String) {
        self.name = name; self.sourceAddress = sourceAddress; self.hostname = hostname
    }
}

/// One host to try for a queue, in MX preference order.
public struct RouteHost: Sendable, Equatable {
    public var name: String
    public var address: SocketAddress
    public init(name: String, address: SocketAddress) { self.name = name; self.address = address }
}

public enum RouteFailure: Error, Sendable, Equatable {
    /// The domain has no MX and no A (or does not exist): bounce if bounce-upon-no-mx.
    case noMailHost(String)
    /// DNS timed out or failed: try the queue again later.
    case temporary(String)
}

/// Where the engine's decisions go: the daemon writes accounting records and
/// spool outcome records from these. Called on the engine's loop.
public protocol DeliveryObserver: AnyObject {
    /// A recipient is delivered (2xx after DATA).
    func delivered(_ message: QueuedMessage, recipient: Int, queue: DeliveryQueue, reply: SMTPReply, connection: DeliveryAttemptInfo)
    /// A recipient is bounced: a 5xx, a pattern-list `bounce`, no mail host, or expiry (`category` message-expired).
    func bounced(_ message: QueuedMessage, recipient: Int, queue: DeliveryQueue, reply: SMTPReply, category: String?,
                 connection: DeliveryAttemptInfo?)
    /// A recipient got a transient failure and will be retried.
    func deferred(_ message: QueuedMessage, recipient: Int, queue: DeliveryQueue, reply: SMTPReply, connection: DeliveryAttemptInfo?)
    /// The whole queue could not be reached (every MX failed): one `tq` record, not one per recipient.
    func queueDeferred(_ queue: DeliveryQueue, reason: String)
    /// A recipient already deferred once still waits in a queue whose every
    /// MX host failed again, and has waited at least the policy's
    /// notify-of-delay-every: a delay notice may be due. No record is written.
    func stillWaiting(_ message: QueuedMessage, recipient: Int, queue: DeliveryQueue, reply: SMTPReply, connection: DeliveryAttemptInfo?)
    /// A message has no pending recipient left anywhere: its spool space may be reclaimed.
    func messageCompleted(_ message: QueuedMessage)
    /// A pattern list disabled a queue's source IP for its domain until `until`
    /// (monotonic); `movedTo` is the pool member its mail moves to (nil: the queue waits).
    func sourceDisabled(_ queue: DeliveryQueue, until: UInt64, reason: String, movedTo: String?, recipientsMoved: Int)
    /// A queue's mode changed (backoff in or out, suspended, paused, resumed): the log file's events.
    func queueModeChanged(_ queue: DeliveryQueue, _ change: QueueModeChange)
    /// A transaction (MAIL FROM to the last reply, after the body or after
    /// every recipient was refused) ended `nanoseconds` after it began.
    func transactionCompleted(_ queue: DeliveryQueue, nanoseconds: UInt64)
    /// Connects began to fail for lack of local resources (descriptors, memory): once per episode.
    func localShortageBegan(reason: String)
    /// A connection opened again after `failedConnects` connects failed locally over `nanoseconds`.
    func localShortageEnded(failedConnects: Int, nanoseconds: UInt64)
}

extension DeliveryObserver {
    /// Observers that keep no log ignore mode changes.
    public func queueModeChanged(_ queue: DeliveryQueue, _ change: QueueModeChange) {}
    /// Observers that send no delay notices ignore recipients still waiting.
    public func stillWaiting(_ message: QueuedMessage, recipient: Int, queue: DeliveryQueue, reply: SMTPReply,
                             connection: DeliveryAttemptInfo?) {}
    /// Observers that keep no metrics ignore transaction times.
    public func transactionCompleted(_ queue: DeliveryQueue, nanoseconds: UInt64) {}
    /// Observers that keep no log ignore local shortages (the queues wait either way).
    public func localShortageBegan(reason: String) {}
    public func localShortageEnded(failedConnects: Int, nanoseconds: UInt64) {}
}

/// Facts about the connection a result came over (accounting's dlv* fields).
public struct DeliveryAttemptInfo: Sendable {
    public var sourceAddress: SocketAddress?
    public var destination: SocketAddress
    public var destinationName: String
    public var esmtp: Bool
    /// TLS protocol and cipher when the connection used STARTTLS (dlvTlsProtocol, dlvTlsCipher).
    public var tlsProtocol: String?
    public var tlsCipher: String?
    public init(sourceAddress: SocketAddress?, destination: SocketAddress, destinationName: String, esmtp: Bool,
                tlsProtocol: String? = nil, tlsCipher: String? = nil) {
        self.sourceAddress = sourceAddress; self.destination = destination
        self.destinationName = destinationName; self.esmtp = esmtp
        self.tlsProtocol = tlsProtocol; self.tlsCipher = tlsCipher
    }
}

/// A body stored in its SMTP wire form, to be sent straight from a file
/// (`EventLoop.sendFile`) and followed by ".\r\n". `file` is the
/// receiver's own descriptor: it closes it.
public struct DeliveryBodyRange: Sendable {
    public var file: FileHandle
    public var offset: Int64
    public var count: Int
    public init(file: FileHandle, offset: Int64, count: Int) { self.file = file; self.offset = offset; self.count = count }

    /// Below this a body is copied (read, dot-stuffed into the send buffer):
    /// the file path costs a record-prefix read, a dup and a close per
    /// message, and two sends instead of one (measured in results/zerocopy-*).
    public static let defaultMinimumSize = 16 * 1024

    /// PEREGRINE_FILE_BODY_MIN_BYTES=N overrides the threshold (`off`: never
    /// from the file): only to measure both paths with one binary, in one run
    /// (results/zerocopy-*); nil when unset or not a number.
    public static let minimumSizeFromEnvironment: Int? = {
        guard let v = getenv("PEREGRINE_FILE_BODY_MIN_BYTES") else { return nil }
        let s = String(cString: v)
        return s == "off" ? Int.max : Int(s).flatMap { $0 >= 0 ? $0 : nil }
    }()
}

/// The engine's view of the spool: reading a body back when its attempt is due.
public protocol DeliveryBodySource: AnyObject {
    /// Reads the message into `buffer` (at least `message.recordLength` bytes)
    /// and hands back the body: a slice of `buffer`.
    func readBody(of message: QueuedMessage, into buffer: UnsafeMutableRawBufferPointer,
                  _ done: @escaping (Result<UnsafeRawBufferPointer, IOError>) -> Void)
    /// The body as a file range when the spool holds it in wire form (read
    /// the record's start into `buffer`, at least `message.recordLength`
    /// bytes, to tell); nil when it does not (then `readBody`).
    func readBodyRange(of message: QueuedMessage, into buffer: UnsafeMutableRawBufferPointer,
                       _ done: @escaping (Result<DeliveryBodyRange?, IOError>) -> Void)
}

extension DeliveryBodySource {
    public func readBodyRange(of message: QueuedMessage, into buffer: UnsafeMutableRawBufferPointer,
                              _ done: @escaping (Result<DeliveryBodyRange?, IOError>) -> Void) {
        done(.success(nil))
    }
}

/// Routing (static `route` directives, then DNS MX) as the engine needs it.
public protocol DeliveryRouter: AnyObject {
    func hosts(for queue: QueueKey, _ done: @escaping (Result<[RouteHost], RouteFailure>) -> Void)
}

/// Settings per queue, pattern lists and classification: answered from the config.
public protocol DeliveryPolicySource: AnyObject {
    func policy(for queue: QueueKey) -> DomainSettings
    func virtualMTA(named: String) -> VirtualMTA?
    /// The pool a VMTA's queues steer within when its source IP is disabled, if any.
    func pool(ofVMTA name: String) -> (name: String, members: [String])?
    /// Pattern-list actions for a remote reply on this queue.
    func actions(for reply: SMTPReply, queue: QueueKey) -> [SMTPPatternAction]
    /// Whether `actions(for:queue:)` can return anything for a 2xx reply on
    /// this queue (see `SMTPPatternList.seesPositiveReplies`); when false the
    /// engine does not ask for 2xx replies. Asked when a queue is created and on reload.
    func patternsSeePositiveReplies(queue: QueueKey) -> Bool
    /// Bounce category for a permanent failure.
    func bounceCategory(for reply: SMTPReply) -> String
    /// The shared connection caps over a VMTA's connections (ConnectionBudget.swift), outermost first.
    func connectionBudgets(forVMTA name: String) -> [ConnectionBudget]
    /// The shared daily counts of `max-cold-virtual-mta-msg`.
    var coldVMTAQuota: ColdVMTAQuota? { get }
    /// The domain whose queue holds `domain`'s recipients from `vmta`: its
    /// `queue-to`, else itself.
    func queueDomain(for domain: String, vmta: String) -> String
}

extension DeliveryPolicySource {
    /// No shared caps unless the source has them.
    public func connectionBudgets(forVMTA name: String) -> [ConnectionBudget] { [] }
    public var coldVMTAQuota: ColdVMTAQuota? { nil }

    /// `queue-to` of the domain's settings, one hop (a queue-to target's own queue-to is not followed).
    public func queueDomain(for domain: String, vmta: String) -> String {
        policy(for: QueueKey(domain: domain, vmta: vmta)).queueTo ?? domain
    }

    /// Conservative default: ask for every reply.
    public func patternsSeePositiveReplies(queue: QueueKey) -> Bool { true }
}
