import ZapScenario

/// Differences between two `report.json` files of the same schema: what a nightly job compares
/// against its baseline.
public struct ReportComparison: Sendable {
    /// One metric in both reports.
    public struct Change: Sendable, Equatable {
        /// `POLICY.OPERATION.STATISTIC` or `POLICY.violations`.
        public var metric: String
        /// The baseline's value (ns, or a count).
        public var baseline: Double
        /// The current value.
        public var current: Double
        /// Relative change, (current - baseline) / baseline; infinite from a zero baseline.
        public var relative: Double
        /// Worse by more than the tolerance (and more than the noise floor).
        public var regression: Bool
    }

    /// Why two reports cannot be compared.
    public struct Incompatible: Error, Sendable, CustomStringConvertible {
        /// What differs.
        public let description: String
    }

    /// Every metric present in both, in report order.
    public var changes: [Change]
    /// The regressions among them.
    public var regressions: [Change] { changes.filter(\.regression) }

    /// Compares measured block-time statistics (p50, p99, p99.9, max) and violation counts of
    /// every policy and operation that both reports have. A latency regresses when it grew by
    /// more than `tolerance` (0.1 = 10%) and by more than `noiseFloorNanoseconds`; violations
    /// regress when they grow at all.
    public static func compare(
        baseline: RunReport, current: RunReport, tolerance: Double,
        noiseFloorNanoseconds: Double = 1000
    ) throws(Incompatible) -> ReportComparison {
        guard baseline.schema == current.schema, baseline.schemaVersion == current.schemaVersion else {
            throw Incompatible(
                description:
                    "schema \(baseline.schema) v\(baseline.schemaVersion) and \(current.schema) v\(current.schemaVersion) differ; compare reports written by the same schema version"
            )
        }
        guard baseline.scenario == current.scenario else {
            throw Incompatible(description: "the reports are of different scenarios (\(baseline.scenario), \(current.scenario))")
        }
        var changes: [Change] = []
        for old in baseline.policies {
            guard let new = current.policies.first(where: { $0.policy == old.policy }) else { continue }
            for operation in MetricCatalog.operations {
                guard let before = old.operations[operation]?.measured, let after = new.operations[operation]?.measured,
                    before.count > 0, after.count > 0
                else { continue }
                for statistic in ["p50", "p99", "p99.9", "max"] {
                    let a = before.value(of: statistic)!, b = after.value(of: statistic)!
                    let relative = a == 0 ? (b == 0 ? 0 : .infinity) : (b - a) / a
                    changes.append(
                        Change(
                            metric: "\(old.policy).\(operation).\(statistic)", baseline: a, current: b, relative: relative,
                            regression: relative > tolerance && b - a > noiseFloorNanoseconds))
                }
            }
            let a = Double(old.violations), b = Double(new.violations)
            changes.append(
                Change(
                    metric: "\(old.policy).violations", baseline: a, current: b,
                    relative: a == 0 ? (b == 0 ? 0 : .infinity) : (b - a) / a, regression: b > a))
        }
        return ReportComparison(changes: changes)
    }
}
