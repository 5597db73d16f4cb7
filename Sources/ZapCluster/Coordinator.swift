import Foundation
import Logging
import ZapEngine
import ZapProtocol
import ZapRun
import ZapScenario
import ZeroMQ
import ZapPlatform

/// The coordinator's socket loop: binds a ROUTER socket, turns every frame into a
/// ``FleetScheduler/Input`` and carries out the ``FleetScheduler/Action``s that come back
/// (sends, the journal, merges, acknowledgements once the journal is synced). Every decision
/// is the scheduler's; this file only translates. Everything happens on the thread that calls
/// ``run()``, which owns the socket.
public final class Coordinator: @unchecked Sendable {
    let scenario: Scenario
    let scenarioYAML: String
    let configuration: CoordinatorConfiguration
    let context: ZeroMQContext
    let logger: Logger
    let cancellation: CancellationFlag
    let progress: (@Sendable (String, RunProgress) -> Void)?
    let runID: String
    let start = monotonicNanoseconds()
    let startedAt = Date()
    let boundEndpoint = BoundEndpoint()
    var scheduler: FleetScheduler
    var totals: FleetTotals
    var journal: ResultJournal?
    var socket: ZeroMQSocket?
    var keysRefused = 0
    var finishedAt: UInt64 = 0
    /// Acknowledgements held back until the journal is synced: a worker drops a result only once it is durable here.
    var pendingAcks: [(PeerID, FleetScheduler.Acknowledgement)] = []
    /// The result whose input is being processed: what `.journal` and `.merge` act on.
    var resultAtHand: (claim: AttemptClaim, result: Zapfleet_V1_ShardResult, runs: [DecodedPolicyResult])?
    var externalAtHand: ExternalMeasurement?
    /// Assignments journaled but not yet sent.
    var assignmentsToSend: [(PeerID, AttemptClaim, Zapfleet_V1_Assignment)] = []
    var lastSnapshot: UInt64 = 0
    /// Hold-ups of the run loop (the machine, a slow fsync), which count against no worker.
    var listening = ListeningClock(allowance: .max, now: 0)
    /// Each worker's SPTEs installed and zapped per second in its latest progress report.
    var workerRates: [String: Double] = [:]

    /// A coordinator for `scenario`. `progress` receives workers' progress reports (worker name first).
    /// The coordinator binds its context's ZAP handler, so a context holds one coordinator at a time.
    public init(
        scenario: Scenario, configuration: CoordinatorConfiguration, context: ZeroMQContext, logger: Logger,
        cancellation: CancellationFlag = CancellationFlag(),
        progress: (@Sendable (String, RunProgress) -> Void)? = nil
    ) {
        self.scenario = scenario
        self.scenarioYAML = ScenarioWriter.yaml(scenario)
        self.configuration = configuration
        self.context = context
        self.logger = logger
        self.cancellation = cancellation
        self.progress = progress
        runID = configuration.resume?.plan.runID ?? String(UUID().uuidString.prefix(8).lowercased())
        totals = FleetTotals(kernelNanosecondsPerSPTE: configuration.kernelNanosecondsPerSPTE)
        // A fresh run waits for its workers from now; a resumed one is replaced by its journal's in ``run()``.
        scheduler = FleetScheduler(
            configuration: Self.schedulerConfiguration(configuration, runID: runID, scenario: scenario),
            now: start, planner: Self.planner(configuration, scenario))
    }

    /// Cuts `scenario` into shards that the smallest of the workers at hand can take, within `--shard-size`.
    static func planner(_ configuration: CoordinatorConfiguration, _ scenario: Scenario) -> FleetScheduler.Planner {
        { capacities in
            let budget = capacities.map(\.memoryBudgetBytes).min() ?? 0
            let largest = min(capacities.map(\.shardByteLimit).min() ?? .max, configuration.shardBytes ?? .max)
            let slots = capacities.map(\.shardSlotLimit).filter { $0 > 0 }.min() ?? .max
            return Result { () throws(PlanError) in
                try ShardPlanner.plan(
                    scenario, budgetBytes: budget, largestShardBytes: largest, largestShardSlots: slots,
                    balancedOver: configuration.equalWorkers ? capacities.count : 1)
            }
        }
    }

    /// The endpoint actually bound (with the real port for `tcp://…:*`), once ``run()`` has bound it.
    public func waitForEndpoint() -> String { boundEndpoint.wait() }

