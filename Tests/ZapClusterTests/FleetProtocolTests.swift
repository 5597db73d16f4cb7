import Foundation
import Logging
import Testing
import ZapCluster
import ZapEngine
import ZapProtocol
import ZapRun
import ZapScenario
import ZeroMQ
import ZapPlatform
import Histogram
import SwiftProtobuf

/// The coordinator and workers over real libzmq sockets, with real Protobuf frames.
@Suite("Fleet protocol", .serialized, .timeLimit(.minutes(3)))
struct FleetProtocolTests {
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    static let smallScenario = """
        name: small
        vm: {memory: 8GiB, memslot: 1GiB}
        workload: {vcpus: 2}
        timeline: [populate, reset_vcpus, {delete_memslots: {fraction: 0.5}}]
        policies: [sync, async]
        """

    /// Runs a coordinator on its own thread; returns a handle to its endpoint and outcome.
    final class RunningCoordinator: @unchecked Sendable {
        let coordinator: Coordinator
        private var outcome: Result<FleetRunOutcome, Error>?
        private var thread: OSThread?

        init(scenario: Scenario, configuration: CoordinatorConfiguration, context: ZeroMQContext) {
            coordinator = Coordinator(scenario: scenario, configuration: configuration, context: context, logger: FleetProtocolTests.logger)
            thread = OSThread(name: "coordinator") { [self] in
                outcome = Result { try coordinator.run() }
            }
        }

        var endpoint: String { coordinator.waitForEndpoint() }

        func finish() throws -> FleetRunOutcome {
            thread?.join()
            return try outcome!.get()
        }
    }

    static func workerThread(_ configuration: WorkerConfiguration, context: ZeroMQContext) -> (OSThread, () -> WorkerExit?) {
        final class Box: @unchecked Sendable { var exit: WorkerExit? }
        let box = Box()
        let thread = OSThread(name: "worker") {
            box.exit = try? Worker(configuration: configuration, context: context, logger: FleetProtocolTests.logger).run()
        }
        return (thread, { box.exit })
    }

    @Test("a worker with another protocol version is refused with a clear reason, on both sides")
    func versionMismatch() throws {
        let context = try ZeroMQContext()
        let scenario = try ScenarioParser.parse(Self.smallScenario, file: "small")
        let running = RunningCoordinator(
            scenario: scenario,
            configuration: CoordinatorConfiguration(
                bind: "tcp://127.0.0.1:*", expectWorkers: 1, waitSeconds: 2, heartbeatIntervalMilliseconds: 200), context: context)
        let (thread, exit) = Self.workerThread(
            WorkerConfiguration(
                connect: running.endpoint, name: "old", memoryBudgetBytes: 1 << 30,
                protocolVersion: zapfleetProtocolVersion + 1), context: context)
        thread.join()
        guard case .refused(let reason)? = exit() else {
            Issue.record("worker was not refused: \(String(describing: exit()))")
            return
        }
        #expect(reason.contains("protocol version \(zapfleetProtocolVersion + 1)"))
        let outcome = try running.finish()
        #expect(outcome.failure?.code == .noWorkerJoined && outcome.failure?.description.contains("no worker joined") == true)
        #expect(outcome.fleet.workers.first?.state == "refused")
    }

    @Test("shards are handed out, run and merged exactly: the merged counts are the sum of the shards'")
    func shardsMerge() throws {
        let context = try ZeroMQContext()
        let scenario = try ScenarioParser.parse(Self.smallScenario, file: "small")
        let running = RunningCoordinator(
            scenario: scenario,
            configuration: CoordinatorConfiguration(
                bind: "inproc://merge", expectWorkers: 2, waitSeconds: 20, heartbeatIntervalMilliseconds: 200,
                shardBytes: 2 << 30), context: context)
        let workers = (0..<2).map { index in
            Self.workerThread(
                WorkerConfiguration(
                    connect: "inproc://merge", name: "w\(index)", memoryBudgetBytes: 1 << 30,
                    progressInterval: 50_000_000), context: context)
        }
        let outcome = try running.finish()
        for (thread, _) in workers { thread.join() }
        #expect(outcome.failure == nil)
        #expect(outcome.complete)
        #expect(outcome.fleet.shards.count == 4)
        #expect(Set(outcome.fleet.shards.map(\.worker)).count == 2, "both workers took shards")
        for run in outcome.runs {
            let policy = run.policy.rawValue
            let sum = outcome.fleet.shards.reduce(0) { $0 + ($1.sptesZapped[policy] ?? 0) }
            #expect(run.statistics.sptesZapped == sum, "\(policy)")
            #expect(run.statistics.sptesInstalled == run.statistics.sptesZapped)
            #expect(run.statistics.sptesZapped == 2 << 20, "8 GiB of 4 KiB pages")
            #expect(run.recorder.histogram(.reset).totalCount == 4 * 2, "two vCPUs' resets in each of four shards")
            #expect(run.violations.isEmpty)
        }
        // Under sync the whole-VM reset is the sum of the slices' zaps; its projection covers every SPTE.
        let syncReset = try #require(outcome.fleet.wholeVm.first { $0.policy == "sync" && $0.name == "reset_vcpus" })
        #expect(syncReset.sptesZappedInline == 2 << 20)
        #expect(syncReset.projectedNs == UInt64(Double(2 << 20) * 52))
        let asyncReset = try #require(outcome.fleet.wholeVm.first { $0.policy == "async" && $0.name == "reset_vcpus" })
        #expect(asyncReset.projectedNs == 0)
    }

