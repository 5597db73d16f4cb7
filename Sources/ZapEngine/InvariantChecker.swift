import ZapPlatform
/// One broken invariant, recorded instead of crashing.
public struct Violation: Sendable, Codable, CustomStringConvertible, Equatable {
    /// Which invariant broke. Each kind names the docs/model.md bug class it reveals.
    public enum Kind: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
        /// Teardown found a root still on the list (a leaked reference: bug class 1).
        case rootLeaked = "root-leaked"
        /// Teardown found page-table pages not returned to the pool.
        case pagesLeaked = "pages-leaked"
        /// Teardown found leaf SPTEs installed but never zapped.
        case sptesLeaked = "sptes-leaked"
        /// Teardown returned with the zap workqueue still alive: work of the VM outlives it.
        case workLeaked = "work-leaked"
        /// Fast zap returned while a root invalid at its start was not zapped (bug class 2).
        case earlyReturn = "early-return"
        /// A reference count went below zero (bug class 3).
        case refcountUnderflow = "refcount-underflow"
        /// A freed root or table was touched (bug class 3).
        case useAfterFree = "use-after-free"
        /// A valid root lost its last reference (`preserve`: a put without a get; bug class 3).
        case validRootFreed = "valid-root-freed"
        /// A valid root had no reference under the write lock (`async` invalidation's WARN).
        case validRootUnreferenced = "valid-root-unreferenced"
        /// A zap that may yield ran on a root whose count was zero (bug class 4).
        case zapUnreferenced = "zap-unreferenced"
        /// A root was queued while already pending: `queue_work` returned false (bug class 1).
        case doubleQueue = "double-queue"
        /// Work was queued on a destroyed workqueue.
        case queueRefused = "queue-refused"
        /// The workqueue broke one of the kernel's rules when probed (pending at most once,
        /// re-run when queued while running, flush waits for earlier items, destroyed refuses).
        case workqueueRule = "workqueue-rule"
        /// A yieldable zap passed a step boundary while someone waited for `mmu_lock` (bug class 5).
        case writerStarved = "writer-starved"
        /// Invalidation left a root of some address space valid (bug class 6).
        case addressSpaceSkipped = "address-space-skipped"
        /// A fault could not get a page table: the page-table budget is too small.
        case tableMemoryExhausted = "table-memory-exhausted"
        /// A present SPTE outlived the zap that had to remove it, as the page tables themselves
        /// show: after a fast zap, in a root it invalidated; after a full zap, anywhere (bug
        /// classes 2 and 6).
        case staleSPTE = "stale-spte"
        /// One zap step freed more page tables under `mmu_lock` than the two-pass bound (bug class 5).
        case oversizedStep = "oversized-step"
        /// A zap yielded `mmu_lock` without removing anything since it last took it (bug class 5).
        case noForwardProgress = "no-forward-progress"
        /// The checker's own count of gets and puts disagrees with the root's count (bug class 3).
        case refcountMismatch = "refcount-mismatch"
        /// A get succeeded on a root whose last reference was already put (bug class 3).
        case getAfterZero = "get-after-zero"
        /// The VM made no progress for the watchdog's bound while operations were in flight: a
        /// retry loop that never ends, or threads that wait for each other (the detail names them).
        case livelock = "livelock"

        /// The number of the invariant in the engine's checker list (README, "Checking the engine").
        public var invariant: Int {
            switch self {
            case .rootLeaked, .pagesLeaked, .sptesLeaked, .workLeaked: 1
            case .earlyReturn, .staleSPTE: 2
            case .refcountUnderflow, .useAfterFree, .validRootFreed, .validRootUnreferenced,
                .refcountMismatch, .getAfterZero:
                3
            case .zapUnreferenced: 4
            case .doubleQueue, .queueRefused, .workqueueRule: 5
            case .addressSpaceSkipped: 6
            case .writerStarved, .oversizedStep, .noForwardProgress: 7
            case .tableMemoryExhausted: 8
            case .livelock: 9
            }
        }

        /// The raw name.
        public var description: String { rawValue }
    }

    /// Which invariant broke.
    public var kind: Kind
    /// The root concerned, if any.
    public var rootID: Int?
    /// What was seen, for a person.
    public var detail: String

    /// Creates a violation record.
    public init(kind: Kind, rootID: Int? = nil, detail: String) {
        self.kind = kind
        self.rootID = rootID
        self.detail = detail
    }

    /// `double-queue root#3: ...`.
    public var description: String {
        "\(kind)" + (rootID.map { " root#\($0)" } ?? "") + ": \(detail)"
    }
}

/// Collects violations from every thread of a VM. It never stops the run: a broken invariant is
/// data for the report, and the run goes on so that the report shows everything it broke.
public final class InvariantChecker: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private var recorded: [Violation] = []
    private var counts: [Violation.Kind: Int] = [:]
    /// The most violations kept in full; beyond it only the counts grow.
    public let retainedLimit: Int

    /// Creates an empty checker keeping up to `retainedLimit` violations in full.
    public init(retainedLimit: Int = 1000) { self.retainedLimit = retainedLimit }

    /// Records a violation.
    public func record(_ kind: Violation.Kind, root: Root? = nil, _ detail: String) {
        let violation = Violation(kind: kind, rootID: root?.id, detail: detail)
        mutex.withLock {
            counts[kind, default: 0] += 1
            if recorded.count < retainedLimit { recorded.append(violation) }
        }
    }

    /// Records what `mmu_lock` saw a holder do wrong.
    public func record(_ hold: HoldViolation) {
        switch hold {
        case .yieldWithoutProgress:
            record(.noForwardProgress, "a zap yielded mmu_lock without removing anything since it took the lock")
        case .oversizedStep(let tables, let bound):
            record(.oversizedStep, "one zap step freed \(tables) page tables under mmu_lock; the bound is \(bound)")
        case .heldPastStepWhileContended(let mode):
            record(
                .writerStarved,
                "a zap holding mmu_lock for \(mode == .shared ? "read" : "write") freed tables in a second step while "
                    + (mode == .shared ? "a writer" : "another thread") + " waited, without yielding (seen by the lock)")
        }
    }

    /// The violations kept, in the order they were recorded.
    public var violations: [Violation] { mutex.withLock { recorded } }

    /// How many violations of each kind were seen (kept or not).
    public var countsByKind: [Violation.Kind: Int] { mutex.withLock { counts } }

    /// Total violations seen.
    public var total: Int { mutex.withLock { counts.values.reduce(0, +) } }

    /// Has a violation of `kind` been seen?
    public func saw(_ kind: Violation.Kind) -> Bool { mutex.withLock { counts[kind, default: 0] > 0 } }
}
