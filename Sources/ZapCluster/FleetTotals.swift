import Foundation
import ZapEngine
import ZapProtocol
import ZapRun
import Histogram
import HistogramCodec

/// The merged measurements of a fleet run: per policy the exact totals of every accepted shard
/// result (histograms bucket by bucket), per shard a summary and its `.hlog` lines, and the
/// external agents' measurements. The scheduler decides what is merged; this only adds.
struct FleetTotals {
    /// What is kept of a shard's accepted result: its summary and the `.hlog` lines; its
    /// histograms are merged into the totals on arrival.
    struct ShardOutcome {
        let worker: String
        let attempt: UInt32
        let wall: UInt64
        let sptesZapped: [String: Int]
        let violations: [String: Int]
        let intervalLog: [String]
    }

    let kernelNanosecondsPerSPTE: Double
    private(set) var byPolicy: [ZapPolicy: FleetAggregation.Accumulator] = [:]
    private(set) var shards: [UInt64: ShardOutcome] = [:]
    private(set) var external: [(agent: String, host: String, result: ExternalMeasurement)] = []

    init(kernelNanosecondsPerSPTE: Double) { self.kernelNanosecondsPerSPTE = kernelNanosecondsPerSPTE }

    /// Adds one accepted shard result.
    mutating func add(_ runs: [DecodedPolicyResult], of result: Zapfleet_V1_ShardResult, worker: String, startSeconds: Double) {
        precondition(shards[result.shardID] == nil, "shard \(result.shardID) merged twice")
        var lines: [String] = []
        for run in runs {
            byPolicy[
                run.policy, default: FleetAggregation.Accumulator(policy: run.policy, kernelNanosecondsPerSPTE: kernelNanosecondsPerSPTE)
            ].add(run)
            for histogram in run.histograms where !histogram.projected {
                lines.append(
                    FleetAggregation.intervalLogLine(
                        policy: run.policy, operation: histogram.operation, startSeconds: startSeconds,
                        lengthSeconds: Double(result.wallNs) / 1e9, maxNanoseconds: histogram.buckets.maxBucketValue,
                        encoded: histogram.encoded))
            }
        }
        shards[result.shardID] = ShardOutcome(
            worker: worker, attempt: result.attempt, wall: result.wallNs,
            sptesZapped: Dictionary(uniqueKeysWithValues: runs.map { ($0.policy.rawValue, $0.statistics.sptesZapped) }),
            violations: Dictionary(uniqueKeysWithValues: runs.map { ($0.policy.rawValue, $0.violationCounts.values.reduce(0, &+)) }),
            intervalLog: lines)
    }

    /// Adds an agent's measurement.
    mutating func addExternal(_ measurement: ExternalMeasurement, agent: String, host: String) {
        external.append((agent, host, measurement))
    }

    /// The merged run of each policy that has results, in `policies` order.
    func merged(_ policies: [ZapPolicy]) -> [PolicyRun] { policies.compactMap { byPolicy[$0]?.run } }

    /// The agents' measurements, named for the report: one agent is "external", several are told apart.
    var externalMeasurements: [ExternalMeasurement] {
        external.map { entry in
            var measurement = entry.result
            measurement.name = external.count == 1 ? "external" : "external:\(entry.agent)"
            measurement.source = "real kernel, measured by agent \(entry.agent) on \(entry.host)"
            return measurement
        }
    }
}

/// Checks of what an external agent reports.
enum ExternalResultCheck {
    /// The agent's samples as histograms, or why they cannot be taken.
    static func histograms(of result: Zapfleet_V1_ExternalResult) -> Result<[MeasuredOperation: LatencyHistogram], ProtocolViolation> {
        var histograms: [MeasuredOperation: LatencyHistogram] = [:]
        for samples in result.operations {
            guard let operation = ExternalMeasurement.operation(named: samples.operation), histograms[operation] == nil else {
                return .failure(ProtocolViolation("operation '\(samples.operation.printable(limit: 40))' unknown or repeated"))
            }
            guard samples.nanoseconds.allSatisfy({ $0 <= LatencyHistogram.highestTrackableNanoseconds }) else {
                return .failure(ProtocolViolation("a \(samples.operation) sample above one hour"))
            }
            var histogram = LatencyHistogram.makeLatency()
            for value in samples.nanoseconds { _ = histogram.record(value) }
            histograms[operation] = histogram
        }
        return .success(histograms)
    }
}
