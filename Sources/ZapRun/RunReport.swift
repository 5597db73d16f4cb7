import Foundation
import Histogram
import ZapEngine
import ZapScenario

/// Percentiles of one histogram, in nanoseconds: the shape `report.json` stores. Values follow
/// HdrHistogram's convention (``Histogram/conventionalValue(atPercentile:)``): percentiles and the
/// maximum are the highest value of their bucket, the minimum the lowest.
public struct LatencySummary: Sendable, Codable, Equatable {
    /// Samples.
    public var count: UInt64
    /// Smallest value (the lowest of its bucket).
    public var minNs: UInt64
    /// Mean.
    public var meanNs: Double
    /// Median.
    public var p50Ns: UInt64
    /// 90th percentile.
    public var p90Ns: UInt64
    /// 99th percentile.
    public var p99Ns: UInt64
    /// 99.9th percentile.
    public var p999Ns: UInt64
    /// 99.99th percentile.
    public var p9999Ns: UInt64
    /// Largest value (the highest of its bucket).
    public var maxNs: UInt64

    /// The summary of `histogram`.
    public init(_ histogram: LatencyHistogram) {
        let empty = histogram.totalCount == 0
        count = histogram.totalCount
        minNs = histogram.conventionalMin
        meanNs = empty ? 0 : histogram.mean
        p50Ns = histogram.conventionalValue(atPercentile: 50)
        p90Ns = histogram.conventionalValue(atPercentile: 90)
        p99Ns = histogram.conventionalValue(atPercentile: 99)
        p999Ns = histogram.conventionalValue(atPercentile: 99.9)
        p9999Ns = histogram.conventionalValue(atPercentile: 99.99)
        maxNs = histogram.conventionalMax
    }

    /// The value of statistic `name` (as objectives write it).
    public func value(of name: String) -> Double? {
        switch name {
        case "count": Double(count)
        case "min": Double(minNs)
        case "mean": meanNs
        case "max": Double(maxNs)
        case "p50": Double(p50Ns)
        case "p90": Double(p90Ns)
        case "p99": Double(p99Ns)
        case "p99.9": Double(p999Ns)
        case "p99.99": Double(p9999Ns)
        default: nil
        }
    }
}

/// One operation's block times: measured, and projected to the kernel.
public struct OperationReport: Sendable, Codable, Equatable {
    /// What the engine measured.
    public var measured: LatencySummary
    /// SPTEs zapped in the caller's context × the per-SPTE kernel cost.
    public var projected: LatencySummary
}

/// Everything measured under one policy.
public struct PolicyReport: Sendable, Codable, Equatable {
    /// The policy.
    public var policy: String
    /// The kernels it models.
    public var kernels: String
    /// False if the run stopped early.
    public var complete: Bool
    /// Wall time of the policy's run.
    public var wallSeconds: Double
    /// Block times by operation name (``MetricCatalog/operations``).
    public var operations: [String: OperationReport]
    /// The engine's counters.
    public var counters: EngineStatistics
    /// SPTEs zapped per second of zap wall time.
    public var zapThroughputSptesPerSecond: Double
    /// Violations by kind.
    public var violationsByKind: [String: Int]
    /// Total violations.
    public var violations: Int
    /// Up to ten violations in full.
    public var violationExamples: [String]
    /// Wall time of each step.
    public var steps: [StepTiming]
    /// For each bug injected with `--inject`: how often its broken path ran under this policy.
    public var injectedPathRuns: [String: Int]?
    /// True for a real kernel's column (an agent's, or `run --kvm`'s): measured block times only,
    /// no engine counters, no checker, no projection. Absent for the simulated policies.
    public var external: Bool?
    /// Remote TLB flushes the policy's kernel would have issued; absent for a real kernel's column.
    public var tlbFlushes: TLBFlushReport?
    /// Guest run time lost to zap work (scenarios with `workload.guest_work`).
    public var cpuInterference: CPUInterference?
}

/// The remote TLB flushes of one policy's run (``TLBFlushCause``), and what they project to.
public struct TLBFlushReport: Sendable, Codable, Equatable {
    /// Flushes by cause (`obsolete_roots`, `root_zap`, `unmap`, `large_spte_replace`,
    /// `write_protect`, `clear_dirty`, `collapsible_zap`, `nx_recovery`); causes with none left out.
    public var byCause: TLBFlushCounts
    /// Every flush.
    public var total: Int
    /// `total` × the per-flush cost (`kernel_ns_per_tlb_flush`), in seconds: CPU time of the
    /// flushing threads, whether a caller waited for them (those are in the operations'
    /// projections) or not (a worker's, a vCPU's own).
    public var projectedSeconds: Double

    /// The report of `counts` at `nanosecondsPerFlush` each.
    public init(_ counts: TLBFlushCounts, nanosecondsPerFlush: Double) {
        byCause = counts
        total = counts.total
        projectedSeconds = Double(counts.total) * nanosecondsPerFlush / 1e9
    }
}

