import Foundation
import Logging
import ZapEngine
import ZapProtocol
import ZapRun
import ZapScenario
import ZeroMQ

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
    /// Attempts a shard may take before the run fails.
    public var maxAttempts: Int
    /// Kernel cost per SPTE for projections.
    public var kernelNanosecondsPerSPTE: Double
    /// The largest message a peer may send.
    public var maximumMessageBytes: Int64
    /// A cap on shard size, in bytes of guest memory (nil: as the workers' budgets allow).
    public var shardBytes: UInt64?
    /// Frames that fail validation before a peer is ignored.
    public var badFrameLimit: Int
    /// CURVE keys and the workers' allow-list; nil runs without encryption or authentication
    /// (only where ``BindPolicy`` allows it).
    public var security: CoordinatorSecurity?
    /// Where to journal accepted results (see ``ResultJournal``); nil keeps none.
    public var journalPath: String?
    /// A loaded journal to resume from: its plan replaces planning, its results count as
    /// accepted, and new results are appended to it at `journalPath`.
    public var resume: JournalContents?

    /// A configuration with the defaults of `zapfleet coordinator`.
    public init(bind: String, expectWorkers: Int = 1, waitSeconds: Double = 60, heartbeatIntervalMilliseconds: Int = 1000,
                heartbeatLiveness: Int = 3, maxAttempts: Int = 3, kernelNanosecondsPerSPTE: Double = 52,
                maximumMessageBytes: Int64 = 64 << 20, shardBytes: UInt64? = nil, badFrameLimit: Int = 20,
                security: CoordinatorSecurity? = nil, journalPath: String? = nil, resume: JournalContents? = nil) {
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
    /// Why the run failed, if it did (a shard out of attempts, no workers).
    public var failure: String?
    /// False if the run was stopped before every shard had a result.
    public var complete: Bool
    /// External agents' measurements, one per agent that reported.
    public var external: [ExternalMeasurement] = []
}

/// The coordinator: binds a ROUTER socket, welcomes workers, plans shards, hands them out as
/// workers become free, requeues the shards of workers that go missing, keeps the first result
/// of each shard, and merges them. Everything happens on the thread that calls ``run()``, which
/// owns the socket.
public final class Coordinator: @unchecked Sendable {
    /// Where a worker stands.
    enum PeerState: String {
        /// `banned`: sent too many bad frames; everything it sends from then on is dropped unread.
        case ready, busy, missing, dead, refused, banned
    }

    final class Peer {
        let identity: [UInt8]
        var name: String
        var hello: Zapfleet_V1_Hello?
        var state: PeerState = .ready
        var lastHeard: UInt64
        var lastSent: UInt64 = 0
        var assignment: (shard: UInt64, attempt: UInt32)?
        var badFrames = 0
        var duplicates = 0
        var completed = 0
        /// Cannot take one memslot, or is beyond the workers the run uses: kept connected, given no shard.
        var unfit = false
        /// An external agent: takes no shards, runs one ``Zapfleet_V1_ExternalJob``.
        var isAgent = false
        /// The job handed to this agent, once sent.
        var agentJob: UInt32?
        /// Has this agent's result been accepted?
        var agentDelivered = false
        let joinOrder: Int

        init(identity: [UInt8], now: UInt64, joinOrder: Int) {
            self.identity = identity
            self.name = String(decoding: identity.prefix(64), as: UTF8.self)
            self.lastHeard = now
            self.joinOrder = joinOrder
        }
    }

    /// What the coordinator keeps of a shard's accepted result: its summary and the `.hlog`
    /// lines; the histograms themselves are merged into the totals on arrival.
    struct ShardOutcome {
        let worker: String
        let attempt: UInt32
        let wall: UInt64
        let sptesZapped: [String: Int]
        let violations: [String: Int]
        let intervalLog: [String]
    }

    struct ShardState {
        let shard: Shard
        var attempts: UInt32 = 0
        var excluded: Set<[UInt8]> = []
        /// Every worker this shard was handed to: only they may send its result.
        var assignedTo: Set<[UInt8]> = []
        var result: ShardOutcome?
        var startedAt: UInt64 = 0
    }

    private let scenario: Scenario
    private let scenarioYAML: String
    private let configuration: CoordinatorConfiguration
    private let context: ZeroMQContext
    private let logger: Logger
    private let cancellation: CancellationFlag
    private let progress: (@Sendable (String, RunProgress) -> Void)?
    private var peers: [[UInt8]: Peer] = [:]
    private var shards: [ShardState] = []
    private var pending = ShardQueue()
    /// Set when a worker becomes free or a shard is requeued: only then is there dispatching to do.
    private var dispatchNeeded = true
    private var lastHousekeeping: UInt64 = 0
    private var requeues = 0
    private var duplicates = 0
    private var badFramesTotal = 0
    private var keysRefused = 0
    private lazy var lastLiveWorker = start
    private var failure: String?
    private let start = monotonicNanoseconds()
    private let runID: String
    private var journal: ResultJournal?
    /// Acknowledgements held back until the journal is synced: a worker drops a result only once it is durable here.
    private var pendingAcks: [(Peer, Zapfleet_V1_ResultAck)] = []
    private var resumedShards = 0
    private var journalFailed = false
    private var externalResults: [(agent: String, host: String, result: ExternalMeasurement)] = []
    private var nextAgentJob: UInt32 = 1
    private var socket: ZeroMQSocket?
    private var completedShards = 0
    private var totals: [ZapPolicy: FleetAggregation.Accumulator] = [:]
    private let startedAt = Date()
    private var plannedAt: UInt64 = 0
    private var finishedAt: UInt64 = 0
    private let boundEndpoint = BoundEndpoint()

