import ZapEngine

/// One experiment: a VM, a workload, a timeline of events, the policies to compare and the
/// objectives the run must meet. Built from YAML (``ScenarioParser``) or a built-in name.
public struct Scenario: Sendable, Equatable {
    /// A short name for reports.
    public var name: String
    /// One sentence on what the scenario shows.
    public var summary: String
    /// The simulated VM.
    public var vm: VMShape
    /// What the vCPUs do.
    public var workload: Workload
    /// Events in order. Teardown always ends the timeline; it is added if missing.
    public var timeline: [TimelineStep]
    /// How many times the timeline, teardown excepted, runs.
    public var repeatCount: Int
    /// Designs to run the same workload under, one after the other.
    public var policies: [ZapPolicy]
    /// `max_active` of the zap workqueue.
    public var workqueueWidth: Int
    /// Seed of every random choice: a run is reproducible from it.
    public var seed: UInt64
    /// Objectives checked after the run.
    public var objectives: [ServiceLevelObjective]
    /// Bugs to re-create on purpose.
    public var injectedBugs: [InjectedBug]
    /// Race amplification (the `chaos:` section); its seed is the scenario's. Nil for none.
    public var chaos: ChaosConfiguration? = nil
    /// The NX huge-page recovery thread (the `nx_recovery:` section); nil for none.
    public var nxRecovery: NXRecoveryConfiguration? = nil
    /// What the kernel projection charges for one remote TLB flush, in nanoseconds
    /// (`tlb_flush_cost:`); ``Scenario/defaultTLBFlushCostNanoseconds`` unless given.
    public var tlbFlushCostNanoseconds: Double = Scenario.defaultTLBFlushCostNanoseconds

    /// 72.8 µs: the flush cost implied by the figures issue #16 quotes for David Matlack's eager
    /// page splitting, `dirty_log_perf_test -s anonymous_hugetlb_2mb -v 64 -e -b 4g`: 14.33 s with
    /// 131,072 flushes against 4.79 s with 76, so (14.33 − 4.79) s / (131,072 − 76) flushes, at
    /// 64 vCPUs faulting at once. It includes the faults that issued them (docs/measurements.md, "TLB flushes").
    public static let defaultTLBFlushCostNanoseconds: Double = ((14.33 - 4.79) / Double(131_072 - 76) * 1e9).rounded()

    /// Memslots in the VM.
    public var memslotCount: Int { Int(vm.memoryBytes / vm.memslotBytes) }

    /// The steps a run performs, in order: the timeline without teardown, `repeat` times, then
    /// teardown once. A run's step records follow this list.
    public var expandedTimeline: [TimelineStep] {
        let body = timeline.filter { $0 != .teardown }
        return Array(repeating: body, count: repeatCount).flatMap { $0 } + [.teardown]
    }
}

/// The simulated VM's memory layout.
public struct VMShape: Sendable, Equatable {
    /// Guest memory, in bytes; a whole number of memslots.
    public var memoryBytes: UInt64
    /// Memslot size, in bytes (2 GiB by default, as the kernel selftest).
    public var memslotBytes: UInt64
    /// Fractions of memory mapped by each page size.
    public var pageMix: PageMix
    /// Dirty logging forces every mapping to 4 KiB.
    public var dirtyLogging: Bool
    /// Whether vCPUs also run in SMM, with a root of their own.
    public var smm: Bool
    /// Memory mapped in the SMM address space (SMRAM), from the start of guest memory.
    public var smramBytes: UInt64

    /// The page mix that actually applies (4 KiB only under dirty logging).
    public var effectivePageMix: PageMix { dirtyLogging ? PageMix(fraction4K: 1, fraction2M: 0, fraction1G: 0) : pageMix }
}

/// How guest memory is mapped: fractions that sum to 1.
public struct PageMix: Sendable, Equatable {
    /// Mapped with 4 KiB pages.
    public var fraction4K: Double
    /// Mapped with 2 MiB pages.
    public var fraction2M: Double
    /// Mapped with 1 GiB pages.
    public var fraction1G: Double

