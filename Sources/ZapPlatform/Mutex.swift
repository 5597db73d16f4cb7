#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A plain pthread mutex, the user-space stand-in for the kernel's mutexes and spinlocks
/// (`slots_lock`, `tdp_mmu_pages_lock`).
public final class PThreadMutex: @unchecked Sendable {
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>

    /// Creates an unlocked mutex.
    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Blocks until the mutex is held by the caller.
    @inlinable public func lock() { pthread_mutex_lock(mutex) }

    /// Releases the mutex.
    @inlinable public func unlock() { pthread_mutex_unlock(mutex) }

    /// Runs `body` with the mutex held.
    @inlinable
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}

/// A condition variable bound to one ``PThreadMutex``.
public final class PThreadCondition: @unchecked Sendable {
    let condition: UnsafeMutablePointer<pthread_cond_t>

    /// Creates a condition variable using the monotonic clock for timed waits.
    public init() {
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        #if canImport(Glibc)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        #endif
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deallocate()
    }

    /// Atomically releases `mutex` and waits for a signal; `mutex` is held again on return.
    public func wait(_ mutex: PThreadMutex) { pthread_cond_wait(condition, mutex.mutex) }

    /// Like ``wait(_:)``, but returns after `nanoseconds` at the latest (monotonic clock).
    public func wait(_ mutex: PThreadMutex, timeoutNanoseconds nanoseconds: UInt64) {
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        let total = UInt64(deadline.tv_nsec) + nanoseconds
        deadline.tv_sec += Int(total / 1_000_000_000)
        deadline.tv_nsec = Int(total % 1_000_000_000)
        pthread_cond_timedwait(condition, mutex.mutex, &deadline)
    }

    /// Wakes one waiter.
    public func signal() { pthread_cond_signal(condition) }

    /// Wakes every waiter.
    public func broadcast() { pthread_cond_broadcast(condition) }
}

/// A one-shot event: signalled once, waited for by any number of threads.
public final class OneShotEvent: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private let condition = PThreadCondition()
    private var signalled = false

    /// An event not yet signalled.
    public init() {}

    /// Signals the event; every waiter, present and future, goes on.
    public func signal() {
        mutex.withLock { signalled = true }
        condition.broadcast()
    }

    /// Waits until the event is signalled.
    public func wait() {
        mutex.lock()
        while !signalled { condition.wait(mutex) }
        mutex.unlock()
    }

    /// Waits at most `nanoseconds`; returns whether the event was signalled.
    public func wait(timeoutNanoseconds nanoseconds: UInt64) -> Bool {
        mutex.lock()
        defer { mutex.unlock() }
        if !signalled { condition.wait(mutex, timeoutNanoseconds: nanoseconds) }
        return signalled
    }
}
