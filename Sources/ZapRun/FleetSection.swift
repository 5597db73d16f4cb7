/// The parts of a report that only a fleet run has: who ran what, and the whole-VM view.
public struct FleetSection: Sendable, Codable, Equatable {
    /// One worker's part in the run.
    public struct WorkerSummary: Sendable, Codable, Equatable {
        /// The worker's name.
        public var name: String
        /// Its host.
        public var host: String
        /// Cores it reported.
        public var cores: Int
        /// Page-table memory it may use.
        public var memoryBudgetBytes: UInt64
        /// Shards whose accepted result came from it.
        public var shardsCompleted: Int
        /// Results it sent for shards already done (dropped).
        public var duplicatesDropped: Int
        /// Frames from it that failed validation (dropped).
        public var badFrames: Int
        /// Its last state: ready, busy, missing, dead, refused, banned.
        public var state: String
        /// Why it was refused, or got no shards although live (too many give-backs, spare); nil otherwise.
        public var note: String?
        /// Results from it that were refused (implausible, revoked, not its attempt).
        public var resultsRefused: Int?

        /// A worker's summary.
        public init(
            name: String, host: String, cores: Int, memoryBudgetBytes: UInt64, shardsCompleted: Int,
            duplicatesDropped: Int, badFrames: Int, state: String, note: String? = nil, resultsRefused: Int? = nil
        ) {
            self.note = note
            self.resultsRefused = resultsRefused
            self.name = name
            self.host = host
            self.cores = cores
            self.memoryBudgetBytes = memoryBudgetBytes
            self.shardsCompleted = shardsCompleted
            self.duplicatesDropped = duplicatesDropped
            self.badFrames = badFrames
            self.state = state
        }
    }

    /// One shard's part in the run.
    public struct ShardSummary: Sendable, Codable, Equatable {
        /// The shard's id.
        public var id: UInt64
        /// Its memslots.
        public var slice: MemorySlice
        /// The worker whose result was accepted.
        public var worker: String
        /// Attempts it took (1 unless requeued).
        public var attempts: Int
        /// Wall time of the accepted attempt.
        public var wallSeconds: Double
        /// SPTEs zapped under each policy.
        public var sptesZapped: [String: Int]
        /// Violations under each policy.
        public var violations: [String: Int]

        /// A shard's summary.
        public init(
            id: UInt64, slice: MemorySlice, worker: String, attempts: Int, wallSeconds: Double,
            sptesZapped: [String: Int], violations: [String: Int]
        ) {
            self.id = id
            self.slice = slice
            self.worker = worker
            self.attempts = attempts
            self.wallSeconds = wallSeconds
            self.sptesZapped = sptesZapped
            self.violations = violations
        }
    }

    /// One timeline event of the whole VM, composed from its slices.
    public struct WholeVMEvent: Sendable, Codable, Equatable {
        /// The policy.
        public var policy: String
        /// The step's position in the timeline (1-based) and its name.
        public var step: Int
        /// The step's name.
        public var name: String
        /// The event's block time for the whole VM: where the caller waits for zapping (the
        /// slices' SPTEs were zapped while it waited), the sum of the slices' longest blocks,
        /// since one root spans them all; otherwise the longest slice's.
        public var measuredNs: UInt64
        /// The kernel projection of the same: every slice's inline SPTEs × the per-SPTE cost.
        public var projectedNs: UInt64
        /// Leaf SPTEs zapped while the event's callers waited, over every slice.
        public var sptesZappedInline: Int

        /// An event.
        public init(policy: String, step: Int, name: String, measuredNs: UInt64, projectedNs: UInt64, sptesZappedInline: Int) {
            self.policy = policy
            self.step = step
            self.name = name
            self.measuredNs = measuredNs
            self.projectedNs = projectedNs
            self.sptesZappedInline = sptesZappedInline
        }
    }

    /// The workers, in the order they joined.
    public var workers: [WorkerSummary]
    /// The shards, by id.
    public var shards: [ShardSummary]
    /// Shards that were requeued (a worker went missing, died, or gave one up).
    public var requeues: Int
    /// Results dropped as duplicates.
    public var duplicatesDropped: Int
    /// Frames dropped for failing validation.
    public var badFrames: Int
    /// The whole-VM block time of each event of the timeline.
    public var wholeVm: [WholeVMEvent]
    /// From planning to the last shard's result: the run's wall time on the fleet, without the
    /// wait for workers to join.
    public var dispatchSeconds: Double
    /// The coordinator thread's CPU time over the run, for capacity measurements.
    public var coordinatorCpuSeconds: Double
    /// CURVE handshakes refused because the peer's key is not on the allow-list.
    public var keysRefused: Int
    /// Shards whose results came from the journal of an interrupted run (`--resume`).
    public var resumedShards: Int
    /// Results refused (implausible, revoked, another run's, not the sender's attempt).
    public var resultsRefused: Int
    /// Attempts revoked (given back, past the progress deadline, their worker refused or banned).
    public var attemptsRevoked: Int

    /// A fleet section.
    public init(
        workers: [WorkerSummary], shards: [ShardSummary], requeues: Int, duplicatesDropped: Int, badFrames: Int,
        wholeVm: [WholeVMEvent], dispatchSeconds: Double = 0, coordinatorCpuSeconds: Double = 0,
        keysRefused: Int = 0, resumedShards: Int = 0, resultsRefused: Int = 0, attemptsRevoked: Int = 0
    ) {
        self.resultsRefused = resultsRefused
        self.attemptsRevoked = attemptsRevoked
        self.keysRefused = keysRefused
        self.resumedShards = resumedShards
        self.dispatchSeconds = dispatchSeconds
        self.coordinatorCpuSeconds = coordinatorCpuSeconds
        self.workers = workers
        self.shards = shards
        self.requeues = requeues
        self.duplicatesDropped = duplicatesDropped
        self.badFrames = badFrames
        self.wholeVm = wholeVm
    }

    enum CodingKeys: String, CodingKey {
        case workers, shards, requeues, duplicatesDropped, badFrames, wholeVm, dispatchSeconds, coordinatorCpuSeconds
        case keysRefused, resumedShards, resultsRefused, attemptsRevoked
    }

    /// Decodes a fleet section; fields added after schema version 1 was first written default to 0.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        workers = try container.decode([WorkerSummary].self, forKey: .workers)
        shards = try container.decode([ShardSummary].self, forKey: .shards)
        requeues = try container.decode(Int.self, forKey: .requeues)
        duplicatesDropped = try container.decode(Int.self, forKey: .duplicatesDropped)
        badFrames = try container.decode(Int.self, forKey: .badFrames)
        wholeVm = try container.decode([WholeVMEvent].self, forKey: .wholeVm)
        dispatchSeconds = try container.decode(Double.self, forKey: .dispatchSeconds)
        coordinatorCpuSeconds = try container.decode(Double.self, forKey: .coordinatorCpuSeconds)
        keysRefused = try container.decodeIfPresent(Int.self, forKey: .keysRefused) ?? 0
        resumedShards = try container.decodeIfPresent(Int.self, forKey: .resumedShards) ?? 0
        resultsRefused = try container.decodeIfPresent(Int.self, forKey: .resultsRefused) ?? 0
        attemptsRevoked = try container.decodeIfPresent(Int.self, forKey: .attemptsRevoked) ?? 0
    }
}