    /// A coordinator for `scenario`. `progress` receives workers' progress reports (worker name first).
    /// The coordinator binds its context's ZAP handler, so a context holds one coordinator at a time.
    public init(scenario: Scenario, configuration: CoordinatorConfiguration, context: ZeroMQContext, logger: Logger,
                cancellation: CancellationFlag = CancellationFlag(),
                progress: (@Sendable (String, RunProgress) -> Void)? = nil) {
        self.scenario = scenario
        self.scenarioYAML = ScenarioWriter.yaml(scenario)
        self.configuration = configuration
        self.context = context
        self.logger = logger
        self.cancellation = cancellation
        self.progress = progress
        self.runID = configuration.resume?.plan.runID ?? String(UUID().uuidString.prefix(8).lowercased())
    }

    /// The endpoint actually bound (with the real port for `tcp://…:*`), once ``run()`` has bound it.
    public func waitForEndpoint() -> String { boundEndpoint.wait() }

    private var interval: UInt64 { UInt64(configuration.heartbeatIntervalMilliseconds) * 1_000_000 }
    private var missingAfter: UInt64 { interval * UInt64(configuration.heartbeatLiveness) }

    /// Runs the whole fleet run and returns its merged results.
    public func run() throws -> FleetRunOutcome {
        // The ZAP handler is bound before the router, so that no peer is ever let in unasked. It
        // runs without keys too: with ZAP on, libzmq refuses ZMTP 1.0/2.0 peers at the handshake,
        // and with them a path on which libzmq 4.3.4 can abort the process (an errno_assert in
        // zmtp_engine.cpp, seen when raw TCP garbage arrived as a ROUTER closed).
        let zap = try ZAPHandler(context)
        let router = try ZeroMQSocket(context, type: .router)
        try router.setOption(SocketOption.routerMandatory, Int32(1))
        try router.setOption(SocketOption.maximumMessageSize, configuration.maximumMessageBytes)
        try router.setOption(ZMQ_ROUTER_HANDOVER_OPTION, Int32(1))
        if let security = configuration.security {
            try router.makeCurveServer(security.keys, zapDomain: "zapfleet")
        } else {
            try router.setOption(SocketOption.zapDomain, Array("zapfleet".utf8))
        }
        try router.bind(configuration.bind)
        socket = router
        let endpoint = (try? router.lastEndpoint()) ?? configuration.bind
        boundEndpoint.set(endpoint)
        let security = configuration.security.map { "CURVE, \($0.allowedWorkers.count) worker key(s) allowed, coordinator \($0.keys)" } ?? "no keys (plain text)"
        logger.info("coordinator \(runID) listening on \(endpoint) [\(security)]; waiting up to \(configuration.waitSeconds) s for \(configuration.expectWorkers) worker(s)")
        defer {
            router.close()
            zap.socket.close()
            socket = nil
        }

        let waitDeadline = start + UInt64(configuration.waitSeconds * 1e9)
        var planned = false
        if let contents = configuration.resume {
            try restore(contents)
            planned = true
        }
        var stopping = false
        var stopDeadline: UInt64 = 0
        var poller = ZeroMQPoller()
        poller.add(router)
        poller.add(zap.socket)

        while true {
            let now = monotonicNanoseconds()
            if (cancellation.isCancelled || failure != nil) && !stopping {
                stopping = true
                stopDeadline = now + max(5_000_000_000, 2 * missingAfter)
                broadcastStop(reason: failure ?? "interrupted")
            }
            if stopping && (now > stopDeadline || !peers.values.contains { $0.state == .busy }) { break }

            if !planned && !stopping {
                let ready = peers.values.filter { $0.state == .ready && $0.hello != nil && !$0.isAgent }
                if ready.count >= configuration.expectWorkers || (now > waitDeadline && !ready.isEmpty) {
                    do {
                        try plan(for: ready)
                        planned = true
                    } catch {
                        failure = "\(error)"
                        continue
                    }
                } else if now > waitDeadline {
                    failure = "no worker joined within \(Int(configuration.waitSeconds)) s (expected \(configuration.expectWorkers)); check the workers' --connect address and the network"
                    break
                }
            }
            if planned && !stopping {
                if completedShards == shards.count && agentsSettled(now: now, waitDeadline: waitDeadline) {
                    finishedAt = monotonicNanoseconds()
                    broadcastStop(reason: "run complete")
                    break
                }
                if dispatchNeeded {
                    dispatchNeeded = false
                    dispatch()
                }
            }
            // Walking every peer is work proportional to the fleet: ten times a heartbeat is enough.
            if now &- lastHousekeeping >= interval / 10 {
                lastHousekeeping = now
                checkLiveness(now: now)
                sendHeartbeats(now: now)
                // A run whose workers are all gone (dead, refused, banned) would wait forever: after
                // as long as it waited for them to join, it fails instead.
                if peers.values.contains(where: { !$0.isAgent && !$0.unfit && [.ready, .busy, .missing].contains($0.state) && $0.hello != nil }) {
                    lastLiveWorker = now
                } else if planned && !stopping && failure == nil && completedShards < shards.count
                            && now &- lastLiveWorker > UInt64(configuration.waitSeconds * 1e9) {
                    failure = "no worker has been alive for \(Int(configuration.waitSeconds)) s with \(shards.count - completedShards) shard(s) left; start workers (zapfleet worker --connect …) or check the network"
                    logger.error("\(failure!)")
                }
            }

            let ready = try poller.poll(timeoutMilliseconds: max(10, configuration.heartbeatIntervalMilliseconds / 4))
            if ready[1] {
                try zap.answer(authenticate)
            }
            if ready[0] {
                while let message = try router.receive(dontWait: true, maximumFrames: 3) {
                    handle(message)
                }
                acknowledgeDurably()
            }
        }
        return outcome()
    }

