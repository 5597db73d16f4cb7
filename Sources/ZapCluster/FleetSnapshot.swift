import ZapRun

/// A fleet run at one moment, for live views: the outcome so far (every accepted shard merged
/// exactly, the workers, the counters) and where each shard stands. The coordinator hands one
/// to `CoordinatorConfiguration.snapshots` about once a second and once more when the run ends.
public struct FleetSnapshot: Sendable {
    /// Where the run is.
    public enum Phase: String, Sendable {
        case gathering, running, stopping, finished
    }

    /// Where one shard is.
    public enum ShardState: String, Sendable {
        case queued, running, done
    }

    /// The run's phase.
    public var phase: Phase
    /// The scenario's name.
    public var scenario: String
    /// The outcome so far: `runs` are the merged results of the shards done.
    public var outcome: FleetRunOutcome
    /// Each planned shard's state, by shard id (empty until planned).
    public var shards: [ShardState]
    /// The shard each busy worker runs, by worker name.
    public var workerShards: [String: UInt64] = [:]
    /// Each worker's SPTEs installed and zapped per second in its latest progress report.
    public var workerRates: [String: Double] = [:]

    /// Shards in each state.
    public func count(_ state: ShardState) -> Int { shards.reduce(0) { $0 + ($1 == state ? 1 : 0) } }
}
