import Foundation
import Logging
import ZapEngine
import ZapProtocol
import ZapRun
import ZapScenario
import ZeroMQ
import ZapPlatform
import SwiftProtobuf

/// How a worker runs.
public struct WorkerConfiguration: Sendable {
    /// The coordinator's endpoint, e.g. `tcp://10.0.0.1:5555`.
    public var connect: String
    /// A name unique among the run's workers; also the socket identity.
    public var name: String
    /// Page-table memory the worker may use, in bytes; larger shards are refused.
    public var memoryBudgetBytes: UInt64
    /// The largest shard accepted, in bytes of guest memory.
    public var largestShardBytes: UInt64
    /// The most memslots accepted in one shard (0: no limit).
    public var largestShardSlots: Int
    /// Cores reported to the coordinator.
    public var cores: Int
    /// First reconnect delay after the coordinator goes silent, in milliseconds; doubles up to
    /// `reconnectMaximumMilliseconds`.
    public var reconnectInitialMilliseconds: Int
    /// The longest reconnect delay.
    public var reconnectMaximumMilliseconds: Int
    /// The build version sent in hello.
    public var buildVersion: String
    /// The protocol version sent (tests set another to see the refusal).
    public var protocolVersion: UInt32
    /// Leave when the coordinator says stop (otherwise wait for the next run).
    public var exitOnStop: Bool
    /// Progress messages at most this often, in nanoseconds.
    public var progressInterval: UInt64
    /// CURVE keys; nil connects in plain text (to a coordinator without keys).
    public var security: WorkerSecurity?
    /// Where this worker's events go as JSON lines (`--events`); nil writes none.
    public var events: FleetEventLog?

    /// A configuration with the defaults of `zapfleet worker`.
    public init(
        connect: String, name: String, memoryBudgetBytes: UInt64, largestShardBytes: UInt64 = .max, largestShardSlots: Int = 0,
        cores: Int = ProcessInfo.processInfo.activeProcessorCount, reconnectInitialMilliseconds: Int = 250,
        reconnectMaximumMilliseconds: Int = 8000, buildVersion: String = "dev",
        protocolVersion: UInt32 = zapfleetProtocolVersion, exitOnStop: Bool = true,
        progressInterval: UInt64 = 1_000_000_000, security: WorkerSecurity? = nil
    ) {
        self.security = security
        self.connect = connect
        self.name = name
        self.memoryBudgetBytes = memoryBudgetBytes
        self.largestShardBytes = largestShardBytes
        self.largestShardSlots = largestShardSlots
        self.cores = cores
        self.reconnectInitialMilliseconds = reconnectInitialMilliseconds
        self.reconnectMaximumMilliseconds = reconnectMaximumMilliseconds
        self.buildVersion = buildVersion
        self.protocolVersion = protocolVersion
        self.exitOnStop = exitOnStop
        self.progressInterval = progressInterval
    }
}

/// Why a worker left.
public enum WorkerExit: Sendable, Equatable {
    /// The coordinator said the run is over.
    case stopped(reason: String)
    /// The coordinator refused this worker (e.g. a protocol version mismatch).
    case refused(reason: String)
    /// The worker was asked to stop (SIGINT/SIGTERM).
    case cancelled
}

/// A worker: connects a DEALER socket to the coordinator, says hello, runs the shards it is
/// given (one at a time, on a thread of their own, with the engine's vCPU threads), reports
/// progress and results, heartbeats, and reconnects with backoff when the coordinator falls
/// silent. Results stay queued until acknowledged, so a reconnect does not lose one. The
/// socket belongs to the thread that calls ``run()``.
public final class Worker: @unchecked Sendable {
    private let configuration: WorkerConfiguration
    private let context: ZeroMQContext
    private let logger: Logger
    private let cancellation: CancellationFlag
    private let outbox = Outbox()
    /// Results sent but not yet acknowledged, by run and shard: sent again after a reconnect to
    /// the same run, dropped when the worker is welcomed into another.
    private var unacknowledged: [ResultKey: [UInt8]] = [:]
    private var shardThread: OSThread?
    private var shardCancellation: CancellationFlag?
    private var currentShard: AttemptClaim?
    /// The run this worker was last welcomed into.
    private var runID: String?
    /// The socket's routing id: the name and a random part, new for every process, so that no
    /// other peer can take this worker's connection over by guessing it.
    private let routingID: [UInt8]
    private var interval: UInt64 = 1_000_000_000
    private var liveness: UInt64 = 3

