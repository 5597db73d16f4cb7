import Foundation
import Testing
import ZapCluster
import ZapEngine
import ZapProtocol
import ZapRun
import ZapfleetTestSupport
import ZeroMQ
import ZapPlatform
import SwiftProtobuf

/// The fleet's totals and verdict under faults, with real processes: a `zapfleet coordinator`,
/// real workers, and hostile peers that speak the protocol by hand. Each test is one way a run
/// used to merge wrong results with exit 0, wait forever or trap.
@Suite("Fleet exactness under faults", .serialized, .timeLimit(.minutes(5)))
struct FleetExactnessTests {
    /// Eight shards of 1 GiB (with `--shard-size 1GiB`), quick to run.
    static let scenario = ScenarioFixture.fleet(name: "exact", memory: "8GiB", memslot: "1GiB")
    /// Shards of 8 GiB, that take a worker a moment.
    static let bigScenario = ScenarioFixture.fleet(name: "big", memory: "64GiB", memslot: "8GiB")
    /// The same layout and a different page mix: another run's results would not fit.
    static let otherScenario = ScenarioFixture.fleet(name: "other", memory: "64GiB", memslot: "8GiB", pages: "{4K: 0.5, 2M: 0.5}")

    struct Coordinator {
        let process: Process
        let endpoint: String
        let log: String
        let out: String

