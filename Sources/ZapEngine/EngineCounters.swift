import Atomics
import ZapPlatform

/// Event counters of one VM. Hot paths add to them once per table or per step, not per SPTE.
final class EngineCounters: @unchecked Sendable {
    /// Leaves installed outside the fault path (eager huge-page splits); see ``installedTotal``.
    let sptesInstalled = ManagedAtomic<Int>(0)
    let sptesZapped = ManagedAtomic<Int>(0)
    let accessedZapped = ManagedAtomic<Int>(0)
    let dirtyZapped = ManagedAtomic<Int>(0)
    /// Faults counted outside a vCPU's tally; see ``faultsTotal``.
    let faults = ManagedAtomic<Int>(0)
    let faultRetries = ManagedAtomic<Int>(0)
    let spuriousFaults = ManagedAtomic<Int>(0)
    let yields = ManagedAtomic<Int>(0)
    let zapSteps = ManagedAtomic<Int>(0)
    let largestStepTables = ManagedAtomic<Int>(0)
    let rootsCreated = ManagedAtomic<Int>(0)
    let rootsReused = ManagedAtomic<Int>(0)
    let rootsFreed = ManagedAtomic<Int>(0)
    let rootZaps = ManagedAtomic<Int>(0)
    let workItemsQueued = ManagedAtomic<Int>(0)
    let workItemsRejected = ManagedAtomic<Int>(0)
    let fastZaps = ManagedAtomic<Int>(0)
    let fullZaps = ManagedAtomic<Int>(0)
    /// Fast page faults fixed without `mmu_lock`.
    let fastFaultsFixed = ManagedAtomic<Int>(0)
    /// Huge leaves replaced by a table: zapped by a fault (counted in `sptesZapped`), or split
    /// eagerly into 512 leaves (counted in `sptesZapped`, the leaves in `sptesInstalled`).
    let hugePagesSplit = ManagedAtomic<Int>(0)
    /// Leaves write-protected for dirty logging.
    let pagesWriteProtected = ManagedAtomic<Int>(0)
    /// Dirty bits cleared by `KVM_CLEAR_DIRTY_LOG`.
    let dirtyBitsCleared = ManagedAtomic<Int>(0)
    /// How often each injected bug's broken path ran (``InjectedBug/allCases`` order): an
    /// injection whose path never ran proves nothing about the checker.
    let injectedPathRuns = InjectedBug.allCases.map { _ in ManagedAtomic<Int>(0) }
    /// Remote TLB flushes the modelled kernel would issue, by ``TLBFlushCause`` (its raw value).
    let tlbFlushes = TLBFlushCause.allCases.map { _ in ManagedAtomic<Int>(0) }

    /// A figure that grows whenever the VM does work (faults started, SPTEs installed or zapped,
    /// zap steps, roots made or freed, VM operations): the watchdog's measure of progress. Yields
    /// and retries are left out: a livelock is made of them.
    var progress: Int {
        faultsTotal &+ installedTotal
            &+ sptesZapped.load(ordering: .relaxed) &+ zapSteps.load(ordering: .relaxed)
            &+ rootsCreated.load(ordering: .relaxed) &+ rootsFreed.load(ordering: .relaxed)
            &+ fastZaps.load(ordering: .relaxed) &+ fullZaps.load(ordering: .relaxed)
            &+ workItemsQueued.load(ordering: .relaxed) &+ operationsCompleted.load(ordering: .relaxed)
            &+ fastFaultsFixed.load(ordering: .relaxed) &+ dirtyBitsCleared.load(ordering: .relaxed)
            &+ pagesWriteProtected.load(ordering: .relaxed)
    }
    /// Operations (faults, resets, VM operations) that returned.
    let operationsCompleted = ManagedAtomic<Int>(0)

    // MARK: - Per-vCPU fault tallies (`vcpu->stat`)

    private let talliesLock = PThreadMutex()
    private var tallies: [FaultTally] = []