    // MARK: - Authentication

    /// The ZAP decision: a CURVE peer whose long-term key is on the allow-list is let in;
    /// anything else is refused, and never reaches ``handle(_:)``.
    private func authenticate(_ request: ZAPRequest) -> String? {
        // Without keys, every ZMTP 3 peer is let in: the bind policy keeps such a coordinator on loopback.
        if configuration.security == nil && request.mechanism == "NULL" { return nil }
        if let key = request.clientKey, let name = configuration.security?.allowedWorkers[key] {
            logger.debug("authenticated \(name) from \(request.address)")
            return nil
        }
        keysRefused += 1
        // Logged in full at first, then sparsely: a flood of strangers must not flood the log.
        if keysRefused <= 10 || keysRefused % 100 == 0 {
            let key = request.clientKey.map { "public key \($0)" } ?? "no CURVE key (\(request.mechanism))"
            logger.warning("refused a worker from \(request.address): \(key) is not on the allow-list (--allow-keys); refusals so far: \(keysRefused)")
        }
        return "public key not on the coordinator's allow-list"
    }

    // MARK: - External agents

    /// Have the agents said what they will? Every agent that joined and is still heard from has
    /// reported, and as many as expected have (or the wait for them is over, which fails the run).
    private func agentsSettled(now: UInt64, waitDeadline: UInt64) -> Bool {
        let waiting = peers.values.contains { $0.isAgent && !$0.agentDelivered && ($0.state == .ready || $0.state == .busy) }
        if waiting { return false }
        if externalResults.count >= configuration.expectAgents { return true }
        guard now > waitDeadline else { return false }
        failure = "\(configuration.expectAgents) external agent(s) expected, \(externalResults.count) reported; check the agents' --connect and their command"
        logger.error("\(failure!)")
        return true
    }

    /// Hands an agent its job: the scenario, to measure a real kernel against.
    private func sendJob(to peer: Peer) {
        guard !peer.agentDelivered else { return }
        let id = peer.agentJob ?? nextAgentJob
        if peer.agentJob == nil { nextAgentJob += 1 }
        var job = Zapfleet_V1_ExternalJob()
        job.jobID = id
        job.scenarioYaml = scenarioYAML
        job.scenarioName = scenario.name
        job.guestMemoryBytes = scenario.vm.memoryBytes
        job.vcpus = UInt32(scenario.workload.vcpus)
        if send(.externalJob(job), to: peer) {
            peer.agentJob = id
            peer.state = .busy
            logger.info("external job \(id) -> agent \(peer.name)")
        }
    }

    /// Takes an agent's samples, after checking every one, into histograms of its own.
    private func acceptExternal(_ result: Zapfleet_V1_ExternalResult, from peer: Peer) {
        guard peer.isAgent, let job = peer.agentJob, result.jobID == job else {
            rejectFrame(from: peer.identity, "external result for job \(result.jobID), which it was not given")
            return
        }
        var ack = Zapfleet_V1_ResultAck()
        ack.shardID = UInt64(job)
        if peer.agentDelivered {
            ack.duplicate = true
            duplicates += 1
            peer.duplicates += 1
            pendingAcks.append((peer, ack))
            return
        }
        var histograms: [MeasuredOperation: LatencyHistogram] = [:]
        for samples in result.operations {
            guard let operation = ExternalMeasurement.operation(named: samples.operation), histograms[operation] == nil else {
                rejectFrame(from: peer.identity, "external result with operation '\(samples.operation.prefix(40))' unknown or repeated")
                return
            }
            guard samples.nanoseconds.allSatisfy({ $0 <= LatencyHistogram.highestTrackableNanoseconds }) else {
                rejectFrame(from: peer.identity, "external result with a \(samples.operation) sample above one hour")
                return
            }
            var histogram = LatencyHistogram.makeLatency()
            for value in samples.nanoseconds { _ = histogram.record(value) }
            histograms[operation] = histogram
        }
        peer.agentDelivered = true
        peer.completed += 1
        peer.state = .ready
        externalResults.append((peer.name, peer.hello?.hostName ?? "?", ExternalMeasurement(
            name: "external", source: "", histograms: histograms, wallNanoseconds: result.wallNs, exitStatus: result.exitStatus)))
        let count = result.operations.reduce(0) { $0 + $1.nanoseconds.count }
        logger.info("external result from \(peer.name): \(count) sample(s) of \(result.operations.map(\.operation).joined(separator: ", ")), command exit \(result.exitStatus), \(result.linesRejected) line(s) rejected")
        pendingAcks.append((peer, ack))
    }

    // MARK: - Planning and dispatch

