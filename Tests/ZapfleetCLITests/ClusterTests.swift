import Foundation
import Testing
import ZapfleetTestSupport
import ZapCluster
import ZapRun
import ZapEngine
import ZeroMQ

/// Multi-host runs: `deploy/netns/run-cluster.sh` builds hosts from network namespaces (or
/// falls back to loopback, saying so) and runs a coordinator and three worker processes.
@Suite("Multi-host cluster", .serialized, .timeLimit(.minutes(10)))
struct ClusterTests {
    struct ClusterRun {
        var status: Int32
        var output: String
        var report: RunReport
        /// The coordinator's log.
        var log: String
        /// Where the run's files are (`out/` holds the report, logs and keys).
        var directory: String
        /// The coordinator's `--events`, one JSON object per line.
        var events: [[String: Any]]

        /// The events named `name`.
        func events(named name: String) -> [[String: Any]] { events.filter { $0["event"] as? String == name } }
    }

    /// Runs the cluster script; returns its exit status, output, the report it produced and the coordinator's log.
    static func runCluster(_ extra: [String], scenario: String = ScenarioFixture.cluster) throws -> ClusterRun {
        let directory = TestPaths.temporaryDirectory()
        let scenarioPath = try ScenarioFixture.write(scenario, in: directory, as: "cluster.yaml")
        let result = try Subprocess.run(
            TestPaths.packageRoot.appendingPathComponent("deploy/netns/run-cluster.sh").path,
            [
                "--binary", ZapfleetBinary.path, "--workers", "3", "--slots", "2", "--scenario", scenarioPath, "--out", directory + "/out"
            ] + extra)
        let output = result.out + result.err
        let faults = ["hosts:", "killed", "stopped", "continued", "partitioned", "healed", "froze"]
        print(output.split(separator: "\n").filter { line in faults.contains { line.hasPrefix($0) } }.joined(separator: "\n"))
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/out/report.json")))
        let log = (try? String(contentsOfFile: directory + "/out/logs/coordinator.err", encoding: .utf8)) ?? ""
        let events = try EventLines.read(directory + "/out/logs/coordinator.events")
        return ClusterRun(status: result.status, output: output, report: report, log: log, directory: directory, events: events)
    }

