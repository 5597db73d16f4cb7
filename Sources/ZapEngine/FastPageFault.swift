import Atomics

/// How a fast page fault ended.
enum FastFaultResult {
    /// The leaf was present; its accessed (and, for a write, dirty) bits were set atomically.
    case fixed
    /// The leaf already had the bits: nothing to do.
    case spurious
    /// No present leaf, a frozen entry, or a lost race: take the slow path under `mmu_lock`.
    case needsSlowPath
}

/// The fast page fault path: the one walker of the page tables that holds no `mmu_lock` at all.
extension VirtualMachine {
    /// `kvm_tdp_mmu_fast_pf_get_last_sptep` and `fast_pf_fix_direct_spte`: walks `root` to the
    /// last SPTE of `gfn` under RCU only and, for a present leaf lacking the accessed bit (or, on a
    /// write, the dirty or writable bit: a page write-protected for dirty logging), sets them with
    /// one compare-exchange.
    ///
    /// The vCPU's root may be invalid and zapped by the worker meanwhile (the kernel runs the fast
    /// path before it checks for an obsolete root): only the grace period keeps the tables this
    /// walk reaches allocated until it leaves its read-side section. So the walk notes each
    /// table's pool generation when it enters it and checks them all again at the end, still
    /// inside the section: a table freed under it (freed without a grace period) is reported as
    /// `use-after-free`. Generations are read from the pool's side array, so the check itself
    /// never trusts a freed table.
    /// Call inside a read-side section.
    func fastPageFault(_ root: Root, gfn: UInt64, write: Bool) -> FastFaultResult {
        guard rootTableIsIntact(root, "a fast page fault walked a root whose table was already freed") else { return .needsSlowPath }
        var visited = VisitedTables()
        var page = root.table
        var level = PagingGeometry.rootLevel
        var result = FastFaultResult.needsSlowPath
        while true {
            let generation = pool.generation(of: page)
            guard generation & 1 == 1 else {
                checker.record(
                    .useAfterFree, root: root,
                    "a lockless walk (fast page fault) followed a pointer to page-table page \(page.rawValue), which is not allocated")
                break
            }
            visited.append(page, generation)
            let table = pool.table(page)
            let index = PagingGeometry.index(of: gfn, atLevel: level)
            let entry = table.load(index)
            // Not present, or frozen by a zap in progress: the slow path sorts it out.
            guard entry.isPresent else { break }
            if entry.isLeaf(atLevel: level) {
                // "Do not fix write-permission on the large spte when dirty logging is enabled":
                // only the first 4 KiB would be logged. The slow path maps a 4 KiB page instead.
                if write && level > 1 && entry.rawValue & SPTE.writableBit == 0 && dirtyLogging.load(ordering: .relaxed) { break }
                // Every leaf the engine maps is writable for the MMU, so a write to one that dirty
                // logging write-protected is fixed here too, writable and dirty again.
                var fixedBits = entry.rawValue | SPTE.accessedBit
                if write { fixedBits |= SPTE.writableBit | SPTE.dirtyBit }
                if fixedBits == entry.rawValue {
                    result = .spurious
                } else if table.compareExchange(index, expected: entry, desired: SPTE(rawValue: fixedBits)).exchanged {
                    result = .fixed
                }
                break
            }
            chaos?.pass(.locklessWalk)
            page = PageIndex(rawValue: UInt32(truncatingIfNeeded: entry.frame))
            level -= 1
        }
        // Still inside the section: every table reached must still be the one the walk entered.
        if let (freed, level) = visited.firstChanged(in: pool) {
            checker.record(
                .useAfterFree, root: root,
                "page-table page \(freed.rawValue) (level \(level)) was freed while a lockless walk (fast page fault) was inside it: freed before a grace period"
            )
        }
        return result
    }
}

/// The tables a lockless walk entered, with their generations; at most one per level.
private struct VisitedTables {
    private var pages: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
    private var generations: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
    private var count = 0

    mutating func append(_ page: PageIndex, _ generation: UInt32) {
        switch count {
        case 0: pages.0 = page.rawValue; generations.0 = generation
        case 1: pages.1 = page.rawValue; generations.1 = generation
        case 2: pages.2 = page.rawValue; generations.2 = generation
        default: pages.3 = page.rawValue; generations.3 = generation
        }
        count = min(count + 1, 4)
    }

    /// The first table whose generation moved since the walk entered it, with its level.
    func firstChanged(in pool: PageTablePool) -> (PageIndex, Int)? {
        for position in 0..<count {
            let (page, generation) =
                switch position {
                case 0: (pages.0, generations.0)
                case 1: (pages.1, generations.1)
                case 2: (pages.2, generations.2)
                default: (pages.3, generations.3)
                }
            if pool.generation(of: PageIndex(rawValue: page)) != generation {
                return (PageIndex(rawValue: page), PagingGeometry.rootLevel - position)
            }
        }
        return nil
    }
}
