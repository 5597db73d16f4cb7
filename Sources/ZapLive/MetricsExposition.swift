import Histogram
import Prometheus
import ZapCluster
import ZapEngine
import ZapPlatform
import ZapRun

/// A fleet run in the Prometheus text format: counters and gauges through swift-prometheus, and
/// the merged block-time distributions as histogram families whose buckets are exact sums of the
/// HdrHistogram counts.
///
/// **HDR buckets to `le` bounds.** The bounds are 2^k − 1 nanoseconds for k = 10 … 42 (about
/// 1 µs to 73 min), written in seconds. With 3 significant digits every HdrHistogram bucket at
/// or above 2,048 ns starts at a multiple of its width, and every power of two at or above 2,048
/// starts a bucket (below 2,048 buckets are single nanoseconds), so each HDR bucket lies wholly
/// at or below a bound or wholly above it: the count at `le` is the exact number of samples whose
/// bucket ends at or below it, never an interpolation. `_count` is the histogram's total count;
/// `_sum` is its mean times its count (HdrHistogram keeps buckets, not the samples' sum).
public final class MetricsExposition: @unchecked Sendable {
    private let registry = PrometheusCollectorRegistry()
    private let lock = PThreadMutex()
    private var counted: [String: Double] = [:]

    /// The `le` bounds, in nanoseconds.
    public static let boundsNanoseconds: [UInt64] = (10...42).map { (UInt64(1) << UInt64($0)) - 1 }

    public init() {}

    /// The exposition of `snapshot`: every counter and gauge, then the histogram families.
    public func render(_ snapshot: FleetSnapshot) -> String {
        lock.withLock {
            let fleet = snapshot.outcome.fleet
            let sptes = snapshot.outcome.runs.reduce(0) { $0 + $1.statistics.sptesZapped }
            advance("zapfleet_shards_done_total", "Shards with a merged result.", Double(snapshot.count(.done)))
            advance(
                "zapfleet_requeues_total", "Shards sent back to the queue (worker lost, result refused, deadline missed).",
                Double(fleet.requeues))
            advance("zapfleet_bad_frames_total", "Frames that could not be decoded or did not fit the protocol.", Double(fleet.badFrames))
            advance("zapfleet_results_refused_total", "Shard results refused as implausible.", Double(fleet.resultsRefused))
            advance("zapfleet_keys_refused_total", "Connections refused for an unknown CURVE key.", Double(fleet.keysRefused))
            advance("zapfleet_sptes_zapped_total", "Leaf SPTEs zapped in the merged shards, every policy.", Double(sptes))
            for state in [FleetSnapshot.ShardState.queued, .running, .done] {
                registry.makeGauge(name: "zapfleet_shards", labels: [("state", state.rawValue)], help: "Planned shards by state.")
                    .set(Double(snapshot.count(state)))
            }
            var byState: [String: Int] = ["ready": 0, "busy": 0, "missing": 0, "dead": 0, "refused": 0, "banned": 0]
            for worker in fleet.workers { byState[worker.state, default: 0] += 1 }
            for (state, count) in byState {
                registry.makeGauge(name: "zapfleet_workers", labels: [("state", state)], help: "Workers by state.").set(Double(count))
            }
            return registry.emitToString() + Self.histograms(snapshot.outcome.runs)
        }
    }

    /// Counters only grow: each render adds what grew since the last.
    private func advance(_ name: String, _ help: String, _ value: Double) {
        let counter = registry.makeCounter(name: name, help: help)
        let grown = value - counted[name, default: 0]
        if grown > 0 {
            counter.increment(by: grown)
            counted[name] = value
        }
    }

    /// `zapfleet_block_time_seconds{policy, operation}`: each operation's merged measured histogram.
    static func histograms(_ runs: [PolicyRun]) -> String {
        var text =
            "# HELP zapfleet_block_time_seconds Block time of each operation, merged over the fleet's shards (HdrHistogram buckets summed exactly).\n"
        text += "# TYPE zapfleet_block_time_seconds histogram\n"
        for run in runs {
            // Every operation, and vcpu_block (every vCPU-side block), as report.json has them.
            for (operation, histogram) in run.recorder.measuredByName {
                let labels = "policy=\"\(run.policy.rawValue)\",operation=\"\(operation)\""
                for (bound, count) in cumulativeCounts(histogram) {
                    text += "zapfleet_block_time_seconds_bucket{\(labels),le=\"\(seconds(bound))\"} \(count)\n"
                }
                text += "zapfleet_block_time_seconds_bucket{\(labels),le=\"+Inf\"} \(histogram.totalCount)\n"
                text += "zapfleet_block_time_seconds_sum{\(labels)} \(histogram.mean * Double(histogram.totalCount) / 1e9)\n"
                text += "zapfleet_block_time_seconds_count{\(labels)} \(histogram.totalCount)\n"
            }
        }
        return text
    }

    /// For each bound, how many samples lie in buckets that end at or below it.
    public static func cumulativeCounts(_ histogram: LatencyHistogram) -> [(bound: UInt64, count: UInt64)] {
        var perBound = [UInt64](repeating: 0, count: boundsNanoseconds.count)
        for bucket in histogram.recordedValues() {
            let top = histogram.highestEquivalentForValue(bucket.value)
            // The first bound at or above the bucket's top counts it, and so does every later one.
            if let index = boundsNanoseconds.firstIndex(where: { $0 >= top }) { perBound[index] += UInt64(bucket.count) }
        }
        var running: UInt64 = 0
        return zip(boundsNanoseconds, perBound).map { bound, count in
            running += count
            return (bound, running)
        }
    }

    static func seconds(_ nanoseconds: UInt64) -> String { "\(Double(nanoseconds) / 1e9)" }
}
