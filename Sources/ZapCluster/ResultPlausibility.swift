import HistogramCodec
import ZapEngine
import ZapRun
import ZapScenario

/// Checks a decoded shard result against the assignment it answers: a value that decodes and
/// lies within its type's range can still be impossible for the shard (2^40 samples from two
/// vCPUs, 2^50 SPTEs from 64 GiB). Such a result is refused with the field named, before any
/// of it is merged, so that no peer-supplied number reaches the totals' arithmetic unbounded.
public enum ResultPlausibility {
    /// The bounds one shard of a scenario cannot exceed, per policy.
    public struct Bounds: Sendable, Equatable {
        /// Leaf SPTEs one root can map for the shard (its 4 KiB pages, SMRAM included).
        public var pagesPerRoot: UInt64
        /// Leaf SPTEs installed (and so zapped) at most: every root of every vCPU and address
        /// space, rebuilt in every step.
        public var sptes: UInt64
        /// Samples of one histogram, and violations, at most.
        public var samples: UInt64
        /// Steps in a policy's run.
        public var steps: Int
        /// Their names, in order: step records must follow them.
        public var stepNames: [String]
        /// vCPUs of the scenario.
        public var vcpus: Int
        /// Whether the scenario measures CPU interference (`workload.guest_work`).
        public var guestWork: Bool
        /// The longest time any one value may claim: a week.
        public var nanoseconds: UInt64 = 7 * 86_400 * 1_000_000_000

        /// The bounds of `shard` of `scenario`.
        public init(shard: Shard, scenario: Scenario) {
            let steps = scenario.timeline.filter { $0 != .teardown }.count * scenario.repeatCount + 1
            let vcpus = UInt64(scenario.workload.vcpus)
            let addressSpaces: UInt64 = scenario.vm.smm ? 2 : 1
            let pages = shard.bytes / 4096 + (scenario.vm.smm ? scenario.vm.smramBytes / 4096 : 0)
            let rebuilds = UInt64(steps + 1)
            let faultsPerStep = scenario.timeline.reduce(UInt64(0)) { most, step in
                if case .run(let faults) = step { return max(most, UInt64(max(0, faults))) }
                return most
            }
            self.steps = steps
            self.vcpus = scenario.workload.vcpus
            guestWork = scenario.workload.guestWork
            stepNames = scenario.expandedTimeline.map(\.name)
            pagesPerRoot = pages
            sptes = Self.saturating([pages, vcpus, addressSpaces, rebuilds])
            // Each step: a sample per 4 KiB page at most (populate and fault), the run step's
            // faults on every vCPU, a reset per vCPU, a fast zap per memslot, a lifetime per root.
            let perStep = Self.saturatingSum([
                pages, Self.saturating([faultsPerStep, vcpus]), vcpus,
                UInt64(shard.slice.slotCount), Self.saturating([vcpus, addressSpaces, 4]), 64
            ])
            samples = Self.saturating([perStep, rebuilds])
        }

        static func saturating(_ factors: [UInt64]) -> UInt64 {
            factors.reduce(1) { product, factor in
                let (value, overflow) = product.multipliedReportingOverflow(by: factor)
                return overflow ? .max : value
            }
        }

        static func saturatingSum(_ terms: [UInt64]) -> UInt64 {
            terms.reduce(0) { sum, term in
                let (value, overflow) = sum.addingReportingOverflow(term)
                return overflow ? .max : value
            }
        }
    }

    /// The verdict on `runs` (one per policy, decoded and validated by ``ResultCoding``) as the
    /// result of `shard` of `scenario`, with the shard's wall time `wallNanoseconds`.
    public static func check(_ runs: [DecodedPolicyResult], wallNanoseconds: UInt64, shard: Shard, scenario: Scenario) -> ResultVerdict {
        let bounds = Bounds(shard: shard, scenario: scenario)
        guard runs.map(\.policy) == scenario.policies else {
            return .implausible("policies \(runs.map(\.policy.rawValue)), where the scenario has \(scenario.policies.map(\.rawValue))")
        }
        guard wallNanoseconds <= bounds.nanoseconds else { return .implausible("wall_ns \(wallNanoseconds) is more than a week") }
        for run in runs {
            if let problem = problem(with: run, bounds: bounds) { return .implausible("policy \(run.policy.rawValue): \(problem)") }
        }
        return .plausible
    }

