import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// Why the kernel would flush remote TLBs (`kvm_flush_remote_tlbs`, or a request that makes every
/// vCPU flush), named by the operation that issues the flush.
///
/// The engine flushes no TLB: it counts the flushes the kernel its policy models would issue for
/// the work the engine did, with that kernel's batching (docs/model.md, "Remote TLB flushes").
/// `sync` follows v5.17, `async` v5.18 and `preserve` v6.6.
public enum TLBFlushCause: Int, CaseIterable, Sendable, Codable, CustomStringConvertible {
    /// `kvm_mmu_zap_all_fast`: one request to every vCPU to drop its obsolete root
    /// (`KVM_REQ_MMU_RELOAD` up to v5.17, `KVM_REQ_MMU_FREE_OBSOLETE_ROOTS` since), each vCPU
    /// flushing as it loads a new root. One per fast zap, every policy.
    case obsoleteRoots
    /// Whole-root zaps. v5.17 (`sync`): `zap_gfn_range` under the read lock flushes for every
    /// top-level entry it zaps (`tdp_mmu_zap_spte_atomic`), under the write lock before each
    /// yield and at the end (zap-all), and `handle_removed_tdp_mmu_page` for every table removed.
    /// From v5.18 none: the root is unreachable, or `KVM_RUN` is.
    case rootZap
    /// `kvm_tdp_mmu_unmap_gfn_range` (MMU-notifier unmap): before each yield after zapping, and
    /// once at the end (`__kvm_handle_hva_range`), every policy; v5.17 also one per table removed.
    case unmap
    /// A fault that replaces a huge leaf with a table: `tdp_mmu_zap_spte_atomic` flushes (v5.17,
    /// v5.18). From v6.2 a fault splits the huge page in place (`tdp_mmu_split_huge_page`) with
    /// no flush, so `preserve` counts none.
    case largeSPTEReplace
    /// `kvm_tdp_mmu_wrprot_slot` (dirty logging enabled): one flush of the memslot after the walk
    /// when anything was write-protected. Eager splitting (v5.18 on) adds none.
    case writeProtect
    /// `kvm_tdp_mmu_clear_dirty_slot` (`KVM_CLEAR_DIRTY_LOG`): one flush after the walk when any
    /// dirty bit was cleared.
    case clearDirty
    /// `kvm_tdp_mmu_zap_collapsible_sptes` (dirty logging disabled): up to v5.18 every 4 KiB leaf
    /// is zapped on its own, each with a flush; from v5.19 the parent table of 4 KiB leaves is
    /// zapped as one entry, one flush each (batched into one from v6.13, not modelled).
    case collapsibleZap
    /// `kvm_recover_nx_huge_pages`: before each yield after zapping, and once at the end of a
    /// pass; v5.17 also one per table removed.
    case nxRecovery

    /// The name in reports and on the wire.
    public var name: String {
        switch self {
        case .obsoleteRoots: "obsolete_roots"
        case .rootZap: "root_zap"
        case .unmap: "unmap"
        case .largeSPTEReplace: "large_spte_replace"
        case .writeProtect: "write_protect"
        case .clearDirty: "clear_dirty"
        case .collapsibleZap: "collapsible_zap"
        case .nxRecovery: "nx_recovery"
        }
    }

    /// The cause named `name`, if any.
    public init?(name: String) {
        guard let cause = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = cause
    }

    /// The name.
    public var description: String { name }
}

/// The kernel's `bool flush` threaded through a zap: set once SPTEs were zapped that no flush has
/// covered yet, flushed before the walk yields `mmu_lock` (`tdp_mmu_iter_cond_resched(…, flush,
/// …)`) and by the caller when the operation ends.
struct PendingTLBFlush {
    /// What the flushes are counted as.
    let cause: TLBFlushCause
    /// SPTEs were zapped since the last flush.
    private(set) var pending = false

    init(_ cause: TLBFlushCause) { self.cause = cause }

    /// SPTEs were zapped: a flush is owed.
    mutating func noteZapped() { pending = true }

    /// Issues the owed flush, if any.
    mutating func flushIfPending(_ vm: VirtualMachine) {
        guard pending else { return }
        vm.flushRemoteTLBs(cause)
        pending = false
    }
}

/// Remote TLB flushes issued by the calling thread, so that an operation's outcome can carry the
/// flushes its caller waited for (``OperationOutcome/tlbFlushes``) while other threads flush too.
/// A thread-specific word: flushes are rare next to SPTE updates, so its cost does not matter.
enum ThreadTLBFlushes {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key, nil) == 0, "pthread_key_create failed")
        return key
    }()

    /// Flushes this thread has issued so far (wrapping).
    static var count: Int { Int(bitPattern: pthread_getspecific(key)) }

    static func add(_ flushes: Int) {
        _ = pthread_setspecific(key, UnsafeRawPointer(bitPattern: count &+ flushes))
    }
}

/// Remote TLB flushes counted by cause (``TLBFlushCause``), for reports and results.
public struct TLBFlushCounts: Sendable, Codable, Equatable {
    /// Flushes by ``TLBFlushCause/name``; causes with none are left out.
    public private(set) var byCause: [String: Int]

    /// No flushes.
    public init() { byCause = [:] }

    /// Counts by cause; zeros are dropped.
    public init(_ counts: [TLBFlushCause: Int]) {
        byCause = [:]
        for (cause, count) in counts where count != 0 { byCause[cause.name] = count }
    }

    /// Flushes of `cause`.
    public subscript(cause: TLBFlushCause) -> Int { byCause[cause.name] ?? 0 }

    /// Every flush.
    public var total: Int { byCause.values.reduce(0, &+) }

    /// The sum of two runs' counts (shards are VMs of their own: each issues its own flushes).
    public func adding(_ other: TLBFlushCounts) -> TLBFlushCounts {
        var sum = self
        for (name, count) in other.byCause { sum.byCause[name, default: 0] &+= count }
        return sum
    }

    public init(from decoder: any Decoder) throws {
        byCause = try decoder.singleValueContainer().decode([String: Int].self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(byCause)
    }
}

extension VirtualMachine {
    /// `kvm_flush_remote_tlbs`: counts one remote flush of `cause` for the VM and for the calling
    /// thread's current operation.
    func flushRemoteTLBs(_ cause: TLBFlushCause, count: Int = 1) {
        counters.tlbFlushes[cause.rawValue].wrappingIncrement(by: count, ordering: .relaxed)
        ThreadTLBFlushes.add(count)
    }

    /// The remote flushes counted so far, by cause.
    public var tlbFlushes: TLBFlushCounts {
        TLBFlushCounts(
            Dictionary(
                uniqueKeysWithValues: TLBFlushCause.allCases.map {
                    ($0, counters.tlbFlushes[$0.rawValue].load(ordering: .relaxed))
                }))
    }
}
