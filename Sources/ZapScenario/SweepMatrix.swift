import Foundation
import Yams
import ZapEngine

/// A scaling experiment: every combination of guest memory size, vCPU count and worker count,
/// each run once with the given policies. From flags, or from a YAML file:
///
/// ```yaml
/// scenario: quick          # the base scenario (its timeline, memslot size, objectives)
/// sizes: [16GiB, 64GiB, 256GiB]
/// policies: [sync, async]
/// vcpus: [1, 4]
/// workers: [1, 2]
/// ```
public struct SweepMatrix: Sendable, Equatable {
    /// The base scenario's name or file.
    public var scenario: String
    /// Guest memory sizes, in bytes.
    public var sizes: [UInt64]
    /// Policies run in every cell.
    public var policies: [ZapPolicy]
    /// vCPU counts.
    public var vcpus: [Int]
    /// In-process worker counts.
    public var workers: [Int]

    /// A matrix.
    public init(scenario: String, sizes: [UInt64], policies: [ZapPolicy], vcpus: [Int], workers: [Int]) {
        self.scenario = scenario
        self.sizes = sizes
        self.policies = policies
        self.vcpus = vcpus
        self.workers = workers
    }

    /// One run of the sweep.
    public struct Cell: Sendable {
        /// A name for its directory and its CSV rows, e.g. `16GiB-4vcpu-2w`.
        public var name: String
        /// The scenario with this cell's size, vCPUs and policies, validated.
        public var scenario: Scenario
        /// In-process workers.
        public var workers: Int
    }

    /// Every cell, sizes outermost, each scenario validated as a file would be.
    public func cells(base: Scenario) throws(ScenarioError) -> [Cell] {
        var cells: [Cell] = []
        for size in sizes {
            for vcpuCount in vcpus.isEmpty ? [base.workload.vcpus] : vcpus {
                for workerCount in workers {
                    var scenario = base
                    scenario.vm.memoryBytes = size
                    scenario.workload.vcpus = vcpuCount
                    scenario.policies = policies
                    scenario.objectives = scenario.objectives.filter { $0.policy.map(policies.contains) ?? true }
                    let name = "\(Quantities.formatSize(size))-\(vcpuCount)vcpu-\(workerCount)w"
                    let validated = try ScenarioParser.parse(ScenarioWriter.yaml(scenario), file: "sweep cell \(name)")
                    cells.append(Cell(name: name, scenario: validated, workers: workerCount))
                }
            }
        }
        return cells
    }

    /// Reads a matrix file; errors name the file, the key and what to write instead.
    public static func parse(_ text: String, file: String) throws(ScenarioError) -> SweepMatrix {
        let loaded: Any?
        do {
            loaded = try Yams.load(yaml: text)
        } catch {
            throw ScenarioError(.syntax, file: file, "not YAML: \(error)")
        }
        guard let map = loaded as? [String: Any] else {
            throw ScenarioError(.wrongType, file: file, "a sweep file is a mapping of scenario, sizes, policies, vcpus and workers")
        }
        for key in map.keys where !["scenario", "sizes", "policies", "vcpus", "workers"].contains(key) {
            throw ScenarioError(.unknownKey, file: file, key: key, "unknown key; a sweep has scenario, sizes, policies, vcpus, workers")
        }
        func list(_ key: String) throws(ScenarioError) -> [String] {
            guard let value = map[key] else { return [] }
            guard let items = value as? [Any] else { throw ScenarioError(.wrongType, file: file, key: key, "a list, e.g. [a, b]") }
            return items.map { "\($0)" }
        }
        var matrix = SweepMatrix(
            scenario: map["scenario"].map { "\($0)" } ?? "quick", sizes: [], policies: [.sync, .async], vcpus: [], workers: [1])
        matrix.sizes = try sizes(list("sizes"), file: file, key: "sizes")
        let policies = try list("policies")
        if !policies.isEmpty {
            matrix.policies = try policies.map { text throws(ScenarioError) in
                guard let policy = ZapPolicy(rawValue: text) else {
                    throw ScenarioError(.badValue, file: file, key: "policies", "'\(text)' is not sync, async or preserve")
                }
                return policy
            }
        }
        matrix.vcpus = try counts(list("vcpus"), file: file, key: "vcpus")
        let workers = try counts(list("workers"), file: file, key: "workers")
        if !workers.isEmpty { matrix.workers = workers }
        guard !matrix.sizes.isEmpty else {
            throw ScenarioError(.missingKey, file: file, key: "sizes", "a sweep needs sizes, e.g. sizes: [16GiB, 64GiB]")
        }
        return matrix
    }

    /// Sizes such as `64GiB`, each checked; an error names `file` and `key`.
    public static func sizes(_ items: [String], file: String, key: String) throws(ScenarioError) -> [UInt64] {
        try items.map { text throws(ScenarioError) in
            guard let bytes = Quantities.parseSize(text) else {
                throw ScenarioError(.badValue, file: file, key: key, "'\(text)' is not a size, e.g. 64GiB")
            }
            return bytes
        }
    }

    /// vCPU or worker counts, each from 1 to 4096; an error names `file` and `key`.
    public static func counts(_ items: [String], file: String, key: String) throws(ScenarioError) -> [Int] {
        try items.map { text throws(ScenarioError) in
            guard let count = Int(text), count >= 1, count <= 4096 else {
                throw ScenarioError(.badValue, file: file, key: key, "'\(text)' is not a count from 1 to 4096")
            }
            return count
        }
    }
}
