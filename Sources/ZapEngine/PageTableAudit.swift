/// Post-conditions read from the page tables themselves, with no help from the zap code: the
/// engine's own bookkeeping (lifecycle states, counters) must not be the only witness of its bugs.
extension VirtualMachine {
    /// Present leaf SPTEs under `root` now. Every pointer is checked against the pool before it
    /// is followed, so an audit of a broken tree reports instead of crashing. Call it inside a
    /// read-side section, so that no table it reaches is freed under it. Returns nil for a root
    /// whose table was freed (nothing to audit).
    func presentLeaves(under root: Root) -> Int? {
        guard root.tableIsIntact(in: pool) else { return nil }
        return presentLeaves(inTable: root.table, level: PagingGeometry.rootLevel, root: root)
    }

    private func presentLeaves(inTable page: PageIndex, level: Int, root: Root) -> Int {
        let table = pool.table(page)
        var leaves = 0
        for index in 0..<PagingGeometry.entriesPerTable {
            let entry = table.load(index)
            guard entry.isPresent else { continue }
            if entry.isLeaf(atLevel: level) {
                leaves += 1
                continue
            }
            let child = PageIndex(rawValue: UInt32(truncatingIfNeeded: entry.frame))
            guard pool.isLive(child) else {
                checker.record(
                    .useAfterFree, root: root,
                    "level-\(level) entry \(index) points to page \(child.rawValue), which is not allocated")
                continue
            }
            leaves += presentLeaves(inTable: child, level: level - 1, root: root)
        }
        return leaves
    }

    /// Records a `stale-spte` violation for every root of `roots` that still maps something.
    func auditEmpty(_ roots: [Root], after operation: String) {
        let token = gracePeriod.enterReadSide()
        defer { gracePeriod.exitReadSide(token) }
        for root in roots {
            guard let leaves = presentLeaves(under: root), leaves > 0 else { continue }
            checker.record(
                .staleSPTE, root: root,
                "\(leaves) present SPTEs remain in the page tables (address space \(root.role.addressSpace)) after \(operation) returned")
        }
    }
}