    /// A worker with `configuration`.
    public init(
        configuration: WorkerConfiguration, context: ZeroMQContext, logger: Logger,
        cancellation: CancellationFlag = CancellationFlag()
    ) {
        self.configuration = configuration
        self.context = context
        self.logger = logger
        self.cancellation = cancellation
        var generator = SystemRandomNumberGenerator()
        let nonce = (0..<2).map { _ in String(generator.next(), radix: 16).leftPadded(to: 16) }.joined()
        routingID = Array("\(configuration.name.prefix(200))#\(nonce)".utf8)
    }

    struct ResultKey: Hashable {
        var runID: String
        var shard: UInt64
    }

    /// Runs until the coordinator stops or refuses the worker, or the worker is cancelled.
    public func run() throws -> WorkerExit {
        var backoff = configuration.reconnectInitialMilliseconds
        var (socket, monitor) = try connect()
        var welcomed = false
        var handshakeHint = false
        var connectionLost = false
        var lastHeard = monotonicNanoseconds()
        // The poll below waits `pollMilliseconds` at most; a longer gap between passes is this worker held up.
        let pollMilliseconds = 50
        let poll = UInt64(pollMilliseconds) * 1_000_000
        var listening = ListeningClock(allowance: ListeningClock.allowance(poll: poll, interval: interval), now: lastHeard)
        // connect() said hello: the next is due after an interval, not at once.
        var lastSent = monotonicNanoseconds()
        var poller = ZeroMQPoller()
        poller.add(socket)
        poller.add(monitor.socket)
        outbox.wakesUp(&poller)
        defer {
            shardCancellation?.cancel()
            shardThread?.join()
            monitor.close()
            socket.close()
        }

        func transmit(_ frame: [UInt8]) {
            do {
                try socket.send([frame], dontWait: true)
                lastSent = monotonicNanoseconds()
            } catch {
                logger.debug("send failed: \(error)")
            }
        }

        /// Sends what the shard thread left: progress at once, results kept until acknowledged
        /// (and sent again after a reconnect); a finished shard frees the worker.
        func drainOutbox() {
            for item in outbox.drain() {
                switch item {
                case .frame(let run, let bytes):
                    if run == runID { transmit(bytes) }
                case .result(let key, let bytes):
                    // A result of another run than the one this worker is in now is of no use to anyone.
                    guard key.runID == runID else {
                        note(
                            .resultDropped, .info,
                            "dropped the result of shard \(key.shard) of run \(key.runID): this worker is now in run \(runID ?? "none")",
                            ["shard": .number(key.shard), "run_id": .string(key.runID)])
                        continue
                    }
                    unacknowledged[key] = bytes
                    if welcomed { transmit(bytes) }
                case .finished:
                    shardThread?.join()
                    shardThread = nil
                    let finished = currentShard
                    currentShard = nil
                    // A shard of another run has stopped: the coordinator hears this worker is free.
                    if welcomed, let finished, finished.runID != runID { transmit(helloFrame()) }
                }
            }
        }

        while true {
            if cancellation.isCancelled {
                if let shard = currentShard {
                    transmit(frame(Self.abandoned(shard, reason: "worker \(configuration.name) is stopping")))
                }
                return .cancelled
            }
            let now = monotonicNanoseconds()
            let heldUp = listening.look(now: now)
            if heldUp > 0 {
                // What the coordinator sent meanwhile waits unread: not its silence.
                lastHeard = min(now, lastHeard &+ heldUp)
                if heldUp >= interval {
                    note(
                        .heldUp, .warning,
                        "this worker was held up for \(heldUp / 1_000_000) ms without reading (the machine); that time is not counted as the coordinator's silence",
                        ["held_up_ms": .number(heldUp / 1_000_000)])
                }
            }
            // Paranoid Pirate: a silent coordinator is presumed gone; start over with a new socket.
            if now &- lastHeard > interval * liveness {
                note(
                    .coordinatorSilent, .warning,
                    "coordinator silent for \((now &- lastHeard) / 1_000_000) ms; reconnecting in \(backoff) ms",
                    ["silent_ms": .number((now &- lastHeard) / 1_000_000), "backoff_ms": .number(backoff)])
                monitor.close()
                socket.close()
                sleep(milliseconds: backoff)
                backoff = min(backoff * 2, configuration.reconnectMaximumMilliseconds)
                (socket, monitor) = try connect()
                poller = ZeroMQPoller()
                poller.add(socket)
                poller.add(monitor.socket)
                outbox.wakesUp(&poller)
                welcomed = false
                lastHeard = monotonicNanoseconds()
                lastSent = lastHeard
                _ = listening.look(now: lastHeard)  // the backoff's sleep was chosen, not a hold-up
                continue
            }
            drainOutbox()
            // Until welcomed, hello is the only message a coordinator takes: repeat it instead of a heartbeat.
            if now &- lastSent >= interval { transmit(welcomed ? frame(.heartbeat(Zapfleet_V1_Heartbeat())) : helloFrame()) }

            // The outbox's signal ends the wait as soon as the shard thread leaves something (a
            // result sent at the next timeout instead kept this worker idle for up to 50 ms a shard).
            let ready = try poller.poll(timeoutMilliseconds: pollMilliseconds)
            outbox.clearWake()
            if ready[1] {
                for event in try monitor.drain() {
                    switch event {
                    case .authenticationRefused(let status):
                        let key = configuration.security.map { "key \($0.keys.publicKey)" } ?? "plain-text connection"
                        let reason =
                            "the coordinator's authentication refused this worker's \(key) (ZAP status \(status)); ask its operator to add this worker's .pub file to --allow-keys"
                        note(.refusedByCoordinator, .error, reason, ["reason": .string(reason)])
                        return .refused(reason: reason)
                    case .disconnected where welcomed:
                        // libzmq reconnects by itself; the coordinator on the other side may be a
                        // new one (restarted with --resume), so say hello again once it is back.
                        welcomed = false
                        connectionLost = true
                        note(.connectionLost, .warning, "lost the connection to the coordinator; reconnecting")
                    case .handshakeSucceeded where connectionLost:
                        connectionLost = false
                        transmit(helloFrame())
                    case .handshakeFailed, .disconnected:
                        // A CURVE/plain-text mismatch or a wrong coordinator key ends the handshake
                        // without a word; say once what usually causes it.
                        guard !welcomed && !handshakeHint else { continue }
                        handshakeHint = true
                        logger.warning(
                            "the connection to \(configuration.connect) closed during the handshake: do the coordinator and this worker agree on CURVE (--key, --coordinator-key)? Retrying."
                        )
                    default:
                        break
                    }
                }
            }
            guard ready[0] else { continue }
            while let message = try socket.receive(dontWait: true, maximumFrames: 2) {
                guard message.frames.count == 1, let envelope = Messages.decode(message.frames[0]) else {
                    note(
                        .coordinatorFrameDropped, .warning, "dropped a malformed frame from the coordinator",
                        ["reason": .string("malformed")])
                    continue
                }
                lastHeard = monotonicNanoseconds()
                if case .refusal(let refusal) = envelope.body {
                    note(
                        .refusedByCoordinator, .error, "refused by the coordinator: \(refusal.reason)", ["reason": .string(refusal.reason)])
                    return .refused(reason: refusal.reason)
                }
                // Another protocol version would be misread: say both and leave (exit 3).
                guard envelope.protocolVersion == configuration.protocolVersion else {
                    let reason =
                        "the coordinator at \(configuration.connect) speaks protocol version \(envelope.protocolVersion), this worker \(configuration.protocolVersion); run the same zapfleet version on coordinator and workers"
                    note(.refusedByCoordinator, .error, reason, ["reason": .string(reason)])
                    return .refused(reason: reason)
                }
                switch envelope.body {
                case .welcome(let welcome):
                    welcomed = true
                    backoff = configuration.reconnectInitialMilliseconds
                    // Clamped, so that a coordinator's extreme values cannot overflow interval × liveness.
                    interval = UInt64(min(max(10, welcome.heartbeatIntervalMs), 3_600_000)) * 1_000_000
                    liveness = UInt64(min(max(2, welcome.heartbeatLiveness), 1000))
                    listening.allowance = ListeningClock.allowance(poll: poll, interval: interval)
                    // Hellos are repeated until one is answered: several welcomes can come back.
                    if welcome.runID != runID {
                        note(
                            .joinedRun, .info, "joined run \(welcome.runID) at \(configuration.connect)",
                            ["run_id": .string(welcome.runID), "coordinator": .string(configuration.connect)])
                    }
                    join(run: welcome.runID)
                    for bytes in unacknowledged.values { transmit(bytes) }
                case .assignment(let assignment):
                    // A shard that just ended is ended here first: its result may have reached the
                    // coordinator, which hands out the next shard, before this thread drained the end.
                    drainOutbox()
                    start(assignment, transmit: transmit)
                case .resultAck(let ack):
                    unacknowledged[ResultKey(runID: ack.runID, shard: ack.shardID)] = nil
                    let outcome = ack.rejected ? "refused" : ack.duplicate ? "duplicate" : "accepted"
                    let message =
                        ack.rejected
                        ? "shard \(ack.shardID) attempt \(ack.attempt): the coordinator refused our result: \(ack.reason.prefix(300))"
                        : ack.duplicate
                            ? "shard \(ack.shardID): the coordinator already had a result; ours was dropped"
                            : "shard \(ack.shardID) attempt \(ack.attempt): result accepted"
                    var fields: [String: FleetEvent.Value] = [
                        "shard": .number(ack.shardID), "attempt": .number(ack.attempt), "outcome": .string(outcome)
                    ]
                    if ack.rejected { fields["reason"] = .string(String(ack.reason.prefix(300))) }
                    note(.resultAcknowledged, ack.rejected ? .warning : ack.duplicate ? .info : .debug, message, fields)
                case .stop(let stop):
                    note(.stopped, .info, "coordinator says stop: \(stop.reason)", ["reason": .string(stop.reason)])
                    if configuration.exitOnStop || stop.reason != "run complete" {
                        // A shard cut short is given back, never reported: its part-measurement
                        // would make the totals differ from an uninterrupted run's.
                        shardCancellation?.cancel()
                        if let thread = shardThread {
                            thread.join()
                            shardThread = nil
                            // What the shard thread left goes out (a give-back, or a result that
                            // finished just in time), and the shard is over (a worker that stays
                            // must not look busy).
                            drainOutbox()
                        }
                        if configuration.exitOnStop { return .stopped(reason: stop.reason) }
                    }
                case .heartbeat:
                    break
                default:
                    note(
                        .coordinatorFrameDropped, .warning, "dropped an unexpected \(Messages.name(envelope.body)) from the coordinator",
                        ["reason": .string("unexpected \(Messages.name(envelope.body))")])
                }
            }
        }
    }

