import Foundation
import HistogramCodec
import ZapEngine
import ZapRun
import ZapScenario

/// Merges the shards' results of one run into one `PolicyRun` per policy, exactly (histograms
/// bucket by bucket, counters summed), and composes the whole-VM view of each timeline event.
public enum FleetAggregation {
    /// One policy's results, merged as they arrive: the coordinator keeps these totals and,
    /// per shard, only summaries and the encoded histograms, so its memory does not grow with
    /// the decoded histograms of every shard.
    public struct Accumulator: Sendable {
        let policy: ZapPolicy
        var recorder: BlockTimeRecorder
        var statistics = EngineStatistics()
        var violations: [Violation] = []
        var counts: [Violation.Kind: Int] = [:]
        var zapSeconds = 0.0
        var wall: UInt64 = 0
        var complete = true
        var shardSteps: [[StepTiming]] = []
        var injectedPathRuns: [InjectedBug: Int] = [:]
        var tlbFlushes = TLBFlushCounts()
        var interference: CPUInterference?

        /// An empty accumulator for `policy`.
        public init(policy: ZapPolicy, kernelNanosecondsPerSPTE: Double) {
            self.policy = policy
            recorder = BlockTimeRecorder(kernelNanosecondsPerSPTE: kernelNanosecondsPerSPTE)
        }

        /// Adds one shard's run, exactly: histograms bucket by bucket, counters summed.
        public mutating func add(_ run: PolicyRun) {
            recorder.merge(run.recorder)
            addCounters(run.outcome)
        }

        /// Adds one shard's run as decoded from the wire: each histogram's buckets go straight
        /// into the totals, without building a histogram per shard.
        public mutating func add(_ decoded: DecodedPolicyResult) {
            for histogram in decoded.histograms {
                recorder.modify(histogram.operation, projected: histogram.projected) { histogram.buckets.add(into: &$0) }
            }
            addCounters(decoded.outcome)
        }

        private mutating func addCounters(_ run: PolicyOutcome) {
            statistics = statistics.adding(run.statistics)
            violations.append(contentsOf: run.violations.prefix(max(0, 10 - violations.count)))
            counts.merge(run.violationCounts, uniquingKeysWith: +)
            injectedPathRuns.merge(run.injectedPathRuns, uniquingKeysWith: &+)
            tlbFlushes = tlbFlushes.adding(run.tlbFlushes)
            if let measured = run.interference { interference = (interference ?? CPUInterference()).adding(measured) }
            if run.zapThroughput > 0 { zapSeconds += Double(run.statistics.sptesZapped) / run.zapThroughput }
            wall = max(wall, run.wallNanoseconds)
            complete = complete && run.complete
            shardSteps.append(run.steps)
        }

        /// The merged run.
        public var run: PolicyRun {
            PolicyRun(
                PolicyOutcome(
                    policy: policy, statistics: statistics, violations: violations,
                    violationCounts: counts, steps: composeSteps(shardSteps), wallNanoseconds: wall,
                    complete: complete && !shardSteps.isEmpty,
                    zapThroughput: zapSeconds > 0 ? Double(statistics.sptesZapped) / zapSeconds : 0,
                    injectedPathRuns: injectedPathRuns, tlbFlushes: tlbFlushes, interference: interference),
                recorder: recorder)
        }
    }

    /// Step by step over the shards: where the callers waited for zapping, the slices' blocks
    /// add up (one root spans every slice); otherwise the longest slice's block stands. Every
    /// shard's records follow the timeline (``ResultPlausibility``), so the longest list names them.
    static func composeSteps(_ shards: [[StepTiming]]) -> [StepTiming] {
        guard let first = shards.max(by: { $0.count < $1.count }) else { return [] }
        return first.indices.map { index in
            let slices = shards.compactMap { $0.indices.contains(index) ? $0[index] : nil }
            // Saturating: the values come from peers (bounded by ResultPlausibility, but a sum over many shards must not trap).
            let inline = slices.reduce(0) { $0.addingReportingOverflow($1.sptesZappedInline).overflow ? .max : $0 + $1.sptesZappedInline }
            let longest =
                inline > 0
                ? slices.reduce(UInt64(0)) { sum, slice in
                    let (value, overflow) = sum.addingReportingOverflow(slice.longestBlockNanoseconds)
                    return overflow ? .max : value
                } : slices.map(\.longestBlockNanoseconds).max() ?? 0
            return StepTiming(
                name: first[index].name, nanoseconds: slices.map(\.nanoseconds).max() ?? 0,
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

    /// The header of an HdrHistogram interval log (`.hlog`, log format 1.3, as Java's
    /// `HistogramLogWriter` writes it). Each line's timestamp is seconds since the run started, so
    /// `BaseTime` is the run's start, the same instant as `StartTime`: a reader adds the base to
    /// every timestamp and measures intervals from the start (`HistogramLogProcessor -start 0`).
    public static func intervalLogHeader(started: Date) -> [String] {
        let epochSeconds = String(format: "%.3f", started.timeIntervalSince1970)
        return [
            "#[Histogram log format version 1.3]",
            "#[zapfleet: one line per shard result, tagged POLICY.OPERATION; values in ns, Interval_Max in ms]",
            "#[StartTime: \(epochSeconds) (seconds since epoch), \(ISO8601DateFormatter().string(from: started))]",
            "#[BaseTime: \(epochSeconds) (seconds since epoch)]",
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
        ]
    }

    /// One `.hlog` line: a measured histogram of one shard, tagged `POLICY.OPERATION`, carried
    /// as the V2 compressed bytes the worker sent.
    public static func intervalLogLine(
        policy: ZapPolicy, operation: MeasuredOperation, startSeconds: Double,
        lengthSeconds: Double, maxNanoseconds: UInt64, encoded: [UInt8]
    ) -> String {
        String(
            format: "Tag=%@.%@,%.3f,%.3f,%.3f,", policy.rawValue, operation.name, startSeconds, lengthSeconds,
            Double(maxNanoseconds) / 1e6) + Data(encoded).base64EncodedString()
    }
}
