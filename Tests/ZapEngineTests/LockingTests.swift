import Atomics
import Testing
import ZapfleetTestSupport
@testable import ZapEngine
import ZapPlatform
#if canImport(Glibc)
import Glibc
#endif

/// `mmu_lock` and the grace-period scheme that stands in for RCU.
@Suite("Locks and grace periods", .timeLimit(.minutes(1)))
struct LockingTests {
    @Test("a waiting writer is visible to readers, and readers arriving after it queue behind it")
    func writerPreference() {
        let lock = MMULock()
        lock.lockShared()
        #expect(!lock.writerIsWaiting)
        let writerDone = Log<String>()
        let writer = OSThread(name: "writer") {
            lock.lockExclusive()
            writerDone.append("writer")
            lock.unlockExclusive()
        }
        #expect(eventually { lock.writerIsWaiting })
        let reader = OSThread(name: "late reader") {
            lock.lockShared()
            writerDone.append("reader")
            lock.unlockShared()
        }
        #expect(eventually { lock.anyoneIsWaiting })
        usleep(10_000)
        #expect(writerDone.count == 0, "nobody enters while the first reader holds the lock")
        lock.unlockShared()
        writer.join()
        reader.join()
        #expect(writerDone.all == ["writer", "reader"])
    }

    @Test("readers that enter without the mutex never hold the lock together with a writer")
    func readersAndWritersExclude() {
        let lock = MMULock()
        let readersInside = ManagedAtomic<Int>(0)
        let writersInside = ManagedAtomic<Int>(0)
        let overlaps = ManagedAtomic<Int>(0)
        let readers = (0..<4).map { index in
            OSThread(name: "reader \(index)") {
                for _ in 0..<20_000 {
                    lock.lockShared()
                    readersInside.wrappingIncrement(ordering: .sequentiallyConsistent)
                    if writersInside.load(ordering: .sequentiallyConsistent) != 0 { overlaps.wrappingIncrement(ordering: .relaxed) }
                    readersInside.wrappingDecrement(ordering: .sequentiallyConsistent)
                    lock.unlockShared()
                }
            }
        }
        let writers = (0..<2).map { index in
            OSThread(name: "writer \(index)") {
                for _ in 0..<2_000 {
                    lock.lockExclusive()
                    if writersInside.loadThenWrappingIncrement(ordering: .sequentiallyConsistent) != 0
                        || readersInside.load(ordering: .sequentiallyConsistent) != 0
                    {
                        overlaps.wrappingIncrement(ordering: .relaxed)
                    }
                    writersInside.wrappingDecrement(ordering: .sequentiallyConsistent)
                    lock.unlockExclusive()
                }
            }
        }
        for thread in readers + writers { thread.join() }
        #expect(overlaps.load(ordering: .relaxed) == 0)
        #expect(lock.exclusiveAcquisitionCount == 4_000)
        #expect(!lock.anyoneIsWaiting)
    }

    @Test("a walker on any stripe of the read side holds back what was retired after it entered")
    func gracePeriodCountsEveryStripe() throws {
        let pool = try PageTablePool(budgetBytes: 1 << 20)
        let grace = GracePeriod(pool: pool)
        for stripe in [1, GracePeriod.stripes - 1, GracePeriod.stripes + 3] {
            let page = try #require(pool.allocate())
            let walker = grace.enterReadSide(stripe: stripe)
            grace.retire(page)
            for _ in 0..<10 { grace.reclaim() }
            #expect(pool.isLive(page), "freed under a walker on stripe \(stripe)")
            grace.exitReadSide(walker)
            grace.barrier()
            #expect(!pool.isLive(page))
        }
    }

    @Test("a retired page is not reused while a walker that could see it is inside its read side")
    func gracePeriodWaitsForReaders() throws {
        let pool = try PageTablePool(budgetBytes: 1 << 20)
        let grace = GracePeriod(pool: pool)
        let page = try #require(pool.allocate())
        let walker = grace.enterReadSide()
        grace.retire(page)
        for _ in 0..<10 { grace.reclaim() }
        #expect(pool.isLive(page), "freed under a walker")
        #expect(grace.pagesAwaitingGracePeriod == 1)
        grace.exitReadSide(walker)
        grace.barrier()
        #expect(!pool.isLive(page))
        #expect(pool.livePages == 0)
        #expect(grace.pagesAwaitingGracePeriod == 0)
    }

    @Test("walkers that enter after a page is retired do not hold it back")
    func laterReadersDoNotBlock() throws {
        let pool = try PageTablePool(budgetBytes: 1 << 20)
        let grace = GracePeriod(pool: pool)
        let page = try #require(pool.allocate())
        grace.retire(page)
        grace.reclaim()
        let late = grace.enterReadSide()
        // The epoch moved once before `late` entered; `late` blocks only pages retired after.
        for _ in 0..<4 { grace.reclaim() }
        let freedWhileLateInside = !pool.isLive(page)
        grace.exitReadSide(late)
        grace.barrier()
        #expect(freedWhileLateInside)
    }

    @Test("the pool refuses a double free and counts every page")
    func poolAccounting() throws {
        let pool = try PageTablePool(budgetBytes: 16 * 4096)
        var pages: [PageIndex] = []
        while let page = pool.allocate() { pages.append(page) }
        #expect(pages.count == pool.capacity)
        #expect(pool.free(pages[0]))
        #expect(!pool.free(pages[0]))
        let again = try #require(pool.allocate())
        #expect(again == pages[0])
        // A recycled page comes back zeroed.
        #expect(pool.table(again).load(0) == .nonPresent)
        for page in pages { pool.free(page) }
        #expect(pool.livePages == 0)
        #expect(pool.peakPages == pool.capacity)
    }
}