    private func frame(_ body: Zapfleet_V1_Envelope.OneOf_Body) -> [UInt8] { Self.frame(body, version: configuration.protocolVersion) }

    /// One envelope holding `body`, claiming protocol `version` (the shard thread builds its own frames too).
    static func frame(_ body: Zapfleet_V1_Envelope.OneOf_Body, version: UInt32) -> [UInt8] {
        var envelope = Messages.envelope(body)
        envelope.protocolVersion = version
        return (try? envelope.serializedBytes()) ?? []
    }

    /// Giving back `claim`; `busyWith` when only because the worker still runs that attempt.
    static func abandoned(_ claim: AttemptClaim, reason: String, busyWith: AttemptClaim? = nil) -> Zapfleet_V1_Envelope.OneOf_Body {
        var abandoned = Zapfleet_V1_ShardAbandoned()
        abandoned.runID = claim.runID
        abandoned.shardID = claim.shard
        abandoned.attempt = claim.attempt
        abandoned.reason = reason
        if let busyWith {
            abandoned.busyWithShardID = busyWith.shard
            abandoned.busyWithAttempt = busyWith.attempt
        }
        return .abandoned(abandoned)
    }

    private func connect() throws -> (ZeroMQSocket, SocketMonitor) {
        let socket = try ZeroMQSocket(context, type: .dealer)
        if let security = configuration.security {
            try socket.makeCurveClient(security.keys, server: security.coordinatorKey)
        }
        let monitor = try SocketMonitor(socket)
        try socket.setOption(SocketOption.identity, routingID)
        try socket.setOption(SocketOption.reconnectInterval, Int32(configuration.reconnectInitialMilliseconds))
        try socket.setOption(SocketOption.reconnectIntervalMaximum, Int32(configuration.reconnectMaximumMilliseconds))
        try socket.setOption(SocketOption.maximumMessageSize, Int64(64 << 20))
        // Give a last result a moment to leave when the worker exits right after sending it.
        try socket.setOption(SocketOption.linger, Int32(2000))
        try socket.connect(configuration.connect)
        try socket.send([helloFrame()], dontWait: true)
        return (socket, monitor)
    }