    private func plan(for candidates: [Peer]) throws {
        // A worker that cannot take even one memslot must not shrink every shard to nothing
        // (or sink the run): it is left out of the plan, and of dispatch.
        let slotBytes = scenario.vm.memslotBytes
        let oneSlot = MemoryEstimate.estimate(scenario, bytes: slotBytes).peakBytes
        var workers = candidates.sorted { $0.joinOrder < $1.joinOrder }.filter { peer in
            guard let hello = peer.hello else { return false }
            let fits = hello.memoryBudgetBytes >= oneSlot && hello.shardByteLimit >= slotBytes
            if !fits {
                logger.warning("worker \(peer.name) cannot take one \(Quantities.formatSize(slotBytes)) memslot (budget \(Quantities.describeSize(Double(hello.memoryBudgetBytes))), largest shard \(hello.largestShardBytes) bytes); it gets no shard")
                peer.unfit = true
            }
            return fits
        }
        // Beyond the number the run may use, workers stay connected but get no shard.
        if let limit = configuration.useWorkers, workers.count > limit {
            for peer in workers[limit...] { peer.unfit = true }
            workers = Array(workers.prefix(limit))
        }
        guard !workers.isEmpty else {
            throw PlanError(message: "no worker can take one \(Quantities.formatSize(slotBytes)) memslot, which needs \(Quantities.describeSize(Double(oneSlot))) of page tables; give workers more --memory")
        }
        let budget = workers.compactMap { $0.hello?.memoryBudgetBytes }.min() ?? 0
        let largest = min(workers.compactMap { $0.hello?.shardByteLimit }.min() ?? .max, configuration.shardBytes ?? .max)
        let slots = workers.compactMap { $0.hello.map { Int($0.largestShardSlots) } }.filter { $0 > 0 }.min() ?? .max
        let planned = try ShardPlanner.plan(scenario, budgetBytes: budget, largestShardBytes: largest, largestShardSlots: slots)
        if let path = configuration.journalPath {
            journal = try ResultJournal.create(at: path, plan: JournalPlan(
                runID: runID, scenarioYAML: scenarioYAML, kernelNanosecondsPerSPTE: configuration.kernelNanosecondsPerSPTE,
                shards: planned.map { JournalShard(id: $0.id, firstSlot: $0.slice.firstSlot, slotCount: $0.slice.slotCount) }))
        }
        plannedAt = monotonicNanoseconds()
        shards = planned.map { ShardState(shard: $0) }
        pending = ShardQueue(planned.map(\.id))
        dispatchNeeded = true
        logger.info("planned \(planned.count) shard(s) of up to \(Quantities.formatSize(planned.map(\.bytes).max() ?? 0)) for \(workers.count) worker(s) (smallest budget \(Quantities.describeSize(Double(budget))))")
    }

    private func dispatch() {
        let free = peers.values.filter { $0.state == .ready && $0.hello != nil && !$0.unfit && !$0.isAgent }.sorted { $0.joinOrder < $1.joinOrder }
        var idle: [Peer] = []
        defer { forgiveExclusions(idle: idle) }
        for peer in free {
            guard let id = pending.takeFirst(where: { id in
                !shards[Int(id)].excluded.contains(peer.identity) && canTake(peer, shards[Int(id)].shard)
            }) else {
                idle.append(peer)
                continue
            }
            shards[Int(id)].attempts += 1
            let attempt = shards[Int(id)].attempts
            if attempt > UInt32(configuration.maxAttempts) {
                failure = "shard \(id) (\(shards[Int(id)].shard.slice)) failed \(configuration.maxAttempts) attempts; the run cannot complete"
                logger.error("\(failure!)")
                return
            }
            shards[Int(id)].startedAt = monotonicNanoseconds()
            var assignment = Zapfleet_V1_Assignment()
            assignment.shardID = id
            assignment.attempt = attempt
            assignment.scenarioYaml = scenarioYAML
            assignment.firstSlot = UInt32(shards[Int(id)].shard.slice.firstSlot)
            assignment.slotCount = UInt32(shards[Int(id)].shard.slice.slotCount)
            assignment.kernelNsPerSpte = configuration.kernelNanosecondsPerSPTE
            if send(.assignment(assignment), to: peer) {
                shards[Int(id)].assignedTo.insert(peer.identity)
                peer.state = .busy
                peer.assignment = (id, attempt)
                logger.info("shard \(id) attempt \(attempt) (\(shards[Int(id)].shard.slice)) -> \(peer.name)")
            } else {
                shards[Int(id)].attempts -= 1
                pending.pushFront(id)
            }
        }
    }

    /// A shard every idle worker has given up would wait forever (e.g. each was busy with a
    /// shard of a coordinator that was restarted): it is offered again, and its attempts bound
    /// how often.
    private func forgiveExclusions(idle: [Peer]) {
        guard !idle.isEmpty, failure == nil else { return }
        // Only workers that could take the shard count: one too small for it never would.
        for id in pending.ids where !shards[Int(id)].excluded.isEmpty {
            let able = idle.filter { canTake($0, shards[Int(id)].shard) }
            guard !able.isEmpty, able.allSatisfy({ shards[Int(id)].excluded.contains($0.identity) }) else { continue }
            shards[Int(id)].excluded.removeAll()
            dispatchNeeded = true
        }
    }

    /// Does `shard` fit what `peer` said it takes (bytes and memslots)?
    private func canTake(_ peer: Peer, _ shard: Shard) -> Bool {
        let slotLimit = Int(peer.hello?.largestShardSlots ?? 0)
        return shard.bytes <= (peer.hello?.shardByteLimit ?? .max) && (slotLimit == 0 || shard.slice.slotCount <= slotLimit)
    }

    private func requeue(_ id: UInt64, from peer: Peer, why: String) {
        guard id < UInt64(shards.count), shards[Int(id)].result == nil, !pending.contains(id) else { return }
        requeues += 1
        pending.pushFront(id)
        dispatchNeeded = true
        logger.warning("shard \(id) requeued (attempt \(shards[Int(id)].attempts) on \(peer.name) \(why))")
    }

