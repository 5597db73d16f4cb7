/// Whether the newest run regressed against the runs before it.
///
/// For each metric, the baseline is the same metric in up to `window` runs of the same
/// scenario before the newest; with fewer than `minimumBaseline` of them there is no verdict.
/// The newest value regresses when it is more than `factor` times the **worst** baseline value.
///
/// Why the worst and not a band around the median: tail percentiles of block times on a shared
/// machine are heavy-tailed. On 36 A/A runs of `quick` (README, "History"), a median ± 5 robust
/// standard deviations rule (MAD-based, with a new-worst guard) flagged 19 of 31 runs judged, and
/// bands in log space 6 to 19; no width of a band fitted to the bulk held the rare host stalls
/// (a fault's p99.9 13 times its median). Against the worst of the window, a factor of 4 flagged 3
/// of 31 and still catches every 10-fold jump of `async.reset.p999` over the median planted in
/// those runs. Only increases count: every metric kept is a time, where more is worse.
public struct RegressionRule: Sendable, Equatable {
    /// Runs before the newest to compare with.
    public var window: Int
    /// Fewest baseline runs for a verdict.
    public var minimumBaseline: Int
    /// How many times the worst baseline value the newest must exceed.
    public var factor: Double

    /// The rule `zapfleet history check` applies unless told otherwise.
    public static let standard = RegressionRule(window: 20, minimumBaseline: 5, factor: 4)

    public init(window: Int, minimumBaseline: Int, factor: Double) {
        self.window = window
        self.minimumBaseline = minimumBaseline
        self.factor = factor
    }

    /// The verdict on `value` against `baseline` (oldest first; only the last `window` count).
    public func judge(_ value: Double, against baseline: [Double]) -> MetricVerdict {
        let recent = Array(baseline.suffix(window))
        guard recent.count >= minimumBaseline, let worst = recent.max() else { return .notEnoughHistory(recent.count) }
        let median = Self.median(recent)
        let bound = factor * worst
        return value > bound ? .regressed(value: value, median: median, bound: bound) : .fine(value: value, median: median, bound: bound)
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}

/// One metric's verdict.
public enum MetricVerdict: Sendable, Equatable {
    /// Within the bound.
    case fine(value: Double, median: Double, bound: Double)
    /// Above the bound: more than the factor times the worst baseline value.
    case regressed(value: Double, median: Double, bound: Double)
    /// Too few earlier runs of the same scenario.
    case notEnoughHistory(Int)

    public var isRegression: Bool { if case .regressed = self { true } else { false } }
}

/// The check of the newest run of a history.
public struct HistoryCheck: Sendable {
    /// The run judged.
    public var run: HistoryDatabase.Run
    /// Each metric's verdict, by name.
    public var verdicts: [(metric: String, verdict: MetricVerdict)]

    /// The metrics that regressed.
    public var regressions: [(metric: String, verdict: MetricVerdict)] { verdicts.filter { $0.verdict.isRegression } }

    /// The statistics judged when no metric is named: the tail percentiles.
    public static let defaultStatistics: Set<String> = ["p99", "p999"]

    /// Judges the newest run with `rule`, on `metrics` (normalised names), or on every tail
    /// percentile it has when `metrics` is empty.
    public static func newest(
        in database: HistoryDatabase, metrics: [String], rule: RegressionRule = .standard
    ) throws(HistoryError) -> HistoryCheck? {
        let runs = try database.runs()
        guard let newest = runs.last else { return nil }
        let earlier = runs.dropLast().filter { $0.scenario == newest.scenario }
        let names =
            metrics.isEmpty
            ? try database.metricNames(of: newest.id).filter { defaultStatistics.contains(String($0.split(separator: ".").last ?? "")) }
            : metrics
        var verdicts: [(String, MetricVerdict)] = []
        for name in names {
            let values = try database.values(of: name)
            guard let value = values[newest.id] else {
                verdicts.append((name, .notEnoughHistory(0)))
                continue
            }
            verdicts.append((name, rule.judge(value, against: earlier.compactMap { values[$0.id] })))
        }
        return HistoryCheck(run: newest, verdicts: verdicts)
    }
}
