import ArgumentParser
import Foundation

/// Dispatch overhead on hosts made of network namespaces: a run of one shard per host, its wall
/// time from plan to last result against the slowest shard's.
struct DispatchBenchmark: SummarisedBenchmark {
    static let configuration = CommandConfiguration(
        commandName: "dispatch",
        abstract: "Dispatch overhead on N network-namespace hosts: wall from plan to last result vs the slowest shard.",
        discussion: """
            For each N of --hosts, runs deploy/netns/run-cluster.sh (from the repository root, the \
            current directory) with N worker hosts, each a network namespace, and a scenario of N \
            memslot-aligned shards of 64 GiB (2 MiB memslots, 1 vCPU: populate, reset, delete 1%; \
            sync and async), one per host, over CurveZMQ. Reported: the coordinator's time from plan to \
            last result over the slowest shard's wall (target <= 1.1x). Namespaces need root; \
            elsewhere the script runs on loopback and the figure says so.
            """
    )

    @Option(help: "Host counts, comma-separated.")
    var hosts: String = "2,4,8"

    @Option(help: "The zapfleet binary the hosts run.")
    var binary: String = ".build/release/zapfleet"

    func validate() throws {
        guard counts.count > 0, counts.allSatisfy({ (1...32).contains($0) }) else {
            throw ValidationError("--hosts: \(hosts) is not a list of host counts between 1 and 32, such as 2,4,8")
        }
    }

    private var counts: [Int] { hosts.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func measure() throws -> [BenchmarkFigure] {
        let script = "deploy/netns/run-cluster.sh"
        guard FileManager.default.isExecutableFile(atPath: script) else {
            throw ValidationError("\(script) not found: run zapfleet-bench dispatch from the repository's root")
        }
        let scratch = NSTemporaryDirectory() + "zapfleet-bench-dispatch-\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        var figures: [BenchmarkFigure] = []
        for count in counts {
            let scenario = "\(scratch)/dispatch-\(count).yaml"
            try """
            name: dispatch
            vm: {memory: \(count * 64)GiB, memslot: 2GiB}
            workload: {vcpus: 1}
            timeline: [populate, reset_vcpus, delete_memslots: {fraction: 0.01}]
            policies: [sync, async]
            """.write(toFile: scenario, atomically: true, encoding: .utf8)
            let out = "\(scratch)/out-\(count)"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: script)
            process.arguments = ["--binary", binary, "--workers", "\(count)", "--slots", "32", "--scenario", scenario, "--out", out]
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            try process.run()
            let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            let namespaces = output.contains("hosts: network namespaces")
            let dispatchLine = output.split(separator: "\n").first { $0.hasPrefix("dispatch:") }.map(String.init) ?? "(no dispatch line)"
            print("\(count) \(namespaces ? "namespace hosts" : "workers on loopback"): \(dispatchLine)")
            guard process.terminationStatus == 0,
                let data = FileManager.default.contents(atPath: "\(out)/report.json"),
                let report = try JSONSerialization.jsonObject(with: data) as? [String: Any],
                let fleet = report["fleet"] as? [String: Any],
                let dispatch = fleet["dispatch_seconds"] as? Double,
                let shards = fleet["shards"] as? [[String: Any]],
                let slowest = shards.compactMap({ $0["wall_seconds"] as? Double }).max(), slowest > 0
            else {
                print(output)
                throw ValidationError("the \(count)-host run failed (exit \(process.terminationStatus)); its output is above")
            }
            let ratio = dispatch / slowest
            figures.append(
                BenchmarkFigure(
                    name: "dispatch on \(count) \(namespaces ? "network-namespace hosts" : "loopback workers (no namespaces here)")",
                    measured: String(format: "%.2fx the slowest shard (%.2f s)", ratio, slowest), target: "<= 1.1x", met: ratio <= 1.1))
        }
        return figures
    }
}
