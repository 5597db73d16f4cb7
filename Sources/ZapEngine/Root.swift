import Atomics
import ZapPlatform

/// The guest address space a root translates: KVM keeps separate roots for SMM.
public enum AddressSpace: Int, CaseIterable, Sendable, Codable, CustomStringConvertible {
    /// Normal operation.
    case normal = 0
    /// System management mode.
    case smm = 1

    /// `normal` or `smm`.
    public var description: String { self == .normal ? "normal" : "smm" }
}

/// The part of `kvm_mmu_page_role` that decides whether a vCPU may share a root.
public struct RootRole: Hashable, Sendable, Codable, CustomStringConvertible {
    /// Address space.
    public var addressSpace: AddressSpace
    /// Level of the root table (4 for 48-bit guests).
    public var level: Int

    /// A role for `addressSpace` at the 4-level root.
    public init(addressSpace: AddressSpace, level: Int = PagingGeometry.rootLevel) {
        self.addressSpace = addressSpace
        self.level = level
    }

    /// `as=normal,level=4`.
    public var description: String { "as=\(addressSpace),level=\(level)" }
}

/// Where a root is in its life; the checker's view, set by the step that moves it.
public enum RootLifecycle: UInt8, Sendable, Codable, CustomStringConvertible, Comparable {
    /// On the list, usable by vCPUs.
    case valid
    /// Invalidated and handed to its zapper (the workqueue, or the caller that will zap it).
    case invalidQueued
    /// A zap of the invalidated root is running.
    case zapping
    /// Every SPTE under the invalid root is gone; references may remain.
    case zapped
    /// Off the list, waiting for a grace period.
    case unlinked
    /// Its table returned to the pool. Nothing may touch it any more.
    case freed

    /// The lower-case name.
    public var description: String {
        switch self {
        case .valid: "valid"
        case .invalidQueued: "invalid-queued"
        case .zapping: "zapping"
        case .zapped: "zapped"
        case .unlinked: "unlinked"
        case .freed: "freed"
        }
    }

    /// Orders states along the lifecycle.
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// A page-table root (`struct kvm_mmu_page` with `role.level == 4`): the top table, a
/// reference count, and an `invalid` bit.
public final class Root: @unchecked Sendable, CustomStringConvertible {
    /// A stable number for reports, unique within the VM.
    public let id: Int
    /// The role vCPUs match on to share the root.
    public let role: RootRole
    /// The pool page of the top-level table.
    public let table: PageIndex
    /// `tdp_mmu_root_count`. Signed so that an underflow is seen, not wrapped.
    let referenceCount: ManagedAtomic<Int>
    /// `role.invalid`: set once, by atomic exchange, never cleared.
    let invalidFlag = ManagedAtomic<Bool>(false)
    /// `tdp_mmu_scheduled_root_to_zap` (`preserve`): set under the write lock by invalidation,
    /// cleared by the one caller that zaps the root.
    let scheduledToZap = ManagedAtomic<Bool>(false)
    private let lifecycleRaw = ManagedAtomic<UInt8>(RootLifecycle.valid.rawValue)
    /// Monotonic time of invalidation, 0 while valid.
    let invalidatedAt = ManagedAtomic<UInt64>(0)
    /// `tdp_mmu_async_work`: the root's one work item (`async`).
    var zapWork: WorkItem!
    /// The pool generation of ``table`` when the root was made: a different one now means the
    /// table was freed (and perhaps reused), so nothing may walk it.
    let tableGeneration: UInt32
    /// The checker's own tally of references (gets less puts), kept beside the root's count
    /// and never read by the code under test.
    let tallyLive: ManagedAtomic<Int>

    init(id: Int, role: RootRole, table: PageIndex, tableGeneration: UInt32, initialReferences: Int) {
        self.id = id
        self.role = role
        self.table = table
        self.tableGeneration = tableGeneration
        self.referenceCount = ManagedAtomic(initialReferences)
        self.tallyLive = ManagedAtomic(initialReferences)
    }

    /// Is the root's table still the one it was made with, judged on the pool's generation
    /// without touching the table? A root that fails this must not be walked.
    func tableIsIntact(in pool: PageTablePool) -> Bool { pool.generation(of: table) == tableGeneration }

    /// Current reference count.
    public var references: Int { referenceCount.load(ordering: .acquiring) }
    /// Has the root been invalidated?
    public var isInvalid: Bool { invalidFlag.load(ordering: .acquiring) }
    /// Where the root is in its life.
    public var lifecycle: RootLifecycle {
        RootLifecycle(rawValue: lifecycleRaw.load(ordering: .acquiring))!
    }

    /// Moves the root forward to `state`. A root never moves back: a zapped root cannot become
    /// unzapped, so a later step that would name an earlier state (a re-queue by a buggy
    /// invalidation, a second zap) leaves the state as it is.
    func advance(to state: RootLifecycle) {
        var seen = lifecycleRaw.load(ordering: .relaxed)
        while seen < state.rawValue {
            let (exchanged, original) = lifecycleRaw.weakCompareExchange(
                expected: seen, desired: state.rawValue, ordering: .acquiringAndReleasing)
            if exchanged { return }
            seen = original
        }
    }

    /// `kvm_tdp_mmu_get_root`: takes a reference unless the count is zero (or below).
    func tryGetReference() -> Bool {
        var seen = referenceCount.load(ordering: .relaxed)
        while seen > 0 {
            let (exchanged, original) = referenceCount.weakCompareExchange(
                expected: seen, desired: seen + 1, ordering: .acquiringAndReleasing)
            if exchanged { return true }
            seen = original
        }
        return false
    }

    /// `kvm_tdp_root_mark_invalid`: sets `invalid`, returning whether it was already set.
    func markInvalid() -> Bool {
        let wasInvalid = invalidFlag.exchange(true, ordering: .acquiringAndReleasing)
        if !wasInvalid { invalidatedAt.store(BlockClock.nanoseconds(), ordering: .relaxed) }
        return wasInvalid
    }

    /// `root#7(as=normal,level=4, refs=1, invalid-queued)`.
    public var description: String {
        "root#\(id)(\(role), refs=\(references), \(lifecycle))"
    }
}
