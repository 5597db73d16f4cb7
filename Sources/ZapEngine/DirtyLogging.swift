import ZapPlatform
import Atomics

/// Dirty logging: the read-lock root iterators that change SPTEs of valid roots while vCPUs
/// fault into the same tables. They are what REMOVED_SPTE freezing, the grace period and the
/// get that fails at zero exist for (docs/model.md, "What else walks roots and SPTEs").
extension VirtualMachine {
    /// `kvm_tdp_mmu_clear_dirty_slot` (`KVM_CLEAR_DIRTY_LOG`): under the read lock, for each valid
    /// root (`tdp_mmu_next_root`: a reference taken with the get that fails at zero, put after),
    /// clears the dirty bit of every present leaf with a compare-exchange, retried when a fault
    /// changed the entry meanwhile and skipped when a zap froze it.
    /// - Returns: the time the caller was blocked.
    ///
    /// One remote TLB flush follows when any bit was cleared (``TLBFlushCause/clearDirty``).
    @discardableResult
    public func clearDirtyLog() -> OperationOutcome {
        let (cleared, outcome) = clearBitOfEveryLeaf(SPTE.dirtyBit, flushing: .clearDirty)
        counters.dirtyBitsCleared.wrappingIncrement(by: cleared, ordering: .relaxed)
        return outcome
    }

    /// Dirty logging enabled on a memslot (`kvm_mmu_slot_apply_flags`): from v5.18
    /// (`eager_page_split`) every huge page is split first (``splitHugePages()``); then every leaf
    /// is write-protected (``writeProtectForDirtyLog()``), each pass under the read lock of its
    /// own. v5.17 (`sync`) had no eager split: huge pages are write-protected whole, and each
    /// guest write to one faults, and the fault replaces it with a table (and flushes).
    ///
    /// From here until ``zapCollapsibleSPTEs()`` the memory is dirty-logged: a write fault maps
    /// 4 KiB and replaces a huge leaf in its way, and the fast path does not make a huge leaf
    /// writable again (``dirtyLogging``).
    /// - Returns: the caller's block time over both passes and the leaves the split installed.
    @discardableResult
    public func enableDirtyLog() -> OperationOutcome {
        dirtyLogging.store(true, ordering: .releasing)
        let split = policy == .sync ? OperationOutcome(blockedNanoseconds: 0) : splitHugePages()
        let protect = writeProtectForDirtyLog()
        return OperationOutcome(
            blockedNanoseconds: split.blockedNanoseconds &+ protect.blockedNanoseconds,
            sptesInstalled: split.sptesInstalled, tlbFlushes: protect.tlbFlushes)
    }

    /// `kvm_tdp_mmu_wrprot_slot` (dirty logging enabled on a memslot): under the read lock, for
    /// each valid root, clears the writable bit of every present leaf with a compare-exchange, so
    /// that the guest's next write to each page faults and is logged. The fast page fault path
    /// then makes the page writable again without `mmu_lock` (``fastPageFault(_:gfn:write:)``),
    /// racing this walk and the zaps on the same entries.
    /// - Returns: the time the caller was blocked.
    ///
    /// One remote TLB flush of the memslot follows when any leaf was write-protected
    /// (``TLBFlushCause/writeProtect``), so that every later guest write is logged.
    @discardableResult
    public func writeProtectForDirtyLog() -> OperationOutcome {
        let (protected, outcome) = clearBitOfEveryLeaf(SPTE.writableBit, flushing: .writeProtect)
        counters.pagesWriteProtected.wrappingIncrement(by: protected, ordering: .relaxed)
        return outcome
    }

    /// `kvm_tdp_mmu_try_split_huge_pages` (eager huge-page splitting, v5.18): under the read lock,
    /// for each valid root, replaces every huge leaf by a table of 512 leaves that map the same
    /// memory with the same permissions and accessed and dirty bits (`make_huge_page_split_spte`).
    /// The walk is pre-order, so the 2 MiB leaves of a split 1 GiB page are split in turn.
    ///
    /// The new table is filled while no one else can see it and linked with one compare-exchange
    /// in place of the huge leaf (`tdp_mmu_split_huge_page` → `tdp_mmu_link_sp`). No entry is
    /// frozen: the memory stays mapped throughout, so no fault waits and no TLB flush is needed.
    /// A lost exchange (a fault froze the leaf to replace it, the fast path set its dirty bit)
    /// means the entry is read again. With no page left for a table the split stops, as the
    /// kernel's does on `-ENOMEM`; the huge pages left are write-protected whole.
    /// - Returns: the caller's block time and the leaves installed (512 per huge page split).
    @discardableResult
    public func splitHugePages() -> OperationOutcome {
        var split = HugePageSplit()
        let (blocked, _) = forEachValidRootUnderReadLock { root in
            if !split.outOfTableMemory { splitHugePages(of: root, &split) }
        }
        return OperationOutcome(blockedNanoseconds: blocked, sptesInstalled: split.installed)
    }

