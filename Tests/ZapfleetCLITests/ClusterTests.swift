import Foundation
import Testing
import ZapRun

/// Multi-host runs: `deploy/netns/run-cluster.sh` builds hosts from network namespaces (or
/// falls back to loopback, saying so) and runs a coordinator and three worker processes.
@Suite("Multi-host cluster", .serialized, .timeLimit(.minutes(10)))
struct ClusterTests {
    static let scenario = """
        name: cluster-test
        vm: {memory: 32GiB, memslot: 2GiB}
        workload: {vcpus: 2}
        timeline: [populate, reset_vcpus, {delete_memslots: {fraction: 0.5}}]
        policies: [sync, async]

        """

    /// Runs the cluster script; returns its exit status, output and the report it produced.
    static func runCluster(_ extra: [String]) throws -> (status: Int32, output: String, report: RunReport) {
        let directory = RunCommandTests.temporaryDirectory()
        let scenarioPath = directory + "/cluster.yaml"
        try scenario.write(toFile: scenarioPath, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = RunCommandTests.packageRoot.appendingPathComponent("deploy/netns/run-cluster.sh")
        process.arguments = ["--binary", RunCommandTests.packageRoot.appendingPathComponent(".build/debug/zapfleet").path,
                             "--workers", "3", "--slots", "2", "--scenario", scenarioPath, "--out", directory + "/out"] + extra
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        print(output.split(separator: "\n").filter { $0.hasPrefix("hosts:") || $0.hasPrefix("killed") }.joined(separator: "\n"))
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/out/report.json")))
        return (process.terminationStatus, output, report)
    }

    static func checkTotals(_ report: RunReport) throws {
        let fleet = try #require(report.fleet)
        #expect(fleet.shards.count == 8)
        for policy in report.policies {
            let sum = fleet.shards.reduce(0) { $0 + ($1.sptesZapped[policy.policy] ?? 0) }
            #expect(policy.counters.sptesZapped == sum, "\(policy.policy): merged equals the sum of the shards")
            #expect(policy.counters.sptesZapped == 8 << 20, "\(policy.policy): 32 GiB of 4 KiB pages, each counted once")
            #expect(policy.counters.sptesInstalled == policy.counters.sptesZapped)
            #expect(policy.operations["reset"]?.measured.count == 8 * 2, "two vCPU resets per shard")
        }
    }

    @Test("a coordinator and three worker hosts run a scenario; the merged counts equal the sum of the shards")
    func cluster() throws {
        let run = try Self.runCluster([])
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("hosts: network namespaces") || run.output.contains("hosts: loopback"))
        #expect(Set(run.report.fleet?.workers.map(\.name) ?? []) == ["w1", "w2", "w3"])
        #expect(run.report.fleet?.requeues == 0)
        try Self.checkTotals(run.report)
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
    }
}
