import Foundation
import Testing
import ZapfleetTestSupport
import ZapRun

/// SIGTERM to a worker and to the coordinator: each stops cleanly and says so.
@Suite("Graceful stop", .serialized, .timeLimit(.minutes(5)))
struct GracefulStopTests {
    @Test("SIGTERM to a busy worker: it gives its shard back and exits 130; SIGTERM to the coordinator: workers are told to stop, the report is written marked incomplete, exit 130")
    func terminate() throws {
        let directory = TestPaths.temporaryDirectory()
        let scenario = directory + "/long.yaml"
        try ClusterTests.longScenario.write(toFile: scenario, atomically: true, encoding: .utf8)
        let endpoint = "tcp://127.0.0.1:\(Int.random(in: 20000..<40000))"
        let coordinatorLog = directory + "/coordinator.log"
        let coordinator = try ZapfleetBinary.start(["coordinator", "--scenario", scenario, "--bind", endpoint, "--expect-workers", "2",
                                                 "--heartbeat-interval", "300ms", "--out", directory + "/run"], log: coordinatorLog)
        let workers = try ["a", "b"].map { name in
            try ZapfleetBinary.start(["worker", "--connect", endpoint, "--name", name, "--slots", "2", "--memory", "2GiB"], log: directory + "/\(name).log")
        }
        defer { for process in workers + [coordinator] where process.isRunning { kill(process.processIdentifier, SIGKILL) } }

        try #require(TestPaths.waitFor("-> a\n", in: coordinatorLog), "worker a got a shard")
        kill(workers[0].processIdentifier, SIGTERM)
        workers[0].waitUntilExit()
        #expect(workers[0].terminationStatus == 130)
        #expect(TestPaths.waitFor("worker a gave up shard", in: coordinatorLog, seconds: 10), "the coordinator heard the shard was given back")
        #expect(TestPaths.waitFor("requeued", in: coordinatorLog, seconds: 10))

        try #require(TestPaths.waitFor("-> b\n", in: coordinatorLog))
        kill(coordinator.processIdentifier, SIGTERM)
        coordinator.waitUntilExit()
        workers[1].waitUntilExit()
        #expect(coordinator.terminationStatus == 130)
        #expect(workers[1].terminationStatus == 0, "worker b was told to stop")
        let workerLog = try String(contentsOfFile: directory + "/b.log", encoding: .utf8)
        #expect(workerLog.contains("coordinator says stop: interrupted"))
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/run/report.json")))
        #expect(report.verdict.exitCode == 130)
        #expect(report.complete == false, "marked incomplete")
        #expect((report.fleet?.shards.count ?? 64) < 64)
    }
}
