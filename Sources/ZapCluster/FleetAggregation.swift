import Foundation
import HistogramCodec
import ZapEngine
import ZapRun
import ZapScenario

/// Merges the shards' results of one run into one `PolicyRun` per policy, exactly (histograms
/// bucket by bucket, counters summed), and composes the whole-VM view of each timeline event.
public enum FleetAggregation {
    /// One policy's runs over every shard, merged.
    public static func merge(_ runs: [PolicyRun], policy: ZapPolicy, kernelNanosecondsPerSPTE: Double) -> PolicyRun {
        var recorder = BlockTimeRecorder(kernelNanosecondsPerSPTE: kernelNanosecondsPerSPTE)
        var statistics = EngineStatistics()
        var violations: [Violation] = []
        var counts: [Violation.Kind: Int] = [:]
        var zapSeconds = 0.0
        for run in runs {
            recorder.merge(run.recorder)
            statistics = statistics.adding(run.statistics)
            violations.append(contentsOf: run.violations.prefix(max(0, 10 - violations.count)))
            counts.merge(run.violationCounts, uniquingKeysWith: +)
            if run.zapThroughput > 0 { zapSeconds += Double(run.statistics.sptesZapped) / run.zapThroughput }
        }
        let steps = composeSteps(runs)
        return PolicyRun(policy: policy, recorder: recorder, statistics: statistics, violations: violations,
                         violationCounts: counts, steps: steps,
                         wallNanoseconds: runs.map(\.wallNanoseconds).max() ?? 0,
                         complete: !runs.isEmpty && runs.allSatisfy(\.complete),
                         zapThroughput: zapSeconds > 0 ? Double(statistics.sptesZapped) / zapSeconds : 0)
    }

    /// Step by step over the shards: where the callers waited for zapping, the slices' blocks
    /// add up (one root spans every slice); otherwise the longest slice's block stands.
    static func composeSteps(_ runs: [PolicyRun]) -> [StepTiming] {
        guard let first = runs.first else { return [] }
        return first.steps.indices.map { index in
            let slices = runs.compactMap { $0.steps.indices.contains(index) ? $0.steps[index] : nil }
            let inline = slices.reduce(0) { $0 + $1.sptesZappedInline }
            let longest = inline > 0 ? slices.reduce(UInt64(0)) { $0 + $1.longestBlockNanoseconds }
                                     : slices.map(\.longestBlockNanoseconds).max() ?? 0
            return StepTiming(name: first.steps[index].name, nanoseconds: slices.map(\.nanoseconds).max() ?? 0,
                              longestBlockNanoseconds: longest, sptesZappedInline: inline)
        }
    }

    /// The whole-VM events of merged runs.
    public static func wholeVm(_ merged: [PolicyRun], kernelNanosecondsPerSPTE: Double) -> [FleetSection.WholeVMEvent] {
        merged.flatMap { run in
            run.steps.enumerated().map { index, step in
                FleetSection.WholeVMEvent(
                    policy: run.policy.rawValue, step: index + 1, name: step.name, measuredNs: step.longestBlockNanoseconds,
                    projectedNs: UInt64(min(Double(step.sptesZappedInline) * kernelNanosecondsPerSPTE, 1.8e19)),
                    sptesZappedInline: step.sptesZappedInline)
            }
        }
    }

    /// HdrHistogram interval-log lines (`.hlog`), one per shard result, policy and operation,
    /// tagged `POLICY.OPERATION`, as HdrHistogram's `HistogramLogReader` reads them.
    public static func intervalLog(_ results: [(shard: UInt64, startSeconds: Double, wallSeconds: Double, runs: [PolicyRun])],
                                   started: Date) -> String {
        var lines = [
            "#[Histogram log format version 1.3]",
            "#[zapfleet: one line per shard result, policy and operation; values in ns, Interval_Max in ms]",
            "#[StartTime: \(String(format: "%.3f", started.timeIntervalSince1970)) (seconds since epoch)]",
            "#[BaseTime: 0.000 (seconds since epoch)]",
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"",
        ]
        for result in results.sorted(by: { $0.shard < $1.shard }) {
            for run in result.runs {
                for operation in MeasuredOperation.allCases {
                    let histogram = run.recorder.histogram(operation)
                    guard histogram.totalCount > 0 else { continue }
                    lines.append(String(format: "Tag=%@.%@,%.3f,%.3f,%.3f,", run.policy.rawValue, operation.name,
                                        result.startSeconds, result.wallSeconds, Double(histogram.max) / 1e6)
                                 + HistogramV2Codec.encodeBase64(histogram))
                }
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
