import Atomics

/// How one walk of a fault ended.
enum MapResult {
    /// Installed this many leaves.
    case installed(Int)
    /// A larger mapping, or the same one, is already there.
    case alreadyMapped
    /// Met a frozen entry: retry the fault from the root.
    case retry(installed: Int)
    /// Replaced a huge leaf in the way with nothing (then a table, on the retry), issuing this
    /// many remote TLB flushes: retry the fault from the root.
    case replacedHugeLeaf(tlbFlushes: Int)
    /// No page for an intermediate table.
    case outOfTableMemory
}

/// Installing mappings: the fault half of the page tables (`kvm_tdp_mmu_map`).
extension VirtualMachine {
    /// Follows (or builds) the path from the root down to the table at `targetLevel` that
    /// covers `gfn`. Runs with `mmu_lock` held for read and inside a read-side section, so a
    /// table reached from the root stays allocated until the walk ends even if a zap unlinks it.
    ///
    /// With `replacingHugePages`, a huge leaf above the target level is zapped and replaced by a
    /// table (`kvm_tdp_mmu_map`: `tdp_mmu_zap_spte_atomic`, then `tdp_mmu_link_sp`), as when dirty
    /// logging or NX forces a smaller mapping; otherwise the fault is already mapped.
    @inline(__always)
    func walkToTable(
        _ root: Root, gfn: UInt64, targetLevel: Int, replacingHugePages: Bool = false, cache: PageTablePool.PageCache? = nil
    ) -> (table: PageTable?, result: MapResult) {
        var table = pool.table(root.table)
        var level = PagingGeometry.rootLevel
        while level > targetLevel {
            let index = PagingGeometry.index(of: gfn, atLevel: level)
            var entry = table.load(index)
            while true {
                if entry.isRemoved { return (nil, .retry(installed: 0)) }
                if entry.isPresent { break }
                guard let page = pool.allocate(from: cache) else {
                    checker.record(
                        .tableMemoryExhausted, root: root,
                        "no page for a level-\(level - 1) table: raise the page-table budget or shard the run")
                    return (nil, .outOfTableMemory)
                }
                // Publish the zeroed table with a compare-exchange; a lost race means someone
                // else installed one (or froze the entry): use what they did.
                let (exchanged, seen) = table.compareExchange(index, expected: entry, desired: .table(page))
                if exchanged {
                    entry = .table(page)
                    break
                }
                pool.free(page)  // never published, so no grace period is needed
                entry = seen
            }
            if entry.isLeaf(atLevel: level) {
                guard replacingHugePages else { return (nil, .alreadyMapped) }
                // Freeze the huge leaf first, so no other walker can change it while it goes; a
                // lost race means someone else changed it: retry the fault from the root.
                guard table.compareExchange(index, expected: entry, desired: .removed).exchanged else {
                    return (nil, .retry(installed: 0))
                }
                counters.sptesZapped.wrappingIncrement(ordering: .relaxed)
                counters.accessedZapped.wrappingIncrement(by: Int((entry.rawValue >> 5) & 1), ordering: .relaxed)
                counters.dirtyZapped.wrappingIncrement(by: Int((entry.rawValue >> 6) & 1), ordering: .relaxed)
                counters.hugePagesSplit.wrappingIncrement(ordering: .relaxed)
                // Remote TLBs are flushed here in the kernel while the entry stays frozen: the
                // window in which any other walker meets REMOVED_SPTE. Then the entry is free to link.
                // (From v6.2, `preserve`'s kernel splits the page in place instead, with no flush.)
                let flushes = policy == .preserve ? 0 : 1
                if flushes > 0 { flushRemoteTLBs(.largeSPTEReplace) }
                chaos?.pass(.faultWalk)
                table.store(index, .nonPresent)
                return (nil, .replacedHugeLeaf(tlbFlushes: flushes))
            }
            chaos?.pass(.faultWalk)
            table = pool.table(PageIndex(rawValue: UInt32(truncatingIfNeeded: entry.frame)))
            level -= 1
        }
        return (table, .installed(0))
    }

