import Foundation
import Logging
import Testing
import ZapCluster
import ZapEngine
import ZapProtocol
import ZapRun
import ZapScenario
import ZapfleetTestSupport
import ZeroMQ
import ZapPlatform
import Histogram
import SwiftProtobuf

/// The coordinator and workers over real libzmq sockets, with real Protobuf frames.
@Suite("Fleet protocol", .serialized, .timeLimit(.minutes(3)))
struct FleetProtocolTests {
    @Test("a worker with another protocol version is refused with a clear reason, on both sides")
    func versionMismatch() throws {
        let context = try ZeroMQContext()
        let running = try RunningCoordinator(context: context, waitSeconds: 2, heartbeatMilliseconds: 200)
        let worker = RunningWorker(
            WorkerConfiguration(
                connect: running.endpoint, name: "old", memoryBudgetBytes: 1 << 30,
                protocolVersion: zapfleetProtocolVersion + 1), context: context)
        let exit = worker.join()
        guard case .refused(let reason)? = exit else {
            Issue.record("worker was not refused: \(String(describing: exit))")
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
        let running = try RunningCoordinator(context: context, bind: "inproc://merge", expectWorkers: 2, heartbeatMilliseconds: 200) {
            $0.shardBytes = 2 << 30
        }
        let workers = (0..<2).map { index in
            RunningWorker(
                WorkerConfiguration(
                    connect: "inproc://merge", name: "w\(index)", memoryBudgetBytes: 1 << 30,
                    progressInterval: 50_000_000), context: context)
        }
        let outcome = try running.finish()
        for worker in workers { worker.join() }
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
        let running = try RunningCoordinator(context: context, bind: "inproc://small", expectWorkers: 2, heartbeatMilliseconds: 200)
        let tiny = RunningWorker(
            WorkerConfiguration(connect: "inproc://small", name: "tiny", memoryBudgetBytes: 1024), context: context)
        let able = RunningWorker(
            WorkerConfiguration(connect: "inproc://small", name: "able", memoryBudgetBytes: 1 << 30), context: context)
        let outcome = try running.finish()
        let tinyExit = tiny.join()
        able.join()
        #expect(outcome.failure == nil)
        #expect(outcome.complete)
        #expect(outcome.fleet.shards.allSatisfy { $0.worker == "able" })
        #expect(outcome.fleet.workers.first { $0.name == "tiny" }?.shardsCompleted == 0)
        #expect(tinyExit == .stopped(reason: "run complete"))
    }

    @Test(
        "assignment, result and acknowledgement; a second result for the same shard is dropped as a duplicate; garbage is counted and dropped"
    )
    func duplicateAndGarbage() throws {
        let context = try ZeroMQContext()
        // Two shards, so that the run is still going when the duplicate of the first arrives;
        // a long heartbeat, so that computing a shard in the test does not look like silence.
        let running = try RunningCoordinator(context: context, heartbeatMilliseconds: 2000) { $0.shardBytes = 4 << 30 }
        let endpoint = running.endpoint

        // Garbage first, from a peer that never says hello.
        let stranger = try ProtocolPeer(context: context, endpoint: endpoint, routingID: "stranger")
        try stranger.sendRaw([[0xde, 0xad, 0xbe, 0xef]])
        try stranger.sendRaw([[1], [2], [3]])

        let peer = try ProtocolPeer(context: context, endpoint: endpoint, routingID: "raw")
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
        while acks.count < 2, let body = try peer.next(timeoutSeconds: 10) {
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
        let running = try RunningCoordinator(context: context, )
        let peer = try ProtocolPeer(context: context, endpoint: running.endpoint, routingID: "liar")
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
        let running = try RunningCoordinator(context: context) { $0.expectAgents = 1 }
        let agent = try ProtocolPeer(context: context, endpoint: running.endpoint, routingID: "agent")
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
        let worker = RunningWorker(
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
        worker.join()
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
        let running = try RunningCoordinator(context: context, waitSeconds: 1, heartbeatMilliseconds: 100) { $0.heartbeatLiveness = 2 }
        let peer = try ProtocolPeer(context: context, endpoint: running.endpoint, routingID: "vanishing")
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
