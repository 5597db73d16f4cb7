import Atomics
import ZapPlatform

/// `kvm->mmu_lock`: a reader/writer lock that prefers writers and lets a holder see who waits.
///
/// Faults and the zap worker hold it for read; root creation, invalidation and the slow full
/// zap hold it for write. A reader that arrives while a writer waits queues behind the writer
/// (as the kernel's queued rwlock does), which is why a zap holding the read lock must yield
/// when a writer waits: otherwise every faulting vCPU stalls behind that writer for the whole
/// zap (bug class 5 in docs/model.md).
public final class MMULock: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private let readersMayEnter = PThreadCondition()
    private let writerMayEnter = PThreadCondition()
    private let handedOver = PThreadCondition()
    /// The lock word, as the kernel's queued rwlock has one: readers holding the lock in the low
    /// bits, and ``closedToReaders`` while a writer holds the lock or waits for it. A reader
    /// enters with one atomic add when the bit is clear and takes the mutex only when it is set,
    /// so faults on many vCPUs share one cache line, not a mutex.
    private let word = ManagedAtomic<Int>(0)
    private static let closedToReaders = 1 << 40
    private static let readerMask = closedToReaders - 1
    // Guarded by `mutex`.
    private var writerActive = false
    private var acquisitions: UInt64 = 0
    private var exclusiveAcquisitions: UInt64 = 0
    private var handoverWaiters = 0
    /// `exclusiveAcquisitions`, readable without the mutex.
    private let exclusiveAcquisitionMirror = ManagedAtomic<UInt64>(0)
    /// Waiting writers, readable without the mutex so that a zap can poll it cheaply.
    private let waitingWriters = ManagedAtomic<Int>(0)
    /// Waiting readers, so that a write-locked zap can see it starves someone.
    private let waitingReaders = ManagedAtomic<Int>(0)
    /// The longest a writer waited for the lock, in nanoseconds.
    private let longestWriterWait = ManagedAtomic<UInt64>(0)
    /// Told when a holder breaks a rule of holding (see ``HoldViolation``).
    private let onViolation: (@Sendable (HoldViolation) -> Void)?

    /// Runs in a yield between letting the lock go and taking it back (race amplification).
    private let onHandoff: (@Sendable () -> Void)?

    /// Creates an unlocked lock; `onViolation` hears of holders that break the rules of holding,
    /// `onHandoff` runs in every yield while the lock is given up.
    public init(onViolation: (@Sendable (HoldViolation) -> Void)? = nil, onHandoff: (@Sendable () -> Void)? = nil) {
        self.onViolation = onViolation
        self.onHandoff = onHandoff
    }

    /// Readers holding the lock now, and readers on the fast path that found it closed and are
    /// about to count themselves out again (transiently).
    private var activeReaders: Int { word.load(ordering: .sequentiallyConsistent) & Self.readerMask }

    /// `read_lock(&kvm->mmu_lock)`.
    public func lockShared() {
        // `queued_read_lock`: count in; if no writer holds or waits, the lock is ours.
        let seen = word.loadThenWrappingIncrement(ordering: .sequentiallyConsistent)
        if seen & Self.closedToReaders != 0 { lockSharedSlowly() }
        HoldRecord.current.acquired(ObjectIdentifier(self), mode: .shared)
    }

    /// `queued_read_lock_slowpath`: a writer holds or waits, so this reader queues behind it.
    private func lockSharedSlowly() {
        mutex.lock()
        // Counted out again under the mutex, so that a writer waiting for the readers to drain
        // is told if this was the last (see `countOutReader`).
        countOutReader()
        if writerActive || waitingWriters.load(ordering: .relaxed) > 0 {
            waitingReaders.wrappingIncrement(ordering: .relaxed)
            while writerActive || waitingWriters.load(ordering: .relaxed) > 0 {
                readersMayEnter.wait(mutex)
            }
            waitingReaders.wrappingDecrement(ordering: .relaxed)
        }
        word.wrappingIncrement(ordering: .sequentiallyConsistent)
        noteAcquisition()
        mutex.unlock()
    }

    /// Takes one reader off the word; with the mutex held. A writer waits for the readers to
    /// drain only while the mutex is free (in its condition wait), so signalling here loses
    /// no wake-up.
    private func countOutReader() {
        let now = word.wrappingDecrementThenLoad(ordering: .sequentiallyConsistent)
        if now & Self.readerMask == 0 && waitingWriters.load(ordering: .relaxed) > 0 {
            writerMayEnter.signal()
        }
    }

    /// Sets or clears ``closedToReaders`` after `writerActive` or the waiting writers changed;
    /// with the mutex held. Closed whenever a writer holds the lock or waits for it, which is
    /// what makes arriving readers queue behind a waiting writer.
    private func updateClosedToReaders() {
        let closed = writerActive || waitingWriters.load(ordering: .relaxed) > 0
        let isClosed = word.load(ordering: .relaxed) & Self.closedToReaders != 0
        if closed && !isClosed {
            word.wrappingIncrement(by: Self.closedToReaders, ordering: .sequentiallyConsistent)
        } else if !closed && isClosed {
            word.wrappingDecrement(by: Self.closedToReaders, ordering: .sequentiallyConsistent)
        }
    }

    /// Counts an acquisition that went through the mutex (a writer's, or a reader's that queued);
    /// with the mutex held. Readers on the fast path are not counted: they enter only while no
    /// writer holds or waits, and the counts serve the hand-over to waiters.
    private func noteAcquisition() {
        acquisitions &+= 1
        if handoverWaiters > 0 { handedOver.broadcast() }
    }

    /// `read_unlock(&kvm->mmu_lock)`.
    public func unlockShared() {
        let now = word.wrappingDecrementThenLoad(ordering: .sequentiallyConsistent)
        // The last reader out while a writer waits wakes it. The writer set the bit before it
        // looked at the readers, so a reader that saw no bit left before that look.
        if now & Self.readerMask == 0 && now & Self.closedToReaders != 0 {
            mutex.lock()
            if activeReaders == 0 && waitingWriters.load(ordering: .relaxed) > 0 { writerMayEnter.signal() }
            mutex.unlock()
        }
    }

    /// `write_lock(&kvm->mmu_lock)`.
    public func lockExclusive() {
        mutex.lock()
        acquireExclusiveLocked()
        mutex.unlock()
        HoldRecord.current.acquired(ObjectIdentifier(self), mode: .exclusive)
    }

    /// Waits, as a waiting writer, until the lock is free, and takes it; with the mutex held.
    private func acquireExclusiveLocked() {
        waitingWriters.wrappingIncrement(ordering: .relaxed)
        // Closed before the readers are counted: from here every arriving reader queues.
        updateClosedToReaders()
        if writerActive || activeReaders > 0 {
            let start = BlockClock.nanoseconds()
            while writerActive || activeReaders > 0 {
                writerMayEnter.wait(mutex)
            }
            longestWriterWait.raise(to: BlockClock.elapsed(since: start))
        }
        waitingWriters.wrappingDecrement(ordering: .relaxed)
        writerActive = true
        exclusiveAcquisitions &+= 1
        exclusiveAcquisitionMirror.store(exclusiveAcquisitions, ordering: .relaxed)
        noteAcquisition()
    }

    /// `cond_resched_rwlock_write`: gives the lock to whoever waits for it, then takes it back.
    ///
    /// Releasing and re-taking is not enough: the yielding writer would win the race against the
    /// waiters it just woke, and hand nothing over. So it waits until someone else has acquired
    /// the lock (or nobody waits any more), as the kernel's FIFO queued rwlock guarantees.
    /// - Returns: whether someone else held the lock in between.
    @discardableResult
    public func yieldExclusive() -> Bool {
        checkProgressBeforeYield()
        mutex.lock()
        let before = acquisitions
        writerActive = false
        updateClosedToReaders()
        if waitingWriters.load(ordering: .relaxed) > 0 {
            writerMayEnter.signal()
        } else {
            readersMayEnter.broadcast()
        }
        handoverWaiters += 1
        while acquisitions == before
            && (waitingWriters.load(ordering: .relaxed) > 0 || waitingReaders.load(ordering: .relaxed) > 0)
        {
            handedOver.wait(mutex)
        }
        handoverWaiters -= 1
        if let onHandoff {
            mutex.unlock()
            onHandoff()
            mutex.lock()
        }
        let handed = acquisitions != before
        acquireExclusiveLocked()
        mutex.unlock()
        HoldRecord.current.acquired(ObjectIdentifier(self), mode: .exclusive)
        return handed
    }

    /// `cond_resched_rwlock_read`: lets a waiting writer in, then takes the read lock again.
    /// Readers queue behind a waiting writer, so the writer always gets its turn.
    /// - Returns: whether a writer held the lock in between (other readers may hold it with us
    ///   at any time, so only a writer's turn is a hand-over).
    @discardableResult
    public func yieldShared() -> Bool {
        checkProgressBeforeYield()
        let before = exclusiveAcquisitionCount
        unlockShared()
        onHandoff?()
        lockShared()
        return exclusiveAcquisitionCount != before
    }

    // MARK: - The rules of holding, judged from the lock's side

    /// `tdp_mmu_iter_cond_resched`'s forward-progress rule: a holder yields only after it
    /// removed something since it last acquired the lock, or a yield storm can livelock a zap.
    private func checkProgressBeforeYield() {
        let record = HoldRecord.current
        if record.lock == ObjectIdentifier(self) && !record.progressSinceAcquisition {
            onViolation?(.yieldWithoutProgress)
        }
    }

    /// The calling holder removed leaf SPTEs (a zap step that freed no table still counts).
    public func noteProgress() {
        HoldRecord.current.progressSinceAcquisition = true
    }

    /// The calling holder handed `tables` page tables to the grace period in one step.
    ///
    /// Judges two bounds from what the lock saw: no step frees more than `stepBound` tables
    /// (the two-pass zap's 1 GiB subtree), and a holder that someone waits for frees tables in
    /// at most one step (the one in progress when the waiter came) before it yields.
    public func noteTablesRetired(_ tables: Int, stepBound: Int) {
        let record = HoldRecord.current
        guard record.lock == ObjectIdentifier(self), tables > 0 else { return }
        record.progressSinceAcquisition = true
        if tables > stepBound { onViolation?(.oversizedStep(tables: tables, bound: stepBound)) }
        guard record.unyieldingDepth == 0 else { return }
        let contended = record.mode == .shared ? writerIsWaiting : anyoneIsWaiting
        guard contended else { return }
        record.batchesWhileContended += 1
        if record.batchesWhileContended >= 2 && !record.reportedStarvation {
            record.reportedStarvation = true
            onViolation?(.heldPastStepWhileContended(mode: record.mode))
        }
    }

    /// Runs `body` as a zap that by design never yields (the `sync` put path, which zaps an
    /// unreachable root in full while the caller waits): it is exempt from the waiter rule.
    public func withoutYieldRule<T>(_ body: () throws -> T) rethrows -> T {
        let record = HoldRecord.current
        record.unyieldingDepth += 1
        defer { record.unyieldingDepth -= 1 }
        return try body()
    }

    /// The longest any writer waited for the lock so far, in nanoseconds.
    public var longestWriterWaitNanoseconds: UInt64 { longestWriterWait.load(ordering: .relaxed) }

    /// Acquisitions of the lock for write so far, by anyone.
    public var exclusiveAcquisitionCount: UInt64 { exclusiveAcquisitionMirror.load(ordering: .relaxed) }

    /// `write_unlock(&kvm->mmu_lock)`.
    public func unlockExclusive() {
        mutex.lock()
        writerActive = false
        updateClosedToReaders()
        if waitingWriters.load(ordering: .relaxed) > 0 {
            writerMayEnter.signal()
        } else {
            readersMayEnter.broadcast()
        }
        mutex.unlock()
    }

    /// `rwlock_needbreak()` for a read holder: a writer is waiting for the lock.
    ///
    /// Judged by the word's ``closedToReaders`` bit, which a waiting writer sets after it counts
    /// itself in (both under the mutex): a holder that saw only the count, yielded and re-entered
    /// on the fast path ahead of the writer, handed nothing over, and was reported writer-starved
    /// (1 in 20 runs of the concurrency stress). Once the bit is seen, a yield lets the writer in.
    public var writerIsWaiting: Bool {
        word.load(ordering: .relaxed) & Self.closedToReaders != 0 && waitingWriters.load(ordering: .relaxed) > 0
    }

    /// `rwlock_needbreak()` for the write holder: anyone is waiting for the lock.
    public var anyoneIsWaiting: Bool {
        waitingWriters.load(ordering: .relaxed) > 0 || waitingReaders.load(ordering: .relaxed) > 0
    }

    /// Runs `body` holding the lock for read.
    @inlinable
    public func withShared<T>(_ body: () throws -> T) rethrows -> T {
        lockShared()
        defer { unlockShared() }
        return try body()
    }

    /// Runs `body` holding the lock for write.
    @inlinable
    public func withExclusive<T>(_ body: () throws -> T) rethrows -> T {
        lockExclusive()
        defer { unlockExclusive() }
        return try body()
    }
}

/// A rule of holding `mmu_lock` that a holder broke, as the lock saw it.
public enum HoldViolation: Sendable, Equatable {
    /// A holder yielded without having removed anything since it acquired the lock.
    case yieldWithoutProgress
    /// One step freed more page tables than the bound.
    case oversizedStep(tables: Int, bound: Int)
    /// A holder freed tables in a second step while someone waited, without yielding between.
    case heldPastStepWhileContended(mode: MMULockMode)
}

/// How the caller holds `mmu_lock`; the kernel's `shared` argument.
public enum MMULockMode: Sendable {
    /// Held for read: other readers run concurrently, so SPTEs change only atomically.
    case shared
    /// Held for write: nobody else walks the tables, so plain stores are allowed.
    case exclusive
}