/// One objective's verdict.
public struct ObjectiveVerdict: Sendable, Codable, Equatable {
    /// The objective as written.
    public var objective: String
    /// The policy it was evaluated on.
    public var policy: String
    /// The value measured (ns for latencies).
    public var value: Double
    /// The threshold.
    public var threshold: Double
    /// Was it met?
    public var met: Bool
}

/// Every exit code a zapfleet command ends with: what a nightly job acts on. The verdict of a
/// run picks one of the first five and 70 or 130; the commands add the rest.
public enum RunExitCode: Int32, Sendable, CaseIterable {
    /// Every objective met, no invariant violated.
    case met = 0
    /// An objective (SLO) was missed.
    case objectiveMissed = 1
    /// An invariant was violated.
    case invariantViolated = 2
    /// A worker or agent was refused by its coordinator.
    case refused = 3
    /// A bug injected with `--inject` never reached its broken path: the run proves nothing about it.
    case inconclusive = 4
    /// Bad input (command line, scenario, an output that cannot be written): nothing was run.
    case badInput = 64
    /// zapfleet failed, or a fleet run failed (a shard out of attempts, no worker joined).
    case internalError = 70
    /// Interrupted by SIGINT or SIGTERM; what was measured is still reported.
    case interrupted = 130
}

/// The run's outcome as a nightly job reads it.
public struct Verdict: Sendable, Codable, Equatable {
    /// The process exit code, a ``RunExitCode``: 0 all met, 1 an objective missed, 2 an invariant
    /// violated, 4 inconclusive, 70 the run failed, 130 interrupted (what was measured is still reported).
    public var exitCode: Int32
    /// Total violations over every policy.
    public var violations: Int
    /// Objectives missed.
    public var objectivesMissed: Int
    /// One sentence.
    public var summary: String
}

/// `report.json`: a versioned, documented record of a run (README, "Report schema").
public struct RunReport: Sendable, Codable, Equatable {
    /// Always `zapfleet-report`.
    public var schema: String = "zapfleet-report"
    /// Bumped on any incompatible change.
    public var schemaVersion: Int = RunReport.currentSchemaVersion
    /// The version of zapfleet that wrote it.
    public var zapfleetVersion: String
    /// The scenario's name.
    public var scenario: String
    /// The scenario exactly as run, as YAML (also written as `scenario.yaml`).
    public var scenarioYaml: String
    /// The memslots run (the whole VM for a local run).
    public var slice: MemorySlice
    /// Kernel cost per SPTE used for projections.
    public var kernelNsPerSpte: Double
    /// The per-flush cost of the projection (the scenario's `tlb_flush_cost`), in nanoseconds.
    public var kernelNsPerTlbFlush: Double?
    /// When the run started (ISO 8601).
    public var startedAt: String
    /// Wall time of the whole run.
    public var wallSeconds: Double
    /// False if the run was interrupted.
    public var complete: Bool
    /// One entry per policy, in run order.
    public var policies: [PolicyReport]
    /// Every objective on every policy it applies to.
    public var objectives: [ObjectiveVerdict]
    /// Bugs injected with `--inject` whose broken path never ran (exit 4 when nothing worse happened); nil when none.
    public var injectionsNotReached: [String]?
    /// The outcome.
    public var verdict: Verdict
    /// Workers, shards and the whole-VM view, for a fleet run; absent for a local run.
    public var fleet: FleetSection?

    /// The schema version this build writes.
    public static let currentSchemaVersion = 1

    /// Builds the report of `runs` (and of external agents' measurements), evaluating `scenario`'s objectives.
    public init(
        scenario: Scenario, runs: [PolicyRun], slice: MemorySlice, kernelNanosecondsPerSPTE: Double,
        startedAt: Date, wallNanoseconds: UInt64, version: String, fleet: FleetSection? = nil,
        failure: String? = nil, external: [ExternalMeasurement] = []
    ) {
        self.fleet = fleet
        zapfleetVersion = version
        self.scenario = scenario.name
        scenarioYaml = ScenarioWriter.yaml(scenario)
        self.slice = slice
        kernelNsPerSpte = kernelNanosecondsPerSPTE
        kernelNsPerTlbFlush = scenario.tlbFlushCostNanoseconds
        self.startedAt = ISO8601DateFormatter().string(from: startedAt)
        wallSeconds = Double(wallNanoseconds) / 1e9
        complete = runs.allSatisfy(\.complete) && runs.count == scenario.policies.count
        // Real kernels' measurements, if any, stand beside the simulated policies and face the same objectives.
        policies =
            runs.map { PolicyReport(run: $0, nanosecondsPerFlush: scenario.tlbFlushCostNanoseconds) }
            + external.map(PolicyReport.init(external:))
        objectives = Self.evaluate(scenario.objectives, on: policies)
        let violations = policies.reduce(0) { $0 + $1.violations }
        let missed = objectives.filter { !$0.met }.count
        // An injected bug whose broken path never ran under any policy it applies to: the run
        // cannot say whether the checker would have caught it, so it must not pass as a success.
        let unreached = scenario.injectedBugs.filter { bug in
            runs.filter { bug.applicablePolicies.contains($0.policy) }.allSatisfy { ($0.injectedPathRuns[bug] ?? 0) == 0 }
        }
        injectionsNotReached = unreached.isEmpty ? nil : unreached.map(\.rawValue)
        let notReached =
            unreached.isEmpty
            ? ""
            : "injected \(unreached.map(\.rawValue).joined(separator: ", ")): the broken path never ran in this scenario under \(unreached.flatMap(\.applicablePolicies).map(\.rawValue).uniqued().joined(separator: ", ")), so the run says nothing of whether the checker catches it (engine-check reaches every path)"
        let code: RunExitCode =
            failure != nil
            ? .internalError
            : !complete
                ? .interrupted
                : violations > 0
                    ? .invariantViolated
                    : !unreached.isEmpty ? .inconclusive : missed > 0 ? .objectiveMissed : .met
        let summary: String
        switch code {
        case .internalError: summary = "the run failed: \(failure ?? "")"
        case .interrupted: summary = "interrupted: the report holds what was measured before the stop"
        case .inconclusive: summary = notReached + (missed > 0 ? "; \(missed) objective(s) missed" : "")
        case .invariantViolated:
            summary =
                "\(violations) invariant violation(s)" + (missed > 0 ? " and \(missed) objective(s) missed" : "")
                + (unreached.isEmpty ? "" : "; " + notReached)
        case .objectiveMissed: summary = "\(missed) objective(s) missed"
        case .met, .refused, .badInput: summary = "every objective met, no invariant violated"
        }
        verdict = Verdict(exitCode: code.rawValue, violations: violations, objectivesMissed: missed, summary: summary)
    }