    // MARK: - Liveness

    private func checkLiveness(now: UInt64) {
        // Only workers that said hello are tracked; a peer that only ever sent garbage is not one.
        for peer in peers.values where peer.hello != nil {
            let silence = now &- peer.lastHeard
            switch peer.state {
            case .ready where silence > missingAfter, .busy where silence > missingAfter:
                peer.state = .missing
                logger.warning("worker \(peer.name) missing: silent for \(silence / 1_000_000) ms")
                if let assignment = peer.assignment { requeue(assignment.shard, from: peer, why: "went missing") }
            case .missing where silence > missingAfter * 10:
                peer.state = .dead
                peer.assignment = nil
                logger.warning("worker \(peer.name) dead: silent for \(silence / 1_000_000_000) s")
            default:
                break
            }
        }
    }

    private func sendHeartbeats(now: UInt64) {
        for peer in peers.values where peer.hello != nil && (peer.state == .ready || peer.state == .busy) && now &- peer.lastSent >= interval {
            _ = send(.heartbeat(Zapfleet_V1_Heartbeat()), to: peer)
        }
    }

    private func broadcastStop(reason: String) {
        var stop = Zapfleet_V1_Stop()
        stop.reason = reason
        // Every worker that said hello hears it, those left out of the plan included.
        for peer in peers.values where peer.hello != nil && peer.state != .dead && peer.state != .banned {
            _ = send(.stop(stop), to: peer)
        }
    }

    @discardableResult
    private func send(_ body: Zapfleet_V1_Envelope.OneOf_Body, to peer: Peer) -> Bool {
        guard let socket else { return false }
        do {
            try socket.send([peer.identity, Messages.frame(body)], dontWait: true)
            peer.lastSent = monotonicNanoseconds()
            return true
        } catch {
            if error.isHostUnreachable && peer.state != .missing && peer.state != .dead {
                logger.warning("worker \(peer.name) unreachable (\(Messages.name(body)) not sent)")
            }
            return false
        }
    }

    // MARK: - Receiving

    private func handle(_ message: ReceivedMessage) {
        guard message.frames.count == 2, !message.truncated else {
            rejectFrame(from: message.frames.first, "\(message.frames.count) frames, expected an identity and one envelope")
            return
        }
        let identity = message.frames[0]
        guard let envelope = Messages.decode(message.frames[1]) else {
            rejectFrame(from: identity, "not a zapfleet envelope (\(message.frames[1].count) bytes)")
            return
        }
        let now = monotonicNanoseconds()
        if envelope.protocolVersion != zapfleetProtocolVersion {
            guard let peer = peers[identity] ?? registerIfRoom(identity, now: now) else { return }
            var refusal = Zapfleet_V1_Refusal()
            refusal.reason = "protocol version \(envelope.protocolVersion) is not this coordinator's \(zapfleetProtocolVersion); run the same zapfleet version on coordinator and workers"
            refusal.coordinatorProtocolVersion = zapfleetProtocolVersion
            _ = send(.refusal(refusal), to: peer)
            peer.state = .refused
            logger.error("refused \(peer.name): protocol version \(envelope.protocolVersion), ours is \(zapfleetProtocolVersion)")
            return
        }
        if case .hello(let hello) = envelope.body {
            welcome(identity, hello, now: now)
            return
        }
        guard let peer = peers[identity], peer.hello != nil, peer.state != .refused, peer.state != .dead, peer.state != .banned else {
            rejectFrame(from: identity, "\(Messages.name(envelope.body)) before hello")
            return
        }
        peer.lastHeard = now
        if peer.state == .missing {
            peer.state = peer.assignment == nil ? .ready : .busy
            dispatchNeeded = true
            logger.info("worker \(peer.name) is back")
        }
        switch envelope.body {
        case .heartbeat:
            break
        case .progress(let report) where peer.isAgent:
            guard report.shardID == UInt64(peer.agentJob ?? 0) else {
                rejectFrame(from: identity, "progress for a job it was not given")
                return
            }
        case .externalResult(let result):
            acceptExternal(result, from: peer)
        case .progress(let report):
            guard let assignment = peer.assignment, assignment.shard == report.shardID,
                  let policy = ZapPolicy(rawValue: report.policy), report.steps < 1_000_000 else {
                rejectFrame(from: identity, "progress for a shard or policy it was not given")
                return
            }
            progress?(peer.name, RunProgress(policy: policy, step: Int(report.step), steps: Int(report.steps),
                                             stepName: String(report.stepName.prefix(40)), sptesInstalled: Int(clamping: report.sptesInstalled),
                                             sptesZapped: Int(clamping: report.sptesZapped),
                                             sptesPerPopulation: Int(shards[Int(report.shardID)].shard.bytes >> 12),
                                             elapsedNanoseconds: report.elapsedNs))
        case .result(let result):
            accept(result, from: peer)
        case .abandoned(let abandoned):
            guard abandoned.shardID < UInt64(shards.count), peer.assignment?.shard == abandoned.shardID else {
                rejectFrame(from: identity, "abandoned a shard it was not given")
                return
            }
            let id = abandoned.shardID
            if abandoned.busyWithAttempt > 0 {
                // Refused only because it still runs another shard (one handed out before a
                // reconnect or a restart): it is busy with that one, and this shard lost no attempt.
                // Only for the attempt it was just given: a replayed refusal must not give attempts back.
                guard peer.assignment?.attempt == abandoned.attempt, shards[Int(id)].attempts == abandoned.attempt else {
                    rejectFrame(from: identity, "a busy refusal of an attempt it was not given")
                    return
                }
                logger.info("worker \(peer.name) is still running shard \(abandoned.busyWithShardID); shard \(id) goes back to the queue")
                shards[Int(id)].attempts -= 1
                shards[Int(id)].assignedTo.remove(peer.identity)
                peer.assignment = abandoned.busyWithShardID < UInt64(shards.count) ? (abandoned.busyWithShardID, abandoned.busyWithAttempt) : nil
                peer.state = .busy
                if shards[Int(id)].result == nil { pending.pushFront(id) }
                dispatchNeeded = true
                return
            }
            logger.warning("worker \(peer.name) gave up shard \(id): \(abandoned.reason.prefix(200))")
            shards[Int(id)].excluded.insert(peer.identity)
            peer.assignment = nil
            peer.state = .ready
            dispatchNeeded = true
            requeue(id, from: peer, why: "was given up")
        default:
            rejectFrame(from: identity, "a worker does not send \(Messages.name(envelope.body))")
        }
    }

