import Foundation
import PeregrineConfig

/// The `retry-after` list: the delay before each further attempt; the last
/// entry repeats (`10m,20m,1h` waits 10m, 20m, then 1h forever).
public struct RetrySchedule: Hashable, Sendable, CustomStringConvertible {
    public private(set) var intervals: [Duration]

    /// `intervals` must not be empty; an empty list becomes a single 10m step.
    public init(_ intervals: [Duration]) {
        self.intervals = intervals.isEmpty ? [.seconds(600)] : intervals
    }

    /// The delay after the `failures`-th failed attempt (1-based; values below 1 count as 1).
    public func delay(afterFailures failures: Int) -> Duration {
        let index = min(max(failures, 1), intervals.count) - 1
        return intervals[index]
    }

    public var description: String { intervals.map(\.configText).joined(separator: ",") }
}

extension ConfigValue {
    /// `10m`, or `10m,20m,1h` (spaces after commas are tolerated by joining the arguments first).
    public static func retrySchedule(_ text: String) throws(ConfigValueError) -> RetrySchedule {
        let items = text.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        var intervals: [Duration] = []
        for (index, item) in items.enumerated() {
            guard !item.isEmpty else {
                throw ConfigValueError("'\(text)': empty entry \(index + 1) in the retry list")
            }
            let value = try duration(item)
            guard value > .zero else { throw ConfigValueError("'\(text)': a retry interval must be longer than zero") }
            intervals.append(value)
        }
        return RetrySchedule(intervals)
    }
}