    @Test("a worker too small for one memslot is left out of the plan instead of sinking the run")
    func tooSmallWorker() throws {
        let context = try ZeroMQContext()
        let scenario = try ScenarioParser.parse(Self.smallScenario, file: "small")
        let running = RunningCoordinator(
            scenario: scenario,
            configuration: CoordinatorConfiguration(
                bind: "inproc://small", expectWorkers: 2, waitSeconds: 20, heartbeatIntervalMilliseconds: 200), context: context)
        let tiny = Self.workerThread(
            WorkerConfiguration(connect: "inproc://small", name: "tiny", memoryBudgetBytes: 1024), context: context)
        let able = Self.workerThread(
            WorkerConfiguration(connect: "inproc://small", name: "able", memoryBudgetBytes: 1 << 30), context: context)
        let outcome = try running.finish()
        tiny.0.join()
        able.0.join()
        #expect(outcome.failure == nil)
        #expect(outcome.complete)
        #expect(outcome.fleet.shards.allSatisfy { $0.worker == "able" })
        #expect(outcome.fleet.workers.first { $0.name == "tiny" }?.shardsCompleted == 0)
        #expect(tiny.1() == .stopped(reason: "run complete"))
    }

    /// A peer that speaks the protocol by hand, to send what a real worker never would.
    final class RawPeer {
        let socket: ZeroMQSocket
        init(context: ZeroMQContext, endpoint: String, name: String) throws {
            socket = try ZeroMQSocket(context, type: .dealer)
            try socket.setOption(SocketOption.identity, Array(name.utf8))
            try socket.connect(endpoint)
        }
        func send(_ body: Zapfleet_V1_Envelope.OneOf_Body) throws {
            var envelope = Zapfleet_V1_Envelope()
            envelope.protocolVersion = zapfleetProtocolVersion
            envelope.body = body
            try socket.send([try envelope.serializedBytes()])
        }
        func sendRaw(_ frames: [[UInt8]]) throws { try socket.send(frames) }
        /// Says hello as a worker named `name` with a 1 GiB budget.
        func sayHello(as name: String) throws {
            var hello = Zapfleet_V1_Hello()
            hello.workerName = name
            hello.hostName = "test"
            hello.cores = 1
            hello.memoryBudgetBytes = 1 << 30
            hello.largestShardBytes = .max
            try send(.hello(hello))
        }
        private var stashed: [Zapfleet_V1_Envelope.OneOf_Body] = []
        /// Keeps a message for a later `next()`.
        func stash(_ body: Zapfleet_V1_Envelope.OneOf_Body) { stashed.append(body) }
        /// The next message that is not a heartbeat.
        func next(timeoutMilliseconds: Int = 10_000) throws -> Zapfleet_V1_Envelope.OneOf_Body? {
            if !stashed.isEmpty { return stashed.removeFirst() }
            var poller = ZeroMQPoller()
            poller.add(socket)
            let deadline = Date().addingTimeInterval(Double(timeoutMilliseconds) / 1000)
            while Date() < deadline {
                guard try poller.poll(timeoutMilliseconds: 100)[0], let message = try socket.receive(dontWait: true) else { continue }
                let envelope = try Zapfleet_V1_Envelope(serializedBytes: message.frames[0])
                if case .heartbeat = envelope.body { continue }
                return envelope.body
            }
            return nil
        }
    }

