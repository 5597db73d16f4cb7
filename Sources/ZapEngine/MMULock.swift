import Atomics

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
    private var activeReaders = 0
    private var writerActive = false
    private var acquisitions: UInt64 = 0
    private var handoverWaiters = 0
    /// `acquisitions`, readable without the mutex.
    private let acquisitionMirror = ManagedAtomic<UInt64>(0)
    /// Waiting writers, readable without the mutex so that a zap can poll it cheaply.
    private let waitingWriters = ManagedAtomic<Int>(0)
    /// Waiting readers, so that a write-locked zap can see it starves someone.
    private let waitingReaders = ManagedAtomic<Int>(0)

    /// Creates an unlocked lock.
    public init() {}

    /// `read_lock(&kvm->mmu_lock)`.
    public func lockShared() {
        mutex.lock()
        if writerActive || waitingWriters.load(ordering: .relaxed) > 0 {
            waitingReaders.wrappingIncrement(ordering: .relaxed)
            while writerActive || waitingWriters.load(ordering: .relaxed) > 0 {
                readersMayEnter.wait(mutex)
            }
            waitingReaders.wrappingDecrement(ordering: .relaxed)
        }
        activeReaders += 1
        noteAcquisition()
        mutex.unlock()
    }

    /// Counts an acquisition; with the mutex held.
    private func noteAcquisition() {
        acquisitions &+= 1
        acquisitionMirror.store(acquisitions, ordering: .relaxed)
        if handoverWaiters > 0 { handedOver.broadcast() }
    }

    /// `read_unlock(&kvm->mmu_lock)`.
    public func unlockShared() {
        mutex.lock()
        activeReaders -= 1
        if activeReaders == 0 && waitingWriters.load(ordering: .relaxed) > 0 {
            writerMayEnter.signal()
        }
        mutex.unlock()
    }

    /// `write_lock(&kvm->mmu_lock)`.
    public func lockExclusive() {
        mutex.lock()
        acquireExclusiveLocked()
        mutex.unlock()
    }

    /// Waits, as a waiting writer, until the lock is free, and takes it; with the mutex held.
    private func acquireExclusiveLocked() {
        waitingWriters.wrappingIncrement(ordering: .relaxed)
        while writerActive || activeReaders > 0 {
            writerMayEnter.wait(mutex)
        }
        waitingWriters.wrappingDecrement(ordering: .relaxed)
        writerActive = true
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
        mutex.lock()
        let before = acquisitions
        writerActive = false
        if waitingWriters.load(ordering: .relaxed) > 0 {
            writerMayEnter.signal()
        } else {
            readersMayEnter.broadcast()
        }
        handoverWaiters += 1
        while acquisitions == before
                && (waitingWriters.load(ordering: .relaxed) > 0 || waitingReaders.load(ordering: .relaxed) > 0) {
            handedOver.wait(mutex)
        }
        handoverWaiters -= 1
        let handed = acquisitions != before
        acquireExclusiveLocked()
        mutex.unlock()
        return handed
    }

    /// `cond_resched_rwlock_read`: lets a waiting writer in, then takes the read lock again.
    /// Readers queue behind a waiting writer, so the writer always gets its turn.
    /// - Returns: whether someone else held the lock in between.
    @discardableResult
    public func yieldShared() -> Bool {
        let before = acquisitionCount
        unlockShared()
        lockShared()
        // Our own re-acquisition is one; any more were someone else's.
        return acquisitionCount &- before > 1
    }

    /// Acquisitions of the lock so far, shared or exclusive, by anyone.
    public var acquisitionCount: UInt64 { acquisitionMirror.load(ordering: .relaxed) }

    /// `write_unlock(&kvm->mmu_lock)`.
    public func unlockExclusive() {
        mutex.lock()
        writerActive = false
        if waitingWriters.load(ordering: .relaxed) > 0 {
            writerMayEnter.signal()
        } else {
            readersMayEnter.broadcast()
        }
        mutex.unlock()
    }

    /// `rwlock_needbreak()` for a read holder: a writer is waiting for the lock.
    public var writerIsWaiting: Bool { waitingWriters.load(ordering: .relaxed) > 0 }

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

/// How the caller holds `mmu_lock`; the kernel's `shared` argument.
public enum MMULockMode: Sendable {
    /// Held for read: other readers run concurrently, so SPTEs change only atomically.
    case shared
    /// Held for write: nobody else walks the tables, so plain stores are allowed.
    case exclusive
}
