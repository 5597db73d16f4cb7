import ArgumentParser
import Foundation
import ZapCluster
import ZapEngine
import ZapProtocol
import ZapRun
import ZapScenario
import ZapPlatform
import SwiftProtobuf

/// The cost of durability: appending accepted results to the coordinator's journal and syncing them.
struct JournalBenchmark: SummarisedBenchmark {
    static let configuration = CommandConfiguration(
        commandName: "journal",
        abstract: "Cost of journaling accepted shard results (append + fsync), alone and in batches.",
        discussion: """
            Appends a real shard result (every histogram of the `quick` scenario's policies) --results \
            times to a journal in --directory, syncing after every --batch results, as the coordinator \
            does for the results that arrive together; then reloads the journal and checks it holds them all.
            """
    )

    @Option(help: "Results to append.")
    var results: Int = 2000

    @Option(help: "Where to write the journal (its disk is what is measured).")
    var directory: String = NSTemporaryDirectory()

    func measure() throws -> [BenchmarkFigure] {
        let scenario = try ScenarioCatalog.load("quick")
        var figures: [BenchmarkFigure] = []
        let runner = ScenarioRunner(scenario: scenario, options: RunOptions())
        var sample = Zapfleet_V1_ShardResult()
        sample.attempt = 1
        sample.policies = try scenario.policies.map { ResultCoding.encode(try runner.run(policy: $0)) }
        let bytes = try sample.serializedBytes() as [UInt8]
        print("journal benchmark: \(results) results of \(bytes.count) bytes each, in \(directory)")
        for batch in [1, 8, 64] {
            let path = (directory as NSString).appendingPathComponent("zapfleet-bench-\(UUID().uuidString).zfj")
            defer { try? FileManager.default.removeItem(atPath: path) }
            let journal = try ResultJournal.create(
                at: path, plan: JournalPlan(runID: "bench", scenarioYAML: "", kernelNanosecondsPerSPTE: 52, shards: []))
            let start = monotonicNanoseconds()
            for index in 0..<results {
                sample.shardID = UInt64(index)
                try journal.append(sample, worker: "bench")
                if (index + 1) % batch == 0 { try journal.sync() }
            }
            try journal.sync()
            let elapsed = Double(monotonicNanoseconds() - start)
            let loaded = try ResultJournal.load(path)
            guard loaded.results.count == results, loaded.tornBytes == 0 else {
                throw ValidationError("the journal holds \(loaded.results.count) results, expected \(results)")
            }
            print(
                String(
                    format: "  one fsync per %2d result(s): %8.1f µs per durable result, %7.0f results/s", batch,
                    elapsed / Double(results) / 1e3, Double(results) / (elapsed / 1e9)))
            figures.append(
                BenchmarkFigure(
                    name: "journal, one fsync per \(batch) result(s)",
                    measured: String(format: "%.1f µs per durable result", elapsed / Double(results) / 1e3)))
        }
        return figures
    }
}
