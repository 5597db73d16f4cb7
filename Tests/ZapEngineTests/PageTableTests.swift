import Testing
@testable import ZapEngine
import ZapPlatform
import ZapfleetTestSupport

/// Page tables on real memory: what faults install, zaps remove, and the pool gets back.
@Suite("Page tables")
struct PageTableTests {
    @Test(
        "populating N frames at each page size installs exactly N leaves, and teardown returns every page",
        arguments: [PageSize.size4K, .size2M, .size1G], ZapPolicy.allCases)
    func populateAndTearDown(size: PageSize, policy: ZapPolicy) throws {
        let vm = try VirtualMachine(configuration: VMConfiguration(policy: policy, pageTableBudgetBytes: 64 << 20))
        let vcpu = vm.makeVCPU()
        let count: UInt64 = 300
        for index in 0..<count {
            let outcome = vcpu.fault(gfn: index * size.frames, size: size)
            #expect(outcome.sptesInstalled == 1)
        }
        // A second fault on the same frames finds them mapped.
        for index in 0..<count { #expect(vcpu.fault(gfn: index * size.frames + size.frames - 1, size: size).sptesInstalled == 0) }

        let stats = vm.statistics
        #expect(stats.sptesInstalled == Int(count))
        #expect(stats.spuriousFaults == Int(count))
        // Root + the tables on the path: 300 4K leaves fit one level-1 table; 300 2M leaves one
        // level-2 table; 300 1G leaves one level-3 table.
        let expectedTables = 1 + (PagingGeometry.rootLevel - size.level)
        #expect(stats.tablesLive == expectedTables)

        vm.teardown()
        let after = vm.statistics
        #expect(vm.checker.violations.isEmpty, "\(vm.checker.violations)")
        #expect(after.sptesZapped == Int(count))
        #expect(after.tablesLive == 0)
        #expect(after.tablesFreed == after.tablesAllocated)
        #expect(vm.roots.isEmpty)
    }

    @Test("a 2 MiB batch fault maps 512 leaves in one walk and skips those already present")
    func batchFault() throws {
        let vm = try VirtualMachine(configuration: VMConfiguration(policy: .async, pageTableBudgetBytes: 64 << 20))
        let vcpu = vm.makeVCPU()
        #expect(vcpu.fault(gfn: 1024 + 7).sptesInstalled == 1)
        let outcome = vcpu.populate2MRegion(firstFrame: 1024 + 100)
        #expect(outcome.sptesInstalled == 511)
        #expect(vcpu.populate2MRegion(firstFrame: 1024).sptesInstalled == 0)
        let root = try #require(vcpu.loadedRoot)
        let walk = vm.walkToTable(root, gfn: 1024, targetLevel: 1)
        let table = try #require(walk.table)
        for index in 0..<512 {
            let spte = table.load(index)
            #expect(spte.isLeaf(atLevel: 1))
            #expect(spte.frame == 1024 + UInt64(index))
        }
        vm.teardown()
        #expect(vm.statistics.sptesZapped == 512)
        #expect(vm.checker.violations.isEmpty)
    }

    @Test("zapping a root removes every leaf, counts accessed and dirty bits, and frees the subtree")
    func zapAccounting() throws {
        let vm = try VirtualMachine(configuration: VMConfiguration(policy: .sync, pageTableBudgetBytes: 64 << 20))
        let vcpu = vm.makeVCPU()
        for region in 0..<UInt64(8) { vcpu.populate2MRegion(firstFrame: region * 512, write: region % 2 == 0) }
        let reset = vcpu.reset()
        #expect(reset.sptesZappedInline == 8 * 512)
        let stats = vm.statistics
        #expect(stats.sptesZapped == 8 * 512)
        #expect(stats.accessedZapped == 8 * 512)
        #expect(stats.dirtyZapped == 4 * 512)
        vm.gracePeriod.barrier()
        #expect(vm.statistics.tablesLive == 0)
        #expect(vm.statistics.rootsFreed == 1)
    }

    @Test("the two-pass zap frees at most one 1 GiB subtree (513 tables) per step")
    func stepBound() throws {
        let vm = try VirtualMachine(configuration: VMConfiguration(policy: .async, pageTableBudgetBytes: 64 << 20))
        let vcpu = vm.makeVCPU()
        // 3 GiB of 4 KiB mappings across two 512 GiB entries.
        for gib in [UInt64(0), 1, 1 << 9] {
            for region in 0..<UInt64(512) { vcpu.populate2MRegion(firstFrame: gib << 18 + region * 512) }
        }
        vcpu.reset()
        vm.teardown()
        let stats = vm.statistics
        #expect(stats.sptesZapped == 3 << 18)
        #expect(stats.largestStepTables == 513)
        // Three 1 GiB steps, then the root pass frees the two level-3 tables one per step.
        #expect(stats.zapSteps == 5)
        #expect(vm.checker.violations.isEmpty)
    }

    @Test("a fault meeting REMOVED_SPTE retries instead of installing under a frozen entry")
    func frozenEntryRetries() throws {
        let vm = try VirtualMachine(configuration: VMConfiguration(policy: .async, pageTableBudgetBytes: 64 << 20))
        let vcpu = vm.makeVCPU()
        vcpu.fault(gfn: 0)
        let root = try #require(vcpu.loadedRoot)
        let table = try #require(vm.walkToTable(root, gfn: 5, targetLevel: 1).table)
        table.storeExclusive(5, .removed)
        let result = vm.mapFrame(root, gfn: 5, size: .size4K, writable: true, dirty: true)
        guard case .retry = result else {
            Issue.record("expected a retry, got \(result)")
            return
        }
        #expect(table.load(5) == .removed)
        table.storeExclusive(5, .nonPresent)
        vm.teardown()
        #expect(vm.checker.violations.isEmpty)
    }

    @Test("an exhausted page-table budget fails the fault cleanly and is reported")
    func budgetExhausted() throws {
        let vm = try VirtualMachine(configuration: VMConfiguration(policy: .async, pageTableBudgetBytes: 64 * 4096))
        let vcpu = vm.makeVCPU()
        var installed = 0
        for region in 0..<UInt64(200) { installed += vcpu.populate2MRegion(firstFrame: region * 512).sptesInstalled }
        #expect(installed < 200 * 512)
        #expect(vm.checker.saw(.tableMemoryExhausted))
        vm.teardown()
        #expect(vm.statistics.tablesLive == 0)
    }
}

@Suite("Page-table memory")
struct PageTableMemoryTests {
    @Test("a pool on the reservation of a pool gone before it hands out zeroed tables")
    func reusedReservation() throws {
        let budget = 64 * PagingGeometry.tableBytes
        let reservations = PageTableReservations()
        var pages: [PageIndex] = []
        do {
            let first = try PageTablePool(budgetBytes: budget, reservations: reservations)
            // Every page of the first pool left full of what a zap leaves: REMOVED_SPTE.
            while let page = first.allocate() {
                let table = first.table(page)
                for index in 0..<PagingGeometry.entriesPerTable { table.store(index, .removed) }
                pages.append(page)
            }
            for page in pages { first.free(page) }
        }
        let second = try PageTablePool(budgetBytes: budget, reservations: reservations)
        var zeroed = 0
        while let page = second.allocate() {
            let table = second.table(page)
            if (0..<PagingGeometry.entriesPerTable).allSatisfy({ table.load($0) == .nonPresent }) { zeroed += 1 }
        }
        #expect(second.totalAllocations == pages.count, "the same budget, the same pages")
        #expect(zeroed == pages.count, "every table of the second pool starts empty")
    }

