/// Dirty logging: the read-lock root iterators that change SPTEs of valid roots while vCPUs
/// fault into the same tables. They are what REMOVED_SPTE freezing, the grace period and the
/// get that fails at zero exist for (docs/model.md, "What else walks roots and SPTEs").
extension VirtualMachine {
    /// `kvm_tdp_mmu_clear_dirty_slot` (`KVM_CLEAR_DIRTY_LOG`): under the read lock, for each valid
    /// root (`tdp_mmu_next_root`: a reference taken with the get that fails at zero, put after),
    /// clears the dirty bit of every present leaf with a compare-exchange, retried when a fault
    /// changed the entry meanwhile and skipped when a zap froze it.
    /// - Returns: the time the caller was blocked.
    @discardableResult
    public func clearDirtyLog() -> OperationOutcome {
        let (cleared, outcome) = changeLeavesOfValidRoots { table, index, entry in
            clearBit(SPTE.dirtyBit, in: table, at: index, seen: entry)
        }
        counters.dirtyBitsCleared.wrappingIncrement(by: cleared, ordering: .relaxed)
        return outcome
    }

    /// `kvm_tdp_mmu_wrprot_slot` (dirty logging enabled on a memslot): under the read lock, for
    /// each valid root, clears the writable bit of every present leaf with a compare-exchange, so
    /// that the guest's next write to each page faults and is logged. The fast page fault path
    /// then makes the page writable again without `mmu_lock` (``fastPageFault(_:gfn:write:)``),
    /// racing this walk and the zaps on the same entries. Eager huge-page splitting is not modelled.
    /// - Returns: the time the caller was blocked.
    @discardableResult
    public func writeProtectForDirtyLog() -> OperationOutcome {
        let (protected, outcome) = changeLeavesOfValidRoots { table, index, entry in
            clearBit(SPTE.writableBit, in: table, at: index, seen: entry)
        }
        counters.pagesWriteProtected.wrappingIncrement(by: protected, ordering: .relaxed)
        return outcome
    }

    /// A dirty-log operation: `change` on every present leaf of every valid root, under the read
    /// lock, each root referenced through the get that fails at zero and put after. Returns how
    /// many leaves `change` changed, and the caller's block time.
    private func changeLeavesOfValidRoots(_ change: (PageTable, Int, SPTE) -> Bool) -> (Int, OperationOutcome) {
        let start = monotonicNanoseconds()
        let slot = activity.claim(.dirtyLog, actor: "VM thread")
        defer { finishOperation(slot) }
        var changed = 0
        lockMMU(.shared, telling: slot)
        for root in rootsToVisit() where !root.isInvalid && getRoot(root) {
            changed += forEachPresentLeaf(of: root, change)
            putRoot(root, mode: .shared)
        }
        mmuLock.unlockShared()
        return (changed, OperationOutcome(blockedNanoseconds: monotonicNanoseconds() &- start))
    }

    /// Clears `bit` of a present leaf by compare-exchange, re-reading when a racing walker changed
    /// the entry and stopping when a zap froze it. Returns whether this call cleared it.
    private func clearBit(_ bit: UInt64, in table: PageTable, at index: Int, seen entry: SPTE) -> Bool {
        var seen = entry
        while seen.isPresent && seen.rawValue & bit != 0 {
            let (exchanged, now) = table.compareExchange(index, expected: seen, desired: SPTE(rawValue: seen.rawValue & ~bit))
            if exchanged { return true }
            seen = now
        }
        return false
    }

    /// `kvm_tdp_mmu_zap_collapsible_sptes` (dirty logging disabled on a memslot): under the read
    /// lock, for each valid root, zaps every table of 4 KiB mappings that one 2 MiB page could
    /// replace, so that later faults map the huge page again.
    ///
    /// Vcpus fault into these very tables meanwhile, under the same read lock. The zap freezes the
    /// level-2 entry and then every entry of the table below with REMOVED_SPTE before the table
    /// goes to the grace period: a fault already inside the table meets a frozen entry and
    /// retries, instead of installing a mapping into a table on its way out (which would be lost).
    /// - Returns: leaf SPTEs zapped, as the operation's inline zap count.
    @discardableResult
    public func zapCollapsibleSPTEs() -> OperationOutcome {
        let start = monotonicNanoseconds()
        let slot = activity.claim(.dirtyLog, actor: "VM thread")
        defer { finishOperation(slot) }
        var zapped = 0
        lockMMU(.shared, telling: slot)
        for root in rootsToVisit() where !root.isInvalid && getRoot(root) {
            zapped += zapCollapsible(in: root)
            zapped += putRoot(root, mode: .shared)
        }
        mmuLock.unlockShared()
        return OperationOutcome(blockedNanoseconds: monotonicNanoseconds() &- start, sptesZappedInline: zapped)
    }

