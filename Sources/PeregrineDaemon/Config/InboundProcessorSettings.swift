import PeregrineConfig
import PeregrineEngine

/// `<bounce-processor>` or `<feedback-loop-processor>` (PowerMTA's blocks):
/// mail injected for a recipient its `<address-list>` matches is read as a
/// bounce report (→ `rb` records) or an ARF complaint (→ `f` records)
/// instead of being relayed.
///
/// ```
/// <bounce-processor>
///     deliver-unmatched-email no     # a message that is no report: relay it anyway?
///     deliver-matched-email no       # a report that was read: relay it as well?
///     <address-list>
///         address /^bounces[+-].*@bounce\.example\.com$/
///     </address-list>
/// </bounce-processor>
/// ```
public struct InboundProcessorSettings: Hashable, Sendable {
    public enum Kind: String, Hashable, Sendable {
        case bounce = "bounce-processor"
        case feedbackLoop = "feedback-loop-processor"
    }

    public var kind: Kind
    /// `address /REGEX/` lines of `<address-list>`, matched against the whole recipient address.
    public var addresses: [CompiledRegex] = []
    /// `deliver-matched-email`: relay a report after reading it (default no).
    public var deliverMatchedEmail = false
    /// `deliver-unmatched-email`: relay mail that is not a report Peregrine can read (default no: dropped, logged).
    public var deliverUnmatchedEmail = false

    public init(kind: Kind) { self.kind = kind }

    /// Whether mail for `recipient` goes to this processor.
    public func handles(_ recipient: String) -> Bool {
        addresses.contains { $0.matches(recipient) }
    }

    public init(block: ConfigNode, diagnostics: inout ConfigDiagnostics) throws(ConfigError) {
        guard let kind = Kind(rawValue: block.name) else { throw block.error("unknown block <\(block.name)>") }
        guard block.arguments.isEmpty else {
            throw block.error("<\(block.name)> takes no arguments, got '\(block.arguments.joined(separator: " "))'")
        }
        self.init(kind: kind)
        var sawList = false
        var badAddress = false  // already reported at its line: no second error for the block
        for node in block.children {
            do throws(ConfigError) {
                if node.isBlock {
                    guard node.name == "address-list" else {
                        throw node.error("<\(node.name)> is not allowed in <\(block.name)> (expected <address-list>)")
                    }
                    sawList = true
                    for line in node.directivesOnly(diagnostics: &diagnostics) {
                        do throws(ConfigError) {
                            guard line.name == "address" else {
                                throw line.error("unknown directive '\(line.name)' in <address-list> (expected: address /REGEX/)")
                            }
                            addresses.append(try line.parse(try line.singleArgument(), ConfigValue.regexLiteral))
                        } catch { diagnostics.record(error); badAddress = true }
                    }
                    continue
                }
                switch node.name {
                case "deliver-matched-email": deliverMatchedEmail = try node.value(ConfigValue.bool)
                case "deliver-unmatched-email": deliverUnmatchedEmail = try node.value(ConfigValue.bool)
                case "forward-unmatched-to", "forward-errors-to":
                    // Refused, never ignored: an operator relying on it would lose mail silently.
                    throw node.error("\(node.name) is not supported by Peregrine yet; use deliver-unmatched-email yes "
                                     + "to relay such mail to its own recipient")
                default:
                    throw node.error("unknown directive '\(node.name)' in <\(block.name)>")
                }
            } catch { diagnostics.record(error) }
        }
        if !sawList || (addresses.isEmpty && !badAddress) {
            throw block.error("<\(block.name)> needs an <address-list> with at least one address /REGEX/")
        }
    }
}
