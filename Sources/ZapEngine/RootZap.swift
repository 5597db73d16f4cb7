import ZapPlatform
import Atomics

/// What one zap step removed.
struct ZapTally {
    var leaves = 0
    var accessed = 0
    var dirty = 0
    var tables = 0
}

/// Tearing down a root's tree: `tdp_mmu_zap_root` and `handle_removed_pt`.
extension VirtualMachine {
    /// `tdp_mmu_zap_root`: removes every SPTE under `root`, with `mmu_lock` held in `mode`.
    ///
    /// Two passes, as the kernel does since v5.18: first every 1 GiB (level-3) entry, then every
    /// root-level entry, whose level-3 tables are empty by then. So no step frees more than one
    /// 1 GiB subtree (513 tables of 4 KiB mappings), and a yield is never more than a step away.
    /// Under `sync` (v5.17's `zap_gfn_range`) there is only the root-level pass: a step is a whole
    /// 512 GiB entry.
    /// A `yieldable` zap gives `mmu_lock` up at a step boundary when someone waits for it, but
    /// only after it made progress since its last yield (`tdp_mmu_iter_cond_resched`).
    /// - Returns: leaf SPTEs zapped.
    ///
    /// Remote TLB flushes (``TLBFlushCause/rootZap``): under `sync` (v5.17's `zap_gfn_range`) a
    /// zap under the read lock flushes for every top-level entry it zaps
    /// (`tdp_mmu_zap_spte_atomic`), and one under the write lock owes a flush in `flush`, paid
    /// before it yields and by the caller at the end. From v5.18 a whole-root zap flushes nothing.
    @discardableResult
    func zapRoot(_ root: Root, mode: MMULockMode, yieldable: Bool) -> Int {
        var noFlush: PendingTLBFlush?
        return zapRoot(root, mode: mode, yieldable: yieldable, flush: &noFlush)
    }

    /// ``zapRoot(_:mode:yieldable:)`` carrying the flush the caller owes (nil: none is owed).
    @discardableResult
    func zapRoot(_ root: Root, mode: MMULockMode, yieldable: Bool, flush: inout PendingTLBFlush?) -> Int {
        counters.rootZaps.wrappingIncrement(ordering: .relaxed)
        // Judged on the pool's generation before the first entry is read: a freed table may
        // already hold another table's entries, whose frames lead anywhere.
        guard rootTableIsIntact(root, "zap of a root whose table was already freed") else { return 0 }
        let start = BlockClock.nanoseconds()
        let cpuStart = CPUAccounting.threadCPUNanoseconds()
        zapCPUTime.zapStarted()
        defer { zapCPUTime.zapEnded(cpuNanoseconds: Int(truncatingIfNeeded: CPUAccounting.threadCPUNanoseconds() &- cpuStart)) }
        let flushesEachTopLevelEntry = policy == .sync && mode == .shared
        var walk = ZapWalk(vm: self, root: root, mode: mode, yieldable: yieldable, flush: flush)
        walk.checkReferenced()
        let rootTable = pool.table(root.table)
        // Pass 1: each 1 GiB entry under each root entry.
        for rootIndex in 0..<PagingGeometry.entriesPerTable where policy != .sync {
            var index = 0
            while index < PagingGeometry.entriesPerTable {
                // (Re)read the path from the root: after a yield the level-3 table may be gone.
                let top = rootTable.load(rootIndex)
                guard top.isPresent, !top.isLeaf(atLevel: 4) else { break }
                let levelThreePage = PageIndex(rawValue: UInt32(truncatingIfNeeded: top.frame))
                guard pool.isLive(levelThreePage) else {
                    checker.record(
                        .useAfterFree, root: root,
                        "root entry \(rootIndex) points to page \(levelThreePage.rawValue), which is not allocated")
                    break
                }
                let levelThree = pool.table(levelThreePage)
                while index < PagingGeometry.entriesPerTable {
                    walk.zapEntry(levelThree, index, level: 3)
                    index += 1
                    if walk.finishStep() { break }
                }
            }
        }
        // Pass 2: the root's own entries.
        for rootIndex in 0..<PagingGeometry.entriesPerTable {
            if walk.zapEntry(rootTable, rootIndex, level: 4) && flushesEachTopLevelEntry { flushRemoteTLBs(.rootZap) }
            _ = walk.finishStep()
        }
        let zapped = walk.finish()
        flush = walk.flush
        configuration.observer?.rootZapped(rootID: root.id, sptes: zapped, nanoseconds: BlockClock.elapsed(since: start))
        return zapped
    }
}