    /// The walk of one root for ``zapCollapsibleSPTEs()``: every level-2 entry that points to a
    /// table, zapped atomically as one step. After a step that left the read-side section or the
    /// lock, the path is read again from the root.
    private func zapCollapsible(in root: Root) -> Int {
        guard rootTableIsIntact(root, "zap of collapsible SPTEs on a root whose table was already freed") else { return 0 }
        var walk = ZapWalk(vm: self, root: root, mode: .shared, yieldable: true)
        walk.checkReferenced()
        let rootTable = pool.table(root.table)
        for top in 0..<PagingGeometry.entriesPerTable {
            var middle = 0
            var bottom = 0
            while middle < PagingGeometry.entriesPerTable {
                // (Re)read the path: after a step the tables may have changed under the walk.
                guard let levelThree = childTable(of: rootTable.load(top), level: 4, root: root) else { break }
                guard let levelTwo = childTable(of: levelThree.load(middle), level: 3, root: root) else {
                    middle += 1
                    bottom = 0
                    continue
                }
                var leftTree = false
                while bottom < PagingGeometry.entriesPerTable && !leftTree {
                    let entry = levelTwo.load(bottom)
                    if entry.isPresent && !entry.isLeaf(atLevel: 2) {
                        walk.zapEntry(levelTwo, bottom, level: 2)
                        leftTree = walk.finishStep()
                    }
                    bottom += 1
                }
                if bottom == PagingGeometry.entriesPerTable {
                    middle += 1
                    bottom = 0
                }
            }
        }
        return walk.finish()
    }

    /// The table a present, non-leaf `entry` at `level` points to, checked against the pool.
    private func childTable(of entry: SPTE, level: Int, root: Root) -> PageTable? {
        guard entry.isPresent, !entry.isLeaf(atLevel: level) else { return nil }
        let page = PageIndex(rawValue: UInt32(truncatingIfNeeded: entry.frame))
        guard pool.isLive(page) else {
            checker.record(.useAfterFree, root: root, "a level-\(level) entry points to page \(page.rawValue), which is not allocated")
            return nil
        }
        return pool.table(page)
    }

    /// Calls `body` on every present leaf under `root` inside a read-side section, giving
    /// `mmu_lock` to a waiting writer between 2 MiB tables (`tdp_mmu_iter_cond_resched`, whose
    /// progress is the walk's position) and reading the path again from the root after that.
    /// Returns how often `body` returned true.
    private func forEachPresentLeaf(of root: Root, _ body: (PageTable, Int, SPTE) -> Bool) -> Int {
        guard rootTableIsIntact(root, "a dirty-log walk reached a root whose table was already freed") else { return 0 }
        var changed = 0
        var token = gracePeriod.enterReadSide()
        let rootTable = pool.table(root.table)
        func visitLeaves(_ table: PageTable, level: Int) {
            for index in 0..<PagingGeometry.entriesPerTable {
                let entry = table.load(index)
                if entry.isLeaf(atLevel: level) && body(table, index, entry) { changed += 1 }
            }
        }
        for top in 0..<PagingGeometry.entriesPerTable {
            guard let levelThree = childTable(of: rootTable.load(top), level: 4, root: root) else { continue }
            visitLeaves(levelThree, level: 3)
            for middle in 0..<PagingGeometry.entriesPerTable {
                // Re-read: a yield below may have let the path change.
                guard let levelThree = childTable(of: rootTable.load(top), level: 4, root: root),
                      let levelTwo = childTable(of: levelThree.load(middle), level: 3, root: root) else { continue }
                visitLeaves(levelTwo, level: 2)
                for bottom in 0..<PagingGeometry.entriesPerTable {
                    guard let levelOne = childTable(of: levelTwo.load(bottom), level: 2, root: root) else { continue }
                    visitLeaves(levelOne, level: 1)
                }
                if mmuLock.writerIsWaiting {
                    mmuLock.noteProgress()  // the walk moved on since it took the lock
                    gracePeriod.exitReadSide(token)
                    mmuLock.yieldShared()
                    token = gracePeriod.enterReadSide()
                }
            }
        }
        gracePeriod.exitReadSide(token)
        return changed
    }
}