    @Test(
        "assignment, result and acknowledgement; a second result for the same shard is dropped as a duplicate; garbage is counted and dropped"
    )
    func duplicateAndGarbage() throws {
        let context = try ZeroMQContext()
        let scenario = try ScenarioParser.parse(Self.smallScenario, file: "small")
        // Two shards, so that the run is still going when the duplicate of the first arrives;
        // a long heartbeat, so that computing a shard in the test does not look like silence.
        let running = RunningCoordinator(
            scenario: scenario,
            configuration: CoordinatorConfiguration(
                bind: "tcp://127.0.0.1:*", expectWorkers: 1, waitSeconds: 20, heartbeatIntervalMilliseconds: 2000,
                shardBytes: 4 << 30), context: context)
        let endpoint = running.endpoint

        // Garbage first, from a peer that never says hello.
        let stranger = try RawPeer(context: context, endpoint: endpoint, name: "stranger")
        try stranger.sendRaw([[0xde, 0xad, 0xbe, 0xef]])
        try stranger.sendRaw([[1], [2], [3]])

        let peer = try RawPeer(context: context, endpoint: endpoint, name: "raw")
        try peer.sayHello(as: "raw")
        guard case .welcome? = try peer.next() else { Issue.record("no welcome"); return }

        /// Runs the next assignment for real and returns its result.
        func runAssignment() throws -> Zapfleet_V1_ShardResult? {
            guard case .assignment(let assignment)? = try peer.next() else { return nil }
            #expect(assignment.attempt == 1)
            #expect(assignment.slotCount == 4)
            let shardScenario = try ScenarioParser.parse(assignment.scenarioYaml, file: "assignment")
            let runner = ScenarioRunner(
                scenario: shardScenario,
                options: RunOptions(
                    slice: MemorySlice(firstSlot: Int(assignment.firstSlot), slotCount: Int(assignment.slotCount))))
            var result = Zapfleet_V1_ShardResult()
            result.runID = assignment.runID
            result.shardID = assignment.shardID
            result.attempt = assignment.attempt
            result.policies = try shardScenario.policies.map { ResultCoding.encode(try runner.run(policy: $0)) }
            return result
        }

        let first = try #require(try runAssignment())
        try peer.send(.result(first))
        try peer.send(.result(first))
        var acks: [Zapfleet_V1_ResultAck] = []
        var others: [Zapfleet_V1_Envelope.OneOf_Body] = []
        while acks.count < 2, let body = try peer.next(timeoutMilliseconds: 10_000) {
            if case .resultAck(let ack) = body { acks.append(ack) } else { others.append(body) }
        }
        // The next assignment may come between the two acknowledgements.
        for body in others { peer.stash(body) }
        #expect(acks.map(\.duplicate) == [false, true])

        let second = try #require(try runAssignment())
        try peer.send(.result(second))
        let outcome = try running.finish()
        #expect(outcome.complete)
        #expect(outcome.fleet.duplicatesDropped == 1)
        #expect(outcome.fleet.badFrames >= 2)
        #expect(outcome.fleet.workers.first { $0.name == "raw" }?.duplicatesDropped == 1)
        #expect(outcome.runs.allSatisfy { $0.statistics.sptesZapped == 2 << 20 }, "counted once, not twice")
    }

    @Test("a result with a corrupt histogram is refused, its attempt revoked and the shard run again; stray ids are counted and dropped")
    func corruptHistogram() throws {
        let context = try ZeroMQContext()
        let scenario = try ScenarioParser.parse(Self.smallScenario, file: "small")
        let running = RunningCoordinator(
            scenario: scenario,
            configuration: CoordinatorConfiguration(
                bind: "tcp://127.0.0.1:*", expectWorkers: 1, waitSeconds: 20, heartbeatIntervalMilliseconds: 500), context: context)
        let peer = try RawPeer(context: context, endpoint: running.endpoint, name: "liar")
        try peer.sayHello(as: "liar")
        _ = try peer.next()
        guard case .assignment(let assignment)? = try peer.next() else { Issue.record("no assignment"); return }
        let shardScenario = try ScenarioParser.parse(assignment.scenarioYaml, file: "assignment")
        let runner = ScenarioRunner(scenario: shardScenario, options: RunOptions(slice: MemorySlice(firstSlot: 0, slotCount: 8)))
        var result = Zapfleet_V1_ShardResult()
        result.runID = assignment.runID
        result.shardID = assignment.shardID
        result.attempt = 1
        result.policies = try shardScenario.policies.map { ResultCoding.encode(try runner.run(policy: $0)) }
        var corrupt = result
        corrupt.policies[0].histograms[0].hdrV2 = Data([0x1c, 0x84, 0x93, 0x14, 0, 0, 0, 9, 1, 2, 3])
        try peer.send(.result(corrupt))
        // The refusal names the field, and the shard comes back as a new attempt.
        var ack: Zapfleet_V1_ResultAck?
        var retry: Zapfleet_V1_Assignment?
        while ack == nil || retry == nil, let body = try peer.next() {
            if case .resultAck(let value) = body { ack = value }
            if case .assignment(let value) = body { retry = value }
        }
        #expect(ack?.rejected == true)
        #expect(ack?.reason.contains("histogram") == true, "\(ack?.reason ?? "")")
        #expect(retry?.attempt == 2)
        // Ids no shard has, up to the largest a field can carry.
        var stray = result
        stray.shardID = .max
        try peer.send(.result(stray))
        var abandoned = Zapfleet_V1_ShardAbandoned()
        abandoned.runID = assignment.runID
        abandoned.shardID = .max
        try peer.send(.abandoned(abandoned))
        // The revoked first attempt no longer counts; the second does.
        try peer.send(.result(result))
        result.attempt = 2
        try peer.send(.result(result))
        let outcome = try running.finish()
        #expect(outcome.complete)
        #expect(outcome.fleet.badFrames == 2, "the stray result and give-back")
        #expect(outcome.fleet.resultsRefused == 3, "the corrupt, the stray and the revoked attempt's")
        #expect(outcome.fleet.duplicatesDropped == 0)
        #expect(outcome.fleet.shards.first?.attempts == 2)
    }

