import ZapRun

/// A peer's ZeroMQ routing id, as the coordinator's ROUTER socket sees it.
public typealias PeerID = [UInt8]

/// One attempt at a shard, as the messages name it: the run, the shard and the attempt number.
/// A result or a give-back counts only for a claim this run handed to the peer that sends it.
public struct AttemptClaim: Hashable, Sendable, CustomStringConvertible {
    /// The run the attempt belongs to (``FleetScheduler/Configuration/runID``).
    public var runID: String
    /// The shard.
    public var shard: UInt64
    /// The attempt, from 1.
    public var attempt: UInt32

    /// A claim on `attempt` of `shard` in run `runID`.
    public init(runID: String, shard: UInt64, attempt: UInt32) {
        self.runID = runID
        self.shard = shard
        self.attempt = attempt
    }

    public var description: String { "shard \(shard) attempt \(attempt) of run \(runID.prefix(16))" }
}

/// What a hello says, as far as scheduling goes.
public struct PeerIntroduction: Sendable, Equatable {
    /// The worker's name, unique among the live workers of a run.
    public var name: String
    /// Its host, for the report.
    public var host: String
    /// Its build, for logs.
    public var build: String
    /// Cores it may use.
    public var cores: Int
    /// Page-table memory it may use, in bytes.
    public var memoryBudgetBytes: UInt64
    /// The largest shard it takes, in bytes of guest memory (`.max`: no limit).
    public var shardByteLimit: UInt64
    /// The most memslots it takes in one shard (0: no limit).
    public var shardSlotLimit: Int
    /// An external agent (takes a job, never a shard).
    public var isAgent: Bool
    /// The attempt it still runs from before this hello, if any.
    public var running: AttemptClaim?

    /// An introduction with these values.
    public init(
        name: String, host: String = "?", build: String = "?", cores: Int = 1, memoryBudgetBytes: UInt64,
        shardByteLimit: UInt64 = .max, shardSlotLimit: Int = 0, isAgent: Bool = false, running: AttemptClaim? = nil
    ) {
        self.name = name
        self.host = host
        self.build = build
        self.cores = cores
        self.memoryBudgetBytes = memoryBudgetBytes
        self.shardByteLimit = shardByteLimit
        self.shardSlotLimit = shardSlotLimit
        self.isAgent = isAgent
        self.running = running
    }

    /// The smallest page-table budget a hello may offer: 1 byte. (A budget too small for one
    /// memslot of the scenario is taken, but its worker gets no shard; the log says so.)
    public static let minimumMemoryBudgetBytes: UInt64 = 1
    /// The longest worker name, in UTF-8 bytes.
    public static let maximumNameBytes = 128

    /// What is out of range in a hello, in words (field, value, range), or nil when it is fine.
    public static func problem(with introduction: PeerIntroduction) -> String? {
        let name = introduction.name
        if name.isEmpty || name.utf8.count > maximumNameBytes
            || name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        {
            return
                "worker_name must be 1 to \(maximumNameBytes) bytes of UTF-8 without control characters (got \(name.utf8.count) bytes); give the worker another --name"
        }
        if introduction.cores < 1 || introduction.cores > 65_535 {
            return "cores must be 1 to 65535, got \(introduction.cores)"
        }
        // An external agent takes no shard: its budget is not read.
        if !introduction.isAgent && (introduction.memoryBudgetBytes < minimumMemoryBudgetBytes || introduction.memoryBudgetBytes >= 1 << 50)
        {
            return
                "memory_budget_bytes must be above 0 and below 2^50, got \(introduction.memoryBudgetBytes); give the worker a --memory in that range"
        }
        return nil
    }

    /// Does `shard` fit what the peer said it takes: its bytes, memslots and page-table estimate?
    public func canTake(_ shard: Shard) -> Bool {
        !isAgent && shard.bytes <= shardByteLimit && (shardSlotLimit == 0 || shard.slice.slotCount <= shardSlotLimit)
            && shard.estimatedTableBytes <= memoryBudgetBytes
    }
}

/// Whether a result survived the checks that need no scheduling state (decoding, the plausibility
/// of every field against the shard it claims to answer): the coordinator's socket loop runs
/// them and tells the scheduler their verdict.
public enum ResultVerdict: Sendable, Equatable {
    /// Every check passed.
    case plausible
    /// A check failed; the reason names the field.
    case implausible(String)
}

