import Atomics
import ZapPlatform

/// The engine's stand-in for RCU: defers freeing a page table (or running a root's free
/// callback) until every walker that might still see it has left its read-side section.
///
/// It is an epoch scheme with two reader counters, as SRCU has. A walker enters by counting
/// itself in the slot of the current epoch; retired objects are tagged with the epoch they were
/// retired in; the epoch moves from `e` to `e+1` only when the slot of `e-1` is empty. An object
/// retired in epoch `e` can therefore be freed once the epoch reaches `e+2`: every walker of
/// epoch `e-1` or `e` has left by then. Reclamation never blocks a walker.
///
/// Like SRCU's per-CPU counters, each slot is split over ``stripes`` counters on cache lines of
/// their own, and a walker counts itself in and out on the stripe it names (a vCPU its own), so
/// that faults on many vCPUs do not all write one line. A slot is empty when every stripe of it
/// reads zero: a walker's two counts land on one stripe, so no stripe ever reads below zero.
public final class GracePeriod: @unchecked Sendable {
    /// Which counter a walker registered in; hand it back to ``exitReadSide(_:)``.
    public struct ReadSideToken: Sendable {
        fileprivate let counter: Int
    }

    /// Counters per epoch slot.
    public static let stripes = 16

    private struct Retired {
        var epoch: UInt64
        var pages: [PageIndex] = []
        var callbacks: [() -> Void] = []
    }

    private let pool: PageTablePool
    private let epoch = ManagedAtomic<UInt64>(2)
    /// `2 * stripes` counters, each on lines of its own: slot `s`, stripe `t` is counter `t * 2 + s`.
    private let readers = AlignedAtomics<Int>(count: 2 * GracePeriod.stripes, spacingBytes: 128, initial: 0)
    private let mutex = PThreadMutex()
    private var retired: [Retired] = []
    private let pendingPages = ManagedAtomic<Int>(0)

    private let onRetire: (@Sendable (Int) -> Void)?

    /// Creates the scheme for tables of `pool`; `onRetire` hears of every batch of tables retired,
    /// on the retiring thread (the lock's step bounds are judged there).
    public init(pool: PageTablePool, onRetire: (@Sendable (Int) -> Void)? = nil) {
        self.pool = pool
        self.onRetire = onRetire
    }

    private func reader(_ counter: Int) -> UnsafeAtomic<Int> { readers[counter] }

    /// `rcu_read_lock()`: from here until ``exitReadSide(_:)`` nothing retired can be freed.
    /// `stripe` picks the counter (any number; a vCPU passes its own so that vCPUs do not share).
    @inline(__always)
    public func enterReadSide(stripe: Int = 0) -> ReadSideToken {
        let base = (stripe & (Self.stripes - 1)) &* 2
        while true {
            let current = epoch.load(ordering: .sequentiallyConsistent)
            let counter = base | Int(current & 1)
            reader(counter).wrappingIncrement(ordering: .sequentiallyConsistent)
            // Registered in time only if the epoch did not move meanwhile; otherwise a
            // reclaimer may already have judged this slot empty.
            if epoch.load(ordering: .sequentiallyConsistent) == current {
                return ReadSideToken(counter: counter)
            }
            reader(counter).wrappingDecrement(ordering: .sequentiallyConsistent)
        }
    }

    /// `rcu_read_unlock()`.
    @inline(__always)
    public func exitReadSide(_ token: ReadSideToken) {
        reader(token.counter).wrappingDecrement(ordering: .sequentiallyConsistent)
    }

    /// Is no walker counted in `slot` on any stripe?
    private func slotIsEmpty(_ slot: Int) -> Bool {
        for stripe in 0..<Self.stripes where reader(stripe &* 2 | slot).load(ordering: .sequentiallyConsistent) != 0 {
            return false
        }
        return true
    }

    /// Defers returning `page` to the pool (`call_rcu(..., tdp_mmu_free_sp_rcu_callback)`).
    public func retire(_ page: PageIndex) {
        onRetire?(1)
        mutex.withLock { currentBatch { $0.pages.append(page) } }
        pendingPages.wrappingIncrement(ordering: .relaxed)
    }

    /// Defers returning `pages` to the pool.
    public func retire(_ pages: [PageIndex]) {
        guard !pages.isEmpty else { return }
        onRetire?(pages.count)
        mutex.withLock { currentBatch { $0.pages.append(contentsOf: pages) } }
        pendingPages.wrappingIncrement(by: pages.count, ordering: .relaxed)
    }

    /// Runs `callback` after a grace period (`call_rcu`).
    public func afterGracePeriod(_ callback: @escaping () -> Void) {
        mutex.withLock { currentBatch { $0.callbacks.append(callback) } }
    }

    private func currentBatch(_ update: (inout Retired) -> Void) {
        let now = epoch.load(ordering: .sequentiallyConsistent)
        if retired.last?.epoch != now { retired.append(Retired(epoch: now)) }
        update(&retired[retired.count - 1])
    }

    /// Advances the epoch as far as the walkers allow and frees what has become safe.
    /// Never waits. Returns the number of pages freed.
    @discardableResult
    public func reclaim() -> Int { reclaimReportingEpoch().freed }

    private func reclaimReportingEpoch() -> (freed: Int, epoch: UInt64) {
        mutex.lock()
        for _ in 0..<2 {
            let now = epoch.load(ordering: .sequentiallyConsistent)
            // Walkers of epoch now-1 share the slot that epoch now+1 will use.
            guard slotIsEmpty(Int((now &+ 1) & 1)) else { break }
            epoch.store(now &+ 1, ordering: .sequentiallyConsistent)
        }
        let now = epoch.load(ordering: .sequentiallyConsistent)
        var safe = 0
        while safe < retired.count && retired[safe].epoch &+ 2 <= now { safe += 1 }
        // Freed with the mutex held, so that a barrier that saw the epoch move also sees the
        // frees done. Callbacks must not retire anything.
        var freed = 0
        for batch in retired.prefix(safe) {
            for page in batch.pages { pool.free(page) }
            freed += batch.pages.count
            for callback in batch.callbacks { callback() }
        }
        retired.removeFirst(safe)
        pendingPages.wrappingDecrement(by: freed, ordering: .relaxed)
        mutex.unlock()
        return (freed, now)
    }

    /// `rcu_barrier()`: waits until everything retired before the call has been freed. The
    /// caller must not be inside a read-side section. `giveUp` ends the wait early (a walker
    /// stuck inside its section would hold it forever); returns whether the barrier completed.
    @discardableResult
    public func barrier(giveUpWhen giveUp: () -> Bool = { false }) -> Bool {
        let target = epoch.load(ordering: .sequentiallyConsistent) &+ 2
        // Judged on the epoch this thread's own reclaim reached: its frees are done.
        while reclaimReportingEpoch().epoch < target {
            if giveUp() { return false }
            yieldProcessor()
        }
        return true
    }

    /// Pages retired and not yet returned to the pool.
    public var pagesAwaitingGracePeriod: Int { pendingPages.load(ordering: .relaxed) }
}