    private static func problem(with run: DecodedPolicyResult, bounds: Bounds) -> String? {
        // A run cut short (the worker or the run stopping) measured part of a shard: merged as
        // done, it would make the totals differ from an uninterrupted run's.
        guard run.complete else { return "complete is false: a shard cut short is given back, not reported" }
        let counters = run.statistics
        guard UInt64(counters.sptesInstalled) <= bounds.sptes else {
            return
                "counters.sptes_installed \(counters.sptesInstalled) is more than the shard's \(bounds.sptes) (\(bounds.pagesPerRoot) pages per root)"
        }
        guard counters.sptesZapped <= counters.sptesInstalled else {
            return "counters.sptes_zapped \(counters.sptesZapped) is more than sptes_installed \(counters.sptesInstalled)"
        }
        guard counters.accessedZapped <= counters.sptesZapped, counters.dirtyZapped <= counters.sptesZapped else {
            return "counters.accessed_zapped or dirty_zapped is more than sptes_zapped \(counters.sptesZapped)"
        }
        let otherCounters: [(String, Int)] = [
            ("tables_allocated", counters.tablesAllocated), ("tables_freed", counters.tablesFreed), ("tables_live", counters.tablesLive),
            ("tables_peak", counters.tablesPeak), ("faults", counters.faults), ("fault_retries", counters.faultRetries),
            ("spurious_faults", counters.spuriousFaults), ("yields", counters.yields), ("zap_steps", counters.zapSteps),
            ("largest_step_tables", counters.largestStepTables), ("roots_created", counters.rootsCreated),
            ("roots_reused", counters.rootsReused), ("roots_freed", counters.rootsFreed), ("root_zaps", counters.rootZaps),
            ("work_items_queued", counters.workItemsQueued), ("work_items_rejected", counters.workItemsRejected),
            ("fast_zaps", counters.fastZaps), ("full_zaps", counters.fullZaps)
        ]
        let counterBound = max(bounds.sptes, bounds.samples)
        for (name, value) in otherCounters where UInt64(value) > counterBound {
            return "counters.\(name) \(value) is more than the shard can produce (\(counterBound))"
        }
        // One request per fast zap; every other flush follows at least one SPTE changed or a step.
        guard run.tlbFlushes[.obsoleteRoots] <= counters.fastZaps else {
            return
                "tlb_flushes[obsolete_roots] \(run.tlbFlushes[.obsoleteRoots]) is more than fast_zaps \(counters.fastZaps) (one request each)"
        }
        for (name, value) in run.tlbFlushes.byCause where UInt64(value) > counterBound {
            return "tlb_flushes[\(name)] \(value) is more than the shard can produce (\(counterBound))"
        }
        if let interference = run.interference {
            guard bounds.guestWork else { return "cpu_interference sent for a scenario without workload.guest_work" }
            if let share = interference.vcpus.first(where: { $0.vcpu >= bounds.vcpus }) {
                return "cpu_interference.vcpus: vcpu \(share.vcpu), where the scenario has \(bounds.vcpus) vCPUs"
            }
            guard UInt64(interference.memslotDeletions) <= UInt64(counters.fastZaps) else {
                return "cpu_interference.memslot_deletions \(interference.memslotDeletions) is more than fast_zaps \(counters.fastZaps)"
            }
        }
        var measured: [MeasuredOperation: UInt64] = [:]
        var projected: [MeasuredOperation: UInt64] = [:]
        for histogram in run.histograms {
            var total: UInt64 = 0
            for bucket in histogram.buckets.buckets {
                let (sum, overflow) = total.addingReportingOverflow(bucket.count)
                guard !overflow else { return "histogram \(histogram.operation.name): its bucket counts overflow 64 bits" }
                total = sum
            }
            let kind = histogram.projected ? "projected " : ""
            guard total <= bounds.samples else {
                return
                    "\(kind)histogram \(histogram.operation.name) holds \(total) samples, more than the shard can produce (\(bounds.samples))"
            }
            if histogram.projected { projected[histogram.operation] = total } else { measured[histogram.operation] = total }
        }
        // A projection is recorded with every measured sample of its operation: the totals agree.
        for (operation, total) in projected where measured[operation, default: 0] != total {
            return "projected histogram \(operation.name) holds \(total) samples, the measured one \(measured[operation, default: 0])"
        }
        let violations = run.violationCounts.values.reduce(UInt64(0)) { $0 &+ UInt64($1) }
        guard violations <= bounds.samples else { return "violation_counts sum to \(violations), more than the shard can produce" }
        guard run.steps.count <= bounds.steps else {
            return "\(run.steps.count) step records, where the timeline has \(bounds.steps) steps"
        }
        guard run.wallNanoseconds <= bounds.nanoseconds else { return "wall_ns \(run.wallNanoseconds) is more than a week" }
        for (index, step) in run.steps.enumerated() {
            // The whole-VM view adds step i of every shard into the timeline's step i.
            guard index < bounds.stepNames.count, step.name == bounds.stepNames[index] else {
                return
                    "steps[\(index)] is '\(step.name.printable(limit: 40))', where the timeline's step \(index + 1) is '\(index < bounds.stepNames.count ? bounds.stepNames[index] : "none")'"
            }
            guard step.nanoseconds <= bounds.nanoseconds, step.longestBlockNanoseconds <= bounds.nanoseconds else {
                return
                    "steps[\(index)] claims more than a week (wall_ns \(step.nanoseconds), longest_block_ns \(step.longestBlockNanoseconds))"
            }
            guard step.sptesZappedInline <= counters.sptesZapped else {
                return "steps[\(index)].sptes_zapped_inline \(step.sptesZappedInline) is more than sptes_zapped \(counters.sptesZapped)"
            }
        }
        return nil
    }
}
