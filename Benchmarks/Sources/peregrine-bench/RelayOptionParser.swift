#if canImport(Glibc)
import Glibc
#endif
import PeregrineIO

/// The options every relay scenario takes (`relay`, `relay-100k`, `relay-esp`,
/// and any later one built on `RelayRunner`), parsed and checked in one
/// place so that they stay spelled, bounded and explained alike.
protocol RelayScenarioOptions {
    static var usage: String { get }
    var backends: [BackendKind] { get set }
    var duration: Double { get set }
    var connections: Int { get set }
    var ip: String { get set }
    var outputDir: String { get set }
    var writeResults: Bool { get set }
}

/// What a scenario's own option parser says about `args[i]`.
enum RelayOptionStep {
    /// It knew the option; it used this many words (the option and its value).
    case used(Int)
    /// Not one of its options.
    case unknown
    case failure(BenchUsageError)
}

enum RelayOptionParser {
    /// Parses `args` into `options`: the shared options here, the rest by `own`
    /// (the scenario's own options); an option neither knows is a usage error.
    static func parse<O: RelayScenarioOptions>(
        _ args: [String], into options: inout O,
        own: (inout O, _ option: String, _ value: String?) -> RelayOptionStep
    ) -> BenchUsageError? {
        var i = 0
        while i < args.count {
            let value = i + 1 < args.count ? args[i + 1] : nil
            var step = common(&options, args[i], value)
            if case .unknown = step { step = own(&options, args[i], value) }
            switch step {
            case .used(let n): i += n
            case .failure(let e): return e
            case .unknown: return BenchUsageError("unknown option '\(args[i])'\n\(O.usage)")
            }
        }
        return nil
    }

    private static func common<O: RelayScenarioOptions>(_ o: inout O, _ option: String, _ value: String?) -> RelayOptionStep {
        switch option {
        case "--backend":
            guard let v = value else { return .failure(BenchUsageError("--backend needs a value")) }
            if v == "all" { o.backends = BackendKind.allCases; return .used(2) }
            if v == "none" { o.backends = []; return .used(2) }
            switch BackendKind.parse(v) {
            case .success(let k): o.backends = [k]; return .used(2)
            case .failure(let e): return .failure(BenchUsageError("\(e)"))
            }
        case "--duration": return positive(&o, \.duration, value, { Double($0) }, "--duration needs seconds > 0")
        case "--connections": return positive(&o, \.connections, value, { Int($0) }, "--connections needs a number")
        case "--ip":
            guard let v = value, v.hasPrefix("127."), v.split(separator: ".").count == 4,
                  v.split(separator: ".").allSatisfy({ UInt8($0) != nil }) else {
                return .failure(BenchUsageError("--ip needs a loopback address 127.X.Y.Z"))
            }
            o.ip = v
        case "--output-dir":
            guard let v = value else { return .failure(BenchUsageError("--output-dir needs a directory")) }
            o.outputDir = v
        case "--no-results":
            o.writeResults = false
            return .used(1)
        case "-h", "--help":
            print(O.usage)
            exit(0)
        default:
            return .unknown
        }
        return .used(2)
    }

    /// An option whose value must be a number above 0, stored at `key`.
    static func positive<O, T: Numeric & Comparable>(_ o: inout O, _ key: WritableKeyPath<O, T>, _ value: String?,
                                                     _ parse: (String) -> T?, _ message: String) -> RelayOptionStep {
        guard let v = value, let n = parse(v), n > 0 else { return .failure(BenchUsageError(message)) }
        o[keyPath: key] = n
        return .used(2)
    }

    /// `--dkim`'s value: the signing algorithms the relay scenarios know.
    static func dkim(_ value: String?) -> Result<String, BenchUsageError> {
        guard let v = value, ["rsa2048", "ed25519", "dual"].contains(v) else {
            return .failure(BenchUsageError("--dkim takes rsa2048, ed25519 or dual"))
        }
        return .success(v)
    }
}
