import Atomics
import ZapPlatform

/// One unit of deferred work, like the kernel's `struct work_struct`: it can be pending at
/// most once, and never runs on two workers at the same time.
public final class WorkItem: @unchecked Sendable {
    /// What the item does when a worker runs it.
    public let body: @Sendable () -> Void
    /// A label for logs and violation reports.
    public let label: String
    // Guarded by the owning queue's mutex.
    fileprivate var isPending = false
    fileprivate var isRunning = false

    /// Creates an item that runs `body`.
    public init(label: String, _ body: @escaping @Sendable () -> Void) {
        self.label = label
        self.body = body
    }
}

/// What ``WorkQueue/queue(_:)`` did with an item.
public enum QueueOutcome: Sendable, Equatable {
    /// The item is now pending and will run.
    case queued
    /// The item was already pending; nothing changed (`queue_work` returned false).
    case alreadyPending
    /// The queue is destroyed and refuses work.
    case refused

    /// `queue_work`'s return value.
    public var didQueue: Bool { self == .queued }
}

/// A per-VM workqueue with the semantics of Linux's `alloc_workqueue(WQ_UNBOUND, max_active)`:
///
/// - up to `maxActive` workers run pending items in parallel, in no fixed order;
/// - queueing an item that is already pending does nothing and returns false;
/// - queueing an item that is running (not pending) makes it run again after the current run;
/// - ``flush()`` waits for every item queued before the call, not for later ones;
/// - ``destroy()`` drains the queue (work queued by running items included), then refuses.
///
/// Workers hold their queue: call ``destroy()`` when done, or the started workers wait forever.
public final class WorkQueue: @unchecked Sendable {
    private struct Entry {
        let item: WorkItem
        let sequence: UInt64
    }

    /// The queue's name, used for worker thread names.
    public let name: String
    /// The most items that run at once.
    public let maxActive: Int

    private let mutex = PThreadMutex()
    private let workAvailable = PThreadCondition()
    private let workCompleted = PThreadCondition()
    private var pending: [Entry] = []
    private var inFlight: Set<UInt64> = []
    private var nextSequence: UInt64 = 1
    private var destroyed = false
    private var stopping = false
    private var flushing = 0
    private var workers: [OSThread] = []
    /// Workers waiting for work; a new one starts only when runnable items outnumber them.
    private var idleWorkers = 0
    private let executed = ManagedAtomic<Int>(0)
    private let rejectedPending = ManagedAtomic<Int>(0)
    private let rejectedDestroyed = ManagedAtomic<Int>(0)

    /// Runs on a worker that found work, before it takes the item, with the queue unlocked: the
    /// item stays pending meanwhile, as when an unbound worker wakes late (race amplification).
    private let beforeTakingWork: (@Sendable () -> Void)?

    /// Creates the queue. Workers start on demand, as an unbound worker pool grows: a new one
    /// when work is queued and none is idle, up to `maxActive` (the kernel's default for
    /// `alloc_workqueue(..., 0)` is 256), so a wide queue costs threads only when work is parallel.
    public init(name: String, maxActive: Int, beforeTakingWork: (@Sendable () -> Void)? = nil) {
        precondition(maxActive >= 1, "a workqueue needs at least one worker")
        self.name = name
        self.maxActive = maxActive
        self.beforeTakingWork = beforeTakingWork
    }

    /// Starts a worker if more items can run than workers wait for them; with the mutex held.
    /// (A signalled worker counts as idle until it wakes, so a burst may start one too many.)
    private func startWorkerIfNeeded() {
        let runnable = pending.reduce(0) { $0 + ($1.item.isRunning ? 0 : 1) }
        guard runnable > idleWorkers, workers.count < maxActive, !stopping else { return }
        // Strong: a worker left behind by a destroy that gave up (stuck in its item) must never
        // find its queue freed. The queue lives until its last worker has left.
        workers.append(OSThread(name: "\(name)/\(workers.count)") { self.workerLoop() })
    }

    /// Worker threads started so far.
    public var workerCount: Int { mutex.withLock { workers.count } }

    deinit {
        if !destroyed { shutDownWorkers() }
    }

