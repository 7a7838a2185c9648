/// Per-recipient states of one message, compact: up to 32 recipients packed
/// two bits each into one word (no allocation), more spill into an array.
/// 16 bytes: the spool's live set keeps one per queued message.
public struct RecipientStates: Hashable, Sendable {
    @usableFromInline enum Storage: Hashable, Sendable {
        case packed(UInt64)
        case array([UInt8])
    }
    @usableFromInline var storage: Storage
    private let count32: UInt32
    public var count: Int { Int(count32) }

    public init(count: Int) {
        self.count32 = UInt32(clamping: count)
        storage = count <= 32 ? .packed(0) : .array([UInt8](repeating: 0, count: count))
    }

    /// States of up to 32 recipients from their packed word (nil for more).
    init?(count: Int, packed word: UInt64) {
        guard count <= 32 else { return nil }
        self.count32 = UInt32(count)
        storage = .packed(word)
    }

    /// The packed word, when the states fit one (up to 32 recipients).
    var packedWord: UInt64? {
        if case .packed(let w) = storage { return w }
        return nil
    }

    public subscript(_ i: Int) -> RecipientState {
        get {
            guard i >= 0 && i < count else { return .pending }
            switch storage {
            case .packed(let w): return RecipientState(rawValue: UInt8((w >> UInt64(2 * i)) & 3)) ?? .pending
            case .array(let a): return RecipientState(rawValue: a[i]) ?? .pending
            }
        }
        set {
            guard i >= 0 && i < count else { return }
            switch storage {
            case .packed(var w):
                w &= ~(UInt64(3) << UInt64(2 * i))
                w |= UInt64(newValue.rawValue) << UInt64(2 * i)
                storage = .packed(w)
            case .array(var a):
                storage = .packed(0) // drop the reference so the array stays uniquely owned
                a[i] = newValue.rawValue
                storage = .array(a)
            }
        }
    }

    /// Recipients not yet final.
    public var pendingCount: Int {
        var n = 0
        for i in 0..<count where self[i] == .pending { n += 1 }
        return n
    }

    /// Final states win: merges another view of the same message.
    public mutating func merge(_ other: RecipientStates) {
        for i in 0..<min(count, other.count) where self[i] == .pending && other[i] != .pending {
            self[i] = other[i]
        }
    }
}