    /// Hello: who this worker is, what it can take, and the shard it still runs, if any.
    private func helloFrame() -> [UInt8] {
        var hello = Zapfleet_V1_Hello()
        hello.buildVersion = configuration.buildVersion
        hello.hostName = ProcessInfo.processInfo.hostName
        hello.cores = UInt32(configuration.cores)
        hello.memoryBudgetBytes = configuration.memoryBudgetBytes
        hello.largestShardBytes = configuration.largestShardBytes
        hello.workerName = configuration.name
        hello.largestShardSlots = UInt32(configuration.largestShardSlots)
        hello.role = .simulator
        if let running = currentShard {
            hello.runningShardID = running.shard
            hello.runningAttempt = running.attempt
            hello.runningRunID = running.runID
        }
        return frame(.hello(hello))
    }

    /// Logs an event of this worker (its name added) and appends it to `--events`.
    private func note(_ name: FleetEvent.Name, _ level: FleetEvent.Level, _ message: String, _ fields: [String: FleetEvent.Value] = [:]) {
        Self.note(name, level, message, fields, worker: configuration.name, logger: logger, events: configuration.events)
    }

    /// Logs an event of worker `worker` (its name added to `fields`) and appends it to `events`;
    /// the shard thread, which holds no worker, calls this too.
    private static func note(
        _ name: FleetEvent.Name, _ level: FleetEvent.Level, _ message: String, _ fields: [String: FleetEvent.Value],
        worker: String, logger: Logger, events: FleetEventLog?
    ) {
        var fields = fields
        fields["worker"] = .string(worker)
        logger.record(FleetEvent(name, level, message, fields), events: events)
    }

