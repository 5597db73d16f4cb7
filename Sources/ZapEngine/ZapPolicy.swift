/// Which kernel design decides who zaps a root (docs/model.md, "The three policies").
public enum ZapPolicy: String, CaseIterable, Sendable, Codable, CustomStringConvertible {
    /// Up to v5.17: the vCPU that drops a root's last reference zaps it in its own context;
    /// the fast-zap caller zaps the roots it invalidated.
    case sync
    /// v5.18 to v6.5, the seed: defunct and invalidated roots are zapped by the VM's workqueue
    /// with a gifted reference; fast zap flushes the queue.
    case async
    /// v6.6 on: the MMU holds its own reference to every root, so a root is torn down only when
    /// invalidated, by the fast-zap caller under the read lock.
    case preserve

    /// The kernel versions the policy models.
    public var kernels: String {
        switch self {
        case .sync: "up to v5.17"
        case .async: "v5.18 to v6.5"
        case .preserve: "v6.6 on"
        }
    }

    /// The raw name.
    public var description: String { rawValue }
}

/// A known bug re-created on purpose, so that a test can prove the checker catches it
/// (docs/model.md, "Bug classes the checker must catch").
public enum InjectedBug: String, CaseIterable, Sendable, Codable, CustomStringConvertible {
    /// Invalidation does not skip roots that are already invalid and queues them again.
    case doubleQueue = "double-queue"
    /// Fast zap returns without waiting for (or doing) the zap of the roots it invalidated.
    case noFlush = "no-flush"
    /// The put that makes a root defunct marks it invalid but never queues it (`async`).
    case defunctNotQueued = "defunct-not-queued"
    /// The zapper returns its reference twice.
    case doublePut = "double-put"
    /// The defunct path queues the root without restoring the gifted reference (`async`), so the
    /// worker zaps a root whose count is zero.
    case zapUnreferenced = "zap-unreferenced"
    /// Zaps never yield `mmu_lock`, starving writers and the faults queued behind them.
    case noYield = "no-yield"
    /// Root iterators skip the SMM address space.
    case skipSMM = "skip-smm"

    /// The policies whose code has the path this bug breaks.
    public var applicablePolicies: [ZapPolicy] {
        switch self {
        case .defunctNotQueued, .zapUnreferenced: [.async]
        case .doubleQueue: [.async]
        default: ZapPolicy.allCases
        }
    }

    /// Its position in ``allCases``.
    var index: Int { Self.allCases.firstIndex(of: self)! }

    /// The raw name, as `--inject` takes it.
    public var description: String { rawValue }
}
