import PeregrineConfig
import PeregrineEngine

/// The settings one `<domain>` block sets; nil fields are inherited from
/// less specific blocks. `apply(to:)` layers them onto `DomainSettings`.
public struct DomainOverrides: Hashable, Sendable {
    public var maxSMTPOut: Int?
    public var maxMsgPerConnection: Int?
    public var maxMsgRate: Rate?
    public var maxConnectRate: Rate?
    public var clusterMaxSMTPOut: Int?
    public var clusterMaxMsgRate: Rate?
    public var maxRcptPerTransaction: Int?
    public var retryAfter: RetrySchedule?
    public var bounceAfter: Duration?
    public var route: HostPort?
    public var smtpHosts: [HostPort]?
    public var queueTo: String?
    /// `max-msg-rate 0` (true), or a rate (false).
    public var maxMsgRateIsZero: Bool?
    /// `backoff-max-msg-rate 0` (true), or a rate (false).
    public var backoffMaxMsgRateIsZero: Bool?
    public var useStartTLS: Bool?
    public var requireStartTLS: Bool?
    public var tlsVerifyHostname: Bool?
    public var smtpPatternList: String?
    public var backoffMaxMsgRate: Rate?
    public var backoffMaxSMTPOut: Int?
    public var backoffMaxConnectRate: Rate?
    public var backoffRetryAfter: RetrySchedule?
    /// `.some(nil)` is `backoff-to-normal-after never`.
    public var backoffToNormalAfter: Duration??
    public var backoffToNormalAfterDelivery: Bool?
    public var queuePriority: Int?
    public var maxColdVirtualMTAMsg: Int?
    public var allowPriorityInterruption: Bool?
    public var smtp553MeansInvalidMailbox: Bool?
    public var connectTimeout: Duration?
    public var smtpGreetingTimeout: Duration?
    public var dataSendTimeout: Duration?
    public var smtpDataTerminationTimeout: Duration?
    public var smtpEHLOTimeout: Duration?
    public var smtpMailFromTimeout: Duration?
    public var smtpRcptToTimeout: Duration?
    public var smtpDataTimeout: Duration?
    public var smtpRsetTimeout: Duration?
    public var smtpQuitTimeout: Duration?
    public var smtpStartTLSTimeout: Duration?
    public var bounceUponNoMX: Bool?
    public var bounceUpon5xxGreeting: Bool?
    public var smtp421MeansMXUnavailable: Bool?
    public var mxRollup: Bool?
    public var deliverLocalDSN: Bool?
    public var notifyOfDelayEvery: Duration??

    public init() {}

    public func apply(to s: inout DomainSettings) {
        if let v = maxSMTPOut { s.maxSMTPOut = v }
        if let v = maxMsgPerConnection { s.maxMsgPerConnection = v }
        if let v = maxMsgRate { s.maxMsgRate = v }
        if let v = maxConnectRate { s.maxConnectRate = v }
        if let v = clusterMaxSMTPOut { s.clusterMaxSMTPOut = v }
        if let v = clusterMaxMsgRate { s.clusterMaxMsgRate = v }
        if let v = maxRcptPerTransaction { s.maxRcptPerTransaction = v }
        if let v = retryAfter { s.retryAfter = v }
        if let v = bounceAfter { s.bounceAfter = v }
        if let v = route { s.route = v }
        if let v = smtpHosts { s.smtpHosts = v }
        if let v = queueTo { s.queueTo = v }
        if let v = maxMsgRateIsZero { s.maxMsgRateIsZero = v }
        if let v = backoffMaxMsgRateIsZero { s.backoffMaxMsgRateIsZero = v }
        if let v = useStartTLS { s.useStartTLS = v }
        if let v = requireStartTLS { s.requireStartTLS = v }
        if let v = tlsVerifyHostname { s.tlsVerifyHostname = v }
        if let v = smtpPatternList { s.smtpPatternList = v }
        if let v = backoffMaxMsgRate { s.backoffMaxMsgRate = v }
        if let v = backoffMaxSMTPOut { s.backoffMaxSMTPOut = v }
        if let v = backoffMaxConnectRate { s.backoffMaxConnectRate = v }
        if let v = backoffRetryAfter { s.backoffRetryAfter = v }
        if let v = backoffToNormalAfter { s.backoffToNormalAfter = v }
        if let v = backoffToNormalAfterDelivery { s.backoffToNormalAfterDelivery = v }
        if let v = queuePriority { s.queuePriority = v }
        if let v = maxColdVirtualMTAMsg { s.maxColdVirtualMTAMsg = v }
        if let v = allowPriorityInterruption { s.allowPriorityInterruption = v }
        if let v = smtp553MeansInvalidMailbox { s.smtp553MeansInvalidMailbox = v }
        if let v = connectTimeout { s.connectTimeout = v }
        if let v = smtpGreetingTimeout { s.smtpGreetingTimeout = v }
        if let v = dataSendTimeout { s.dataSendTimeout = v }
        if let v = smtpDataTerminationTimeout { s.smtpDataTerminationTimeout = v }
        if let v = smtpEHLOTimeout { s.smtpEHLOTimeout = v }
        if let v = smtpMailFromTimeout { s.smtpMailFromTimeout = v }
        if let v = smtpRcptToTimeout { s.smtpRcptToTimeout = v }
        if let v = smtpDataTimeout { s.smtpDataTimeout = v }
        if let v = smtpRsetTimeout { s.smtpRsetTimeout = v }
        if let v = smtpQuitTimeout { s.smtpQuitTimeout = v }
        if let v = smtpStartTLSTimeout { s.smtpStartTLSTimeout = v }
        if let v = bounceUponNoMX { s.bounceUponNoMX = v }
        if let v = bounceUpon5xxGreeting { s.bounceUpon5xxGreeting = v }
        if let v = smtp421MeansMXUnavailable { s.smtp421MeansMXUnavailable = v }
        if let v = mxRollup { s.mxRollup = v }
        if let v = deliverLocalDSN { s.deliverLocalDSN = v }
        if let v = notifyOfDelayEvery { s.notifyOfDelayEvery = v }
    }
}