    /// The most peers (workers and strangers) the coordinator keeps state for.
    static let maximumPeers = 65_536

    /// Starts tracking a new peer, unless the coordinator already tracks as many as it will.
    private func registerIfRoom(_ identity: [UInt8], now: UInt64) -> Peer? {
        guard peers.count < Self.maximumPeers else { return nil }
        let peer = Peer(identity: identity, now: now, joinOrder: peers.count)
        peers[identity] = peer
        return peer
    }

    private func welcome(_ identity: [UInt8], _ hello: Zapfleet_V1_Hello, now: UInt64) {
        guard let peer = peers[identity] ?? registerIfRoom(identity, now: now) else {
            rejectFrame(from: nil, "hello from a new peer beyond the \(Self.maximumPeers) the coordinator tracks")
            return
        }
        guard peer.state != .refused, peer.state != .banned else { return }
        guard hello.memoryBudgetBytes > 0, hello.cores > 0, hello.cores < 1 << 16 else {
            rejectFrame(from: identity, "hello with a zero memory budget or an impossible core count")
            return
        }
        let reconnect = peer.hello != nil
        let wasLost = peer.state == .missing || peer.state == .dead
        peer.hello = hello
        peer.name = hello.workerName.isEmpty ? peer.name : String(hello.workerName.prefix(64))
        peer.lastHeard = now
        if peer.state == .missing || peer.state == .dead || !reconnect { peer.state = peer.assignment == nil ? .ready : .busy }
        if hello.role == .externalAgent { peer.isAgent = true }
        // A worker still running a shard (handed out before it reconnected, or by this run's
        // coordinator before a --resume) is busy with it: offering it another would only be refused.
        if hello.runningAttempt > 0 {
            peer.state = .busy
            if hello.runningShardID < UInt64(shards.count) { peer.assignment = (hello.runningShardID, hello.runningAttempt) }
        } else if !peer.isAgent, let assignment = peer.assignment,
                  wasLost || now &- shards[Int(assignment.shard)].startedAt > interval {
            // It runs nothing (restarted under the same name, say): its shard goes back to the
            // queue; a result it still holds arrives after the welcome and still wins. A hello
            // sent just before the assignment reached the worker says nothing of it: only a peer
            // that was lost, or whose assignment is older than a heartbeat, counts.
            peer.assignment = nil
            peer.state = .ready
            requeue(assignment.shard, from: peer, why: "is not running it any more")
        }
        dispatchNeeded = true
        var welcome = Zapfleet_V1_Welcome()
        welcome.runID = String(runID)
        welcome.heartbeatIntervalMs = UInt32(configuration.heartbeatIntervalMilliseconds)
        welcome.heartbeatLiveness = UInt32(configuration.heartbeatLiveness)
        _ = send(.welcome(welcome), to: peer)
        if peer.isAgent { sendJob(to: peer) }
        logger.info("worker \(peer.name) \(reconnect ? "reconnected" : "joined") from \(hello.hostName.prefix(64)): \(hello.cores) cores, budget \(Quantities.describeSize(Double(hello.memoryBudgetBytes))), build \(hello.buildVersion.prefix(32))")
    }

