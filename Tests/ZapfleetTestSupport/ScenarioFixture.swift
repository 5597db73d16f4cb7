import Foundation
import ZapScenario

/// Scenarios the tests share, as the YAML a user writes.
public enum ScenarioFixture {
    /// The fleet tests' scenario shape: populate, reset every vCPU, delete half the memslots,
    /// under sync and async with two vCPUs. Its size decides the shards: one per `memslot` with
    /// `--shard-size` equal to it.
    public static func fleet(name: String, memory: String, memslot: String, pages: String? = nil) -> String {
        let layout = pages.map { ", pages: \($0)" } ?? ""
        return """
            name: \(name)
            vm: {memory: \(memory), memslot: \(memslot)\(layout)}
            workload: {vcpus: 2}
            timeline: [populate, reset_vcpus, {delete_memslots: {fraction: 0.5}}]
            policies: [sync, async]

            """
    }

    /// 8 GiB in 1 GiB memslots: a run of a second or two.
    public static let small = fleet(name: "small", memory: "8GiB", memslot: "1GiB")

    /// 32 GiB in 2 GiB memslots: 16 shards, a few seconds for three workers.
    public static let cluster = fleet(name: "cluster-test", memory: "32GiB", memslot: "2GiB")

    /// 256 GiB in 2 GiB memslots (64 shards of two memslots with `--max-memory`'s default): a run
    /// long enough that a worker can be stopped or cut off, noticed missing, and brought back
    /// while the others still work.
    public static let long = fleet(name: "cluster-faults", memory: "256GiB", memslot: "2GiB")

    /// `text` parsed as the file `file`.
    public static func parse(_ text: String, file: String = "test.yaml") throws -> Scenario {
        try ScenarioParser.parse(text, file: file)
    }

    /// Writes `text` to `directory/name` and returns the file's path.
    public static func write(_ text: String, in directory: String, as name: String = "scenario.yaml") throws -> String {
        let path = directory + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}