    @Test(
        "an external agent gets a job, not a shard; results for another job, with unknown operations or impossible samples are dropped and counted; a valid one is its column"
    )
    func externalAgentValidation() throws {
        let context = try ZeroMQContext()
        let scenario = try ScenarioParser.parse(Self.smallScenario, file: "small")
        var configuration = CoordinatorConfiguration(
            bind: "tcp://127.0.0.1:*", expectWorkers: 1, waitSeconds: 20,
            heartbeatIntervalMilliseconds: 500)
        configuration.expectAgents = 1
        let running = RunningCoordinator(scenario: scenario, configuration: configuration, context: context)
        let agent = try RawPeer(context: context, endpoint: running.endpoint, name: "agent")
        var hello = Zapfleet_V1_Hello()
        hello.workerName = "agent"
        hello.cores = 1
        hello.memoryBudgetBytes = 1
        hello.role = .externalAgent
        try agent.send(.hello(hello))
        guard case .welcome? = try agent.next() else { Issue.record("no welcome"); return }
        guard case .externalJob(let job)? = try agent.next() else { Issue.record("no job"); return }
        #expect(job.scenarioName == "small")
        #expect(job.guestMemoryBytes == 8 << 30)
        let worker = Self.workerThread(
            WorkerConfiguration(connect: running.endpoint, name: "w", memoryBudgetBytes: 1 << 30), context: context)

        func result(job id: UInt32, operation: String, samples: [UInt64]) -> Zapfleet_V1_Envelope.OneOf_Body {
            var result = Zapfleet_V1_ExternalResult()
            result.jobID = id
            var operationSamples = Zapfleet_V1_OperationSamples()
            operationSamples.operation = operation
            operationSamples.nanoseconds = samples
            result.operations = [operationSamples]
            return .externalResult(result)
        }
        try agent.send(result(job: job.jobID + 1, operation: "reset", samples: [1]))
        try agent.send(result(job: job.jobID, operation: "teleport", samples: [1]))
        try agent.send(result(job: job.jobID, operation: "reset", samples: [5, .max]))
        try agent.send(result(job: job.jobID, operation: "reset", samples: [1000, 2000, 3000]))
        let outcome = try running.finish()
        worker.0.join()
        #expect(outcome.complete)
        #expect(outcome.fleet.badFrames == 3)
        #expect(outcome.fleet.shards.allSatisfy { $0.worker == "w" }, "the agent took no shard")
        let external = try #require(outcome.external.first)
        #expect(outcome.external.count == 1)
        #expect(external.name == "external")
        var expected = LatencyHistogram.makeLatency()
        for value: UInt64 in [1000, 2000, 3000] { _ = expected.record(value) }
        let reset = try #require(external.histograms[.reset])
        #expect(LatencySummary(reset) == LatencySummary(expected), "exactly the valid result's samples")
    }

    @Test("when every worker is gone for as long as the run waited for them, the run fails with what to do instead of waiting forever")
    func everyWorkerGone() throws {
        let context = try ZeroMQContext()
        let scenario = try ScenarioParser.parse(Self.smallScenario, file: "small")
        let running = RunningCoordinator(
            scenario: scenario,
            configuration: CoordinatorConfiguration(
                bind: "tcp://127.0.0.1:*", expectWorkers: 1, waitSeconds: 1, heartbeatIntervalMilliseconds: 100, heartbeatLiveness: 2),
            context: context)
        let peer = try RawPeer(context: context, endpoint: running.endpoint, name: "vanishing")
        try peer.sayHello(as: "vanishing")
        guard case .welcome? = try peer.next() else { Issue.record("no welcome"); return }
        guard case .assignment? = try peer.next() else { Issue.record("no assignment"); return }
        // Silent from here on: missing, then dead, then no worker is left.
        let outcome = try running.finish()
        #expect(
            outcome.failure?.code == .noWorkerCanProgress
                && outcome.failure?.description.contains("no live worker can make progress") == true,
            "\(outcome.failure?.description ?? "no failure")")
        #expect(!outcome.complete)
        #expect(outcome.fleet.workers.first?.state == "dead")
    }
}
