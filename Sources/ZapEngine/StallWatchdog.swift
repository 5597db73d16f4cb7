import Atomics
import ZapPlatform
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a thread inside the VM is doing, for the watchdog's report of a stall.
public enum Activity: UInt8, Sendable, CustomStringConvertible {
    case idle, fault, loadRoot, reset, fastZap, fullZap, teardown, zapWork, unmap, dirtyLog, nxRecovery

    /// The operation's name as the watchdog reports it.
    public var description: String {
        switch self {
        case .idle: "idle"
        case .fault: "a page fault"
        case .loadRoot: "loading a root"
        case .reset: "a vCPU reset"
        case .fastZap: "a fast zap"
        case .fullZap: "a full zap"
        case .teardown: "VM teardown"
        case .zapWork: "a root's zap work item"
        case .unmap: "an MMU-notifier unmap"
        case .dirtyLog: "a dirty-log operation"
        case .nxRecovery: "an NX huge-page recovery pass"
        }
    }
}

/// Where an operation in flight is: running, or waiting for something named.
public enum WaitState: UInt8, Sendable, CustomStringConvertible {
    case running, mmuLockRead, mmuLockWrite, slotsLock, workqueueFlush, usableRoot, frozenEntry

    /// What the thread waits for, in words.
    public var description: String {
        switch self {
        case .running: "running"
        case .mmuLockRead: "waiting for mmu_lock (read)"
        case .mmuLockWrite: "waiting for mmu_lock (write)"
        case .slotsLock: "waiting for slots_lock"
        case .workqueueFlush: "waiting for the zap workqueue to flush"
        case .usableRoot: "retrying for a valid root of its role"
        case .frozenEntry: "retrying past a frozen (REMOVED_SPTE) entry"
        }
    }
}

/// One actor's current operation, written only by the thread that acts and read by the
/// watchdog. Relaxed atomics on lines of the actor's own (one aligned block, not an object per
/// field: small objects of different vCPUs would share lines, and every fault writes them).
public final class ActivitySlot: @unchecked Sendable {
    /// Who acts, e.g. `vCPU 3` or `VM thread`.
    public let actor: String

    private enum Field: Int { case operation, waitState, startedAt, retryCount, retryReason }
    private let fields = AlignedAtomics<UInt64>(count: 5, initial: 0)

    init(actor: String) {
        self.actor = actor
        field(.operation).store(UInt64(Activity.idle.rawValue), ordering: .relaxed)
        field(.waitState).store(UInt64(WaitState.running.rawValue), ordering: .relaxed)
        field(.retryReason).store(UInt64(WaitState.running.rawValue), ordering: .relaxed)
    }

    @inline(__always)
    private func field(_ field: Field) -> UnsafeAtomic<UInt64> { fields[field.rawValue] }

    /// The actor starts `activity` at `start`, a ``BlockClock`` reading (an operation that has
    /// just read the clock for its block time passes that reading: one read for both).
    @inline(__always)
    func begin(_ activity: Activity, at start: UInt64 = BlockClock.nanoseconds()) {
        field(.retryCount).store(0, ordering: .relaxed)
        field(.waitState).store(UInt64(WaitState.running.rawValue), ordering: .relaxed)
        field(.startedAt).store(start, ordering: .relaxed)
        field(.operation).store(UInt64(activity.rawValue), ordering: .releasing)
    }

    /// The actor finished its operation.
    @inline(__always)
    func end() { field(.operation).store(UInt64(Activity.idle.rawValue), ordering: .releasing) }

    /// The actor now waits for (or stopped waiting for) something.
    @inline(__always)
    func wait(_ state: WaitState) { field(.waitState).store(UInt64(state.rawValue), ordering: .relaxed) }

    /// The actor's operation retried once more, because of `reason`.
    @inline(__always)
    func retried(_ reason: WaitState) {
        field(.retryReason).store(UInt64(reason.rawValue), ordering: .relaxed)
        // Only the acting thread writes it: a load and a store, no locked instruction.
        let retries = field(.retryCount)
        retries.store(retries.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
    }

    /// The operation in flight, how long it has been at `now` (a ``BlockClock`` reading), what it
    /// waits for and how often it retried; nil when idle.
    func snapshot(now: UInt64) -> (activity: Activity, nanoseconds: UInt64, state: WaitState, retries: Int, reason: WaitState)? {
        let activity = Activity(rawValue: UInt8(truncatingIfNeeded: field(.operation).load(ordering: .acquiring))) ?? .idle
        guard activity != .idle else { return nil }
        let since = field(.startedAt).load(ordering: .relaxed)
        return (
            activity, now > since ? now - since : 0,
            WaitState(rawValue: UInt8(truncatingIfNeeded: field(.waitState).load(ordering: .relaxed))) ?? .running,
            Int(truncatingIfNeeded: field(.retryCount).load(ordering: .relaxed)),
            WaitState(rawValue: UInt8(truncatingIfNeeded: field(.retryReason).load(ordering: .relaxed))) ?? .running
        )
    }
}

/// Every actor of one VM, so that a stall can be reported as who was stuck doing what.
final class ActivityBoard: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private var slots: [ActivitySlot] = []
    private var spare: [ActivitySlot] = []