    /// Welcomed into `run`: results and a running shard of any other run are dropped.
    private func join(run: String) {
        runID = run
        let stale = unacknowledged.keys.filter { $0.runID != run }
        for key in stale {
            unacknowledged[key] = nil
            note(
                .resultDropped, .info,
                "dropped the unacknowledged result of shard \(key.shard) of run \(key.runID): this worker is now in run \(run)",
                ["shard": .number(key.shard), "run_id": .string(key.runID)])
        }
        if let running = currentShard, running.runID != run {
            // Its result would be dropped: stop it. The coordinator counts this worker busy with
            // it until the hello that follows its end (``drainOutbox``).
            note(
                .shardStopped, .info, "stopping shard \(running.shard) of run \(running.runID): this worker is now in run \(run)",
                ["shard": .number(running.shard), "attempt": .number(running.attempt), "run_id": .string(running.runID)])
            shardCancellation?.cancel()
        }
    }

    /// Validates an assignment and runs it on a thread, or says why not.
    private func start(_ assignment: Zapfleet_V1_Assignment, transmit: ([UInt8]) -> Void) {
        let claim = AttemptClaim(runID: assignment.runID, shard: assignment.shardID, attempt: assignment.attempt)
        func abandon(_ reason: String) {
            note(
                .shardRefusedByWorker, .warning, "refusing shard \(assignment.shardID): \(reason)",
                ["shard": .number(assignment.shardID), "attempt": .number(assignment.attempt), "reason": .string(reason)])
            transmit(frame(Self.abandoned(claim, reason: reason, busyWith: currentShard)))
        }
        guard currentShard == nil else { return abandon("busy with shard \(currentShard!.shard)") }
        guard assignment.runID == runID else {
            return abandon("the assignment is for run \(assignment.runID.prefix(40)), this worker is in run \(runID ?? "none")")
        }
        let scenario: Scenario
        do {
            scenario = try ScenarioParser.parse(assignment.scenarioYaml, file: "assignment \(assignment.shardID)")
        } catch {
            return abandon("the scenario does not parse: \(error)")
        }
        let slice = MemorySlice(firstSlot: Int(assignment.firstSlot), slotCount: Int(assignment.slotCount))
        guard slice.slotCount > 0, slice.firstSlot + slice.slotCount <= scenario.memslotCount else {
            return abandon("\(slice) lies outside the scenario's \(scenario.memslotCount) memslots")
        }
        guard configuration.largestShardSlots == 0 || slice.slotCount <= configuration.largestShardSlots else {
            return abandon("\(slice.slotCount) memslots exceed this worker's --slots \(configuration.largestShardSlots)")
        }
        let shard = Shard(id: assignment.shardID, slice: slice, of: scenario)
        guard shard.bytes <= configuration.largestShardBytes, shard.estimatedTableBytes <= configuration.memoryBudgetBytes else {
            return abandon(
                "the shard (\(Quantities.formatSize(shard.bytes))) needs \(Quantities.describeSize(Double(shard.estimatedTableBytes))) of page tables; this worker's budget is \(Quantities.describeSize(Double(configuration.memoryBudgetBytes)))"
            )
        }
        guard assignment.kernelNsPerSpte > 0, assignment.kernelNsPerSpte.isFinite else { return abandon("invalid kernel cost per SPTE") }

        currentShard = claim
        let flag = CancellationFlag()
        shardCancellation = flag
        let outbox = self.outbox
        let shardLogger = self.logger
        // At least once a heartbeat interval, so that the coordinator's progress deadline (in heartbeat
        // intervals) always sees a live shard move.
        let interval = min(configuration.progressInterval, self.interval)
        let progressFrame: @Sendable (RunProgress) -> [UInt8] = { [configuration] update in
            var report = Zapfleet_V1_Progress()
            report.shardID = assignment.shardID
            report.attempt = assignment.attempt
            report.policy = update.policy.rawValue
            report.step = UInt32(update.step)
            report.steps = UInt32(update.steps)
            report.stepName = update.stepName
            report.sptesInstalled = UInt64(update.sptesInstalled)
            report.sptesZapped = UInt64(update.sptesZapped)
            report.elapsedNs = update.elapsedNanoseconds
            report.runID = assignment.runID
            return Worker.frame(.progress(report), version: configuration.protocolVersion)
        }
        let resultVersion = configuration.protocolVersion
        note(
            .shardStarted, .info, "running shard \(assignment.shardID) attempt \(assignment.attempt): \(slice) of \(scenario.name)",
            [
                "shard": .number(assignment.shardID), "attempt": .number(assignment.attempt), "first_slot": .number(slice.firstSlot),
                "slots": .number(slice.slotCount)
            ])
        let events = configuration.events
        let workerName = configuration.name
        let shardFields: [String: FleetEvent.Value] = ["shard": .number(assignment.shardID), "attempt": .number(assignment.attempt)]
        shardThread = OSThread(name: "shard") {
            let start = monotonicNanoseconds()
            let runner = ScenarioRunner(
                scenario: scenario,
                options: RunOptions(
                    kernelNanosecondsPerSPTE: assignment.kernelNsPerSpte, slice: slice, cancellation: flag,
                    progress: { outbox.push(.frame(assignment.runID, progressFrame($0))) }, progressInterval: interval))
            var result = Zapfleet_V1_ShardResult()
            result.runID = assignment.runID
            result.shardID = assignment.shardID
            result.attempt = assignment.attempt
            // The last word and the end go together: the socket's thread wakes for the first push,
            // and a coordinator that heard the word must find the worker free.
            func giveBack(_ reason: String) {
                outbox.push(
                    .frame(assignment.runID, Worker.frame(Worker.abandoned(claim, reason: reason), version: resultVersion)), .finished)
            }
            do {
                for policy in scenario.policies {
                    let run = try runner.run(policy: policy)
                    // The VM and its threads are gone: their arenas' free memory goes back before the next VM.
                    ProcessMemory.returnFreeMemory()
                    // Cut short (the run or the worker stopping): given back, so that it runs again in full.
                    guard run.complete, !flag.isCancelled else {
                        Worker.note(
                            .shardStopped, .info, "shard \(assignment.shardID) stopped before its end; giving it back", shardFields,
                            worker: workerName, logger: shardLogger, events: events)
                        return giveBack("stopped before the shard's end")
                    }
                    result.policies.append(ResultCoding.encode(run))
                }
            } catch {
                Worker.note(
                    .shardFailed, .error, "shard \(assignment.shardID) failed: \(error)",
                    shardFields.merging(["reason": .string("\(error)")]) { $1 },
                    worker: workerName, logger: shardLogger, events: events)
                return giveBack("the engine failed: \(error)")
            }
            result.wallNs = monotonicNanoseconds() - start
            outbox.push(
                .result(
                    ResultKey(runID: assignment.runID, shard: assignment.shardID), Worker.frame(.result(result), version: resultVersion)),
                .finished)
            Worker.note(
                .shardFinished, .info, "shard \(assignment.shardID) finished in \(Quantities.formatDuration(Double(result.wallNs)))",
                shardFields.merging(["wall_ns": .number(result.wallNs)]) { $1 }, worker: workerName, logger: shardLogger, events: events)
        }
    }

