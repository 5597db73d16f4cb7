import ZapPlatform
import Atomics

/// The MMU notifier's unmap: host memory behind a guest range goes away (`munmap`, migration,
/// reclaim), and every mapping of it must go first.
extension VirtualMachine {
    /// `kvm_unmap_gfn_range` → `kvm_tdp_mmu_unmap_gfn_range` (v5.18): with `mmu_lock` held for
    /// write, zaps every SPTE of guest frames `frames` in **every** root, valid or invalid
    /// (`for_each_tdp_mmu_root_yield_safe`, a reference held on each), yielding to waiters between
    /// steps. An invalid root still being zapped by the worker is zapped here too: the two meet
    /// through the lock's hand-offs.
    ///
    /// Bracketed like the notifier's `invalidate_range_start`/`end`: while it runs, faults that
    /// get the lock during its yields install nothing (`mmu_invalidate_in_progress`). On return
    /// the range is checked from the page tables: no root may map any frame of it (`stale-spte`).
    ///
    /// Remote TLB flushes (``TLBFlushCause/unmap``): one before each yield that follows a zap, and
    /// one when the range is done, if anything was zapped since the last (`kvm_handle_hva_range`).
    @discardableResult
    public func unmapRange(_ frames: Range<UInt64>) -> OperationOutcome {
        let start = BlockClock.nanoseconds()
        let flushMark = ThreadTLBFlushes.count
        let slot = activity.claim(.unmap, actor: "VM thread")
        defer { finishOperation(slot) }
        var zapped = 0
        var flush = PendingTLBFlush(.unmap)
        lockMMU(.exclusive, telling: slot)
        invalidationsInProgress.wrappingIncrement(ordering: .releasing)
        for root in rootsToVisit() where getRoot(root) {
            zapped += zapRange(frames, of: root, &flush)
            zapped += putRoot(root, mode: .exclusive)
        }
        flush.flushIfPending(self)
        auditUnmapped(frames, in: roots)
        invalidationsInProgress.wrappingDecrement(ordering: .releasing)
        mmuLock.unlockExclusive()
        return OperationOutcome(
            blockedNanoseconds: BlockClock.elapsed(since: start), sptesZappedInline: zapped,
            tlbFlushes: ThreadTLBFlushes.count &- flushMark)
    }

    /// `zap_gfn_range` under the write lock: the highest entry covering each frame that lies wholly
    /// inside the range (or is a leaf) is zapped as one step, its subtree with it. The path is
    /// read from the root for every entry, so a yield between steps never leaves a stale pointer.
    private func zapRange(_ frames: Range<UInt64>, of root: Root, _ flush: inout PendingTLBFlush) -> Int {
        guard rootTableIsIntact(root, "an unmap reached a root whose table was already freed") else { return 0 }
        var walk = ZapWalk(vm: self, root: root, mode: .exclusive, yieldable: true, flushCause: .unmap, flush: flush)
        defer { flush = walk.flush! }
        walk.checkReferenced()
        var gfn = frames.lowerBound
        while gfn < frames.upperBound {
            var table = pool.table(root.table)
            var level = PagingGeometry.rootLevel
            while true {
                let span = PagingGeometry.framesPerEntry(atLevel: level)
                let entryStart = gfn & ~(span - 1)
                let index = PagingGeometry.index(of: gfn, atLevel: level)
                let entry = table.load(index)
                guard entry.isPresent else {
                    gfn = entryStart + span
                    break
                }
                if entry.isLeaf(atLevel: level) || (entryStart >= frames.lowerBound && entryStart + span <= frames.upperBound) {
                    walk.zapEntry(table, index, level: level)
                    _ = walk.finishStep()
                    gfn = entryStart + span
                    break
                }
                let child = PageIndex(rawValue: UInt32(truncatingIfNeeded: entry.frame))
                guard pool.isLive(child) else {
                    checker.record(
                        .useAfterFree, root: root,
                        "an unmap followed a level-\(level) entry to page \(child.rawValue), which is not allocated")
                    gfn = entryStart + span
                    break
                }
                table = pool.table(child)
                level -= 1
            }
        }
        return walk.finish()
    }

    /// Records `stale-spte` for each root that still maps a frame of `frames`.
    private func auditUnmapped(_ frames: Range<UInt64>, in roots: [Root]) {
        for root in roots where root.tableIsIntact(in: pool) {
            let left = presentLeaves(in: root.table, level: PagingGeometry.rootLevel, base: 0, frames: frames, root: root)
            if left > 0 {
                checker.record(
                    .staleSPTE, root: root,
                    "\(left) present SPTEs still map guest frames \(frames.lowerBound)..<\(frames.upperBound) after an MMU-notifier unmap returned"
                )
            }
        }
    }

    /// Present leaves of the table `page` (at `level`, mapping from frame `base`) that overlap `frames`.
    private func presentLeaves(in page: PageIndex, level: Int, base: UInt64, frames: Range<UInt64>, root: Root) -> Int {
        let table = pool.table(page)
        let span = PagingGeometry.framesPerEntry(atLevel: level)
        var leaves = 0
        for index in 0..<PagingGeometry.entriesPerTable {
            let entryStart = base + UInt64(index) * span
            guard entryStart < frames.upperBound, entryStart + span > frames.lowerBound else { continue }
            let entry = table.load(index)
            guard entry.isPresent else { continue }
            if entry.isLeaf(atLevel: level) {
                leaves += 1
            } else {
                let child = PageIndex(rawValue: UInt32(truncatingIfNeeded: entry.frame))
                guard pool.isLive(child) else { continue }
                leaves += presentLeaves(in: child, level: level - 1, base: entryStart, frames: frames, root: root)
            }
        }
        return leaves
    }
}
