import Foundation

/// What the history keeps of one `report.json`: the run's identity and its figures, each under a
/// metric name `POLICY.OPERATION.STAT` (e.g. `async.reset.p999`, the measured 99.9th percentile of
/// async's vCPU resets, in nanoseconds).
public struct ReportMetrics: Sendable, Equatable {
    /// The scenario's name.
    public var scenario: String
    /// When the run started (the report's `started_at`), as written.
    public var startedAt: String
    /// The verdict's exit code.
    public var exitCode: Int
    /// Every figure, by metric name.
    public var values: [String: Double]

    /// The statistics a report gives for each operation, as the metric names spell them.
    public static let statistics = ["count", "min", "mean", "p50", "p90", "p99", "p999", "p9999", "max"]

    /// Reads a report; throws a `HistoryError` naming what is wrong and where.
    public static func read(_ data: Data, file: String) throws(HistoryError) -> ReportMetrics {
        guard let object = try? JSONSerialization.jsonObject(with: data) else {
            throw HistoryError(.badReport, "\(file) is not JSON; give the report.json a run wrote (zapfleet run --out DIR)")
        }
        guard let report = object as? [String: Any], report["schema"] as? String == "zapfleet-report" else {
            throw HistoryError(.badReport, "\(file) is not a zapfleet report (its \"schema\" is not \"zapfleet-report\")")
        }
        guard let policies = report["policies"] as? [[String: Any]] else {
            throw HistoryError(.badReport, "\(file): \"policies\" is missing or not a list")
        }
        var values: [String: Double] = [:]
        for policy in policies {
            guard let name = policy["policy"] as? String else {
                throw HistoryError(.badReport, "\(file): a policy without a \"policy\" name")
            }
            // A real kernel's column is kept under its own name, apart from the simulated ones.
            let prefix = (policy["external"] as? Bool) == true ? "external-\(name)" : name
            if let wall = policy["wall_seconds"] as? Double { values["\(prefix).run.wall_seconds"] = wall }
            for (operation, entry) in (policy["operations"] as? [String: Any]) ?? [:] {
                guard let measured = (entry as? [String: Any])?["measured"] as? [String: Any] else { continue }
                guard let count = (measured["count"] as? NSNumber)?.doubleValue, count > 0 else { continue }
                for statistic in statistics {
                    let key = statistic == "count" ? "count" : "\(statistic)_ns"
                    if let value = (measured[key] as? NSNumber)?.doubleValue {
                        values["\(prefix).\(operation).\(statistic)"] = value
                    }
                }
            }
        }
        let verdict = report["verdict"] as? [String: Any]
        return ReportMetrics(
            scenario: report["scenario"] as? String ?? "?", startedAt: report["started_at"] as? String ?? "",
            exitCode: (verdict?["exit_code"] as? NSNumber)?.intValue ?? -1, values: values)
    }

    /// `POLICY.OPERATION.STAT` with the statistic spelt as the report's keys are (`p99.9` is
    /// `p999`); nil, with why, where it is not that shape.
    public static func normalise(metric: String) -> Result<String, HistoryError> {
        let parts = metric.split(separator: ".", maxSplits: 2).map(String.init)
        guard parts.count == 3, !parts[0].isEmpty, !parts[1].isEmpty else {
            return .failure(HistoryError(.badMetric, "metric '\(metric)' is not POLICY.OPERATION.STAT, e.g. async.reset.p999"))
        }
        let statistic = parts[2].replacingOccurrences(of: ".", with: "").replacingOccurrences(of: "_ns", with: "")
        guard statistics.contains(statistic) || statistic == "wall_seconds" else {
            return .failure(
                HistoryError(.badMetric, "metric '\(metric)': '\(parts[2])' is not one of \(statistics.joined(separator: ", "))"))
        }
        return .success("\(parts[0]).\(parts[1]).\(statistic)")
    }
}

/// A failed history operation: a code a script can act on and a sentence that says what to do.
public struct HistoryError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What kind of failure.
    public enum Code: String, Sendable {
        case badReport = "bad-report"
        case badMetric = "bad-metric"
        case badLabel = "bad-label"
        case database
    }

    /// The kind.
    public var code: Code
    /// What went wrong and what to do.
    public var message: String

    /// An error of `code`.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