/// The state of one zap walk between steps.
struct ZapWalk {
    let vm: VirtualMachine
    let root: Root
    let mode: MMULockMode
    /// Does the design require this zap to yield? (The `sync` put path zaps an unreachable
    /// root without yielding, by design.)
    let yieldable: Bool
    /// Will it? Not when `no-yield` is injected.
    let yields: Bool
    private var token: GracePeriod.ReadSideToken?
    private var step = ZapTally()
    private var total = ZapTally()
    private var retired: [PageIndex] = []
    private var progressSinceYield = false
    private var starvationReported = false
    /// The flush owed for zapped SPTEs, paid before each yield (nil: this zap owes none).
    private(set) var flush: PendingTLBFlush?
    /// What the walk's remote TLB flushes count as.
    let flushCause: TLBFlushCause
    /// v5.17 (`sync`): `handle_removed_tdp_mmu_page` flushed for every table it removed
    /// (dropped in v5.18 by bb95dfb9e2df). Not for collapsible zaps, which v5.17 made leaf by
    /// leaf, removing no table.
    private let flushesPerRemovedTable: Bool

    init(
        vm: VirtualMachine, root: Root, mode: MMULockMode, yieldable: Bool,
        flushCause: TLBFlushCause = .rootZap, flush: PendingTLBFlush? = nil
    ) {
        self.vm = vm
        self.flush = flush
        self.flushCause = flushCause
        flushesPerRemovedTable = vm.policy == .sync && flushCause != .collapsibleZap
        self.root = root
        self.mode = mode
        self.yieldable = yieldable
        self.yields = yieldable && !vm.injectsNoYield
        token = mode == .shared ? vm.gracePeriod.enterReadSide() : nil
        retired.reserveCapacity(PagingGeometry.entriesPerTable + 1)
    }

    /// Invariant 4: a zap that can yield must hold a reference, or writers that run while it
    /// yields may see a root with a count of zero.
    mutating func checkReferenced() {
        if yieldable && root.references <= 0 {
            vm.checker.record(
                .zapUnreferenced, root: root,
                "zap started on a root with \(root.references) references")
        }
    }

    /// `tdp_mmu_zap_spte_atomic` (shared) or `tdp_mmu_set_spte` (exclusive) on one entry at
    /// `level`, then the teardown of the subtree it pointed to. Returns whether this call zapped
    /// a present entry.
    @discardableResult
    mutating func zapEntry(_ table: PageTable, _ index: Int, level: Int) -> Bool {
        switch mode {
        case .shared:
            while true {
                let old = table.load(index)
                // Non-present, or frozen by another zapper that owns it now.
                guard old.isPresent else { return false }
                // Freeze the entry first, so no fault can install under it while its subtree
                // is torn down; on a lost race, re-read and retry.
                guard table.compareExchange(index, expected: old, desired: .removed).exchanged else { continue }
                handleRemovedEntry(old, level: level)
                table.store(index, .nonPresent)
                return true
            }
        case .exclusive:
            let old = table.load(index)
            guard old.isPresent else { return false }
            table.storeExclusive(index, .nonPresent)
            handleRemovedEntry(old, level: level)
            return true
        }
    }

    /// Leaf SPTEs zapped in the step under way (not yet accounted by ``finishStep()``).
    var leavesInStep: Int { step.leaves }

    private mutating func handleRemovedEntry(_ old: SPTE, level: Int) {
        if old.isLeaf(atLevel: level) {
            countLeaf(old)
        } else {
            handleRemovedTable(PageIndex(rawValue: UInt32(truncatingIfNeeded: old.frame)), level: level - 1)
        }
    }

    @inline(__always)
    private mutating func countLeaf(_ old: SPTE) {
        step.leaves += 1
        step.accessed += Int((old.rawValue >> 5) & 1)
        step.dirty += Int((old.rawValue >> 6) & 1)
    }

    /// `handle_removed_pt`: freezes every entry of a table unlinked from the tree with
    /// `REMOVED_SPTE`, tears down what they pointed to, and retires the table for a grace period.
    private mutating func handleRemovedTable(_ page: PageIndex, level: Int) {
        guard vm.pool.isLive(page) else {
            vm.checker.record(
                .useAfterFree, root: root,
                "zap reached page-table page \(page.rawValue) (level \(level)), which is not allocated")
            return
        }
        let table = vm.pool.table(page)
        if level == 1 {
            freezeLeafTable(table)
        } else {
            for index in 0..<PagingGeometry.entriesPerTable {
                let old = freeze(table, index)
                guard old.isPresent else { continue }
                handleRemovedEntry(old, level: level)
            }
        }
        retired.append(page)
        step.tables += 1
    }

    /// The hot loop: 512 leaf entries, each frozen and accounted.
    @inline(__always)
    private mutating func freezeLeafTable(_ table: PageTable) {
        var leaves = 0
        var accessed = 0
        var dirty = 0
        switch mode {
        case .shared:
            for index in 0..<PagingGeometry.entriesPerTable {
                var old = table.exchange(index, .removed).rawValue
                if old == SPTE.removed.rawValue { old = freezeContended(table, index).rawValue }
                let present = Int(old & SPTE.presentBit)
                leaves &+= present
                accessed &+= present & Int((old >> 5) & 1)
                dirty &+= present & Int((old >> 6) & 1)
            }
        case .exclusive:
            for index in 0..<PagingGeometry.entriesPerTable {
                let old = table.load(index).rawValue
                guard old & SPTE.presentBit != 0 else { continue }
                table.storeExclusive(index, .removed)
                leaves &+= 1
                accessed &+= Int((old >> 5) & 1)
                dirty &+= Int((old >> 6) & 1)
            }
        }
        step.leaves += leaves
        step.accessed += accessed
        step.dirty += dirty
    }