    private func accept(_ result: Zapfleet_V1_ShardResult, from peer: Peer) {
        let id = result.shardID
        // Whatever becomes of it, a worker that sends the result of the shard it was busy with is free.
        defer {
            if peer.state == .busy && (peer.assignment == nil || peer.assignment?.shard == id) {
                peer.assignment = nil
                peer.state = .ready
                dispatchNeeded = true
            }
        }
        // Compared as UInt64 first: a hostile id past Int.max must not trap in a conversion.
        guard id < UInt64(shards.count) else {
            rejectFrame(from: peer.identity, "result for shard \(id), which does not exist")
            return
        }
        // A resumed run also takes results of attempts the previous coordinator handed out.
        let highestAttempt = configuration.resume == nil ? shards[Int(id)].attempts : UInt32(configuration.maxAttempts)
        guard result.attempt >= 1, result.attempt <= highestAttempt,
              configuration.resume != nil || shards[Int(id)].assignedTo.contains(peer.identity) else {
            rejectFrame(from: peer.identity, "result for shard \(id) attempt \(result.attempt), which was never assigned")
            return
        }
        let runs: [DecodedPolicyResult]
        do {
            runs = try result.policies.map { policy throws(ProtocolViolation) in try ResultCoding.decodeValidated(policy) }
        } catch {
            rejectFrame(from: peer.identity, "result for shard \(id): \(error)")
            return
        }
        guard runs.map(\.policy) == scenario.policies else {
            rejectFrame(from: peer.identity, "result for shard \(id) has policies \(runs.map(\.policy.rawValue)), the scenario \(scenario.policies.map(\.rawValue))")
            return
        }
        var ack = Zapfleet_V1_ResultAck()
        ack.shardID = id
        ack.attempt = result.attempt
        if let first = shards[Int(id)].result {
            duplicates += 1
            peer.duplicates += 1
            ack.duplicate = true
            logger.info("dropped a duplicate result for shard \(id) (attempt \(result.attempt) from \(peer.name)); attempt \(first.attempt) from \(first.worker) was first")
        } else {
            if let journal {
                // After the first journal error nothing more is accepted: nothing could be made durable.
                guard !journalFailed else { return }
                do {
                    try journal.append(result, worker: peer.name)
                } catch {
                    // Not durable, so not accepted, and neither is anything of this batch: the
                    // workers keep their results and the run stops.
                    journalFailed = true
                    pendingAcks.removeAll()
                    failure = "\(error)"
                    logger.error("\(error)")
                    return
                }
            }
            record(runs, of: result, worker: peer.name, startSeconds: Double(shards[Int(id)].startedAt &- start) / 1e9)
            peer.completed += 1
            logger.info("shard \(id) done by \(peer.name) in \(Quantities.formatDuration(Double(result.wallNs))) (\(completedShards)/\(shards.count))")
        }
        pendingAcks.append((peer, ack))
    }

    /// Counts an accepted result: merges its histograms into the totals and keeps its summary.
    private func record(_ runs: [DecodedPolicyResult], of result: Zapfleet_V1_ShardResult, worker: String, startSeconds: Double) {
        let id = result.shardID
        let cost = configuration.kernelNanosecondsPerSPTE
        var lines: [String] = []
        for run in runs {
            totals[run.policy, default: FleetAggregation.Accumulator(policy: run.policy, kernelNanosecondsPerSPTE: cost)].add(run)
            for histogram in run.histograms where !histogram.projected {
                lines.append(FleetAggregation.intervalLogLine(
                    policy: run.policy, operation: histogram.operation, startSeconds: startSeconds,
                    lengthSeconds: Double(result.wallNs) / 1e9, maxNanoseconds: histogram.buckets.maxBucketValue,
                    encoded: histogram.encoded))
            }
        }
        pending.remove(id)  // a requeued shard whose first attempt finished after all
        shards[Int(id)].result = ShardOutcome(
            worker: worker, attempt: result.attempt, wall: result.wallNs,
            sptesZapped: Dictionary(uniqueKeysWithValues: runs.map { ($0.policy.rawValue, $0.statistics.sptesZapped) }),
            violations: Dictionary(uniqueKeysWithValues: runs.map { ($0.policy.rawValue, $0.violationCounts.values.reduce(0, +)) }),
            intervalLog: lines)
        completedShards += 1
    }

    /// Syncs the journal, then sends the acknowledgements it now covers: one `fsync` for every
    /// result that arrived together.
    private func acknowledgeDurably() {
        guard !pendingAcks.isEmpty else { return }
        guard !journalFailed else {
            pendingAcks.removeAll()
            return
        }
        do {
            try journal?.sync()
        } catch {
            journalFailed = true
            failure = "\(error)"
            logger.error("\(error)")
            pendingAcks.removeAll()
            return
        }
        for (peer, ack) in pendingAcks { _ = send(.resultAck(ack), to: peer) }
        pendingAcks.removeAll()
    }

    /// Takes up an interrupted run: its plan, and every result its journal holds, as if just accepted.
    private func restore(_ contents: JournalContents) throws {
        shards = contents.plan.shards.enumerated().map { index, planned in
            ShardState(shard: Shard(id: UInt64(index), slice: MemorySlice(firstSlot: planned.firstSlot, slotCount: planned.slotCount), of: scenario))
        }
        guard shards.map(\.shard.id) == contents.plan.shards.map(\.id),
              shards.allSatisfy({ $0.shard.slice.slotCount > 0 && $0.shard.slice.firstSlot + $0.shard.slice.slotCount <= scenario.memslotCount }) else {
            throw PlanError(message: "the journal's plan does not fit its scenario; it cannot be resumed")
        }
        for entry in contents.results {
            let id = entry.result.shardID
            guard id < UInt64(shards.count), shards[Int(id)].result == nil,
                  let runs = try? entry.result.policies.map({ policy throws(ProtocolViolation) in try ResultCoding.decodeValidated(policy) }),
                  runs.map(\.policy) == scenario.policies else {
                logger.warning("journal: skipped a record for shard \(id) (a duplicate, or not this plan's)")
                continue
            }
            shards[Int(id)].attempts = entry.result.attempt
            record(runs, of: entry.result, worker: entry.worker, startSeconds: 0)
            resumedShards += 1
        }
        pending = ShardQueue(shards.filter { $0.result == nil }.map(\.shard.id))
        dispatchNeeded = true
        plannedAt = monotonicNanoseconds()
        if let path = configuration.journalPath { journal = try ResultJournal.reopen(at: path, contents: contents) }
        let torn = contents.tornBytes > 0 ? "; ignored a torn last record of \(contents.tornBytes) bytes" : ""
        logger.info("resumed run \(runID): \(resumedShards) of \(shards.count) shard results from the journal\(torn); \(pending.count) shard(s) to run")
    }