        func finish() throws -> (status: Int32, report: RunReport, log: String) {
            process.waitUntilExit()
            let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: out + "/report.json")))
            return (process.terminationStatus, report, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
        }
    }

    static func coordinator(
        _ directory: String, scenario: String = scenario, name: String = "coordinator", endpoint: String? = nil,
        shardSize: String = "1GiB", _ extra: [String] = []
    ) throws -> Coordinator {
        let file = try ScenarioFixture.write(scenario, in: directory, as: "\(name).yaml")
        let endpoint = endpoint ?? "tcp://127.0.0.1:\(Int.random(in: 20000..<40000))"
        let out = "\(directory)/\(name)"
        let log = "\(directory)/\(name).log"
        let process = try ZapfleetBinary.start(
            [
                "coordinator", "--scenario", file, "--bind", endpoint, "--shard-size", shardSize,
                "--heartbeat-interval", "200ms", "--wait", "20s", "--out", out
            ] + extra, log: log)
        return Coordinator(process: process, endpoint: endpoint, log: log, out: out)
    }

    // Tests whose hostile peer computes a shard itself give it a long --liveness: on two cores its
    // heartbeats can be held up for a moment by the shard's own vCPU threads.
    static func worker(_ directory: String, _ endpoint: String, name: String, _ extra: [String] = []) throws -> Process {
        try ZapfleetBinary.start(
            ["worker", "--connect", endpoint, "--name", name, "--memory", "2GiB"] + extra, log: "\(directory)/\(name).log")
    }

    /// What must not differ between two runs of the same scenario and seed: every counter and
    /// every distribution's sample count, per policy.
    static func counts(_ report: RunReport) -> [String: [String: UInt64]] {
        Dictionary(
            uniqueKeysWithValues: report.policies.map { policy in
                var counts: [String: UInt64] = [
                    "sptes_installed": UInt64(policy.counters.sptesInstalled),
                    "sptes_zapped": UInt64(policy.counters.sptesZapped),
                    "faults": UInt64(policy.counters.faults), "fast_zaps": UInt64(policy.counters.fastZaps)
                ]
                for (operation, summary) in policy.operations { counts["\(operation).count"] = summary.measured.count }
                return (policy.policy, counts)
            })
    }

    static func uninterruptedCounts(_ directory: String) throws -> [String: [String: UInt64]] {
        let clean = try Self.coordinator(directory, name: "clean")
        let worker = try Self.worker(directory, clean.endpoint, name: "clean-worker")
        defer { if worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
        let result = try clean.finish()
        #expect(result.status == 0, "\(result.log)")
        return counts(result.report)
    }

    @Test(
        "1. SIGTERM to the coordinator mid-run, then --resume: shards cut short are given back, never journaled; the resumed run reaches exactly an uninterrupted run's totals, exit 0"
    )
    func gracefulStopThenResume() throws {
        let directory = TestPaths.temporaryDirectory()
        let expected = try Self.uninterruptedCounts(directory)
        let first = try Self.coordinator(directory, name: "first", ["--expect-workers", "2"])
        let workers = try ["a", "b"].map { try Self.worker(directory, first.endpoint, name: $0) }
        defer { for process in workers + [first.process] where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        try #require(TestPaths.waitFor("(2/8)", in: first.log), "some shards done")
        kill(first.process.processIdentifier, SIGTERM)
        let stopped = try first.finish()
        #expect(stopped.status == 130)
        for worker in workers { worker.waitUntilExit() }
        let journal = try ResultJournal.load(ResultJournal.path(inRunDirectory: first.out))
        #expect(journal.results.allSatisfy { $0.result.policies.allSatisfy(\.complete) }, "no result cut short was journaled")

        let resumed = try ZapfleetBinary.start(
            ["coordinator", "--resume", first.out, "--bind", first.endpoint, "--heartbeat-interval", "200ms"],
            log: directory + "/resumed.log")
        let worker = try Self.worker(directory, first.endpoint, name: "c")
        defer { for process in [resumed, worker] where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        resumed.waitUntilExit()
        #expect(resumed.terminationStatus == 0, "\((try? String(contentsOfFile: directory + "/resumed.log", encoding: .utf8)) ?? "")")
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: first.out + "/report.json")))
        #expect(report.complete == true)
        #expect(Self.counts(report) == expected, "the same totals as an uninterrupted run")
        // Resuming again finds nothing to do and says the run is complete.
        let again = try ZapfleetBinary.run(["coordinator", "--resume", first.out, "--bind", first.endpoint, "--wait", "2s"])
        #expect(again.status == 0, "\(again.err)")
    }

    @Test("2. a worker's unacknowledged result from a killed coordinator's run is dropped, not taken by the next run on the same endpoint")
    func staleResultOfAnotherRun() throws {
        let directory = TestPaths.temporaryDirectory()
        // A run of one scenario, killed while its worker is busy; a worker that outlives it.
        let doomed = try Self.coordinator(directory, scenario: Self.bigScenario, name: "doomed", shardSize: "8GiB")
        let worker = try Self.worker(directory, doomed.endpoint, name: "w", ["--keep-running"])
        defer { if worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
        try #require(TestPaths.waitFor("-> w", in: doomed.log))
        kill(doomed.process.processIdentifier, SIGKILL)
        doomed.process.waitUntilExit()
        try #require(
            TestPaths.waitFor("finished in", in: directory + "/w.log", seconds: 60),
            "the worker finished the shard after its coordinator died")

        // A new run of another scenario, same shard layout, same endpoint.
        let next = try Self.coordinator(directory, scenario: Self.otherScenario, name: "next", endpoint: doomed.endpoint, shardSize: "8GiB")
        let result = try next.finish()
        kill(worker.processIdentifier, SIGTERM)
        #expect(result.status == 0, "\(result.log)")
        let workerLog = try String(contentsOfFile: directory + "/w.log", encoding: .utf8)
        #expect(workerLog.contains("dropped the unacknowledged result of shard 0 of run"), "\(workerLog)")

        let clean = try Self.coordinator(directory, scenario: Self.otherScenario, name: "other-clean", shardSize: "8GiB")
        let cleanWorker = try Self.worker(directory, clean.endpoint, name: "x")
        defer { if cleanWorker.isRunning { kill(cleanWorker.processIdentifier, SIGKILL) } }
        let reference = try clean.finish()
        #expect(Self.counts(result.report) == Self.counts(reference.report), "the new run counted only its own results")
    }

    @Test("3. after --resume, a result relabelled from the journal and sent by a peer never handed that shard is refused")
    func forgedResultAfterResume() throws {
        let directory = TestPaths.temporaryDirectory()
        let expected = try Self.uninterruptedCounts(directory)
        let first = try Self.coordinator(directory, name: "first")
        let worker = try Self.worker(directory, first.endpoint, name: "a")
        try #require(TestPaths.waitFor("(3/8)", in: first.log))
        kill(first.process.processIdentifier, SIGKILL)
        kill(worker.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        worker.waitUntilExit()
        let journal = try ResultJournal.load(ResultJournal.path(inRunDirectory: first.out))
        let done = Set(journal.results.map(\.result.shardID))
        let pending = try #require((0..<8).first { !done.contains($0) })

        let resumed = try ZapfleetBinary.start(
            [
                "coordinator", "--resume", first.out, "--bind", first.endpoint, "--heartbeat-interval", "200ms",
                "--wait", "20s"
            ], log: directory + "/resumed.log")
        defer { if resumed.isRunning { kill(resumed.processIdentifier, SIGKILL) } }
        let context = try ZeroMQContext()
        let forger = try ProtocolPeer(context: context, endpoint: first.endpoint, routingID: "forger")
        try forger.sayHello(as: "forger", memory: 1)  // too small for any shard: it is never handed one
        var forged = try #require(journal.results.first).result
        forged.shardID = pending
        try forger.send(.result(forged))
        let ack = try #require(try forger.acknowledgement(of: pending, attempt: forged.attempt))
        #expect(ack.rejected, "\(ack)")
        #expect(ack.reason.contains("never handed"), "\(ack.reason)")
        let honest = try Self.worker(directory, first.endpoint, name: "b")
        defer { if honest.isRunning { kill(honest.processIdentifier, SIGKILL) } }
        resumed.waitUntilExit()
        #expect(resumed.terminationStatus == 0)
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: first.out + "/report.json")))
        #expect(Self.counts(report) == expected)
        #expect(report.fleet?.shards.first { $0.id == pending }?.worker == "b")
    }

    @Test(
        "4. a worker too small for a memslot that joins after planning gets no shard, and a peer that gives back every assignment stops getting them; the run completes"
    )
    func unfitAndGivingBack() throws {
        let directory = TestPaths.temporaryDirectory()
        let coordinator = try Self.coordinator(directory, ["--expect-workers", "1"])
        let context = try ZeroMQContext()
        let refuser = try ProtocolPeer(context: context, endpoint: coordinator.endpoint, routingID: "refuser")
        try refuser.sayHello(as: "refuser")
        let tiny = try ProtocolPeer(context: context, endpoint: coordinator.endpoint, routingID: "tiny")
        var givenBack = 0
        // The refuser alone at first: every assignment goes back.
        while givenBack < 3, let assignment = try refuser.nextAssignment(timeoutSeconds: 10) {
            var abandoned = Zapfleet_V1_ShardAbandoned()
            abandoned.runID = assignment.runID
            abandoned.shardID = assignment.shardID
            abandoned.attempt = assignment.attempt
            abandoned.reason = "no"
            try refuser.send(.abandoned(abandoned))
            givenBack += 1
            if givenBack == 1 { try tiny.sayHello(as: "tiny", memory: 4096) }
        }
        #expect(givenBack == 3)
        let worker = try Self.worker(directory, coordinator.endpoint, name: "able")
        defer { for process in [worker, coordinator.process] where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        // Both keep heartbeating; neither gets another assignment.
        var extra = 0
        let end = Date().addingTimeInterval(60)
        while coordinator.process.isRunning && Date() < end {
            for peer in [refuser, tiny] {
                try peer.send(.heartbeat(Zapfleet_V1_Heartbeat()))
                while let body = try peer.next(timeoutSeconds: 0.05) { if case .assignment = body { extra += 1 } }
            }
        }
        let result = try coordinator.finish()
        #expect(result.status == 0, "\(result.log)")
        #expect(extra == 0, "no assignment after the third give-back, none to the tiny worker")
        let refused = try #require(result.report.fleet?.workers.first { $0.name == "refuser" })
        #expect(refused.note?.contains("gave back 3 assignments in a row") == true, "\(refused)")
        #expect(result.report.fleet?.shards.count == 8)
    }

    @Test("5. a result that fails validation frees the worker and its shard is run again; the run completes")
    func rejectedResultIsRequeued() throws {
        let directory = TestPaths.temporaryDirectory()
        let coordinator = try Self.coordinator(directory, ["--progress-deadline", "10", "--liveness", "20"])
        let context = try ZeroMQContext()
        let peer = try ProtocolPeer(context: context, endpoint: coordinator.endpoint, routingID: "corrupt")
        try peer.sayHello(as: "corrupt")
        let assignment = try #require(try peer.nextAssignment())
        var result = try peer.compute(assignment)
        result.policies[0].histograms[0].hdrV2 = Data([0x1c, 0x84, 0x93, 0x14, 0, 0, 0, 9, 1, 2, 3])
        try peer.send(.result(result))
        let ack = try #require(try peer.acknowledgement(of: assignment.shardID, attempt: assignment.attempt))
        #expect(ack.rejected && ack.reason.contains("histogram"), "\(ack)")
        let worker = try Self.worker(directory, coordinator.endpoint, name: "able")
        defer { if worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
        // The liar keeps living; the run must not wait for it.
        while coordinator.process.isRunning { try peer.heartbeat(for: 0.5) }
        let outcome = try coordinator.finish()
        #expect(outcome.status == 0, "\(outcome.log)")
        #expect(outcome.report.fleet?.shards.count == 8)
        #expect(outcome.report.fleet?.shards.first { $0.id == assignment.shardID }?.worker != "corrupt")
    }

    @Test("6. a busy worker whose next frame claims another protocol version is refused, and its shard is run again")
    func versionSwitchMidShard() throws {
        let directory = TestPaths.temporaryDirectory()
        let coordinator = try Self.coordinator(directory)
        let context = try ZeroMQContext()
        let peer = try ProtocolPeer(context: context, endpoint: coordinator.endpoint, routingID: "switcher")
        try peer.sayHello(as: "switcher")
        let assignment = try #require(try peer.nextAssignment())
        try peer.send(.heartbeat(Zapfleet_V1_Heartbeat()), version: zapfleetProtocolVersion + 7)
        let refusal = try peer.waitFor { body in if case .refusal(let value) = body { value } else { nil } }
        #expect(refusal?.reason.contains("protocol version \(zapfleetProtocolVersion + 7)") == true)
        let worker = try Self.worker(directory, coordinator.endpoint, name: "able")
        defer { if worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
        let outcome = try coordinator.finish()
        #expect(outcome.status == 0, "\(outcome.log)")
        #expect(outcome.report.fleet?.shards.first { $0.id == assignment.shardID }?.worker == "able")
        #expect(outcome.report.fleet?.workers.first { $0.name == "switcher" }?.state == "refused")
    }

    @Test("7. a peer that heartbeats but never finishes loses its shard at the progress deadline; its late result is refused")
    func progressDeadline() throws {
        let directory = TestPaths.temporaryDirectory()
        let coordinator = try Self.coordinator(directory, ["--progress-deadline", "5", "--liveness", "20"])
        let context = try ZeroMQContext()
        let peer = try ProtocolPeer(context: context, endpoint: coordinator.endpoint, routingID: "stuck")
        try peer.sayHello(as: "stuck")
        let assignment = try #require(try peer.nextAssignment())
        let late = try peer.compute(assignment)
        let worker = try Self.worker(directory, coordinator.endpoint, name: "able")
        defer { if worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
        try #require(TestPaths.waitFor("made no progress on shard \(assignment.shardID)", in: coordinator.log, seconds: 30))
        try peer.send(.result(late))
        let ack = try #require(try peer.acknowledgement(of: assignment.shardID, attempt: assignment.attempt))
        #expect(ack.rejected || ack.duplicate, "\(ack)")
        while coordinator.process.isRunning { try peer.heartbeat(for: 0.5) }
        let outcome = try coordinator.finish()
        #expect(outcome.status == 0, "\(outcome.log)")
        #expect(outcome.report.fleet?.shards.first { $0.id == assignment.shardID }?.worker == "able")
        #expect((outcome.report.fleet?.attemptsRevoked ?? 0) >= 1)
    }

    @Test(
        "8 and 9. impossible but in-range numbers (2^40 samples, 2^50-1 SPTEs, a bucket of 2^63-1, step times near 2^63) are refused naming the field; nothing traps, totals stay exact"
    )
    func impossibleNumbers() throws {
        let directory = TestPaths.temporaryDirectory()
        let expected = try Self.uninterruptedCounts(directory)
        let coordinator = try Self.coordinator(
            directory, ["--give-back-limit", "100", "--max-attempts", "100", "--progress-deadline", "10", "--liveness", "20"])
        let context = try ZeroMQContext()
        let peer = try ProtocolPeer(context: context, endpoint: coordinator.endpoint, routingID: "liar")
        try peer.sayHello(as: "liar")
        let assignment = try #require(try peer.nextAssignment())
        let honest = try peer.compute(assignment)
        var bent: [(String, Zapfleet_V1_ShardResult)] = []
        var samples = honest
        samples.policies[1].histograms[0].hdrV2 = Data(HistogramFixture.encoded(value: 1000, count: 1 << 40))
        bent.append(("holds 1099511627776 samples", samples))
        var sptes = honest
        sptes.policies[0].counters.sptesZapped = (1 << 50) - 1
        sptes.policies[0].counters.sptesInstalled = (1 << 50) - 1
        bent.append(("sptes_installed", sptes))
        var bucket = honest
        bucket.policies[0].histograms[0].hdrV2 = Data(HistogramFixture.encoded(value: 1000, count: UInt64(Int64.max)))
        bent.append(("samples", bucket))
        var steps = honest
        steps.policies[0].steps[0].longestBlockNs = 1 << 63 - 1
        steps.policies[0].steps[0].wallNs = 1 << 63 - 1
        bent.append(("steps[0]", steps))
        var attempt = assignment
        for (field, result) in bent {
            var labelled = result
            labelled.attempt = attempt.attempt
            labelled.shardID = attempt.shardID
            try peer.send(.result(labelled))
            let ack = try #require(try peer.acknowledgement(of: attempt.shardID, attempt: attempt.attempt))
            #expect(ack.rejected && ack.reason.contains(field), "\(field): \(ack.reason)")
            attempt = try #require(try peer.nextAssignment())
        }
        let worker = try Self.worker(directory, coordinator.endpoint, name: "able")
        defer { if worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
        var abandoned = Zapfleet_V1_ShardAbandoned()
        abandoned.runID = attempt.runID
        abandoned.shardID = attempt.shardID
        abandoned.attempt = attempt.attempt
        try peer.send(.abandoned(abandoned))
        while coordinator.process.isRunning { try peer.heartbeat(for: 0.5) }
        let outcome = try coordinator.finish()
        #expect(outcome.status == 0, "\(outcome.log)")
        #expect(Self.counts(outcome.report) == expected, "none of it was merged")

        // A journal holding such a record: --resume skips it instead of trapping.
        let run = "\(directory)/hostile-journal"
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        let contents = try ResultJournal.load(ResultJournal.path(inRunDirectory: coordinator.out))
        let journal = try ResultJournal.create(at: ResultJournal.path(inRunDirectory: run), plan: contents.plan)
        for (_, result) in bent {
            var record = result
            record.runID = contents.plan.runID
            try journal.append(record, worker: "liar")
        }
        try journal.sync()
        let resumed = try ZapfleetBinary.start(
            [
                "coordinator", "--resume", run, "--bind", "tcp://127.0.0.1:\(Int.random(in: 20000..<40000))",
                "--wait", "3s"
            ], log: directory + "/resumed.log")
        resumed.waitUntilExit()
        let log = try String(contentsOfFile: directory + "/resumed.log", encoding: .utf8)
        #expect(resumed.terminationStatus == 70, "no worker came; it did not trap: \(log)")
        #expect(log.contains("0 of 8 shard results from the journal"), "\(log)")
    }

    @Test(
        "10. identity: a second live worker with a name in use is refused naming it; a peer reusing a worker's name as its routing id takes nothing over; no worker is taken for reconnected at its first join"
    )
    func identity() throws {
        let directory = TestPaths.temporaryDirectory()
        let coordinator = try Self.coordinator(directory, ["--expect-workers", "1"])
        let first = try Self.worker(directory, coordinator.endpoint, name: "w1")
        defer { for process in [first, coordinator.process] where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        try #require(TestPaths.waitFor("worker w1 joined", in: coordinator.log))
        let second = try ZapfleetBinary.run(["worker", "--connect", coordinator.endpoint, "--name", "w1", "--memory", "2GiB"])
        #expect(second.status == 3, "\(second.err)")
        #expect(second.err.contains("the name 'w1' is in use"), "\(second.err)")
        // A peer that takes the worker's name as its routing id speaks for nobody but itself.
        let context = try ZeroMQContext()
        let impostor = try ProtocolPeer(context: context, endpoint: coordinator.endpoint, routingID: "w1")
        try impostor.sayHello(as: "w1")
        let refusal = try impostor.waitFor { body in if case .refusal(let value) = body { value } else { nil } }
        #expect(refusal?.reason.contains("in use") == true)
        let outcome = try coordinator.finish()
        #expect(outcome.status == 0, "\(outcome.log)")
        #expect(outcome.report.fleet?.shards.allSatisfy { $0.worker == "w1" } == true)
        #expect(!outcome.log.contains("reconnected"), "a first join is no reconnect")
    }

    @Test("10. a worker welcomed by a coordinator of another protocol version exits 3 naming both versions")
    func welcomeOfAnotherVersion() throws {
        let context = try ZeroMQContext()
        let router = try ZeroMQSocket(context, type: .router)
        defer { router.close() }
        let port = Int.random(in: 20000..<40000)
        try router.bind("tcp://127.0.0.1:\(port)")
        final class Box: @unchecked Sendable { var result: (status: Int32, out: String, err: String)? }
        let box = Box()
        let thread = OSThread(name: "worker") {
            box.result = try? ZapfleetBinary.run(["worker", "--connect", "tcp://127.0.0.1:\(port)", "--name", "w", "--memory", "1GiB"])
        }
        var poller = ZeroMQPoller()
        poller.add(router)
        let deadline = Date().addingTimeInterval(30)
        var answered = false
        while Date() < deadline && !answered {
            guard try poller.poll(timeoutMilliseconds: 100)[0], let message = try router.receive(dontWait: true) else { continue }
            var envelope = Zapfleet_V1_Envelope()
            envelope.protocolVersion = zapfleetProtocolVersion + 1
            var welcome = Zapfleet_V1_Welcome()
            welcome.runID = "future"
            welcome.heartbeatIntervalMs = 1000
            welcome.heartbeatLiveness = 3
            envelope.body = .welcome(welcome)
            try router.send([message.frames[0], try envelope.serializedBytes()])
            answered = true
        }
        thread.join()
        let result = try #require(box.result)
        #expect(result.status == 3, "\(result.err)")
        #expect(
            result.err.contains("protocol version \(zapfleetProtocolVersion + 1), this worker \(zapfleetProtocolVersion)"), "\(result.err)")
    }

    @Test("11. one worker runs eight shards back to back: every next assignment finds it free, none is refused as busy")
    func backToBackShards() throws {
        let directory = TestPaths.temporaryDirectory()
        let events = directory + "/coordinator.events"
        let coordinator = try Self.coordinator(directory, ["--events", events])
        let worker = try Self.worker(directory, coordinator.endpoint, name: "able")
        defer { if worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
        let outcome = try coordinator.finish()
        #expect(outcome.status == 0, "\(outcome.log)")
        #expect(outcome.report.fleet?.shards.count == 8)
        #expect(outcome.report.fleet?.shards.allSatisfy { $0.worker == "able" && $0.attempts == 1 } == true)
        // The worker sends a result the moment its shard ends; the coordinator answers with the
        // next shard at once. A worker that had not yet noted its own end refused it as busy.
        let lines = try String(contentsOfFile: events, encoding: .utf8).split(separator: "\n")
        #expect(lines.filter { $0.contains("\"event\":\"shard_done\"") }.count == 8)
        #expect(!lines.contains { $0.contains("\"event\":\"shard_given_back\"") }, "\(lines.joined(separator: "\n"))")
        let workerLog = (try? String(contentsOfFile: directory + "/able.log", encoding: .utf8)) ?? ""
        #expect(!workerLog.contains("refusing shard"), "\(workerLog)")
    }
}