    /// A tally for a new vCPU's faults, counted in the totals from now on.
    func makeFaultTally() -> FaultTally {
        let tally = FaultTally()
        talliesLock.withLock { tallies.append(tally) }
        return tally
    }

    private var allTallies: [FaultTally] { talliesLock.withLock { tallies } }

    /// Faults taken, by every vCPU.
    var faultsTotal: Int {
        allTallies.reduce(faults.load(ordering: .relaxed)) { $0 &+ $1.count(.faults) }
    }

    /// Leaf SPTEs installed, by faults and by eager splits.
    var installedTotal: Int {
        allTallies.reduce(sptesInstalled.load(ordering: .relaxed)) { $0 &+ $1.count(.sptesInstalled) }
    }
}

/// One vCPU's fault counters (`vcpu->stat`), on cache lines no other vCPU writes: faults on
/// many vCPUs would otherwise all increment the same VM-wide counters, a line bounced between
/// CPUs on every fault. ``EngineCounters`` adds them up when read.
final class FaultTally: @unchecked Sendable {
    enum Counter: Int { case faults, sptesInstalled }

    private let counters = AlignedAtomics<Int>(count: 2, initial: 0)

    @inline(__always)
    func add(_ counter: Counter, _ amount: Int = 1) {
        counters[counter.rawValue].wrappingIncrement(by: amount, ordering: .relaxed)
    }

    func count(_ counter: Counter) -> Int {
        counters[counter.rawValue].load(ordering: .relaxed)
    }
}

extension ManagedAtomic where Value: Comparable {
    /// Raises the value to `candidate` if it is larger (a lock-free running maximum).
    func raise(to candidate: Value) {
        var seen = load(ordering: .relaxed)
        while candidate > seen {
            let (exchanged, original) = weakCompareExchange(expected: seen, desired: candidate, ordering: .relaxed)
            if exchanged { return }
            seen = original
        }
    }
}

extension UnsafeAtomic where Value: Comparable {
    /// Raises the value to `candidate` if it is larger (``ManagedAtomic/raise(to:)`` for atomics
    /// in raw storage, e.g. ``AlignedAtomics``).
    func raise(to candidate: Value) {
        var seen = load(ordering: .relaxed)
        while candidate > seen {
            let (exchanged, original) = weakCompareExchange(expected: seen, desired: candidate, ordering: .relaxed)
            if exchanged { return }
            seen = original
        }
    }
}

/// A snapshot of a VM's counters, for reports and tests.
public struct EngineStatistics: Sendable, Codable, Equatable {
    /// All counters at zero.
    public init() {
        sptesInstalled = 0
        sptesZapped = 0
        accessedZapped = 0
        dirtyZapped = 0
        tablesAllocated = 0
        tablesFreed = 0
        tablesLive = 0
        tablesPeak = 0
        faults = 0
        faultRetries = 0
        spuriousFaults = 0
        yields = 0
        zapSteps = 0
        largestStepTables = 0
        rootsCreated = 0
        rootsReused = 0
        rootsFreed = 0
        rootZaps = 0
        workItemsQueued = 0
        workItemsRejected = 0
        fastZaps = 0
        fullZaps = 0
    }

    /// Every counter given.
    public init(
        sptesInstalled: Int, sptesZapped: Int, accessedZapped: Int, dirtyZapped: Int, tablesAllocated: Int, tablesFreed: Int,
        tablesLive: Int, tablesPeak: Int, faults: Int, faultRetries: Int, spuriousFaults: Int, yields: Int, zapSteps: Int,
        largestStepTables: Int, rootsCreated: Int, rootsReused: Int, rootsFreed: Int, rootZaps: Int, workItemsQueued: Int,
        workItemsRejected: Int, fastZaps: Int, fullZaps: Int
    ) {
        self.sptesInstalled = sptesInstalled
        self.sptesZapped = sptesZapped
        self.accessedZapped = accessedZapped
        self.dirtyZapped = dirtyZapped
        self.tablesAllocated = tablesAllocated
        self.tablesFreed = tablesFreed
        self.tablesLive = tablesLive
        self.tablesPeak = tablesPeak
        self.faults = faults
        self.faultRetries = faultRetries
        self.spuriousFaults = spuriousFaults
        self.yields = yields
        self.zapSteps = zapSteps
        self.largestStepTables = largestStepTables
        self.rootsCreated = rootsCreated
        self.rootsReused = rootsReused
        self.rootsFreed = rootsFreed
        self.rootZaps = rootZaps
        self.workItemsQueued = workItemsQueued
        self.workItemsRejected = workItemsRejected
        self.fastZaps = fastZaps
        self.fullZaps = fullZaps
    }

