import Atomics
import ZapPlatform
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Index of a 4 KiB page-table page in a ``PageTablePool``. Index 0 is never handed out.
public struct PageIndex: RawRepresentable, Hashable, Sendable {
    /// The page's position in the pool.
    public var rawValue: UInt32
    /// Wraps a raw index.
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The reserved index that no table has.
    public static let none = PageIndex(rawValue: 0)
}

/// The raw storage of one SPTE, accessed atomically or with plain loads and stores.
public typealias SPTEStorage = UnsafeAtomic<UInt64>.Storage

/// One page table: 512 SPTEs in pool memory.
///
/// Every access goes through swift-atomics so that one binding of the memory serves both the
/// atomic paths (read-locked walks) and the plain ones (write-locked walks, where a relaxed
/// load or store compiles to an ordinary `mov`).
public struct PageTable: @unchecked Sendable {
    /// First entry of the table.
    public let entries: UnsafeMutablePointer<SPTEStorage>

    @inlinable init(entries: UnsafeMutablePointer<SPTEStorage>) { self.entries = entries }

    @inlinable func atomic(_ index: Int) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic<UInt64>(at: entries + index)
    }

    /// Reads entry `index` (`kvm_tdp_mmu_read_spte`).
    @inlinable public func load(_ index: Int) -> SPTE {
        SPTE(rawValue: atomic(index).load(ordering: .acquiring))
    }

    /// Writes entry `index` with a plain store; only with `mmu_lock` held for write.
    @inlinable public func storeExclusive(_ index: Int, _ value: SPTE) {
        atomic(index).store(value.rawValue, ordering: .relaxed)
    }

    /// Writes entry `index` atomically, publishing earlier writes (`__kvm_tdp_mmu_write_spte`).
    @inlinable public func store(_ index: Int, _ value: SPTE) {
        atomic(index).store(value.rawValue, ordering: .releasing)
    }

    /// Atomically replaces entry `index`, returning the old value (`xchg`).
    @inlinable public func exchange(_ index: Int, _ value: SPTE) -> SPTE {
        SPTE(rawValue: atomic(index).exchange(value.rawValue, ordering: .acquiringAndReleasing))
    }

    /// Atomically replaces entry `index` if it still holds `expected` (`try_cmpxchg64`).
    /// Returns the value seen: equal to `expected` when the exchange happened.
    @inlinable public func compareExchange(_ index: Int, expected: SPTE, desired: SPTE) -> (exchanged: Bool, seen: SPTE) {
        let result = atomic(index).compareExchange(
            expected: expected.rawValue, desired: desired.rawValue, ordering: .acquiringAndReleasing)
        return (result.exchanged, SPTE(rawValue: result.original))
    }
}

/// The pool of 4 KiB pages that every page table of one VM comes from.
///
/// The pool reserves its whole budget of address space up front (`MAP_NORESERVE`), so the
/// kernel backs a page only when a table first touches it. Frees go to a free list under a
/// mutex, a vCPU's fresh pages come from its own cache without it, and every page is counted,
/// so that teardown can prove every page came back. Each page carries
/// a generation number (odd while allocated) that lets the checker see a walk into a freed
/// table without crashing.
public final class PageTablePool: @unchecked Sendable {
    /// Pages the pool can hand out (its budget divided by 4 KiB, less the reserved index 0).
    public let capacity: Int
    private let base: UnsafeMutablePointer<SPTEStorage>
    private let reservations: PageTableReservations
    private let reservation: PageTableReservations.Region
    /// Whether pages never handed out yet are still zero: true for a fresh reservation, false
    /// for one an earlier pool of this process used.
    private let untouchedPagesAreZero: Bool
    private let generations: UnsafeMutablePointer<UnsafeAtomic<UInt32>.Storage>
    private let mutex = PThreadMutex()
    private var freeList: [UInt32] = []
    private var neverUsed: UInt32 = 1
    /// Every vCPU's cache of fresh pages (``PageCache``); the list changes only with `mutex` held.
    private var caches: [PageCache] = []
    /// The pool's counts, each on lines of its own: `live` is written by every allocation,
    /// `recycled` read by every allocation, the others only when pages are freed.
    private let counts = AlignedAtomics<Int>(count: Count.allCases.count, spacingBytes: 128, initial: 0)
    private enum Count: Int, CaseIterable {
        /// Pages allocated and not freed.
        case live
        /// The highest `live` seen just before a free (see ``peakPages``).
        case peakBeforeFree
        case frees
        /// Pages on `freeList`, readable without the mutex.
        case recycled
    }