    /// A mix; fractions are validated by the parser.
    public init(fraction4K: Double, fraction2M: Double, fraction1G: Double) {
        self.fraction4K = fraction4K
        self.fraction2M = fraction2M
        self.fraction1G = fraction1G
    }
}

/// What the vCPUs do.
public struct Workload: Sendable, Equatable {
    /// vCPU threads.
    public var vcpus: Int
    /// The order in which each vCPU covers its part of memory.
    public var coverage: Coverage
    /// Fraction of each vCPU's part it touches while populating.
    public var touched: Double
    /// How fast vCPUs fault during `run` steps.
    public var pacing: Pacing
    /// While the VM zaps (memslot deletion, unmap, full zap, dirty logging), each vCPU runs guest
    /// work on a thread pinned to its own CPU and counts the run time it loses (CPU interference).
    public var guestWork: Bool = false
}

/// Order of coverage.
public enum Coverage: String, Sendable, Equatable, CaseIterable {
    /// Region after region.
    case sequential
    /// A seeded permutation of the regions.
    case random
}

/// Fault pacing in `run` steps.
public enum Pacing: Sendable, Equatable {
    /// As fast as the vCPU can.
    case unpaced
    /// A target rate per vCPU; latencies are recorded with coordinated-omission correction.
    case faultsPerSecond(Double)
}

/// One event of the timeline.
public enum TimelineStep: Sendable, Equatable {
    /// Every vCPU faults in its part of memory.
    case populate
    /// Every vCPU takes this many single 4 KiB faults at random addresses of its part.
    case run(faults: Int)
    /// Every vCPU resets, unloading its roots (the defunct path under `async`).
    case resetVCPUs
    /// This fraction of the remaining memslots is deleted, one fast zap each.
    case deleteMemslots(fraction: Double)
    /// The MMU notifier is released: one full zap.
    case fullZap
    /// The host unmaps this fraction of the memslots (MMU-notifier unmap, one per memslot): their
    /// SPTEs go from every root, valid or invalid.
    case unmap(fraction: Double)
    /// A dirty-logging operation on the valid roots, under the read lock while vCPUs may fault.
    case dirtyLog(DirtyLogAction)
    /// Every vCPU takes this many faults through the lockless fast path (writes to present
    /// pages set their dirty bits; missing pages take the slow path).
    case fastFaults(faults: Int)
    /// Every vCPU writes every 4 KiB page of its part once, in order, as `dirty_log_perf_test`'s
    /// guest does: each write faults through the fast path (slow when it must map or split).
    case dirtyMemory
    /// Everything at once: each vCPU performs this many random operations (faults slow and fast,
    /// resets, SMM switches) while the VM thread runs fast zaps, full zaps, unmaps and dirty
    /// logging against them.
    case workout(operations: Int)
    /// The VM is destroyed and checked.
    case teardown

    /// Whether the VM zaps in this step while the vCPUs could be running the guest (the steps
    /// during which `guest_work` measures interference).
    public var zaps: Bool {
        switch self {
        case .deleteMemslots, .fullZap, .unmap, .dirtyLog: true
        default: false
        }
    }

    /// The step's name in YAML.
    public var name: String {
        switch self {
        case .populate: "populate"
        case .run: "run"
        case .resetVCPUs: "reset_vcpus"
        case .deleteMemslots: "delete_memslots"
        case .fullZap: "full_zap"
        case .unmap: "unmap"
        case .dirtyLog: "dirty_log"
        case .fastFaults: "fast_faults"
        case .dirtyMemory: "dirty_memory"
        case .workout: "workout"
        case .teardown: "teardown"
        }
    }
}

/// What a `dirty_log` step does.
public enum DirtyLogAction: String, Sendable, Equatable, CaseIterable {
    /// Dirty logging on: write-protect every leaf (`kvm_tdp_mmu_wrprot_slot`); writes then
    /// fault, and the fast path makes the page writable again.
    case enable
    /// `KVM_CLEAR_DIRTY_LOG`: clear the dirty bit of every leaf (`kvm_tdp_mmu_clear_dirty_slot`).
    case clear
    /// Dirty logging off: zap the 4 KiB tables a huge page could replace
    /// (`kvm_tdp_mmu_zap_collapsible_sptes`).
    case disable
}
