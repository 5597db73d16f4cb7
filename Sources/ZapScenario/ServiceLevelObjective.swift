import ZapEngine
import Foundation

/// The names a scenario's objectives and a run's report share.
public enum MetricCatalog {
    /// Operations with block-time histograms, in report order.
    public static let operations: [String] = [
        "fault", "populate", "reset", "vcpu_block", "fast_zap", "full_zap", "teardown", "root_lifetime"
    ]
    /// What each operation measures.
    public static let operationMeaning: [String: String] = [
        "fault": "one single-page fault, as the vCPU saw it",
        "populate": "one 2 MiB batch of 4 KiB faults while populating",
        "reset": "vCPU reset (root unload); under sync it includes the zap of a root whose last reference it drops",
        "vcpu_block": "every vCPU-side block: faults, populate batches and resets together",
        "fast_zap": "memslot deletion as its caller saw it (invalidate, then wait for the zaps)",
        "full_zap": "MMU notifier release: zap of every root under the write lock",
        "teardown": "VM destruction: unload, workqueue flush and destroy, grace-period barrier",
        "root_lifetime": "per root, from invalidation to its table's return to the pool"
    ]
    /// Statistics of a histogram an objective may name.
    public static let statistics: [String] = ["count", "min", "mean", "max", "p50", "p90", "p99", "p99.9", "p99.99"]
    /// Counters an objective may name.
    public static let counters: [String] = [
        "violations", "sptes_installed", "sptes_zapped", "tables_leaked", "work_items_rejected", "yields", "tlb_flushes"
    ]
}

/// One objective, e.g. `async.vcpu_block.p99.9 < 1ms` or `violations == 0`.
public struct ServiceLevelObjective: Sendable, Equatable, CustomStringConvertible {
    /// What an objective measures.
    public enum Metric: Sendable, Equatable {
        /// A statistic of an operation's block-time histogram, measured or projected to the kernel.
        case latency(operation: String, statistic: String, projected: Bool)
        /// A counter of the run.
        case counter(String)
    }

    /// How the measured value must compare with the threshold.
    public enum Comparison: String, Sendable, Equatable, CaseIterable {
        case lessThan = "<"
        case lessOrEqual = "<="
        case greaterThan = ">"
        case greaterOrEqual = ">="
        case equal = "=="

        /// Does `value` satisfy the comparison against `threshold`?
        public func holds(_ value: Double, _ threshold: Double) -> Bool {
            switch self {
            case .lessThan: value < threshold
            case .lessOrEqual: value <= threshold
            case .greaterThan: value > threshold
            case .greaterOrEqual: value >= threshold
            case .equal: value == threshold
            }
        }
    }

    /// The objective as written.
    public var text: String
    /// The policy it applies to; nil for every policy of the run.
    public var policy: ZapPolicy?
    /// What is measured.
    public var metric: Metric
    /// How it must compare.
    public var comparison: Comparison
    /// The threshold: nanoseconds for latencies, a count for counters.
    public var threshold: Double

    /// The objective as written.
    public var description: String { text }

    /// Parses an objective. The error text says what is wrong and what is allowed.
    public static func parse(_ text: String) -> Result<ServiceLevelObjective, ObjectiveSyntaxError> {
        // Two-character operators first, so that `<=` is not read as `<`.
        let operators = Comparison.allCases.sorted { $0.rawValue.count > $1.rawValue.count }
        guard let comparison = operators.first(where: { text.contains($0.rawValue) }),
            let range = text.range(of: comparison.rawValue)
        else {
            return .failure(ObjectiveSyntaxError("no comparison: write METRIC OP VALUE with OP one of < <= > >= =="))
        }
        let left = text[..<range.lowerBound].trimmingCharacters(in: " ")
        let right = text[range.upperBound...].trimmingCharacters(in: " ")

        var path = Substring(left)
        var policy: ZapPolicy?
        if let dot = path.firstIndex(of: ".") {
            let head = String(path[..<dot])
            if head == "*" {
                path = path[path.index(after: dot)...]
            } else if let named = ZapPolicy(rawValue: head) {
                policy = named
                path = path[path.index(after: dot)...]
            } else if !MetricCatalog.operations.contains(head) {
                return .failure(
                    ObjectiveSyntaxError(
                        "'\(head)' is neither a policy (\(ZapPolicy.allCases.map(\.rawValue).joined(separator: ", ")), *) nor an operation (\(MetricCatalog.operations.joined(separator: ", ")))"
                    ))
            }
        }

        let metric: Metric
        if !path.contains(".") {
            let name = String(path)
            guard MetricCatalog.counters.contains(name) else {
                return .failure(
                    ObjectiveSyntaxError(
                        "unknown counter '\(name)'; counters: \(MetricCatalog.counters.joined(separator: ", ")); latencies are written OPERATION.STATISTIC"
                    ))
            }
            metric = .counter(name)
        } else {
            let dot = path.firstIndex(of: ".")!
            let operation = String(path[..<dot])
            var rest = String(path[path.index(after: dot)...])
            guard MetricCatalog.operations.contains(operation) else {
                return .failure(
                    ObjectiveSyntaxError(
                        "unknown operation '\(operation)'; operations: \(MetricCatalog.operations.joined(separator: ", "))"))
            }
            var projected = false
            if rest.hasPrefix("projected.") {
                projected = true
                rest.removeFirst("projected.".count)
            }
            guard MetricCatalog.statistics.contains(rest) else {
                return .failure(
                    ObjectiveSyntaxError(
                        "unknown statistic '\(rest)'; statistics: \(MetricCatalog.statistics.joined(separator: ", ")) (optionally after 'projected.')"
                    ))
            }
            metric = .latency(operation: operation, statistic: rest, projected: projected)
        }

        let threshold: Double
        switch metric {
        case .latency(_, let statistic, _) where statistic != "count":
            guard let value = Quantities.parseDuration(right) else {
                return .failure(ObjectiveSyntaxError("'\(right)' is not a duration; write a number and a unit: ns, us, ms, s (e.g. 1ms)"))
            }
            threshold = value
        default:
            guard let value = Double(right), value >= 0 else {
                return .failure(ObjectiveSyntaxError("'\(right)' is not a count; write a non-negative number"))
            }
            threshold = value
        }
        return .success(
            ServiceLevelObjective(
                text: text, policy: policy, metric: metric,
                comparison: comparison, threshold: threshold))
    }
}

/// Why an objective did not parse.
public struct ObjectiveSyntaxError: Error, Sendable, CustomStringConvertible {
    /// What is wrong and what is allowed.
    public let message: String
    init(_ message: String) { self.message = message }
    /// The message.
    public var description: String { message }
}