    /// Reserves `budgetBytes` of address space for page tables.
    /// - Throws: ``EngineError`` `.tableMemoryUnavailable` if the reservation fails.
    public convenience init(budgetBytes: Int) throws {
        try self.init(budgetBytes: budgetBytes, reservations: .shared)
    }

    /// Reserves `budgetBytes` from `reservations`.
    init(budgetBytes: Int, reservations: PageTableReservations) throws {
        let pages = max(2, budgetBytes / PagingGeometry.tableBytes + 1)
        let (region, fresh) = try reservations.take(bytes: pages * PagingGeometry.tableBytes)
        self.reservations = reservations
        reservation = region
        untouchedPagesAreZero = fresh
        base = region.start.bindMemory(to: SPTEStorage.self, capacity: pages * PagingGeometry.entriesPerTable)
        capacity = pages - 1
        generations = .allocate(capacity: pages)
        generations.initialize(repeating: .init(0), count: pages)
    }

    deinit {
        reservations.give(reservation)
        generations.deallocate()
    }

    /// A vCPU's own run of fresh pages, as each vCPU in KVM allocates tables from its own
    /// `mmu_shadow_page_cache`. A vCPU that faults in its part of memory then finds its tables
    /// side by side in the pool, and a walk over them (a zap) reads memory in order: with every
    /// vCPU taking the next page of one shared sequence, a vCPU's tables lie one per eight pages
    /// apart and the write-locked zap ran 1.6 to 1.9 times slower (the engine benchmark's tree
    /// populated by eight vCPUs in turn). The pages of a run are not allocated until handed out:
    /// they are not live, not counted, and the pool takes them back when it runs out.
    ///
    /// The owner takes a page from its run without the pool's mutex (KVM allocates from
    /// `mmu_shadow_page_cache` under no lock): with the mutex on every fault, eight vCPUs
    /// faulting at once passed its line and the pool's between them on every table.
    public final class PageCache: @unchecked Sendable {
        /// The run `[next, end)`, packed `end << 32 | next` so that the owner's take and another
        /// thread's claim on the run's last pages (``PageTablePool/allocate(overwriting:from:)``
        /// when the pool runs dry) are each one compare-exchange.
        private let run = AlignedAtomics<UInt64>(count: 1, initial: 0)
        fileprivate init() {}

        /// Takes the run's first page (the owner), or its last (anyone, with the pool's mutex).
        fileprivate func take(last: Bool) -> UInt32? {
            var packed = run[0].load(ordering: .relaxed)
            while true {
                let next = UInt32(truncatingIfNeeded: packed)
                let end = UInt32(truncatingIfNeeded: packed >> 32)
                guard next < end else { return nil }
                let taken = last ? UInt64(end - 1) << 32 | UInt64(next) : packed + 1
                let (exchanged, seen) = run[0].compareExchange(expected: packed, desired: taken, ordering: .relaxed)
                if exchanged { return last ? end - 1 : next }
                packed = seen
            }
        }

        /// Starts a new run (the owner, with the pool's mutex, its old run used up).
        fileprivate func refill(first: UInt32, end: UInt32) {
            run[0].store(UInt64(end) << 32 | UInt64(first), ordering: .relaxed)
        }
    }

    /// Fresh pages a ``PageCache`` takes at a time.
    static let pagesPerCacheRun: UInt32 = 64

    /// A new, empty cache of fresh pages for one vCPU (see ``PageCache``).
    public func makeCache() -> PageCache {
        let cache = PageCache()
        mutex.withLock { caches.append(cache) }
        return cache
    }

