import Foundation
import ZapRun

/// How a coordinator runs.
public struct CoordinatorConfiguration: Sendable {
    /// The ZeroMQ endpoint to bind, e.g. `tcp://0.0.0.0:5555` or `inproc://zapfleet`.
    public var bind: String
    /// Workers to wait for before planning; planning starts early with fewer only when `wait` ends.
    public var expectWorkers: Int
    /// External agents (real kernels' measurements) whose results the run waits for; the run
    /// fails if fewer report by the end.
    public var expectAgents: Int = 0
    /// The most workers the run uses (the first to join); others stay connected and idle. Nil: all.
    public var useWorkers: Int?
    /// How long to wait for the expected workers, in seconds.
    public var waitSeconds: Double
    /// Heartbeat interval, in milliseconds.
    public var heartbeatIntervalMilliseconds: Int
    /// Silent intervals after which a worker is missing (its shard is requeued).
    public var heartbeatLiveness: Int
    /// Attempts of a shard that may come to nothing (lost worker, refused result, missed
    /// deadline) before the run fails. Give-backs and busy refusals do not count.
    public var maxAttempts: Int
    /// Heartbeat intervals without a progress report after which a running attempt is revoked
    /// and its shard requeued.
    public var progressDeadlineIntervals: Int = 600
    /// Assignments a worker may give back in a row before it gets no more.
    public var giveBackLimit: Int = 3
    /// Kernel cost per SPTE for projections.
    public var kernelNanosecondsPerSPTE: Double
    /// The largest message a peer may send.
    public var maximumMessageBytes: Int64
    /// A cap on shard size, in bytes of guest memory (nil: as the workers' budgets allow).
    public var shardBytes: UInt64?
    /// Whether the workers at planning are equal (`zapfleet run`'s in-process ones): the plan
    /// then gives each the same number of equal shards (``ShardPlanner``'s `balancedOver`). A
    /// fleet's workers differ, and its plan stays the fewest shards that fit.
    public var equalWorkers = false
    /// Frames that fail validation before a peer is ignored.
    public var badFrameLimit: Int
    /// CURVE keys and the workers' allow-list; nil runs without encryption or authentication
    /// (only where ``BindPolicy`` allows it).
    public var security: CoordinatorSecurity?
    /// Where to journal accepted results (see ``ResultJournal``); nil keeps none.
    public var journalPath: String?
    /// Where every event of the run goes as a JSON line (`--events`); nil writes none.
    public var events: FleetEventLog?
    /// Receives a snapshot of the run about once a second and once more at its end, on the
    /// coordinator's thread (keep it short: hand it over, do not work in it).
    public var snapshots: (@Sendable (FleetSnapshot) -> Void)?
    /// A loaded journal to resume from: its plan replaces planning, its results count as
    /// accepted, and new results are appended to it at `journalPath`.
    public var resume: JournalContents?

    /// A configuration with the defaults of `zapfleet coordinator`.
    public init(
        bind: String, expectWorkers: Int = 1, waitSeconds: Double = 60, heartbeatIntervalMilliseconds: Int = 1000,
        heartbeatLiveness: Int = 3, maxAttempts: Int = 3, kernelNanosecondsPerSPTE: Double = 52,
        maximumMessageBytes: Int64 = 64 << 20, shardBytes: UInt64? = nil, badFrameLimit: Int = 20,
        security: CoordinatorSecurity? = nil, journalPath: String? = nil, resume: JournalContents? = nil
    ) {
        self.journalPath = journalPath
        self.resume = resume
        self.bind = bind
        self.expectWorkers = expectWorkers
        self.waitSeconds = waitSeconds
        self.heartbeatIntervalMilliseconds = heartbeatIntervalMilliseconds
        self.heartbeatLiveness = heartbeatLiveness
        self.maxAttempts = maxAttempts
        self.kernelNanosecondsPerSPTE = kernelNanosecondsPerSPTE
        self.maximumMessageBytes = maximumMessageBytes
        self.shardBytes = shardBytes
        self.badFrameLimit = badFrameLimit
        self.security = security
    }
}

/// What a fleet run produced.
public struct FleetRunOutcome: Sendable {
    /// One merged run per policy that has results, in scenario order.
    public var runs: [PolicyRun]
    /// Workers, shards, the whole-VM view.
    public var fleet: FleetSection
    /// The `.hlog` text.
    public var intervalLog: String
    /// The run's id (a resumed run keeps its journal's).
    public var runID: String = ""
    /// Why the run failed, if it did (a shard out of attempts, no workers).
    public var failure: FleetFailure?
    /// False if the run was stopped before every shard had a result.
    public var complete: Bool
    /// External agents' measurements, one per agent that reported.
    public var external: [ExternalMeasurement] = []
}