    @Test(
        "vCPUs take from their caches without the pool's lock while others free, recycle and take the runs' last pages: every page of the budget is handed out once, and the peak is exact"
    )
    func concurrentCaches() throws {
        let runs = Int(PageTablePool.pagesPerCacheRun)
        let pool = try PageTablePool(budgetBytes: 40 * runs * PagingGeometry.tableBytes, reservations: PageTableReservations())
        let taken = Log<UInt32>()
        let freed = Log<UInt32>()
        let threads =
            (0..<4).map { index in
                let cache = pool.makeCache()
                return OSThread(name: "vcpu \(index)") {
                    // Every third page is freed at once (the first time it comes out), so that
                    // recycled pages and the mutex path mix with the lockless one.
                    while let page = pool.allocate(from: cache) {
                        if page.rawValue % 3 == 0 && freed.appendOnce(page.rawValue) {
                            _ = pool.free(page)
                        } else {
                            taken.append(page.rawValue)
                        }
                    }
                }
            } + [OSThread(name: "no cache") { while let page = pool.allocate() { taken.append(page.rawValue) } }]
        for thread in threads { thread.join() }
        let all = taken.all
        #expect(Set(all).count == all.count, "no page handed out twice")
        // Whatever was freed went back to the free list and out again, until the budget was live.
        #expect(all.count == pool.capacity && pool.livePages == pool.capacity)
        #expect(pool.totalFrees == freed.count && pool.totalAllocations == freed.count + pool.capacity)
        #expect(pool.peakPages == pool.capacity)
        // The peak survives frees: it was the whole budget.
        for page in all.prefix(10) { #expect(pool.free(PageIndex(rawValue: page))) }
        #expect(pool.livePages == pool.capacity - 10 && pool.peakPages == pool.capacity)
    }

    @Test("the peak of live pages is the highest count ever live, however allocations and frees interleave")
    func peakPages() throws {
        let pool = try PageTablePool(budgetBytes: 64 * PagingGeometry.tableBytes, reservations: PageTableReservations())
        var held: [PageIndex] = []
        for _ in 0..<10 { held.append(try #require(pool.allocate())) }
        for page in held.suffix(7) { pool.free(page) }
        held.removeLast(7)
        #expect(pool.peakPages == 10 && pool.livePages == 3)
        for _ in 0..<5 { held.append(try #require(pool.allocate())) }
        #expect(pool.peakPages == 10, "8 live now, 10 before")
        for _ in 0..<4 { held.append(try #require(pool.allocate())) }
        #expect(pool.peakPages == 12 && pool.totalAllocations == 19 && pool.totalFrees == 7)
    }

    @Test(
        "each vCPU's cache hands it fresh pages side by side however vCPUs interleave; every page of the budget is still handed out once, the last ones from other vCPUs' runs"
    )
    func vcpuCaches() throws {
        let runs = Int(PageTablePool.pagesPerCacheRun)
        let pool = try PageTablePool(budgetBytes: 3 * runs * PagingGeometry.tableBytes, reservations: PageTableReservations())
        let caches = [pool.makeCache(), pool.makeCache()]
        var pages: [[UInt32]] = [[], []]
        // Two vCPUs in turn, as threads on one VM interleave.
        for _ in 0..<runs / 2 {
            for vcpu in 0..<2 { pages[vcpu].append(try #require(pool.allocate(from: caches[vcpu])).rawValue) }
        }
        for vcpu in 0..<2 {
            #expect(zip(pages[vcpu], pages[vcpu].dropFirst()).allSatisfy { $1 == $0 + 1 }, "vCPU \(vcpu)'s tables are adjacent")
        }
        // Pages without a cache, then the budget's end: the runs' unused pages are handed out too.
        var rest: [UInt32] = []
        while let page = pool.allocate() { rest.append(page.rawValue) }
        let all = pages[0] + pages[1] + rest
        #expect(all.count == pool.capacity && Set(all).count == all.count, "every page once: \(all.count) of \(pool.capacity)")
        #expect(pool.allocate(from: caches[0]) == nil && pool.livePages == pool.capacity)
        for page in all { #expect(pool.free(PageIndex(rawValue: page))) }
        #expect(pool.livePages == 0)
    }

    @Test("a reservation is reused by the next pool that fits in it; one that fits in none gets a fresh one")
    func reservationsAreReused() throws {
        let reservations = PageTableReservations()
        let (small, smallFresh) = try reservations.take(bytes: 1 << 20)
        #expect(smallFresh)
        reservations.give(small)
        let (again, againFresh) = try reservations.take(bytes: 1 << 19)
        #expect(!againFresh && again.start == small.start, "the idle reservation serves a smaller pool")
        reservations.give(again)
        let (large, largeFresh) = try reservations.take(bytes: 1 << 21)
        #expect(largeFresh && large.bytes == 1 << 21)
        reservations.give(large)
    }
}

@Suite("SPTE encoding")
struct SPTETests {
    @Test("REMOVED_SPTE is the kernel's 0x5a0 and is not present")
    func removedValue() {
        #expect(SPTE.removed.rawValue == 0x5a0)
        #expect(!SPTE.removed.isPresent)
        #expect(!SPTE.removed.isLeaf(atLevel: 1))
    }

    @Test("leaf and table entries carry their frame and flags", arguments: PageSize.allCases)
    func leafEncoding(size: PageSize) {
        let leaf = SPTE.leaf(frame: 0xABCDE, level: size.level, writable: true, dirty: false)
        #expect(leaf.isLeaf(atLevel: size.level))
        #expect(leaf.frame == 0xABCDE)
        #expect(leaf.rawValue & SPTE.dirtyBit == 0)
        let table = SPTE.table(PageIndex(rawValue: 77))
        #expect(table.isPresent)
        #expect(table.frame == 77)
        #expect(!table.isLeaf(atLevel: 2))
    }
}