    /// The sum of two shards' counters; the peaks and the largest step are maxima.
    public func adding(_ other: EngineStatistics) -> EngineStatistics {
        var sum = self
        sum.sptesInstalled = sptesInstalled &+ other.sptesInstalled
        sum.sptesZapped = sptesZapped &+ other.sptesZapped
        sum.accessedZapped = accessedZapped &+ other.accessedZapped
        sum.dirtyZapped = dirtyZapped &+ other.dirtyZapped
        sum.tablesAllocated = tablesAllocated &+ other.tablesAllocated
        sum.tablesFreed = tablesFreed &+ other.tablesFreed
        sum.tablesLive = tablesLive &+ other.tablesLive
        sum.tablesPeak = max(tablesPeak, other.tablesPeak)
        sum.faults = faults &+ other.faults
        sum.faultRetries = faultRetries &+ other.faultRetries
        sum.spuriousFaults = spuriousFaults &+ other.spuriousFaults
        sum.yields = yields &+ other.yields
        sum.zapSteps = zapSteps &+ other.zapSteps
        sum.largestStepTables = max(largestStepTables, other.largestStepTables)
        sum.rootsCreated = rootsCreated &+ other.rootsCreated
        sum.rootsReused = rootsReused &+ other.rootsReused
        sum.rootsFreed = rootsFreed &+ other.rootsFreed
        sum.rootZaps = rootZaps &+ other.rootZaps
        sum.workItemsQueued = workItemsQueued &+ other.workItemsQueued
        sum.workItemsRejected = workItemsRejected &+ other.workItemsRejected
        sum.fastZaps = fastZaps &+ other.fastZaps
        sum.fullZaps = fullZaps &+ other.fullZaps
        return sum
    }

    /// Leaf SPTEs installed by faults.
    public var sptesInstalled: Int
    /// Leaf SPTEs removed by zaps.
    public var sptesZapped: Int
    /// Zapped leaves that had the accessed bit.
    public var accessedZapped: Int
    /// Zapped leaves that had the dirty bit.
    public var dirtyZapped: Int
    /// Page-table pages allocated.
    public var tablesAllocated: Int
    /// Page-table pages returned to the pool.
    public var tablesFreed: Int
    /// Page-table pages live now.
    public var tablesLive: Int
    /// The most page-table pages live at once.
    public var tablesPeak: Int
    /// Fault operations.
    public var faults: Int
    /// Walks restarted because a frozen entry or a lost race was met.
    public var faultRetries: Int
    /// Faults that found the mapping already present.
    public var spuriousFaults: Int
    /// Times a zap gave up `mmu_lock` for a waiter.
    public var yields: Int
    /// Zap steps (one 1 GiB entry, or one root-level entry in the second pass).
    public var zapSteps: Int
    /// The most page-table pages one zap step freed.
    public var largestStepTables: Int
    /// Roots created.
    public var rootsCreated: Int
    /// Root loads that reused an existing valid root.
    public var rootsReused: Int
    /// Roots whose table went back to the pool.
    public var rootsFreed: Int
    /// Whole-root zaps run.
    public var rootZaps: Int
    /// Work items queued.
    public var workItemsQueued: Int
    /// `queue` calls that did not queue (already pending, or queue destroyed).
    public var workItemsRejected: Int
    /// Fast zaps (memslot deletions).
    public var fastZaps: Int
    /// Full zaps (notifier release).
    public var fullZaps: Int
}
