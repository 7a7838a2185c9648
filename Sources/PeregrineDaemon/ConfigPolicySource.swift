#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO
import PeregrineSMTP
import PeregrineEngine

/// Answers the delivery engine's policy questions from the loaded config:
/// effective `<domain>` settings per queue, VMTAs, pattern lists, bounce
/// categories. One per loop (no sharing across threads); replaced on reload.
public final class ConfigPolicySource: DeliveryPolicySource {
    public private(set) var config: PeregrineConfig
    private var settingsCache: [QueueKey: DomainSettings] = [:]
    private var vmtaCache: [String: VirtualMTA] = [:]
    private var poolCache: [String: (name: String, members: [String])?] = [:]
    private var injectionTargetCache: [String: InjectionTarget] = [:]
    /// The daemon's shared connection caps (one object for every loop, kept across reloads).
    var connectionBudgetTable: ConnectionBudgets?
    /// The daemon's shared `max-cold-virtual-mta-msg` counts.
    public var coldVMTAQuota: ColdVMTAQuota?
    private var budgetCache: [String: [ConnectionBudget]] = [:]
    /// The VMTA used when the config defines none: no source binding, the host's name.
    public static let defaultVMTAName = "default"

    public init(config: PeregrineConfig) {
        self.config = config
    }

    public func reload(_ newConfig: PeregrineConfig) {
        config = newConfig
        settingsCache.removeAll()
        vmtaCache.removeAll()
        poolCache.removeAll()
        injectionTargetCache.removeAll()
        budgetCache.removeAll()
    }

    /// What a VMTA or pool name given at injection stands for.
    public struct InjectionTarget {
        /// The name as configured names are compared (lower case): the VMTA name, the pool's cursor key.
        public var key: String
        /// The pool of that name, if there is one (recorded with the message even when it has no members).
        public var poolName: String?
        /// The pool's members, rotated per message; empty when the name is not a pool with members.
        public var members: [String]
        /// The name is a VMTA (or the implicit default VMTA of a config that defines none).
        public var isVirtualMTA: Bool
    }

    /// `name`'s injection target, cached per name until the next reload: asked per injected message, and
    /// reading it from `config` copied the whole config (every field retained) each time.
    public func injectionTarget(named name: String) -> InjectionTarget {
        if let cached = injectionTargetCache[name] { return cached }
        let key = name.lowercased()
        let pool = config.pool(named: key)
        let target = InjectionTarget(
            key: key, poolName: pool?.name, members: pool?.members ?? [],
            isVirtualMTA: config.virtualMTA(named: key) != nil
                || (key == Self.defaultVMTAName && config.virtualMTAs.isEmpty))
        injectionTargetCache[name] = target
        return target
    }

    public func connectionBudgets(forVMTA name: String) -> [ConnectionBudget] {
        if let cached = budgetCache[name] { return cached }
        let found = connectionBudgetTable?.budgets(forVMTA: name) ?? []
        budgetCache[name] = found
        return found
    }

    public func policy(for queue: QueueKey) -> DomainSettings {
        if let s = settingsCache[queue] { return s }
        let s = config.settings(forDomain: queue.domain, vmta: queue.vmta)
        settingsCache[queue] = s
        return s
    }

    public func virtualMTA(named name: String) -> VirtualMTA? {
        if let v = vmtaCache[name] { return v }
        let hostname = config.hostName ?? Self.systemHostName()
        var result: VirtualMTA?
        if let v = config.virtualMTA(named: name) {
            let source = v.sourceIP.flatMap { try? SocketAddress(ip: $0, port: 0) }
            result = VirtualMTA(name: v.name, sourceAddress: source, hostname: v.hostName ?? hostname)
        } else if name == Self.defaultVMTAName {
            result = VirtualMTA(name: name, sourceAddress: nil, hostname: hostname)
        }
        if let result { vmtaCache[name] = result }
        return result
    }

    /// The first `<virtual-mta-pool>` listing the VMTA (a VMTA in several pools
    /// steers within that one).
    public func pool(ofVMTA name: String) -> (name: String, members: [String])? {
        if let cached = poolCache[name] { return cached }
        let key = name.lowercased()
        let found = config.virtualMTAPools.first { $0.members.contains(key) }.map { ($0.name, $0.members) }
        poolCache[name] = .some(found)
        return found
    }

    public func actions(for reply: SMTPReply, queue: QueueKey) -> [SMTPPatternAction] {
        // The code check first: a 2xx that the list ignores costs no ReplyText (Strings).
        guard let list = config.patternList(for: policy(for: queue)), list.applies(toCode: reply.code) else { return [] }
        return list.actions(for: ReplyText(reply))
    }

    public func patternsSeePositiveReplies(queue: QueueKey) -> Bool {
        config.patternList(for: policy(for: queue))?.seesPositiveReplies ?? false
    }

    public func bounceCategory(for reply: SMTPReply) -> String {
        config.bounceClassifier.classify(ReplyText(reply)).rawValue
    }

    static func systemHostName() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, buf.count) == 0 else { return "localhost" }
        return String(cString: buf)
    }
}