    /// Takes a zeroed page, or `nil` when the budget is exhausted. With `overwriting`, the
    /// caller stores every entry before the table is linked, and the page is handed out as it
    /// is (a 2 MiB batch fault fills all 512 leaves: zeroing them first would double the work).
    /// With `cache`, a page that is not a recycled one comes from the caller's run of fresh
    /// pages, which is refilled from the never-used pages a run at a time.
    public func allocate(overwriting: Bool = false, from cache: PageCache? = nil) -> PageIndex? {
        let page: UInt32
        let reused: Bool
        // Recycled pages first, to keep the pool's memory compact; without them, the vCPU's own
        // run needs no lock. (A page freed meanwhile waits for the next allocation.)
        if let cache, counts[Count.recycled.rawValue].load(ordering: .relaxed) == 0, let fresh = cache.take(last: false) {
            page = fresh
            reused = false
        } else {
            mutex.lock()
            if let recycled = freeList.popLast() {
                counts[Count.recycled.rawValue].wrappingDecrement(ordering: .relaxed)
                page = recycled
                reused = true
            } else if let cache, let fresh = cache.take(last: false) {
                page = fresh
                reused = false
            } else if Int(neverUsed) <= capacity {
                page = neverUsed
                let run = cache == nil ? 1 : min(Self.pagesPerCacheRun, UInt32(capacity + 1) - neverUsed)
                neverUsed += run
                cache?.refill(first: page + 1, end: page + run)
                reused = false
            } else if let stranded = takeStranded() {
                page = stranded
                reused = false
            } else {
                mutex.unlock()
                return nil
            }
            mutex.unlock()
        }
        generation(page).wrappingIncrement(ordering: .releasing)  // odd: live
        let table = self.table(PageIndex(rawValue: page))
        // A fresh reservation's page is already zero; a recycled one still holds REMOVED_SPTE
        // values, and one of a reservation an earlier VM used whatever that VM left.
        if !overwriting && (reused || !untouchedPagesAreZero) {
            memset(UnsafeMutableRawPointer(table.entries), 0, PagingGeometry.tableBytes)
        }
        counts[Count.live.rawValue].wrappingIncrement(ordering: .relaxed)
        return PageIndex(rawValue: page)
    }

    /// The budget's last pages sit in vCPUs' runs: they are not theirs until handed out. With
    /// `mutex` held. (A loop, not `lazy.compactMap(…).first`, which takes each page twice.)
    private func takeStranded() -> UInt32? {
        for cache in caches {
            if let page = cache.take(last: true) { return page }
        }
        return nil
    }

    /// Returns a page to the pool. Callers free a page only after a grace period
    /// (``GracePeriod``), when no walker can still be reading it.
    /// - Returns: `false`, changing nothing, if the page was not allocated (a double free).
    @discardableResult
    public func free(_ page: PageIndex) -> Bool {
        mutex.lock()
        guard isLive(page) else {
            mutex.unlock()
            return false
        }
        generation(page.rawValue).wrappingIncrement(ordering: .releasing)  // even: free
        freeList.append(page.rawValue)
        counts[Count.recycled.rawValue].wrappingIncrement(ordering: .relaxed)
        mutex.unlock()
        counts[Count.frees.rawValue].wrappingIncrement(ordering: .relaxed)
        // `live` only falls here, so its highest value was just before a free, or is now.
        let before = counts[Count.live.rawValue].loadThenWrappingDecrement(ordering: .relaxed)
        counts[Count.peakBeforeFree.rawValue].raise(to: before)
        return true
    }

    private func generation(_ page: UInt32) -> UnsafeAtomic<UInt32> {
        UnsafeAtomic<UInt32>(at: generations + Int(page))
    }

    /// The table stored in `page`.
    @inlinable public func table(_ page: PageIndex) -> PageTable {
        PageTable(entries: entriesBase + Int(page.rawValue) * PagingGeometry.entriesPerTable)
    }

    @usableFromInline var entriesBase: UnsafeMutablePointer<SPTEStorage> { base }