    static func schedulerConfiguration(
        _ configuration: CoordinatorConfiguration, runID: String, scenario: Scenario
    ) -> FleetScheduler.Configuration {
        var result = FleetScheduler.Configuration(runID: runID)
        result.expectWorkers = configuration.expectWorkers
        result.expectAgents = configuration.expectAgents
        result.useWorkers = configuration.useWorkers
        // Clamped to what the command line allows (a week, an hour, 1000), so that no product of
        // them (liveness × interval, deadlines) can overflow, whatever a library caller passes.
        let wait = configuration.waitSeconds.isFinite ? min(max(configuration.waitSeconds, 0), 7 * 86_400) : 60
        result.waitNanoseconds = UInt64(wait * 1e9)
        result.intervalNanoseconds = UInt64(min(max(configuration.heartbeatIntervalMilliseconds, 1), 3_600_000)) * 1_000_000
        result.liveness = UInt64(min(max(configuration.heartbeatLiveness, 1), 1000))
        result.maxFailedAttempts = UInt32(clamping: max(configuration.maxAttempts, 1))
        result.progressDeadlineIntervals = UInt64(min(max(configuration.progressDeadlineIntervals, 1), 1_000_000))
        result.giveBackLimit = max(configuration.giveBackLimit, 1)
        result.badFrameLimit = max(configuration.badFrameLimit, 1)
        if scenario.memslotCount > 0 { result.smallestShard = Shard(id: 0, slice: MemorySlice(firstSlot: 0, slotCount: 1), of: scenario) }
        return result
    }

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
        // A fleet starts its workers at once: with libzmq's backlog of 100, 10,000 connects
        // overflowed the accept queue (the kernel fell back to SYN cookies, joins were retried).
        try router.setOption(SocketOption.backlog, Int32(4096))
        if let security = configuration.security {
            try router.makeCurveServer(security.keys, zapDomain: "zapfleet")
        } else {
            try router.setOption(SocketOption.zapDomain, Array("zapfleet".utf8))
        }
        try router.bind(configuration.bind)
        socket = router
        let endpoint = (try? router.lastEndpoint()) ?? configuration.bind
        boundEndpoint.set(endpoint)
        let security =
            configuration.security.map { "CURVE, \($0.allowedWorkers.count) worker key(s) allowed, coordinator \($0.keys)" }
            ?? "no keys (plain text)"
        record(
            FleetEvent(
                .listening, .info,
                "coordinator \(runID) listening on \(endpoint) [\(security)]; waiting up to \(configuration.waitSeconds) s for \(configuration.expectWorkers) worker(s)",
                [
                    "run_id": .string(runID), "endpoint": .string(endpoint), "curve": .boolean(configuration.security != nil),
                    "expect_workers": .number(configuration.expectWorkers), "scenario": .string(scenario.name)
                ]))
        defer {
            router.close()
            zap.socket.close()
            socket = nil
        }
        if let contents = configuration.resume { try resume(from: contents) }

