import Atomics

/// Event counters of one VM. Hot paths add to them once per table or per step, not per SPTE.
final class EngineCounters: @unchecked Sendable {
    let sptesInstalled = ManagedAtomic<Int>(0)
    let sptesZapped = ManagedAtomic<Int>(0)
    let accessedZapped = ManagedAtomic<Int>(0)
    let dirtyZapped = ManagedAtomic<Int>(0)
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

    func raiseLargestStep(_ tables: Int) {
        var seen = largestStepTables.load(ordering: .relaxed)
        while tables > seen {
            let (exchanged, original) = largestStepTables.weakCompareExchange(
                expected: seen, desired: tables, ordering: .relaxed)
            if exchanged { return }
            seen = original
        }
    }
}

/// A snapshot of a VM's counters, for reports and tests.
public struct EngineStatistics: Sendable, Codable, Equatable {
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
