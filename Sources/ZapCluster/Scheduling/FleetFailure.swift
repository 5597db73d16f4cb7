/// Why a fleet run failed: a code a program can act on, and a sentence that says what happened
/// and what to do (the report's verdict quotes it; exit 70).
public struct FleetFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kinds of failure.
    public enum Code: String, Sendable, CaseIterable {
        /// No worker joined within `--wait`.
        case noWorkerJoined = "no-worker-joined"
        /// No worker can take a shard (too little memory), or none left alive can make progress.
        case noWorkerCanProgress = "no-worker-can-progress"
        /// The shards could not be planned.
        case planning
        /// A shard failed on every attempt `--max-attempts` allows.
        case shardOutOfAttempts = "shard-out-of-attempts"
        /// Fewer external agents reported than `--expect-agents`.
        case agentsMissing = "agents-missing"
        /// The result journal could not be written.
        case journal
        /// The run ended with shards that have no result.
        case shardsWithoutResult = "shards-without-result"
        /// An in-process worker of a local run failed.
        case localWorker = "local-worker"
    }

    /// What kind of failure.
    public let code: Code
    /// What happened and what to do.
    public let description: String

    /// A failure of kind `code`, said in `description`.
    public init(_ code: Code, _ description: String) {
        self.code = code
        self.description = description
    }
}
