import ZapRun
import ZapScenario

/// The coordinator's decisions, as a pure state machine: peers, shards, attempts, exclusions and
/// the run's phase. It opens no socket and reads no clock: every ``Input`` comes with the time,
/// and ``process(_:now:)`` answers with the ``Action``s that the socket loop carries out (see
/// swift-nio's `HappyEyeballs` for the shape). Tests drive it without sockets, and the
/// deterministic simulation plays thousands of random schedules against it.
///
/// The rules it keeps:
/// - a result counts only for an attempt of this run that was handed to the peer sending it
///   (after `--resume`, handouts the journal holds count too), and only once per shard;
/// - a result is acknowledged only after the scheduler was told it is durable (``Input/journaled(_:)``);
/// - every path that frees a worker without a merged result sends its shard back to the queue;
/// - the run ends, complete or failed with a named reason, whenever no live worker can make progress.
public struct FleetScheduler: Sendable {
    /// How the scheduler decides.
    public struct Configuration: Sendable {
        /// This run's id: new for a fresh run, the journal's for a resumed one.
        public var runID: String
        /// Workers to wait for before planning.
        public var expectWorkers: Int = 1
        /// External agents whose results the run waits for.
        public var expectAgents: Int = 0
        /// The most workers the run uses (the first to join); nil for all.
        public var useWorkers: Int?
        /// How long to wait for workers to join, and for a live one when none is left.
        public var waitNanoseconds: UInt64 = 60_000_000_000
        /// The heartbeat interval.
        public var intervalNanoseconds: UInt64 = 1_000_000_000
        /// Silent intervals after which a peer is missing and its shard requeued.
        public var liveness: UInt64 = 3
        /// Attempts of a shard that may come to nothing before the run fails.
        public var maxFailedAttempts: UInt32 = 3
        /// Intervals without progress after which a running attempt is revoked and requeued.
        public var progressDeadlineIntervals: UInt64 = 600
        /// Assignments a peer may give back in a row before it gets no more.
        public var giveBackLimit = 3
        /// Bad frames after which a peer is banned.
        public var badFrameLimit = 20
        /// The most peers (workers and strangers) kept track of.
        public var maximumPeers = 65_536
        /// A shard of one memslot: a worker that cannot take it is left out of the plan.
        public var smallestShard: Shard?

        /// A configuration for run `runID`, with the defaults of `zapfleet coordinator`.
        public init(runID: String) { self.runID = runID }

        var missingAfter: UInt64 { intervalNanoseconds.multipliedReportingOverflow(by: liveness).partialValue }
        var deadAfter: UInt64 { missingAfter.multipliedReportingOverflow(by: 10).overflow ? .max : missingAfter * 10 }
        var progressDeadline: UInt64 {
            let (product, overflow) = intervalNanoseconds.multipliedReportingOverflow(by: progressDeadlineIntervals)
            return overflow ? .max : product
        }
    }

    /// What a planner is told of the workers that will share the plan.
    public struct WorkerCapacity: Sendable {
        public var memoryBudgetBytes: UInt64
        public var shardByteLimit: UInt64
        public var shardSlotLimit: Int
    }

    /// Cuts the run into shards for the workers at hand (a pure function: ``ShardPlanner`` in practice).
    public typealias Planner = @Sendable ([WorkerCapacity]) -> Result<[Shard], PlanError>

    /// Where the run is.
    public enum Phase: Sendable, Equatable {
        /// Waiting for the expected workers, until the deadline.
        case gathering(deadline: UInt64)
        /// Shards are being handed out.
        case running
        /// The end was announced; waiting for busy workers to give their shards back, until the deadline.
        case stopping(deadline: UInt64)
        /// Over.
        case finished
    }

    /// Something that happened.
    public enum Input: Sendable {
        /// A hello (first, or again after a reconnect).
        case hello(PeerID, PeerIntroduction)
        /// Any frame that is only a sign of life.
        case heartbeat(PeerID)
        /// A progress report for an attempt.
        case progress(PeerID, AttemptClaim)
        /// A shard result, with the verdict of the checks the socket loop ran on it.
        case result(PeerID, AttemptClaim, ResultVerdict)
        /// The result the scheduler asked to journal (``Action/journal(_:_:)``) is durable.
        case journaled(AttemptClaim)
        /// The journal failed: nothing more can be made durable.
        case journalFailed(String)
        /// A peer gave an attempt back; `busyWith` when only because it still runs that one.
        case gaveBack(PeerID, AttemptClaim, reason: String, busyWith: AttemptClaim?)
        /// An agent's result for `job`, with the verdict of its checks.
        case externalResult(PeerID, job: UInt32, ResultVerdict)
        /// A frame of another protocol version.
        case versionMismatch(PeerID, version: UInt32)
        /// A frame that failed to decode or does not belong in the conversation.
        case badFrame(PeerID?, String)
        /// A send to the peer failed: it is not connected. `unsent` is the assignment whose send
        /// failed, when that was the send (nil for a heartbeat or a probe).
        case unreachable(PeerID, unsent: AttemptClaim? = nil)
        /// Time passed.
        case tick
        /// The coordinator was held up this long, not reading (see `ListeningClock`): no peer's
        /// silence or progress counts that time. Before any other input after the hold-up.
        case heldUp(nanoseconds: UInt64)
        /// Stop the run (a signal): workers are told, the report says incomplete.
        case stop(String)
    }

