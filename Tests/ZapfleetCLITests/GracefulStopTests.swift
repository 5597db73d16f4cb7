import Foundation
import Testing
import ZapfleetTestSupport
import ZapRun

/// SIGTERM to a worker and to the coordinator: each stops cleanly and says so.
@Suite("Graceful stop", .serialized, .timeLimit(.minutes(5)))
struct GracefulStopTests {
    @Test(
        "SIGTERM to a busy worker: it gives its shard back and exits 130; SIGTERM to the coordinator: workers are told to stop, the report is written marked incomplete, exit 130"
    )
    func terminate() throws {
        let directory = TestPaths.temporaryDirectory()
        let scenario = try ScenarioFixture.write(ScenarioFixture.long, in: directory, as: "long.yaml")
        let endpoint = "tcp://127.0.0.1:\(Int.random(in: 20000..<40000))"
        let coordinatorEvents = directory + "/coordinator.events"
        let coordinator = try ZapfleetBinary.start(
            [
                "coordinator", "--scenario", scenario, "--bind", endpoint, "--expect-workers", "2",
                "--heartbeat-interval", "300ms", "--out", directory + "/run", "--events", coordinatorEvents
            ],
            log: directory + "/coordinator.log")
        let workers = try ["a", "b"].map { name in
            try ZapfleetBinary.start(
                [
                    "worker", "--connect", endpoint, "--name", name, "--slots", "2", "--memory", "2GiB",
                    "--events", directory + "/\(name).events"
                ], log: directory + "/\(name).log")
        }
        defer { for process in workers + [coordinator] where process.isRunning { kill(process.processIdentifier, SIGKILL) } }

        let assigned = try #require(
            EventLines.waitFor("shard_assigned", in: coordinatorEvents, where: ["worker": "a"]), "worker a got a shard")
        let shard = "\(assigned["shard"]!)"
        kill(workers[0].processIdentifier, SIGTERM)
        workers[0].waitUntilExit()
        #expect(workers[0].terminationStatus == 130)
        #expect(
            EventLines.waitFor("shard_given_back", in: coordinatorEvents, where: ["worker": "a", "shard": shard], seconds: 10) != nil,
            "the coordinator heard the shard was given back")
        #expect(EventLines.waitFor("shard_requeued", in: coordinatorEvents, where: ["shard": shard], seconds: 10) != nil)

        try #require(EventLines.waitFor("shard_assigned", in: coordinatorEvents, where: ["worker": "b"]) != nil)
        kill(coordinator.processIdentifier, SIGTERM)
        coordinator.waitUntilExit()
        workers[1].waitUntilExit()
        #expect(coordinator.terminationStatus == 130)
        #expect(workers[1].terminationStatus == 0, "worker b was told to stop")
        let workerEvents = try EventLines.read(directory + "/b.events")
        #expect(workerEvents.contains { $0["event"] as? String == "stopped" && $0["reason"] as? String == "interrupted" })
        let coordinatorLast = try EventLines.read(coordinatorEvents).last
        #expect(coordinatorLast?["event"] as? String == "run_finished" && coordinatorLast?["exit_code"] as? Int == 130)
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/run/report.json")))
        #expect(report.verdict.exitCode == 130)
        #expect(report.complete == false, "marked incomplete")
        #expect((report.fleet?.shards.count ?? 64) < 64)
    }
}