    /// A slot for a long-lived actor (a vCPU).
    func register(_ actor: String) -> ActivitySlot {
        let slot = ActivitySlot(actor: actor)
        mutex.withLock { slots.append(slot) }
        return slot
    }

    /// A slot for one operation of a passing actor (a VM ioctl, a work item); give it back with
    /// ``release(_:)``. Rare operations, so a mutex is fine.
    func claim(_ activity: Activity, actor: String) -> ActivitySlot {
        let slot: ActivitySlot = mutex.withLock {
            if let index = spare.firstIndex(where: { $0.actor == actor }) { return spare.remove(at: index) }
            let slot = ActivitySlot(actor: actor)
            slots.append(slot)
            return slot
        }
        slot.begin(activity)
        return slot
    }

    /// Ends a claimed slot's operation and keeps the slot for reuse.
    func release(_ slot: ActivitySlot) {
        slot.end()
        mutex.withLock { spare.append(slot) }
    }

    /// One line per operation in flight, longest first.
    func describeInFlight(now: UInt64) -> [String] {
        let all = mutex.withLock { slots }
        return all.compactMap { slot in slot.snapshot(now: now).map { (slot.actor, $0) } }
            .sorted { $0.1.nanoseconds > $1.1.nanoseconds }
            .map { actor, state in
                "\(actor): \(state.activity) for \(formatSeconds(state.nanoseconds)), "
                    + (state.retries > 0 ? "\(state.reason), \(state.retries) times; now \(state.state)" : "\(state.state)")
            }
    }

    /// In one pass over the slots: is any operation in flight, and how long has the oldest one
    /// that retried at least once been running?
    func inFlight(now: UInt64) -> (any: Bool, longestRetrying: UInt64) {
        var any = false
        var longestRetrying: UInt64 = 0
        for slot in mutex.withLock({ slots }) {
            guard let state = slot.snapshot(now: now) else { continue }
            any = true
            if state.retries > 0 { longestRetrying = max(longestRetrying, state.nanoseconds) }
        }
        return (any, longestRetrying)
    }
}

/// Turns "no progress for a bound" into a `livelock` verdict instead of a hang.
///
/// A thread polls a progress figure (the VM's counters of work done) and the activity board. When
/// an operation is in flight and the figure has not moved for `bound`, or one operation has kept
/// retrying for `bound`, it reports the stuck actors once and raises ``stalled``: retry loops give up, and runners stop waiting for threads
/// that do not come back, so the run ends with the violation in its report.
final class StallWatchdog: @unchecked Sendable {
    /// Set once a stall was reported; never cleared.
    let stalled = ManagedAtomic<Bool>(false)
    /// When the stall was reported (monotonic), 0 before.
    let stalledAt = ManagedAtomic<UInt64>(0)
    /// Signalled by ``stop()``: the poll waits on it, so that stopping never waits out a poll
    /// (a teardown used to wait up to 100 ms for the watchdog's sleep to end).
    private let stopRequested = OneShotEvent()
    private var thread: OSThread?

    /// Starts watching. `progress` must grow whenever the VM does work; `onStall` hears the stuck
    /// actors' descriptions, on the watchdog's thread.
    init(
        bound: UInt64, board: ActivityBoard, progress: @escaping @Sendable () -> Int,
        onStall: @escaping @Sendable (_ stuckFor: UInt64, _ stuck: [String]) -> Void
    ) {
        let poll = max(1_000_000, min(bound / 20, 100_000_000))
        thread = OSThread(name: "zap-watchdog") { [stalled, stalledAt, stopRequested] in
            var lastProgress = progress()
            var lastChange = monotonicNanoseconds()
            while !stopRequested.wait(timeoutNanoseconds: poll) {
                let now = monotonicNanoseconds()
                let current = progress()
                // Operations are timed on the block clock, the VM's progress on the monotonic one.
                let operations = board.inFlight(now: BlockClock.nanoseconds())
                if current != lastProgress || !operations.any {
                    lastProgress = current
                    lastChange = now
                }
                // Two ways to be stuck: the whole VM does nothing while an operation waits, or one
                // operation keeps retrying past the bound while others churn (a fault that never
                // gets a usable root, however many roots the VM makes meanwhile).
                let stuckFor = max(now &- lastChange, operations.longestRetrying)
                guard stuckFor >= bound else { continue }
                // Named before the flag is raised: stuck loops give up as soon as they see it.
                onStall(stuckFor, board.describeInFlight(now: BlockClock.nanoseconds()))
                stalledAt.store(now, ordering: .relaxed)
                stalled.store(true, ordering: .releasing)
                return
            }
        }
    }

    /// Stops the watchdog and waits for its thread.
    func stop() {
        stopRequested.signal()
        thread?.join()
    }
}

func formatSeconds(_ nanoseconds: UInt64) -> String {
    let tenths = (nanoseconds + 50_000_000) / 100_000_000
    return "\(tenths / 10).\(tenths % 10) s"
}