    /// Something to do.
    public enum Action: Sendable, Equatable {
        /// The plan is made (``FleetScheduler/shards``): start the journal before any handout.
        case planned
        /// Welcome the peer into the run.
        case welcome(PeerID)
        /// Refuse the peer, saying why.
        case refuse(PeerID, String)
        /// Record the handout durably-enough (no sync needed), then send the assignment.
        case assign(PeerID, Shard, AttemptClaim)
        /// Hand an agent its job.
        case sendJob(PeerID, UInt32)
        /// Send a heartbeat.
        case heartbeat(PeerID)
        /// Append this result to the journal; answer with ``Input/journaled(_:)`` or ``Input/journalFailed(_:)``.
        case journal(PeerID, AttemptClaim)
        /// Count this (journaled) result in the totals.
        case merge(PeerID, AttemptClaim)
        /// Count this agent's result.
        case mergeExternal(PeerID)
        /// Acknowledge a result, once the journal is synced.
        case acknowledge(PeerID, Acknowledgement)
        /// Tell the peer the run is over.
        case stop(PeerID, String)
        /// Say what happened: a log line, and an event for `--events`.
        case log(FleetEvent)
    }

    /// A result acknowledgement.
    public struct Acknowledgement: Sendable, Equatable {
        public var claim: AttemptClaim
        public var outcome: Outcome

        /// What became of the result.
        public enum Outcome: Sendable, Equatable {
            case accepted, duplicate
            case rejected(String)
        }
    }

    public let configuration: Configuration
    let planner: Planner
    /// The run's phase.
    public internal(set) var phase: Phase
    /// Why the run failed, if it did.
    public internal(set) var failure: FleetFailure?
    /// Whether a stop was asked for.
    public internal(set) var interrupted = false
    /// Every peer seen, by routing id.
    public internal(set) var peers: [PeerID: PeerRecord] = [:]
    /// The plan, once made.
    public internal(set) var shards: [ShardRecord] = []
    /// Shards with a merged result, and how many came from the journal.
    public internal(set) var completedShards = 0
    public internal(set) var resumedShards = 0
    /// Counters for the report.
    public internal(set) var requeues = 0
    public internal(set) var duplicates = 0
    public internal(set) var badFrames = 0
    public internal(set) var rejectedResults = 0
    public internal(set) var revokedAttempts = 0
    public internal(set) var externalDelivered = 0
    /// When the plan was made.
    public internal(set) var plannedAt: UInt64 = 0
    /// Routing ids in the order their peers were first seen: every walk over peers that emits
    /// actions goes in this order, so that a schedule's seed fixes its outcome (a dictionary's
    /// order changes from process to process).
    var joinOrder: [PeerID] = []
    /// The peers that said hello under each name: a name is one live worker's, and looking it up
    /// by walking every peer made each hello cost the whole fleet.
    var peersByName: [String: [PeerID]] = [:]
    var pending = ShardQueue()
    /// Every free peer is to be offered work (a shard was requeued, a peer joined, ...).
    var dispatchNeeded = false
    /// Peers freed by their own result since the last dispatch: only they need offering work
    /// then. Scanning every peer on every result cost the coordinator a core at 4,000 workers.
    var freedByResult: [PeerID] = []
    /// A hello since the last look at whether the expected workers are all here. Heartbeats
    /// (most inputs while gathering) cannot complete the gathering; the housekeeping tick
    /// looks anyway, for the deadline and for peers heard again.
    var gatheringCheckNeeded = false
    var lastLiveWorker: UInt64
    var lastHousekeeping: UInt64 = 0
    var nextAgentJob: UInt32 = 1
    var journalFailed = false
    let start: UInt64
    /// Handouts of an earlier coordinator of this run, from its journal.
    var journaledHandouts: Set<JournaledHandout> = []