    /// Evaluates each objective on each policy it names (or on all).
    static func evaluate(_ objectives: [ServiceLevelObjective], on policies: [PolicyReport]) -> [ObjectiveVerdict] {
        var verdicts: [ObjectiveVerdict] = []
        for objective in objectives {
            for policy in policies where objective.policy == nil || objective.policy?.rawValue == policy.policy {
                guard let value = policy.value(of: objective.metric) else { continue }
                verdicts.append(
                    ObjectiveVerdict(
                        objective: objective.text, policy: policy.policy, value: value,
                        threshold: objective.threshold,
                        met: objective.comparison.holds(value, objective.threshold)))
            }
        }
        return verdicts
    }
}

extension PolicyReport {
    /// The report of one policy's run, its flushes projected at `nanosecondsPerFlush` each.
    public init(run: PolicyRun, nanosecondsPerFlush: Double = Scenario.defaultTLBFlushCostNanoseconds) {
        policy = run.policy.rawValue
        kernels = run.policy.kernels
        complete = run.complete
        wallSeconds = Double(run.wallNanoseconds) / 1e9
        var operations: [String: OperationReport] = [:]
        for operation in MeasuredOperation.allCases {
            operations[operation.name] = OperationReport(
                measured: LatencySummary(run.recorder.histogram(operation)),
                projected: LatencySummary(run.recorder.projection(operation)))
        }
        operations["vcpu_block"] = OperationReport(
            measured: LatencySummary(run.recorder.vcpuBlock),
            projected: LatencySummary(run.recorder.vcpuBlockProjected))
        self.operations = operations
        counters = run.statistics
        zapThroughputSptesPerSecond = run.zapThroughput
        violationsByKind = Dictionary(uniqueKeysWithValues: run.violationCounts.map { ($0.key.rawValue, $0.value) })
        violations = run.violationCounts.values.reduce(0, +)
        violationExamples = run.violations.prefix(10).map(\.description)
        steps = run.steps
        injectedPathRuns =
            run.injectedPathRuns.isEmpty ? nil : Dictionary(uniqueKeysWithValues: run.injectedPathRuns.map { ($0.key.rawValue, $0.value) })
        tlbFlushes = TLBFlushReport(run.tlbFlushes, nanosecondsPerFlush: nanosecondsPerFlush)
        cpuInterference = run.interference
    }

    /// The value an objective's metric names, if this report has it. A real kernel's column has
    /// only what it measured: no counters (it has no checker, so "violations == 0" would hold of
    /// nothing), no projection, and no statistic of an operation it has no sample of; such an
    /// objective is not evaluated on it rather than "met".
    public func value(of metric: ServiceLevelObjective.Metric) -> Double? {
        switch metric {
        case .latency(let operation, let statistic, let projected):
            guard let report = operations[operation] else { return nil }
            if external == true && (projected || report.measured.count == 0) { return nil }
            return (projected ? report.projected : report.measured).value(of: statistic)
        case .counter where external == true:
            return nil
        case .counter(let name):
            switch name {
            case "violations": return Double(violations)
            case "sptes_installed": return Double(counters.sptesInstalled)
            case "sptes_zapped": return Double(counters.sptesZapped)
            case "tables_leaked": return Double(counters.tablesLive)
            case "work_items_rejected": return Double(counters.workItemsRejected)
            case "yields": return Double(counters.yields)
            case "tlb_flushes": return tlbFlushes.map { Double($0.total) }
            default: return nil
            }
        }
    }
}

extension Array where Element: Hashable {
    /// The elements in order, each once.
    func uniqued() -> [Element] {
        var seen = Set<Element>()
        return filter { seen.insert($0).inserted }
    }
}