        var poller = ZeroMQPoller()
        poller.add(router)
        poller.add(zap.socket)
        let pollMilliseconds = max(10, min(configuration.heartbeatIntervalMilliseconds / 4, 1000))
        listening = ListeningClock(
            allowance: ListeningClock.allowance(
                poll: UInt64(pollMilliseconds) * 1_000_000, interval: scheduler.configuration.intervalNanoseconds),
            now: monotonicNanoseconds())
        var stopAsked = false
        while true {
            let now = monotonicNanoseconds()
            excuseHoldUp(now: now)
            if cancellation.isCancelled && !stopAsked {
                stopAsked = true
                perform(scheduler.process(.stop("interrupted"), now: now))
            }
            perform(scheduler.process(.tick, now: now))
            if scheduler.phase == .finished { break }
            if configuration.snapshots != nil && now &- lastSnapshot >= 1_000_000_000 {
                lastSnapshot = now
                publishSnapshot()
            }
            let ready = try poller.poll(timeoutMilliseconds: pollMilliseconds)
            if ready[1] { try zap.answer { self.authenticate($0) } }
            if ready[0] {
                while let message = try router.receive(dontWait: true, maximumFrames: 3) {
                    handle(message)
                }
                acknowledgeDurably()
            }
        }
        acknowledgeDurably()
        finishedAt = monotonicNanoseconds()
        let outcome = outcome()
        configuration.snapshots?(snapshot(of: outcome))
        return outcome
    }

    // MARK: - Frames in

    /// Tells the scheduler how long this loop was held up since its last look, before it judges
    /// anyone's silence by what is read next.
    private func excuseHoldUp(now: UInt64) {
        let heldUp = listening.look(now: now)
        if heldUp > 0 { perform(scheduler.process(.heldUp(nanoseconds: heldUp), now: now)) }
    }

    private func handle(_ message: ReceivedMessage) {
        let now = monotonicNanoseconds()
        excuseHoldUp(now: now)
        guard message.frames.count == 2, !message.truncated else {
            perform(
                scheduler.process(
                    .badFrame(message.frames.first, "\(message.frames.count) frames, expected an identity and one envelope"), now: now))
            return
        }
        let id = message.frames[0]
        // Everything a banned peer sends is dropped unread.
        if scheduler.peers[id]?.state == .banned { return }
        guard let envelope = Messages.decode(message.frames[1]) else {
            perform(scheduler.process(.badFrame(id, "not a zapfleet envelope (\(message.frames[1].count) bytes)"), now: now))
            return
        }
        guard envelope.protocolVersion == zapfleetProtocolVersion else {
            perform(scheduler.process(.versionMismatch(id, version: envelope.protocolVersion), now: now))
            return
        }
        let input: FleetScheduler.Input
        switch envelope.body {
        case .hello(let hello):
            let introduction = PeerIntroduction(hello)
            probeHolder(of: introduction, newcomer: id, now: now)
            input = .hello(id, introduction)
        case .heartbeat:
            input = .heartbeat(id)
        case .progress(let report) where scheduler.peers[id]?.introduction?.isAgent == true:
            input =
                scheduler.peers[id]?.agentJob.map { UInt64($0) } == report.shardID
                ? .heartbeat(id) : .badFrame(id, "progress for a job it was not given")
        case .progress(let report):
            let claim = AttemptClaim(runID: report.runID, shard: report.shardID, attempt: report.attempt)
            perform(scheduler.process(.progress(id, claim), now: now))
            forwardProgress(report, claim: claim, from: id)
            return
        case .result(let result):
            receive(result, from: id, now: now)
            return
        case .abandoned(let abandoned):
            let busyWith =
                abandoned.busyWithAttempt > 0
                ? AttemptClaim(runID: abandoned.runID, shard: abandoned.busyWithShardID, attempt: abandoned.busyWithAttempt) : nil
            input = .gaveBack(
                id, AttemptClaim(runID: abandoned.runID, shard: abandoned.shardID, attempt: abandoned.attempt),
                reason: abandoned.reason.printable(limit: 300), busyWith: busyWith)
        case .externalResult(let result):
            let verdict: ResultVerdict
            switch ExternalResultCheck.histograms(of: result) {
            case .success(let histograms):
                externalAtHand = ExternalMeasurement(
                    name: "external", source: "", histograms: histograms,
                    wallNanoseconds: result.wallNs, exitStatus: result.exitStatus)
                verdict = .plausible
                let count = result.operations.reduce(0) { $0 + $1.nanoseconds.count }
                let agent = scheduler.peers[id]?.name ?? "?"
                record(
                    FleetEvent(
                        .externalResult, .info,
                        "external result from \(agent): \(count) sample(s), command exit \(result.exitStatus), \(result.linesRejected) line(s) rejected",
                        [
                            "agent": .string(agent), "job": .number(result.jobID), "samples": .number(count),
                            "exit_status": .number(result.exitStatus),
                            "lines_rejected": .number(result.linesRejected)
                        ]))
            case .failure(let violation):
                verdict = .implausible(violation.reason)
            }
            input = .externalResult(id, job: result.jobID, verdict)
        default:
            input = .badFrame(id, "a worker does not send \(Messages.name(envelope.body))")
        }
        perform(scheduler.process(input, now: now))
        externalAtHand = nil
    }

    /// Decodes a result and runs every check that needs no scheduling state, then lets the scheduler decide.
    private func receive(_ result: Zapfleet_V1_ShardResult, from id: PeerID, now: UInt64) {
        let claim = AttemptClaim(runID: result.runID, shard: result.shardID, attempt: result.attempt)
        var verdict = ResultVerdict.implausible("shard \(result.shardID) is not in the plan")
        var runs: [DecodedPolicyResult] = []
        if let shard = scheduler.shard(result.shardID) { (runs, verdict) = Self.check(result, shard: shard, scenario: scenario) }
        resultAtHand = (claim, result, runs)
        perform(scheduler.process(.result(id, claim, verdict), now: now))
        resultAtHand = nil
    }

    /// Decodes `result` and checks it against `shard`: the checks that need no scheduling state,
    /// for a live result and a journaled one alike. The runs are empty unless it decoded.
    static func check(
        _ result: Zapfleet_V1_ShardResult, shard: Shard, scenario: Scenario
    ) -> (runs: [DecodedPolicyResult], verdict: ResultVerdict) {
        do {
            let runs = try result.policies.map { policy throws(ProtocolViolation) in try ResultCoding.decodeValidated(policy) }
            return (runs, ResultPlausibility.check(runs, wallNanoseconds: result.wallNs, shard: shard, scenario: scenario))
        } catch {
            return ([], .implausible(error.reason))
        }
    }

    /// A hello under a name a live peer holds: if a send to that peer fails, its connection is
    /// gone (a restart), and the scheduler hears so before it judges the newcomer.
    private func probeHolder(of introduction: PeerIntroduction, newcomer: PeerID, now: UInt64) {
        guard
            let holder = scheduler.peers.values.first(where: {
                $0.id != newcomer && $0.introduction?.name == introduction.name && $0.state.isLive
            })
        else { return }
        if !transmit(.heartbeat(Zapfleet_V1_Heartbeat()), to: holder.id) {
            perform(scheduler.process(.unreachable(holder.id), now: now))
        }
    }

    private func forwardProgress(_ report: Zapfleet_V1_Progress, claim: AttemptClaim, from id: PeerID) {
        guard let peer = scheduler.peers[id], peer.state == .busy(claim), let shard = scheduler.shard(claim.shard),
            let policy = ZapPolicy(rawValue: report.policy), report.steps < 1_000_000
        else { return }
        if report.elapsedNs > 0 {
            workerRates[peer.name] = (Double(report.sptesInstalled) + Double(report.sptesZapped)) * 1e9 / Double(report.elapsedNs)
        }
        guard let progress else { return }
        progress(
            peer.name,
            RunProgress(
                policy: policy, step: Int(report.step), steps: Int(report.steps),
                stepName: report.stepName.printable(limit: 40), sptesInstalled: Int(clamping: report.sptesInstalled),
                sptesZapped: Int(clamping: report.sptesZapped), sptesPerPopulation: Int(shard.bytes >> 12),
                elapsedNanoseconds: report.elapsedNs))
    }

    // MARK: - Actions out

    private func perform(_ actions: [FleetScheduler.Action]) {
        defer { sendAssignments() }
        for action in actions {
            switch action {
            case .planned:
                startJournal()
            case .welcome(let id):
                var welcome = Zapfleet_V1_Welcome()
                welcome.runID = runID
                welcome.heartbeatIntervalMs = UInt32(clamping: configuration.heartbeatIntervalMilliseconds)
                welcome.heartbeatLiveness = UInt32(clamping: configuration.heartbeatLiveness)
                transmit(.welcome(welcome), to: id)
            case .refuse(let id, let reason):
                var refusal = Zapfleet_V1_Refusal()
                refusal.reason = reason
                refusal.coordinatorProtocolVersion = zapfleetProtocolVersion
                transmit(.refusal(refusal), to: id)
            case .assign(let id, let shard, let claim):
                assign(shard, claim, to: id)
            case .sendJob(let id, let job):
                var external = Zapfleet_V1_ExternalJob()
                external.jobID = job
                external.scenarioYaml = scenarioYAML
                external.scenarioName = scenario.name
                external.guestMemoryBytes = scenario.vm.memoryBytes
                external.vcpus = UInt32(scenario.workload.vcpus)
                transmit(.externalJob(external), to: id)
            case .heartbeat(let id):
                if !transmit(.heartbeat(Zapfleet_V1_Heartbeat()), to: id) {
                    perform(scheduler.process(.unreachable(id), now: monotonicNanoseconds()))
                }
            case .journal(let id, let claim):
                journalResult(claim, worker: scheduler.peers[id]?.name ?? "?")
            case .merge(let id, let claim):
                guard let held = resultAtHand, held.claim == claim else { preconditionFailure("merge of \(claim) without its result") }
                let started = scheduler.shards[Int(claim.shard)].startedAt
                totals.add(
                    held.runs, of: held.result, worker: scheduler.peers[id]?.name ?? "?", startSeconds: Double(started &- start) / 1e9)
            case .mergeExternal(let id):
                if let measurement = externalAtHand {
                    totals.addExternal(
                        measurement, agent: scheduler.peers[id]?.name ?? "?", host: scheduler.peers[id]?.introduction?.host ?? "?")
                }
            case .acknowledge(let id, let acknowledgement):
                pendingAcks.append((id, acknowledgement))
            case .stop(let id, let reason):
                // Results accepted before the end are acknowledged before the stop: a worker that
                // exits on stop must not leave believing its last result was never taken.
                acknowledgeDurably()
                var stop = Zapfleet_V1_Stop()
                stop.reason = reason
                transmit(.stop(stop), to: id)
            case .log(let event):
                record(event)
            }
        }
    }

    /// Logs `event` and appends it to `--events`.
    func record(_ event: FleetEvent) { logger.record(event, events: configuration.events) }

    /// Starts the journal with the plan just made.
    private func startJournal() {
        guard let path = configuration.journalPath else { return }
        do {
            journal = try ResultJournal.create(
                at: path,
                plan: JournalPlan(
                    runID: runID, scenarioYAML: scenarioYAML, kernelNanosecondsPerSPTE: configuration.kernelNanosecondsPerSPTE,
                    shards: scheduler.shards.map {
                        JournalShard(id: $0.shard.id, firstSlot: $0.shard.slice.firstSlot, slotCount: $0.shard.slice.slotCount)
                    }))
        } catch {
            perform(scheduler.process(.journalFailed("\(error)"), now: monotonicNanoseconds()))
        }
    }

    /// Journals the handout (so that a resumed run still takes its result); it is sent once the
    /// journal is synced (``sendAssignments()``), so that a crash cannot lose a handout that went out.
    private func assign(_ shard: Shard, _ claim: AttemptClaim, to id: PeerID) {
        do {
            try journal?.appendHandout(JournaledHandout(shard: claim.shard, attempt: claim.attempt, peer: id))
        } catch {
            perform(scheduler.process(.journalFailed("\(error)"), now: monotonicNanoseconds()))
            return
        }
        var assignment = Zapfleet_V1_Assignment()
        assignment.runID = runID
        assignment.shardID = claim.shard
        assignment.attempt = claim.attempt
        assignment.scenarioYaml = scenarioYAML
        assignment.firstSlot = UInt32(shard.slice.firstSlot)
        assignment.slotCount = UInt32(shard.slice.slotCount)
        assignment.kernelNsPerSpte = configuration.kernelNanosecondsPerSPTE
        assignmentsToSend.append((id, claim, assignment))
    }

    /// Syncs the handouts just journaled (one `fsync` for a whole dispatch), then sends them.
    private func sendAssignments() {
        guard !assignmentsToSend.isEmpty else { return }
        let batch = assignmentsToSend
        assignmentsToSend.removeAll()
        do {
            try journal?.sync()
        } catch {
            perform(scheduler.process(.journalFailed("\(error)"), now: monotonicNanoseconds()))
            return
        }
        for (id, claim, assignment) in batch where !transmit(.assignment(assignment), to: id) {
            perform(scheduler.process(.unreachable(id, unsent: claim), now: monotonicNanoseconds()))
        }
    }

    private func journalResult(_ claim: AttemptClaim, worker: String) {
        guard let held = resultAtHand, held.claim == claim else { preconditionFailure("journal of \(claim) without its result") }
        do {
            try journal?.append(held.result, worker: worker)
        } catch {
            // Not durable, so not accepted, and neither is anything of this batch: the workers
            // keep their results and the run stops.
            pendingAcks.removeAll()
            perform(scheduler.process(.journalFailed("\(error)"), now: monotonicNanoseconds()))
            return
        }
        perform(scheduler.process(.journaled(claim), now: monotonicNanoseconds()))
    }

    /// Syncs the journal, then sends the acknowledgements it now covers: one `fsync` for every
    /// result that arrived together.
    private func acknowledgeDurably() {
        guard !pendingAcks.isEmpty else { return }
        do {
            try journal?.sync()
        } catch {
            pendingAcks.removeAll()
            perform(scheduler.process(.journalFailed("\(error)"), now: monotonicNanoseconds()))
            return
        }
        for (id, acknowledgement) in pendingAcks {
            var ack = Zapfleet_V1_ResultAck()
            ack.runID = runID
            ack.shardID = acknowledgement.claim.shard
            ack.attempt = acknowledgement.claim.attempt
            switch acknowledgement.outcome {
            case .accepted: break
            case .duplicate: ack.duplicate = true
            case .rejected(let reason):
                ack.rejected = true
                ack.reason = String(reason.prefix(500))
            }
            transmit(.resultAck(ack), to: id)
        }
        pendingAcks.removeAll()
    }

    @discardableResult
    private func transmit(_ body: Zapfleet_V1_Envelope.OneOf_Body, to id: PeerID) -> Bool {
        guard let socket else { return false }
        do {
            try socket.send([id, Messages.frame(body)], dontWait: true)
            return true
        } catch {
            logger.debug("\(Messages.name(body)) to \(scheduler.peers[id]?.name ?? "?") not sent: \(error)")
            return false
        }
    }
}