    /// `queue_work()`: makes `item` pending unless it already is.
    @discardableResult
    public func queue(_ item: WorkItem) -> QueueOutcome {
        mutex.lock()
        defer { mutex.unlock() }
        if destroyed {
            rejectedDestroyed.wrappingIncrement(ordering: .relaxed)
            return .refused
        }
        if item.isPending {
            rejectedPending.wrappingIncrement(ordering: .relaxed)
            return .alreadyPending
        }
        item.isPending = true
        let entry = Entry(item: item, sequence: nextSequence)
        nextSequence += 1
        pending.append(entry)
        inFlight.insert(entry.sequence)
        startWorkerIfNeeded()
        workAvailable.signal()
        return .queued
    }

    /// `flush_workqueue()`: returns when every item queued before this call has run.
    ///
    /// `giveUp` is polled while waiting: a watchdog that judged the VM stuck ends the wait
    /// (returning false) so that the run reports instead of hanging.
    @discardableResult
    public func flush(giveUpWhen giveUp: () -> Bool = { false }) -> Bool {
        mutex.lock()
        let target = nextSequence - 1
        flushing += 1
        var flushed = true
        while let oldest = inFlight.min(), oldest <= target {
            if giveUp() { flushed = false; break }
            workCompleted.wait(mutex, timeoutNanoseconds: 50_000_000)
        }
        flushing -= 1
        mutex.unlock()
        return flushed
    }

    /// `destroy_workqueue()`: drains, then refuses new items and stops the workers. With
    /// `giveUp` true while it waits, it refuses new items at once and leaves stuck workers behind.
    public func destroy(giveUpWhen giveUp: () -> Bool = { false }) {
        mutex.lock()
        // Draining waits for chained work too: items that running items queue.
        var drained = true
        while !inFlight.isEmpty {
            if giveUp() { drained = false; break }
            workCompleted.wait(mutex, timeoutNanoseconds: 50_000_000)
        }
        destroyed = true
        mutex.unlock()
        shutDownWorkers(join: drained)
    }

    private func shutDownWorkers(join: Bool = true) {
        mutex.lock()
        stopping = true
        workAvailable.broadcast()
        let started = workers
        mutex.unlock()
        if join { for worker in started { worker.join() } }
        mutex.lock()
        workers.removeAll()
        mutex.unlock()
    }

    private func workerLoop() {
        // WQ_UNBOUND: the worker runs on any CPU, whatever the thread that queued the work (and
        // so started this thread) was pinned to.
        CPUAccounting.unpinCallingThread()
        mutex.lock()
        var wokeLate = false
        while true {
            // An item re-queued while it runs stays pending until its current run ends.
            if let beforeTakingWork, !wokeLate, pending.contains(where: { !$0.item.isRunning }) {
                wokeLate = true
                mutex.unlock()
                beforeTakingWork()
                mutex.lock()
                continue
            }
            if let index = pending.firstIndex(where: { !$0.item.isRunning }) {
                wokeLate = false
                let entry = pending.remove(at: index)
                entry.item.isPending = false
                entry.item.isRunning = true
                mutex.unlock()
                entry.item.body()
                mutex.lock()
                entry.item.isRunning = false
                inFlight.remove(entry.sequence)
                executed.wrappingIncrement(ordering: .relaxed)
                workCompleted.broadcast()
                if !pending.isEmpty { workAvailable.signal() }
            } else if stopping {
                break
            } else {
                idleWorkers += 1
                workAvailable.wait(mutex)
                idleWorkers -= 1
            }
        }
        mutex.unlock()
    }

    /// Items that ran to completion.
    public var executedCount: Int { executed.load(ordering: .relaxed) }
    /// `queue` calls that found the item already pending.
    public var alreadyPendingCount: Int { rejectedPending.load(ordering: .relaxed) }
    /// `queue` calls refused because the queue was destroyed.
    public var refusedCount: Int { rejectedDestroyed.load(ordering: .relaxed) }
    /// Threads inside ``flush()`` now.
    public var flushesInProgress: Int { mutex.withLock { flushing } }
    /// Items queued or running now.
    public var itemsInFlight: Int { mutex.withLock { inFlight.count } }
    /// Has ``destroy()`` completed?
    public var isDestroyed: Bool { mutex.withLock { destroyed } }
}