    /// The frame every dirty-log operation shares (`tdp_mmu_next_root` over the valid roots):
    /// with `mmu_lock` held for read, `visit` runs on each valid root that the get that fails at
    /// zero could reference, and the reference is put after. Returns the caller's block time and
    /// the leaves the puts zapped (a put may drop a root's last reference).
    private func forEachValidRootUnderReadLock(_ visit: (Root) -> Void) -> (blockedNanoseconds: UInt64, zappedByPuts: Int) {
        let start = BlockClock.nanoseconds()
        let slot = activity.claim(.dirtyLog, actor: "VM thread")
        defer { finishOperation(slot) }
        var zapped = 0
        lockMMU(.shared, telling: slot)
        for root in rootsToVisit() where !root.isInvalid && getRoot(root) {
            visit(root)
            zapped += putRoot(root, mode: .shared)
        }
        mmuLock.unlockShared()
        return (BlockClock.elapsed(since: start), zapped)
    }

    /// What one eager split has done so far.
    private struct HugePageSplit {
        var installed = 0
        var outOfTableMemory = false
    }

    /// The walk of one root for ``splitHugePages()``, giving the lock to a waiting writer between
    /// 1 GiB regions and reading the path again from the root after that.
    private func splitHugePages(of root: Root, _ split: inout HugePageSplit) {
        guard rootTableIsIntact(root, "a huge-page split reached a root whose table was already freed") else { return }
        var token = gracePeriod.enterReadSide()
        let rootTable = pool.table(root.table)
        for top in 0..<PagingGeometry.entriesPerTable where !split.outOfTableMemory {
            for middle in 0..<PagingGeometry.entriesPerTable where !split.outOfTableMemory {
                guard let levelThree = childTable(of: rootTable.load(top), level: 4, root: root) else { break }
                if let levelTwo = splitOrDescend(levelThree, middle, level: 3, root: root, &split) {
                    for bottom in 0..<PagingGeometry.entriesPerTable where !split.outOfTableMemory {
                        _ = splitOrDescend(levelTwo, bottom, level: 2, root: root, &split)
                    }
                }
                yieldSharedIfWriterWaits(&token)
            }
        }
        gracePeriod.exitReadSide(token)
    }

    /// The table below entry `index` of `table` (at `level`), after splitting the entry first if it
    /// is a huge leaf; nil for an entry that is not present or frozen, or when out of pages.
    private func splitOrDescend(_ table: PageTable, _ index: Int, level: Int, root: Root, _ split: inout HugePageSplit) -> PageTable? {
        while true {
            let entry = table.load(index)
            guard entry.isPresent else { return nil }  // also REMOVED_SPTE: a zap owns the entry
            guard entry.isLeaf(atLevel: level) else { return childTable(of: entry, level: level, root: root) }
            guard let page = pool.allocate() else {
                split.outOfTableMemory = true
                return nil
            }
            // The children inherit everything but the frame, and the large bit at level 1.
            let childLevel = level - 1
            let childSpan = PagingGeometry.framesPerEntry(atLevel: childLevel)
            var childBits = entry.rawValue & ~SPTE.frameMask
            if childLevel == 1 { childBits &= ~SPTE.largeBit }
            let child = pool.table(page)
            for slot in 0..<PagingGeometry.entriesPerTable {
                let frame = entry.frame &+ UInt64(slot) &* childSpan
                child.storeExclusive(slot, SPTE(rawValue: childBits | ((frame << 12) & SPTE.frameMask)))
            }
            chaos?.pass(.hugePageSplit)
            // Replace exactly the leaf that was read: anything else is someone else's change.
            guard table.compareExchange(index, expected: entry, desired: .table(page)).exchanged else {
                pool.free(page)  // never published, so no grace period is needed
                continue
            }
            // The huge leaf is gone and 512 leaves map its memory: the ledger of installed and
            // zapped leaves that teardown checks counts both.
            counters.sptesZapped.wrappingIncrement(ordering: .relaxed)
            counters.sptesInstalled.wrappingIncrement(by: PagingGeometry.entriesPerTable, ordering: .relaxed)
            counters.hugePagesSplit.wrappingIncrement(ordering: .relaxed)
            split.installed += PagingGeometry.entriesPerTable
            return child
        }
    }