/// Where a peer stands.
public enum PeerState: Sendable, Equatable {
    /// Sent something, but no hello yet.
    case stranger
    /// Welcomed and free.
    case ready
    /// Running an attempt of this run.
    case busy(AttemptClaim)
    /// Silent past the liveness bound; `holding` is the attempt it was running.
    case missing(holding: AttemptClaim?)
    /// Silent for ten times the liveness bound, or replaced by a newer worker of its name.
    case dead
    /// Refused (protocol version, a name in use); nothing it sends counts.
    case refused(String)
    /// Sent too many bad frames; everything it sends is dropped unread.
    case banned

    /// The report's word for the state.
    public var name: String {
        switch self {
        case .stranger: "stranger"
        case .ready: "ready"
        case .busy: "busy"
        case .missing: "missing"
        case .dead: "dead"
        case .refused: "refused"
        case .banned: "banned"
        }
    }

    /// Welcomed and heard from recently enough to count.
    var isLive: Bool {
        switch self {
        case .ready, .busy: true
        default: false
        }
    }
}

/// What the scheduler keeps of a peer.
public struct PeerRecord: Sendable {
    /// Its routing id.
    public let id: PeerID
    /// In which order it was first seen.
    public let joinOrder: Int
    /// Its hello, once it said one.
    public var introduction: PeerIntroduction?
    /// Where it stands.
    public var state: PeerState = .stranger
    /// When it was last heard from and last sent to, in the scheduler's clock.
    public var lastHeard: UInt64
    var lastSent: UInt64 = 0
    /// When the attempt it runs last made progress (assignment, progress report).
    var lastProgress: UInt64 = 0
    /// The attempt it last sent a result for: it runs that one no longer, as far as the run goes.
    var lastResult: AttemptClaim?
    /// Why it gets no shards although it is live (beyond the workers the run uses; gave back too many).
    public var benched: String?
    /// A send to it failed since it was last heard from: its name is free for a restarted worker.
    var unreachable = false
    /// Assignments given back or refused in a row.
    var givenBackInARow = 0
    /// Counters for the report.
    public var badFrames = 0
    public var duplicates = 0
    public var rejectedResults = 0
    public var completed = 0
    /// The external job handed to this agent, and whether its result arrived.
    var agentJob: UInt32?
    var agentDelivered = false

    /// Its name as the report gives it.
    public var name: String { introduction?.name ?? PeerRecord.printableName(id) }

    /// A routing id as something a log can hold: printable ASCII as it is, anything else as hex.
    public static func printableName(_ id: PeerID) -> String {
        if !id.isEmpty, id.count <= 64, id.allSatisfy({ $0 >= 0x21 && $0 < 0x7f }) { return String(decoding: id, as: UTF8.self) }
        return "0x" + id.prefix(32).map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }
}

extension String {
    func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}

/// What the scheduler keeps of a shard.
public struct ShardRecord: Sendable {
    /// Where a shard is.
    public enum Phase: Sendable, Equatable {
        /// Waiting in the queue, or running somewhere without a result yet.
        case open
        /// A result was taken and is being made durable; other results are duplicates.
        case journaling(AttemptClaim, PeerID)
        /// Its result is merged.
        case done(attempt: UInt32, worker: String)
    }

    /// The shard.
    public let shard: Shard
    /// The last attempt number handed out (numbers are never reused).
    public var lastAttempt: UInt32 = 0
    /// Attempts that ran and came to nothing (lost worker, rejected result, missed deadline).
    public var failedAttempts: UInt32 = 0
    /// Every attempt handed out, and to whom: only that peer may answer it.
    var handouts: [UInt32: PeerID] = [:]
    /// Attempts that no longer count (deadline passed, worker refused, given back).
    var revoked: Set<UInt32> = []
    /// Peers that gave it back: not offered it again until every able peer has.
    var excluded: Set<PeerID> = []
    /// Where it is.
    public var phase: Phase = .open
    /// When its latest attempt was handed out, in the scheduler's clock.
    public var startedAt: UInt64 = 0

    var isDone: Bool { if case .done = phase { true } else { false } }
    var isOpen: Bool { phase == .open }
}

/// A handout that the journal holds: after `--resume`, results for these attempts are still
/// this run's.
public struct JournaledHandout: Sendable, Hashable, Codable {
    /// The shard and attempt.
    public var shard: UInt64
    public var attempt: UInt32
    /// The routing id of the peer it was handed to.
    public var peer: PeerID

    /// A handout of `attempt` of `shard` to `peer`.
    public init(shard: UInt64, attempt: UInt32, peer: PeerID) {
        self.shard = shard
        self.attempt = attempt
        self.peer = peer
    }
}
