import Foundation
import Testing
import ZapfleetTestSupport
import ZapCluster
import ZapEngine
import ZapRun
import ZapProtocol

/// A coordinator killed with SIGKILL mid-run and started again with `--resume`.
@Suite("Coordinator crash and resume", .serialized, .timeLimit(.minutes(10)))
struct ResumeTests {
    @Test(
        "SIGKILL the coordinator after some results, tear its journal's tail, resume: the run completes with every shard counted once, and its totals are exactly the merge of the journal"
    )
    func killAndResume() throws {
        let directory = TestPaths.temporaryDirectory()
        let scenario = try ScenarioFixture.write(ScenarioFixture.long, in: directory, as: "long.yaml")
        let run = directory + "/run"
        let port = Int.random(in: 20000..<40000)
        let endpoint = "tcp://127.0.0.1:\(port)"
        let beat = ["--heartbeat-interval", "300ms"]
        let first = try ZapfleetBinary.start(
            ["coordinator", "--scenario", scenario, "--bind", endpoint, "--expect-workers", "2", "--out", run] + beat,
            log: directory + "/first.log")
        let workers = try ["a", "b"].map { name in
            try ZapfleetBinary.start(
                ["worker", "--connect", endpoint, "--name", name, "--slots", "2", "--memory", "2GiB"], log: directory + "/\(name).log")
        }
        defer { for process in workers + [first] where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        try #require(TestPaths.waitFor("(8/64)", in: directory + "/first.log"), "the first coordinator made progress")
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        #expect(first.terminationReason == .uncaughtSignal)

        // A crash in the middle of an append: half a record at the end.
        let journalPath = ResultJournal.path(inRunDirectory: run)
        let before = try ResultJournal.load(journalPath)
        #expect(before.results.count >= 8)
        #expect(before.results.count < 64)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: journalPath))
        handle.seekToEndOfFile()
        handle.write(Data([0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 2, 1, 2, 3]))
        try handle.close()

        let resumed = try ZapfleetBinary.run(["coordinator", "--resume", run, "--bind", endpoint] + beat)
        #expect(resumed.status == 0, "\(resumed.out)\n\(resumed.err)")
        #expect(resumed.err.contains("ignored a torn last record of 12 bytes"))
        for worker in workers { worker.waitUntilExit() }

        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: run + "/report.json")))
        let fleet = try #require(report.fleet)
        #expect(fleet.resumedShards == before.results.count)
        let complete = report.policies.map { $0.complete }
        #expect(complete == [true, true])
        try ClusterTests.checkTotals(report, shards: 64, gibibytes: 256)

        // Exactness: the journal now holds one result per shard, and merging them independently
        // gives exactly the report's distributions.
        let after = try ResultJournal.load(journalPath)
        #expect(after.tornBytes == 0)
        #expect(Set(after.results.map(\.result.shardID)) == Set(0..<64))
        for policy in report.policies {
            var accumulator = FleetAggregation.Accumulator(
                policy: try #require(ZapPolicy(rawValue: policy.policy)), kernelNanosecondsPerSPTE: 52)
            var seen = Set<UInt64>()
            for entry in after.results where seen.insert(entry.result.shardID).inserted {
                let decoded = try entry.result.policies.map { try ResultCoding.decodeValidated($0) }
                accumulator.add(try #require(decoded.first { $0.policy.rawValue == policy.policy }))
            }
            let merged = accumulator.run
            for operation in MeasuredOperation.allCases {
                #expect(
                    policy.operations[operation.name]?.measured == LatencySummary(merged.recorder.histogram(operation)),
                    "\(policy.policy) \(operation.name)")
            }
        }
    }
}