    /// Inside a read-side section under the read lock: gives `mmu_lock` to a waiting writer
    /// (`tdp_mmu_iter_cond_resched`), leaving the section meanwhile. The walk has moved on since
    /// it took the lock, which is the progress the lock's hold checker looks for.
    private func yieldSharedIfWriterWaits(_ token: inout GracePeriod.ReadSideToken) {
        guard mmuLock.writerIsWaiting else { return }
        mmuLock.noteProgress()
        gracePeriod.exitReadSide(token)
        mmuLock.yieldShared()
        token = gracePeriod.enterReadSide()
    }

    /// A dirty-log operation: `change` on every present leaf of every valid root, under the read
    /// lock, each root referenced through the get that fails at zero and put after. Returns how
    /// many leaves `change` changed, and the caller's block time.
    private func changeLeavesOfValidRoots(_ change: (PageTable, Int, SPTE) -> Bool) -> (Int, OperationOutcome) {
        var changed = 0
        let (blocked, _) = forEachValidRootUnderReadLock { root in changed += forEachPresentLeaf(of: root, change) }
        return (changed, OperationOutcome(blockedNanoseconds: blocked))
    }

    /// `bit` cleared in every present leaf of every valid root (``changeLeavesOfValidRoots(_:)``);
    /// then, if any leaf changed, one remote TLB flush for `cause`, so that no vCPU keeps using
    /// a translation that still has the bit. Returns how many leaves changed, and the caller's
    /// block time and flushes.
    private func clearBitOfEveryLeaf(_ bit: UInt64, flushing cause: TLBFlushCause) -> (Int, OperationOutcome) {
        var (cleared, outcome) = changeLeavesOfValidRoots { table, index, entry in
            clearBit(bit, in: table, at: index, seen: entry)
        }
        if cleared > 0 {
            flushRemoteTLBs(cause)
            outcome.tlbFlushes += 1
        }
        return (cleared, outcome)
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
    ///
    /// Dirty logging ends first (``dirtyLogging``). Remote TLB flushes
    /// (``TLBFlushCause/collapsibleZap``): up to v5.18 (`sync`, `async`) the kernel zapped each
    /// 4 KiB leaf of such a table on its own, with a flush each; from v5.19 (`preserve`) it zaps
    /// the level-2 entry, one flush per table. The engine zaps the table whole under every policy
    /// and counts the flushes of the policy's kernel.
    /// - Returns: leaf SPTEs zapped, as the operation's inline zap count.
    @discardableResult
    public func zapCollapsibleSPTEs() -> OperationOutcome {
        dirtyLogging.store(false, ordering: .releasing)
        let flushMark = ThreadTLBFlushes.count
        var zapped = 0
        let (blocked, zappedByPuts) = forEachValidRootUnderReadLock { root in zapped += zapCollapsible(in: root) }
        return OperationOutcome(
            blockedNanoseconds: blocked, sptesZappedInline: zapped + zappedByPuts,
            tlbFlushes: ThreadTLBFlushes.count &- flushMark)
    }

    /// The walk of one root for ``zapCollapsibleSPTEs()``: every level-2 entry that points to a
    /// table, zapped atomically as one step. After a step that left the read-side section or the
    /// lock, the path is read again from the root.
    private func zapCollapsible(in root: Root) -> Int {
        guard rootTableIsIntact(root, "zap of collapsible SPTEs on a root whose table was already freed") else { return 0 }
        var walk = ZapWalk(vm: self, root: root, mode: .shared, yieldable: true, flushCause: .collapsibleZap)
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
                        if walk.zapEntry(levelTwo, bottom, level: 2) {
                            let flushes = policy == .preserve ? 1 : walk.leavesInStep
                            if flushes > 0 { flushRemoteTLBs(.collapsibleZap, count: flushes) }
                        }
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
                    let levelTwo = childTable(of: levelThree.load(middle), level: 3, root: root)
                else { continue }
                visitLeaves(levelTwo, level: 2)
                for bottom in 0..<PagingGeometry.entriesPerTable {
                    guard let levelOne = childTable(of: levelTwo.load(bottom), level: 2, root: root) else { continue }
                    visitLeaves(levelOne, level: 1)
                }
                yieldSharedIfWriterWaits(&token)
            }
        }
        gracePeriod.exitReadSide(token)
        return changed
    }
}