    /// A scheduler for a fresh run that starts at `now`.
    public init(configuration: Configuration, now: UInt64, planner: @escaping Planner) {
        self.configuration = configuration
        self.planner = planner
        self.start = now
        self.lastLiveWorker = now
        phase = .gathering(deadline: now.saturatingAdd(configuration.waitNanoseconds))
    }

    /// A scheduler that takes up a journaled run: its plan, the shards already done (with the
    /// attempt that did each and its worker), and the handouts the journal holds.
    public init(
        configuration: Configuration, now: UInt64, resuming plan: [Shard], done: [(shard: UInt64, attempt: UInt32, worker: String)],
        handouts: [JournaledHandout], planner: @escaping Planner
    ) {
        self.init(configuration: configuration, now: now, planner: planner)
        shards = plan.map { ShardRecord(shard: $0) }
        for handout in handouts where handout.shard < UInt64(shards.count) {
            journaledHandouts.insert(handout)
            let index = Int(handout.shard)
            shards[index].lastAttempt = max(shards[index].lastAttempt, handout.attempt)
        }
        for entry in done where entry.shard < UInt64(shards.count) && !shards[Int(entry.shard)].isDone {
            let index = Int(entry.shard)
            shards[index].phase = .done(attempt: entry.attempt, worker: entry.worker)
            shards[index].lastAttempt = max(shards[index].lastAttempt, entry.attempt)
            completedShards += 1
            resumedShards += 1
        }
        pending = ShardQueue(shards.filter(\.isOpen).map(\.shard.id))
        plannedAt = now
        phase = .running
        dispatchNeeded = true
    }

    /// Every peer, in the order it was first seen.
    var peersInJoinOrder: [PeerRecord] { joinOrder.map { peers[$0]! } }

    /// The outcome's completeness: every shard merged, nobody stopped the run.
    public var complete: Bool { !shards.isEmpty && completedShards == shards.count && failure == nil && !interrupted }

    /// The shard a claim names, if the plan has it.
    public func shard(_ id: UInt64) -> Shard? { id < UInt64(shards.count) ? shards[Int(id)].shard : nil }

    /// Takes one input at time `now` and says what to do.
    public mutating func process(_ input: Input, now: UInt64) -> [Action] {
        var actions: [Action] = []
        guard phase != .finished else { return actions }
        switch input {
        case .hello(let id, let introduction):
            receiveHello(id, introduction, now: now, into: &actions)
        case .heartbeat(let id):
            _ = hear(id, now: now, into: &actions)
        case .progress(let id, let claim):
            receiveProgress(id, claim, now: now, into: &actions)
        case .result(let id, let claim, let verdict):
            receiveResult(id, claim, verdict, now: now, into: &actions)
        case .journaled(let claim):
            resultIsDurable(claim, into: &actions)
        case .journalFailed(let reason):
            journalFailed = true
            fail(FleetFailure(.journal, "the journal failed: \(reason)"), now: now, into: &actions)
        case .gaveBack(let id, let claim, let reason, let busyWith):
            receiveGiveBack(id, claim, reason: reason, busyWith: busyWith, now: now, into: &actions)
        case .externalResult(let id, let job, let verdict):
            receiveExternalResult(id, job: job, verdict, now: now, into: &actions)
        case .versionMismatch(let id, let version):
            refuseVersion(id, version, now: now, into: &actions)
        case .badFrame(let id, let reason):
            rejectFrame(id, reason, now: now, into: &actions)
        case .unreachable(let id, let unsent):
            markUnreachable(id, unsent: unsent, now: now, into: &actions)
        case .tick:
            break
        case .heldUp(let nanoseconds):
            excuseHoldUp(nanoseconds, now: now, into: &actions)
        case .stop(let reason):
            if !interrupted && failure == nil && phase != .finished {
                interrupted = true
                beginStopping(reason, now: now, into: &actions)
            }
        }
        advance(now: now, into: &actions)
        return actions
    }

    // MARK: - The run's phases