    /// Is `page` currently allocated? A walk that reaches a page for which this is false has
    /// followed a pointer into a freed table.
    public func isLive(_ page: PageIndex) -> Bool {
        generation(of: page) & 1 == 1
    }

    /// The page's generation: odd while allocated, one more at every allocation and free; 0 for
    /// an index outside the pool.
    public func generation(of page: PageIndex) -> UInt32 {
        guard page.rawValue != 0 && Int(page.rawValue) <= capacity else { return 0 }
        return generation(page.rawValue).load(ordering: .acquiring)
    }

    /// Bytes of page-table memory that VMs now gone left resident for the VMs to come (see
    /// ``PageTablePool``'s reuse of reservations): held by the process, but not in addition to
    /// the page tables it will build next.
    public static func idleResidentBytes() -> UInt64 { PageTableReservations.shared.idleResidentBytes() }

    /// Pages allocated and not yet freed.
    public var livePages: Int { counts[Count.live.rawValue].load(ordering: .relaxed) }
    /// The most pages ever live at once.
    public var peakPages: Int { max(counts[Count.peakBeforeFree.rawValue].load(ordering: .relaxed), livePages) }
    /// Pages handed out since creation (every allocation is live or freed).
    public var totalAllocations: Int { totalFrees + livePages }
    /// Pages returned since creation.
    public var totalFrees: Int { counts[Count.frees.rawValue].load(ordering: .relaxed) }
}

/// Page-table memory kept between the VMs of one process. A pool takes its reservation from
/// here and gives it back when it goes, so that a worker running shard after shard touches its
/// table memory once: every first touch of a fresh reservation costs the host a page fault and
/// a page clear per 4 KiB table (measured: about half the CPU of a sharded 2 TiB run), a reused
/// one neither. Resident memory does not grow: a reservation is reused only by a pool that fits
/// in it, and a pool that fits in none unmaps the idle ones before it maps its own.
final class PageTableReservations: @unchecked Sendable {
    /// One `MAP_NORESERVE` mapping.
    struct Region: @unchecked Sendable {
        let start: UnsafeMutableRawPointer
        let bytes: Int
    }

    static let shared = PageTableReservations()

    private let mutex = PThreadMutex()
    private var idle: [Region] = []

    /// The smallest idle reservation of at least `bytes` (not fresh), else a new one (fresh:
    /// its pages read as zero until touched).
    func take(bytes: Int) throws -> (region: Region, fresh: Bool) {
        let (reused, evicted) = mutex.withLock { () -> (Region?, [Region]) in
            if let best = idle.indices.filter({ idle[$0].bytes >= bytes }).min(by: { idle[$0].bytes < idle[$1].bytes }) {
                return (idle.remove(at: best), [])
            }
            defer { idle.removeAll() }
            return (nil, idle)
        }
        if let reused { return (reused, false) }
        for region in evicted { munmap(region.start, region.bytes) }
        let start = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let start, start != MAP_FAILED else {
            throw EngineError(
                .tableMemoryUnavailable,
                "cannot reserve \(bytes) bytes for page tables: \(String(cString: strerror(errno)))")
        }
        // Pages are handed out in order from the start, so the reservation fills densely:
        // 2 MiB host pages cost one fault where 4 KiB pages cost 512.
        _ = madvise(start, bytes, MADV_HUGEPAGE)
        return (Region(start: start, bytes: bytes), true)
    }

    /// Bytes of the idle reservations the host holds in memory now (`mincore`): memory the
    /// process holds that the next pools will reuse, or unmap before they map their own.
    func idleResidentBytes() -> UInt64 {
        let regions = mutex.withLock { idle }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var resident: UInt64 = 0
        for region in regions {
            var vector = [UInt8](repeating: 0, count: (region.bytes + page - 1) / page)
            guard mincore(region.start, region.bytes, &vector) == 0 else { continue }
            resident += UInt64(vector.reduce(0) { $0 + Int($1 & 1) }) * UInt64(page)
        }
        return resident
    }

    /// Keeps `region` for the next pool that fits in it.
    func give(_ region: Region) {
        mutex.withLock { idle.append(region) }
    }
}