    /// Maps guest frame `gfn` with one leaf of `size`. Frames map one to one onto host frames.
    ///
    /// Where a table already exists at the leaf's level (smaller pages there), the fault is
    /// counted as already mapped: the engine does not collapse tables into large pages.
    func mapFrame(
        _ root: Root, gfn: UInt64, size: PageSize, writable: Bool, dirty: Bool, replacingHugePages: Bool = false,
        cache: PageTablePool.PageCache? = nil
    ) -> MapResult {
        let aligned = gfn & ~(size.frames - 1)
        let (table, result) = walkToTable(
            root, gfn: aligned, targetLevel: size.level, replacingHugePages: replacingHugePages, cache: cache)
        guard let table else { return result }
        let index = PagingGeometry.index(of: aligned, atLevel: size.level)
        let leaf = SPTE.leaf(frame: aligned, level: size.level, writable: writable, dirty: dirty)
        let (exchanged, seen) = table.compareExchange(index, expected: .nonPresent, desired: leaf)
        if exchanged { return .installed(1) }
        return seen.isRemoved ? .retry(installed: 0) : .alreadyMapped
    }

    /// Maps a whole 2 MiB region of 4 KiB leaves in one walk: the fast way to populate large
    /// address spaces. `firstFrame` is rounded down to the region's start.
    func mapRegion2M(_ root: Root, firstFrame: UInt64, writable: Bool, dirty: Bool, cache: PageTablePool.PageCache? = nil) -> MapResult {
        let base = firstFrame & ~511
        var bits = SPTE.presentBit | SPTE.accessedBit | (base << 12)
        if writable { bits |= SPTE.writableBit }
        if dirty { bits |= SPTE.dirtyBit }
        if let installed = mapFreshRegion2M(root, base: base, leafBits: bits, cache: cache) { return installed }
        let (found, result) = walkToTable(root, gfn: base, targetLevel: 1, cache: cache)
        guard let table = found else { return result }
        var installed = 0
        for index in 0..<PagingGeometry.entriesPerTable {
            let leaf = SPTE(rawValue: bits &+ (UInt64(index) << 12))
            let (exchanged, seen) = table.compareExchange(index, expected: .nonPresent, desired: leaf)
            if exchanged {
                installed &+= 1
            } else if seen.isRemoved {
                return .retry(installed: installed)
            }
        }
        return installed > 0 ? .installed(installed) : .alreadyMapped
    }

    /// The common case of populating: no leaf table yet. Fill a new table with plain stores while
    /// no one else can see it, then publish it with one compare-exchange, as the kernel links a
    /// filled child table when it splits a huge page (`tdp_mmu_link_sp`). Returns nil when a
    /// table (or a mapping) is already there, for the entry-by-entry path.
    private func mapFreshRegion2M(_ root: Root, base: UInt64, leafBits: UInt64, cache: PageTablePool.PageCache?) -> MapResult? {
        let (found, _) = walkToTable(root, gfn: base, targetLevel: 2, cache: cache)
        guard let parent = found else { return nil }
        let index = PagingGeometry.index(of: base, atLevel: 2)
        guard parent.load(index) == .nonPresent, let page = pool.allocate(overwriting: true, from: cache) else { return nil }
        let table = pool.table(page)
        for entry in 0..<PagingGeometry.entriesPerTable {
            table.storeExclusive(entry, SPTE(rawValue: leafBits &+ (UInt64(entry) << 12)))
        }
        // The release ordering of the exchange publishes the filled entries with the pointer.
        guard parent.compareExchange(index, expected: .nonPresent, desired: .table(page)).exchanged else {
            pool.free(page)  // someone linked a table first; ours was never visible
            return nil
        }
        return .installed(PagingGeometry.entriesPerTable)
    }
}