    /// Moves the run along: plans, dispatches, checks liveness and deadlines, ends it.
    mutating func advance(now: UInt64, into actions: inout [Action]) {
        switch phase {
        case .gathering(let deadline):
            guard gatheringCheckNeeded || now &- lastHousekeeping >= configuration.intervalNanoseconds / 10 else { break }
            gatheringCheckNeeded = false
            // Fewer peers than expected cannot be enough ready workers: no walk over them (a walk
            // at every hello cost time proportional to the square of the fleet while it joined).
            guard peers.count >= configuration.expectWorkers || now > deadline else { break }
            let ready = peersInJoinOrder.filter { $0.state == .ready && $0.introduction.map { !$0.isAgent } == true }
            if ready.count >= configuration.expectWorkers || (now > deadline && !ready.isEmpty) {
                makePlan(for: ready, now: now, into: &actions)
            } else if now > deadline {
                fail(
                    FleetFailure(
                        .noWorkerJoined,
                        "no worker joined within \(configuration.waitNanoseconds / 1_000_000_000) s (expected \(configuration.expectWorkers)); check the workers' --connect address and the network"
                    ), now: now, into: &actions)
            }
        case .running:
            if completedShards == shards.count && agentsSettled(now: now, into: &actions) {
                tellEveryone("run complete", into: &actions)
                phase = .finished
                return
            }
            if dispatchNeeded {
                dispatchNeeded = false
                freedByResult.removeAll()
                dispatch(now: now, into: &actions)
            } else if !freedByResult.isEmpty {
                let freed = freedByResult
                freedByResult.removeAll()
                dispatch(only: freed, now: now, into: &actions)
            }
        case .stopping(let deadline):
            let busy = peers.values.contains { if case .busy = $0.state { true } else { false } }
            if now > deadline || !busy { phase = .finished; return }
        case .finished:
            return
        }
        // Walking every peer is work proportional to the fleet: ten times a heartbeat is enough.
        if now &- lastHousekeeping >= configuration.intervalNanoseconds / 10 {
            lastHousekeeping = now
            // Work for peers freed on paths that did not ask for a dispatch is never more than a tick away.
            if pending.count > 0 { dispatchNeeded = true }
            checkLiveness(now: now, into: &actions)
            sendHeartbeats(now: now, into: &actions)
            checkProgressPossible(now: now, into: &actions)
        }
    }

    /// Fails the run: workers are told to stop, and the report names `reason`.
    mutating func fail(_ failure: FleetFailure, now: UInt64, into actions: inout [Action]) {
        guard self.failure == nil, phase != .finished else { return }
        self.failure = failure
        actions.append(.log(FleetEvent(.runFailed, .error, failure.description, ["code": .string(failure.code.rawValue)])))
        beginStopping(failure.description, now: now, into: &actions)
    }

    private mutating func beginStopping(_ reason: String, now: UInt64, into actions: inout [Action]) {
        tellEveryone(reason, into: &actions)
        let grace = max(5_000_000_000, configuration.missingAfter.multipliedReportingOverflow(by: 2).partialValue)
        phase = .stopping(deadline: now.saturatingAdd(grace))
    }

    /// `Stop` to every worker that said hello and may still hear it, those left out of the plan included.
    private func tellEveryone(_ reason: String, into actions: inout [Action]) {
        for peer in peersInJoinOrder where peer.introduction != nil {
            switch peer.state {
            case .dead, .banned, .refused, .stranger: continue
            default: actions.append(.stop(peer.id, reason))
            }
        }
    }

    /// The run ends when no live worker can make progress: after as long as it waited for
    /// workers to join, it fails, naming what is missing.
    private mutating func checkProgressPossible(now: UInt64, into actions: inout [Action]) {
        guard phase == .running, completedShards < shards.count else { return }
        let plan = shards
        let openShards = pending.ids.lazy.map { plan[Int($0)].shard }
        let someoneCan = peers.values.contains { peer in
            guard let introduction = peer.introduction, !introduction.isAgent else { return false }
            switch peer.state {
            case .busy, .missing(holding: .some): return true
            case .ready, .missing(holding: nil):
                return peer.benched == nil && openShards.contains { introduction.canTake($0) }
            default: return false
            }
        }
        if someoneCan {
            lastLiveWorker = now
            return
        }
        guard now &- lastLiveWorker > configuration.waitNanoseconds else { return }
        let left = shards.count - completedShards
        let benched = peersInJoinOrder.filter { $0.benched != nil && $0.state.isLive }
        var reason = "no live worker can make progress with \(left) shard(s) left"
        if let first = openShards.first {
            reason +=
                " (shard \(first.id) needs \(Quantities.describeSize(Double(first.estimatedTableBytes))) of page tables for \(Quantities.formatSize(first.bytes)))"
        }
        if !benched.isEmpty {
            reason +=
                "; \(benched.count) worker(s) get no shards: "
                + benched.prefix(3).map { "\($0.name) (\($0.benched!))" }.joined(separator: ", ")
        }
        reason += "; start workers that can take them (zapfleet worker --connect … --memory …) or check the network"
        fail(FleetFailure(.noWorkerCanProgress, reason), now: now, into: &actions)
    }
}

extension UInt64 {
    /// `self + other`, or `.max` where that overflows: deadlines built from configured durations.
    func saturatingAdd(_ other: UInt64) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? .max : sum
    }
}