    /// Freezes one entry of an unlinked table and returns what it held.
    private mutating func freeze(_ table: PageTable, _ index: Int) -> SPTE {
        switch mode {
        case .shared:
            let old = table.exchange(index, .removed)
            return old.isRemoved ? freezeContended(table, index) : old
        case .exclusive:
            let old = table.load(index)
            if old.isPresent { table.storeExclusive(index, .removed) }
            return old
        }
    }

    /// The entry was already frozen: another thread is mid-way through zapping it and will
    /// write a final value. Wait for that, as `handle_removed_pt` does, but not forever: a
    /// table frozen twice (a bug elsewhere) must not hang the run.
    private func freezeContended(_ table: PageTable, _ index: Int) -> SPTE {
        for _ in 0..<10_000 {
            let old = table.exchange(index, .removed)
            if !old.isRemoved { return old }
            yieldProcessor()
        }
        // Nobody else may freeze an entry of a table this walk unlinked: the table was unlinked
        // twice, or reused while still reachable.
        vm.checker.record(
            .useAfterFree, root: root,
            "entry \(index) of a table being torn down stayed frozen: the table was unlinked twice or reused")
        return .removed
    }

    /// Ends a step: accounts it, lets a grace period pass, and yields `mmu_lock` if someone
    /// waits. Returns true if the lock or the read-side section was left, so pointers into the
    /// tree must be re-read from the root.
    mutating func finishStep() -> Bool {
        vm.chaos?.pass(.zapStep)
        let didWork = step.leaves > 0 || step.tables > 0
        guard didWork || progressSinceYield else { return false }
        var leftTree = false
        if didWork {
            total.leaves += step.leaves
            total.accessed += step.accessed
            total.dirty += step.dirty
            total.tables += step.tables
            vm.counters.zapSteps.wrappingIncrement(ordering: .relaxed)
            vm.counters.largestStepTables.raise(to: step.tables)
            vm.counters.sptesZapped.wrappingIncrement(by: step.leaves, ordering: .relaxed)
            vm.counters.accessedZapped.wrappingIncrement(by: step.accessed, ordering: .relaxed)
            vm.counters.dirtyZapped.wrappingIncrement(by: step.dirty, ordering: .relaxed)
            if flushesPerRemovedTable && step.tables > 0 { vm.flushRemoteTLBs(flushCause, count: step.tables) }
            step = ZapTally()
            flush?.noteZapped()
            progressSinceYield = true
            vm.mmuLock.noteProgress()
            if !retired.isEmpty {
                vm.gracePeriod.retire(retired)
                retired.removeAll(keepingCapacity: true)
                // Let the tables of this step be reclaimed while the zap goes on: leave the
                // read-side section between steps, as the kernel's iterator leaves RCU when it
                // yields, so a long zap does not hold every freed table until it ends.
                if let held = token {
                    vm.gracePeriod.exitReadSide(held)
                    vm.gracePeriod.reclaim()
                    token = vm.gracePeriod.enterReadSide()
                    leftTree = true
                } else {
                    vm.gracePeriod.reclaim()
                }
            }
        }
        let someoneWaits = mode == .shared ? vm.mmuLock.writerIsWaiting : vm.mmuLock.anyoneIsWaiting
        guard someoneWaits && progressSinceYield else { return leftTree }
        // Invariant 7 is judged on what the lock did, not on what this walk meant to do: someone
        // waited at a boundary after progress, and must have had the lock before the walk goes on.
        var handedOver = false
        if yieldable && vm.injectsNoYield { vm.noteInjectedPath(.noYield) }
        if yields {
            // `tdp_mmu_iter_cond_resched(…, flush, …)`: what was zapped is flushed before the lock goes.
            flush?.flushIfPending(vm)
            handedOver = yieldLock()
            progressSinceYield = false
            checkReferenced()
        }
        if yieldable && !handedOver && !starvationReported {
            starvationReported = true
            vm.checker.record(
                .writerStarved, root: root,
                "zap kept mmu_lock past a step boundary while another thread waited for it")
        }
        return yields || leftTree
    }

    /// `cond_resched_rwlock_read` / `cond_resched_rwlock_write`. Returns whether someone else
    /// held the lock in between.
    private mutating func yieldLock() -> Bool {
        vm.counters.yields.wrappingIncrement(ordering: .relaxed)
        switch mode {
        case .shared:
            if let held = token { vm.gracePeriod.exitReadSide(held) }
            let handed = vm.mmuLock.yieldShared()
            token = vm.gracePeriod.enterReadSide()
            return handed
        case .exclusive:
            return vm.mmuLock.yieldExclusive()
        }
    }

    /// Accounts the last step and leaves the read-side section. Returns leaf SPTEs zapped.
    mutating func finish() -> Int {
        _ = finishStep()
        if let held = token {
            vm.gracePeriod.exitReadSide(held)
            token = nil
        }
        vm.gracePeriod.reclaim()
        return total.leaves
    }
}