    /// Every SPTE of `gibibytes` counted exactly once, whatever the faults: merged counters equal
    /// the sum of the shards', and the page count of the whole memory.
    static func checkTotals(_ report: RunReport, shards: Int = 8, gibibytes: Int = 32) throws {
        let fleet = try #require(report.fleet)
        #expect(fleet.shards.count == shards)
        for policy in report.policies {
            let sum = fleet.shards.reduce(0) { $0 + ($1.sptesZapped[policy.policy] ?? 0) }
            #expect(policy.counters.sptesZapped == sum, "\(policy.policy): merged equals the sum of the shards")
            #expect(
                policy.counters.sptesZapped == (gibibytes << 18), "\(policy.policy): \(gibibytes) GiB of 4 KiB pages, each counted once")
            #expect(policy.counters.sptesInstalled == policy.counters.sptesZapped)
            #expect(policy.operations["reset"]?.measured.count == UInt64(shards * 2), "two vCPU resets per shard")
        }
    }

    /// A late result from worker 1 for a shard finished elsewhere: its shard requeued, and the late
    /// result dropped (possibly more than once: a worker resends what is not yet acknowledged
    /// each time it is welcomed), every one of them from worker 1. Worker 1's return may cost more
    /// requeues (a reconnect closes the old connection, and an assignment sent on it is lost), but
    /// every requeue is of a shard worker 1 held, and every shard is counted once.
    static func checkLateResultDropped(_ run: ClusterRun) throws {
        #expect(run.status == 0, "\(run.output)")
        let fleet = try #require(run.report.fleet)
        #expect(fleet.requeues >= 1)
        #expect(fleet.duplicatesDropped >= 1)
        #expect(fleet.workers.first { $0.name == "w1" }?.duplicatesDropped == fleet.duplicatesDropped)
        #expect(fleet.shards.filter { $0.attempts >= 2 }.count >= 1)
        var holder: [Int: String] = [:]
        for event in run.events {
            guard let shard = event["shard"] as? Int else { continue }
            switch event["event"] as? String {
            case "shard_assigned": holder[shard] = event["worker"] as? String
            case "shard_requeued": #expect(holder[shard] == "w1", "shard \(shard) was requeued from \(holder[shard] ?? "nobody")")
            default: break
            }
        }
        #expect(run.events(named: "shard_requeued").count == fleet.requeues)
        try checkTotals(run.report, shards: 64, gibibytes: 256)
    }

    @Test("a coordinator and three worker hosts run a scenario; the merged counts equal the sum of the shards")
    func cluster() throws {
        let run = try Self.runCluster([])
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("hosts: network namespaces") || run.output.contains("hosts: loopback"))
        #expect(Set(run.report.fleet?.workers.map(\.name) ?? []) == ["w1", "w2", "w3"])
        #expect(run.report.fleet?.requeues == 0)
        #expect(run.log.contains("[CURVE, 3 worker key(s) allowed"), "the fleet ran over CurveZMQ")
        #expect(run.events(named: "listening").first?["curve"] as? Bool == true, "the fleet ran over CurveZMQ")
        #expect(Set(run.events(named: "worker_joined").compactMap { $0["worker"] as? String }) == ["w1", "w2", "w3"])
        #expect(run.events(named: "planned").first?["shards"] as? Int == 8)
        // Each worker's own events: every shard it started, it finished, and the coordinator accepted.
        var finished = 0
        for worker in ["w1", "w2", "w3"] {
            let own = try EventLines.read(run.directory + "/out/logs/\(worker).events")
            let started = own.filter { $0["event"] as? String == "shard_started" }.compactMap { $0["shard"] as? Int }
            let accepted = own.filter { $0["event"] as? String == "result_acknowledged" && $0["outcome"] as? String == "accepted" }
            #expect(own.filter { $0["event"] as? String == "shard_finished" }.compactMap { $0["shard"] as? Int } == started, "\(worker)")
            #expect(accepted.compactMap { $0["shard"] as? Int } == started, "\(worker)")
            #expect(own.allSatisfy { $0["worker"] as? String == worker })
            finished += started.count
        }
        #expect(finished == 8)
        try Self.checkTotals(run.report)
        // No secret key appears in any log, report or output the run left behind.
        let keys = run.directory + "/out/keys"
        let secrets = try FileManager.default.contentsOfDirectory(atPath: keys).filter { $0.hasSuffix(".key") }
            .map { try KeyFiles.readKeyPair(keys + "/" + $0).secretKey.z85 }
        #expect(secrets.count == 4)
        let written = try FileManager.default.subpathsOfDirectory(atPath: run.directory + "/out")
            .filter { !$0.hasPrefix("keys") }
            .compactMap { try? String(contentsOfFile: run.directory + "/out/" + $0, encoding: .utf8) }
        #expect(written.count > 5)
        for secret in secrets {
            #expect(!run.output.contains(secret) && !written.contains { $0.contains(secret) }, "a secret key leaked")
        }
    }

    @Test("a coordinator refuses to bind a network address without keys, and says how to make them")
    func openBindRefused() throws {
        let result = try ZapfleetBinary.run(["coordinator", "--bind", "tcp://0.0.0.0:0", "--wait", "1s"])
        #expect(result.status == 64)
        #expect(result.err.contains("zapfleet keygen"))
        #expect(result.err.contains("--insecure"))
    }

    @Test("a worker killed with SIGKILL mid-shard: the shard is requeued once, the run completes, totals exact")
    func workerKilled() throws {
        let run = try Self.runCluster(["--kill-one"])
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("killed worker w1"))
        let fleet = try #require(run.report.fleet)
        #expect(fleet.requeues == 1)
        #expect(fleet.shards.filter { $0.attempts == 2 }.count == 1)
        #expect(fleet.workers.first { $0.name == "w1" }?.state == "missing" || fleet.workers.first { $0.name == "w1" }?.state == "dead")
        try Self.checkTotals(run.report)
        // The same story in the coordinator's events: w1 went missing holding a shard, that shard
        // was requeued and done by another worker, every shard was done once, exit 0 last.
        let missing = try #require(
            // The first such event that holds a shard: a loaded machine can make w1 late once before.
            run.events(named: "worker_missing").first { $0["worker"] as? String == "w1" && $0["shard"] != nil },
            "\(run.events.map { $0["event"]! })")
        let lost = try #require(missing["shard"] as? Int, "w1 was holding a shard")
        #expect(run.events(named: "shard_requeued").compactMap { $0["shard"] as? Int } == [lost])
        let done = run.events(named: "shard_done")
        #expect(done.compactMap { $0["shard"] as? Int }.sorted() == Array(0..<8))
        #expect(done.first { $0["shard"] as? Int == lost }?["worker"] as? String != "w1")
        #expect(done.first { $0["shard"] as? Int == lost }?["attempt"] as? Int == 2)
        #expect(run.events.last?["event"] as? String == "run_finished" && run.events.last?["exit_code"] as? Int == 0)
    }

    @Test(
        "a worker stopped (SIGSTOP) past its liveness deadline: its shard is done elsewhere; after SIGCONT its late result is dropped as a duplicate; totals exact"
    )
    func workerStopped() throws {
        let run = try Self.runCluster(["--stop-one"], scenario: ScenarioFixture.long)
        #expect(run.output.contains("stopped worker w1"))
        #expect(run.output.contains("continued worker w1"))
        try Self.checkLateResultDropped(run)
    }

    @Test(
        "the coordinator and every worker frozen at once (SIGSTOP) for twice the silence limit, then continued: a stall of the whole machine is no one's silence: in its aftermath nothing is requeued and no one reconnects; totals exact"
    )
    func fleetFrozen() throws {
        let (run, heldUp, aftermath) = try Self.runStopped(
            "--freeze-all", said: ["froze the coordinator and every worker", "continued them all"])
        #expect(aftermath.filter { $0["event"] as? String == "shard_requeued" }.isEmpty, "\(aftermath)")
        for worker in ["w1", "w2", "w3"] {
            let own = try EventLines.read(run.directory + "/out/logs/\(worker).events")
            #expect(own.contains { $0["event"] as? String == "held_up" }, "\(worker) says it was held up")
            #expect(
                !Self.around(heldUp, own).contains { $0["event"] as? String == "coordinator_silent" },
                "\(worker) did not blame the coordinator")
        }
        try Self.checkTotals(run.report, shards: 64, gibibytes: 256)
    }

    /// Runs the cluster with the stop `option` (which prints `said`) and checks what every stop
    /// must keep: exit 0, the coordinator's `held_up`, and no worker counted missing in the
    /// stop's aftermath. Returns the run, that `held_up`, and the aftermath's events.
    static func runStopped(_ option: String, said: [String]) throws -> (ClusterRun, [String: Any], [[String: Any]]) {
        let run = try runCluster([option], scenario: ScenarioFixture.long)
        #expect(run.status == 0, "\(run.output)")
        for line in said { #expect(run.output.contains(line)) }
        // 3 s, less the loop's allowance, is over the 500 ms interval: the coordinator says so.
        let heldUp = try #require(stopOf(run.events), "the coordinator says it was held up")
        let aftermath = around(heldUp, run.events)
        #expect(aftermath.filter { $0["event"] as? String == "worker_missing" }.isEmpty, "\(aftermath)")
        return (run, heldUp, aftermath)
    }

    /// The coordinator's `held_up` of a stop of this test's (1.5 s or more): the moment it resumed.
    static func stopOf(_ events: [[String: Any]]) -> [String: Any]? {
        events.first { $0["event"] as? String == "held_up" && ($0["held_up_ms"] as? Int ?? 0) >= 1_500 }
    }

    /// The events from 3.5 s before `heldUp` (the 3 s stop) to 3 s after it (twice the silence
    /// limit): what the stop itself caused. A machine as loaded as a test run's can hold a
    /// process up again later, and the 1.5 s limit then fires as it should; that is not the
    /// stop's doing (seen: a second, 1.3 s hold-up of the coordinator alone, 4 s after a freeze).
    static func around(_ heldUp: [String: Any], _ events: [[String: Any]]) -> [[String: Any]] {
        let format = ISO8601DateFormatter()
        format.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        guard let resumed = (heldUp["time"] as? String).flatMap(format.date(from:)) else { return events }
        return events.filter { event in
            guard let time = (event["time"] as? String).flatMap(format.date(from:)) else { return true }
            let offset = time.timeIntervalSince(resumed)
            return offset >= -3.5 && offset <= 3
        }
    }

    @Test(
        "the coordinator alone stopped (SIGSTOP) for twice the silence limit, then continued: the workers find it silent and reconnect, the shards they ran count once, nothing is lost, totals exact"
    )
    func coordinatorStopped() throws {
        // Its own hold-up is no worker's silence: whatever was requeued, no worker was blamed for it.
        let (run, _, _) = try Self.runStopped("--stop-coordinator", said: ["stopped the coordinator", "continued the coordinator"])
        let done = run.events(named: "shard_done").compactMap { $0["shard"] as? Int }
        #expect(done.sorted() == Array(0..<64), "every shard done exactly once")
        try Self.checkTotals(run.report, shards: 64, gibibytes: 256)
    }

    @Test(
        "a worker cut off by a network partition: its shard is done elsewhere; when the link is back it reconnects, its late result is dropped, and it takes new work"
    )
    func workerPartitioned() throws {
        let run = try Self.runCluster(["--partition-one"], scenario: ScenarioFixture.long)
        // Partitions need network namespaces; the script says why it cannot make them.
        #expect(run.output.contains("hosts: network namespaces"), "\(run.output.prefix(400))")
        #expect(run.output.contains("healed worker w1"))
        try Self.checkLateResultDropped(run)
        let afterHeal = try #require(run.log.range(of: "worker w1 reconnected") ?? run.log.range(of: "worker w1 is back"), "w1 came back")
        #expect(run.log[afterHeal.upperBound...].contains("-> w1"), "w1 took new work after the partition")
    }
}