    private func sleep(milliseconds: Int) {
        var remaining = milliseconds
        while remaining > 0 && !cancellation.isCancelled {
            usleep(UInt32(min(remaining, 100)) * 1000)
            remaining -= 100
        }
    }
}

/// Messages from the shard thread to the socket's thread.
final class Outbox: @unchecked Sendable {
    enum Item {
        /// A frame of run `runID` (progress, a give-back): sent only while the worker is in that run.
        case frame(String, [UInt8])
        case result(Worker.ResultKey, [UInt8])
        case finished

    }

    private let mutex = PThreadMutex()
    private var items: [Item] = []
    /// Raised on every push; nil if the process had no descriptor to spare (then the socket's
    /// thread finds items at its poll timeout).
    private let wake = try? WakeSignal()

    /// Adds `items` at once: a drain sees all of them or none.
    func push(_ items: Item...) {
        mutex.withLock { self.items.append(contentsOf: items) }
        wake?.signal()
    }

    /// Makes `poller` return when something is pushed.
    func wakesUp(_ poller: inout ZeroMQPoller) {
        if let wake { poller.add(fileDescriptor: wake.fileDescriptor) }
    }

    /// Lowers the signal; call before draining, so that a push after the drain raises it again.
    func clearWake() { wake?.clear() }

    func drain() -> [Item] {
        mutex.withLock {
            defer { items.removeAll() }
            return items
        }
    }
}