    private func rejectFrame(from identity: [UInt8]?, _ reason: String) {
        badFramesTotal += 1
        guard let identity else { return }
        // Strangers are tracked only up to a bound: a flood of new identities must not grow memory without end.
        guard let peer = peers[identity] ?? registerIfRoom(identity, now: monotonicNanoseconds()) else { return }
        peer.badFrames += 1
        if peer.badFrames <= 3 { logger.warning("dropped a frame from \(peer.name): \(reason)") }
        if peer.badFrames == configuration.badFrameLimit {
            logger.error("ignoring \(peer.name) from now on: \(peer.badFrames) bad frames")
            if let assignment = peer.assignment { requeue(assignment.shard, from: peer, why: "was ignored for bad frames") }
            peer.assignment = nil
            peer.state = .banned
        }
    }

    // MARK: - Outcome

    private func outcome() -> FleetRunOutcome {
        let cost = configuration.kernelNanosecondsPerSPTE
        let done = shards.filter { $0.result != nil }
        let merged = scenario.policies.compactMap { totals[$0]?.run }
        // Strangers that never said hello show only in the bad-frame total: a port scan must not fill the report.
        let workers = peers.values.filter { $0.hello != nil || $0.state == .refused }.sorted { $0.joinOrder < $1.joinOrder }.map { peer in
            FleetSection.WorkerSummary(name: peer.name, host: peer.hello?.hostName ?? "?", cores: Int(peer.hello?.cores ?? 0),
                                       memoryBudgetBytes: peer.hello?.memoryBudgetBytes ?? 0, shardsCompleted: peer.completed,
                                       duplicatesDropped: peer.duplicates, badFrames: peer.badFrames, state: peer.state.rawValue)
        }
        let shardSummaries = done.map { state in
            let result = state.result!
            return FleetSection.ShardSummary(
                id: state.shard.id, slice: state.shard.slice, worker: result.worker, attempts: Int(state.attempts),
                wallSeconds: Double(result.wall) / 1e9, sptesZapped: result.sptesZapped, violations: result.violations)
        }
        let fleet = FleetSection(workers: workers, shards: shardSummaries, requeues: requeues, duplicatesDropped: duplicates,
                                 badFrames: badFramesTotal, wholeVm: FleetAggregation.wholeVm(merged, kernelNanosecondsPerSPTE: cost),
                                 dispatchSeconds: finishedAt > plannedAt && plannedAt > 0 ? Double(finishedAt - plannedAt) / 1e9 : 0,
                                 coordinatorCpuSeconds: threadCPUSeconds(), keysRefused: keysRefused,
                                 resumedShards: resumedShards)
        let log = (FleetAggregation.intervalLogHeader(started: startedAt) + done.flatMap { $0.result!.intervalLog })
            .joined(separator: "\n") + "\n"
        let complete = !shards.isEmpty && completedShards == shards.count && merged.allSatisfy(\.complete)
        // One agent is the "external" column; several are told apart by name.
        let external = externalResults.map { entry in
            var measurement = entry.result
            measurement.name = externalResults.count == 1 ? "external" : "external:\(entry.agent)"
            measurement.source = "real kernel, measured by agent \(entry.agent) on \(entry.host)"
            return measurement
        }
        return FleetRunOutcome(runs: merged, fleet: fleet, intervalLog: log, failure: failure, complete: complete, external: external)
    }
}

/// The shards waiting for a worker, first come first served, requeued ones in front. Kept as a
/// stack whose top is the front, so that taking and requeueing cost O(1) for a fleet's
/// thousands of shards.
struct ShardQueue {
    private var stack: [UInt64]
    private var members: Set<UInt64>

    init(_ ids: [UInt64] = []) {
        stack = ids.reversed()
        members = Set(ids)
    }

    func contains(_ id: UInt64) -> Bool { members.contains(id) }

    /// The waiting shards, front first.
    var ids: [UInt64] { stack.reversed() }

    /// How many wait.
    var count: Int { stack.count }

    mutating func pushFront(_ id: UInt64) {
        guard members.insert(id).inserted else { return }
        stack.append(id)
    }

    /// Takes the frontmost shard that `fits`.
    mutating func takeFirst(where fits: (UInt64) -> Bool) -> UInt64? {
        guard let position = stack.lastIndex(where: fits) else { return nil }
        let id = stack.remove(at: position)
        members.remove(id)
        return id
    }

    mutating func remove(_ id: UInt64) {
        guard members.remove(id) != nil else { return }
        stack.removeAll { $0 == id }
    }
}

/// CPU time of the calling thread, in seconds.
func threadCPUSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// `ZMQ_ROUTER_HANDOVER`: a reconnecting worker with the same identity takes over its old
/// connection instead of being refused.
let ZMQ_ROUTER_HANDOVER_OPTION: Int32 = 56

/// The bound endpoint, published from the coordinator's thread to whoever waits for it.
final class BoundEndpoint: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private let condition = PThreadCondition()
    private var value: String?

    func set(_ endpoint: String) {
        mutex.withLock { value = endpoint }
        condition.broadcast()
    }

    func wait() -> String {
        mutex.lock()
        while value == nil { condition.wait(mutex) }
        let endpoint = value!
        mutex.unlock()
        return endpoint
    }
}

extension Zapfleet_V1_Hello {
    /// The largest shard the worker takes, in bytes; proto3's unset 0 means no limit.
    var shardByteLimit: UInt64 { largestShardBytes == 0 ? .max : largestShardBytes }
}
