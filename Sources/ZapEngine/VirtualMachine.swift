import Atomics
import ZapPlatform

/// How to build a ``VirtualMachine``.
public struct VMConfiguration: Sendable {
    /// Who zaps roots, and when.
    public var policy: ZapPolicy
    /// `max_active` of the zap workqueue (`async` only); the kernel's default (`WQ_DFL_ACTIVE`) is 256.
    public var workqueueWidth: Int
    /// Address space reserved for page tables, in bytes; faults fail cleanly beyond it.
    public var pageTableBudgetBytes: Int
    /// Bugs to re-create.
    public var injectedBugs: Set<InjectedBug>
    /// A name for thread names and logs.
    public var name: String
    /// Receives per-root events for measurement, if set.
    public var observer: (any EngineObserver)?
    /// How long the VM may make no progress while an operation is in flight before the
    /// watchdog records a `livelock` and stuck operations give up; 0 turns the watchdog off.
    public var stallBoundNanoseconds: UInt64
    /// Race amplification: seeded delays at the race windows; nil for none.
    public var chaos: ChaosConfiguration?
    /// The NX huge-page recovery thread's schedule; nil for no thread.
    public var nxRecovery: NXRecoveryConfiguration?

    /// A configuration with the kernel's shapes as defaults.
    public init(
        policy: ZapPolicy,
        workqueueWidth: Int = 256,
        pageTableBudgetBytes: Int = 4 << 30,
        injectedBugs: Set<InjectedBug> = [],
        name: String = "vm",
        observer: (any EngineObserver)? = nil,
        stallBoundNanoseconds: UInt64 = 30_000_000_000,
        chaos: ChaosConfiguration? = nil,
        nxRecovery: NXRecoveryConfiguration? = nil
    ) {
        self.nxRecovery = nxRecovery
        self.stallBoundNanoseconds = stallBoundNanoseconds
        self.chaos = chaos
        self.policy = policy
        self.workqueueWidth = workqueueWidth
        self.pageTableBudgetBytes = pageTableBudgetBytes
        self.injectedBugs = injectedBugs
        self.name = name
        self.observer = observer
    }
}

/// What one operation cost its caller.
public struct OperationOutcome: Sendable, Equatable {
    /// Wall time from call to return: how long the vCPU (or VM ioctl) was blocked.
    public var blockedNanoseconds: UInt64
    /// Leaf SPTEs zapped while the caller waited for them: by the call itself, or, where the
    /// call waits for the workqueue (an `async` fast zap or teardown), by the workers meanwhile.
    /// The kernel projection multiplies these by a per-SPTE cost.
    public var sptesZappedInline: Int
    /// Leaf SPTEs this call installed.
    public var sptesInstalled: Int
    /// Remote TLB flushes the modelled kernel would issue while the caller waits
    /// (``TLBFlushCause``): the projection adds a cost for each.
    public var tlbFlushes: Int

    /// An outcome.
    public init(blockedNanoseconds: UInt64, sptesZappedInline: Int = 0, sptesInstalled: Int = 0, tlbFlushes: Int = 0) {
        self.blockedNanoseconds = blockedNanoseconds
        self.sptesZappedInline = sptesZappedInline
        self.sptesInstalled = sptesInstalled
        self.tlbFlushes = tlbFlushes
    }
}

/// One simulated VM: its TDP MMU roots, page tables, locks, workqueue and checker.
///
/// The function names of the lifecycle steps follow the kernel's `tdp_mmu.c`; each doc comment
/// names the kernel function it models. Operations that a vCPU performs live on ``VCPU``;
/// operations of the VM (memslot deletion, notifier release, teardown) live here.
public final class VirtualMachine: @unchecked Sendable {
    /// The configuration the VM was built with.
    public let configuration: VMConfiguration
    /// Where broken invariants are recorded.
    public let checker: InvariantChecker

    let pool: PageTablePool
    let gracePeriod: GracePeriod
    /// `kvm->mmu_lock`. It judges how its holders treat waiters itself (``HoldViolation``).
    let mmuLock: MMULock
    /// `kvm->slots_lock`: serialises fast zaps.
    let slotsLock = PThreadMutex()
    /// `kvm->arch.tdp_mmu_pages_lock`, guarding the roots list.
    private let rootsListLock = PThreadMutex()
    private var rootsList: [Root] = []
    /// `kvm->arch.tdp_mmu_zap_wq` (`async` only).
    let zapQueue: WorkQueue?
    let counters = EngineCounters()
    /// CPU time of whole-root zaps by CPU (``zapCPUNanoseconds``).
    let zapCPUTime = ZapCPUTime()
    private let nextRootID = ManagedAtomic<Int>(1)
    private let vcpuListLock = PThreadMutex()
    private var vcpus: [VCPU] = []
    private let tornDown = ManagedAtomic<Bool>(false)
    /// `kvm->mmu_invalidate_in_progress`: while non-zero, faults install nothing.
    let invalidationsInProgress = ManagedAtomic<Int>(0)
    /// Dirty logging is on (``enableDirtyLog()`` to ``zapCollapsibleSPTEs()``): huge pages may not
    /// be mapped writable, so write faults map 4 KiB pages (`kvm_mmu_max_mapping_level`).
    let dirtyLogging = ManagedAtomic<Bool>(false)
    /// Who is doing what, for the watchdog's report.
    let activity = ActivityBoard()
    /// Delays at the race windows, if the configuration asks for them.
    let chaos: RaceAmplifier?
    private var watchdog: StallWatchdog?
    private var nxRecoveryThread: NXRecoveryThread?

    // Injected bugs, read on hot paths.
    let injectsDoubleQueue: Bool
    let injectsNoFlush: Bool
    let injectsDefunctNotQueued: Bool
    let injectsDoublePut: Bool
    let injectsZapUnreferenced: Bool
    let injectsNoYield: Bool
    let injectsSkipSMM: Bool

    /// Builds a VM: reserves its page-table pool and, under `async`, starts its workqueue.
    /// - Throws: ``EngineError`` if the configuration is out of range or memory cannot be reserved.
    public init(configuration: VMConfiguration) throws {
        guard configuration.workqueueWidth >= 1 else {
            throw EngineError(.invalidConfiguration, "workqueue width must be at least 1, got \(configuration.workqueueWidth)")
        }
        if let nx = configuration.nxRecovery, nx.ratio < 1 || nx.periodNanoseconds == 0 {
            throw EngineError(
                .invalidConfiguration,
                "NX recovery needs a ratio of at least 1 and a period above 0, got ratio \(nx.ratio), period \(nx.periodNanoseconds) ns")
        }
        guard configuration.pageTableBudgetBytes >= 64 * PagingGeometry.tableBytes else {
            throw EngineError(
                .invalidConfiguration, "page-table budget must be at least 256 KiB, got \(configuration.pageTableBudgetBytes) bytes")
        }
        self.configuration = configuration
        let checker = InvariantChecker()
        self.checker = checker
        let amplifier = configuration.chaos.map(RaceAmplifier.init)
        chaos = amplifier
        var onHandoff: (@Sendable () -> Void)?
        if let amplifier { onHandoff = { amplifier.pass(.lockHandoff) } }
        let lock = MMULock(onViolation: { checker.record($0) }, onHandoff: onHandoff)
        mmuLock = lock
        pool = try PageTablePool(budgetBytes: configuration.pageTableBudgetBytes)
        let stepBound = Self.stepBound(configuration.policy)
        gracePeriod = GracePeriod(pool: pool, onRetire: { lock.noteTablesRetired($0, stepBound: stepBound) })
        var beforeWork: (@Sendable () -> Void)?
        if let amplifier { beforeWork = { amplifier.pass(.beforeWorkItem) } }
        zapQueue =
            configuration.policy == .async
            ? WorkQueue(name: "kvm-\(configuration.name)", maxActive: configuration.workqueueWidth, beforeTakingWork: beforeWork) : nil
        let bugs = configuration.injectedBugs
        injectsDoubleQueue = bugs.contains(.doubleQueue)
        injectsNoFlush = bugs.contains(.noFlush)
        injectsDefunctNotQueued = bugs.contains(.defunctNotQueued)
        injectsDoublePut = bugs.contains(.doublePut)
        injectsZapUnreferenced = bugs.contains(.zapUnreferenced)
        injectsNoYield = bugs.contains(.noYield)
        injectsSkipSMM = bugs.contains(.skipSMM)
        if configuration.policy == .async {
            // The VM's roots rely on these rules; a correct workload never tests "pending at most
            // once" (only a double-queue bug does), so each is probed on a queue of the same code.
            // Four workers show every rule; a probe as wide as the kernel's 256 would start 256 threads.
            for problem in WorkQueue.kernelRuleViolations(maxActive: min(configuration.workqueueWidth, 4)) {
                checker.record(.workqueueRule, problem)
            }
        }
        if configuration.stallBoundNanoseconds > 0 {
            watchdog = StallWatchdog(
                bound: configuration.stallBoundNanoseconds, board: activity,
                progress: { [counters] in counters.progress },
                onStall: { stuckFor, stuck in
                    checker.record(
                        .livelock,
                        "stuck for \(formatSeconds(stuckFor)) (no progress, or one operation retrying all along): "
                            + (stuck.isEmpty ? "none named" : stuck.joined(separator: "; ")))
                })
        }
        if let nx = configuration.nxRecovery { nxRecoveryThread = NXRecoveryThread(nx, vm: self) }
    }

    deinit {
        nxRecoveryThread?.stop()
        watchdog?.stop()
        // A VM dropped without teardown still stops its workers; their items find no VM.
        zapQueue?.destroy(giveUpWhen: { [watchdog] in watchdog?.stalled.load(ordering: .relaxed) ?? false })
    }

    /// Has the watchdog judged the VM stuck? Retry loops and waits give up once it has, and
    /// runners stop waiting for threads that do not come back.
    public var isStalled: Bool { watchdog?.stalled.load(ordering: .relaxed) ?? false }

    /// Should a runner stop waiting for a thread inside the VM? Yes once the watchdog judged the
    /// VM stuck and `grace` more has passed, time for stuck operations to give up by themselves.
    public func shouldAbandonThreads(grace: UInt64 = 2_000_000_000) -> Bool {
        guard let watchdog, watchdog.stalled.load(ordering: .acquiring) else { return false }
        return monotonicNanoseconds() &- watchdog.stalledAt.load(ordering: .relaxed) >= grace
    }

    /// Keeps the VM alive for the rest of the process: for a runner that leaves threads stuck
    /// inside it, which must never find it freed.
    public func keepAliveForStuckThreads() { _ = Unmanaged.passRetained(self) }

    /// Stops the watchdog (teardown is over: nothing more can stall).
    func stopWatchdog() { watchdog?.stop() }

    /// Stops the NX huge-page recovery thread, if there is one (`kvm_arch_pre_destroy_vm`).
    func stopNXRecovery() { nxRecoveryThread?.stop() }

    /// The VM's policy.
    public var policy: ZapPolicy { configuration.policy }

    /// The most page tables one zap step may free under `mmu_lock`: one 1 GiB subtree of 4 KiB
    /// mappings (a level-2 table and its 512 leaf tables) since v5.18's two-pass zap; under
    /// `sync` (v5.17, one pass over root entries) a whole 512 GiB subtree.
    static func stepBound(_ policy: ZapPolicy) -> Int {
        let perGiB = 1 + PagingGeometry.entriesPerTable
        return policy == .sync ? 1 + PagingGeometry.entriesPerTable * perGiB : perGiB
    }

    /// Creates a vCPU. vCPUs are unloaded by ``teardown()``.
    public func makeVCPU() -> VCPU {
        vcpuListLock.withLock {
            let vcpu = VCPU(id: vcpus.count, vm: self, activity: activity.register("vCPU \(vcpus.count)"))
            vcpus.append(vcpu)
            return vcpu
        }
    }

    /// The roots on the list now.
    public var roots: [Root] { rootsListLock.withLock { rootsList } }

    /// Notes that `bug`'s broken path just ran (the point where the injected code parts from the kernel's).
    @inline(__always)
    func noteInjectedPath(_ bug: InjectedBug) {
        counters.injectedPathRuns[bug.index].wrappingIncrement(ordering: .relaxed)
    }

    /// How often each injected bug's broken path ran so far; only bugs this VM injects appear.
    public var injectedPathRuns: [InjectedBug: Int] {
        Dictionary(
            uniqueKeysWithValues: configuration.injectedBugs.map { ($0, counters.injectedPathRuns[$0.index].load(ordering: .relaxed)) })
    }

    /// The counters now.
    public var statistics: EngineStatistics {
        EngineStatistics(
            sptesInstalled: counters.installedTotal,
            sptesZapped: counters.sptesZapped.load(ordering: .relaxed),
            accessedZapped: counters.accessedZapped.load(ordering: .relaxed),
            dirtyZapped: counters.dirtyZapped.load(ordering: .relaxed),
            tablesAllocated: pool.totalAllocations,
            tablesFreed: pool.totalFrees,
            tablesLive: pool.livePages,
            tablesPeak: pool.peakPages,
            faults: counters.faultsTotal,
            faultRetries: counters.faultRetries.load(ordering: .relaxed),
            spuriousFaults: counters.spuriousFaults.load(ordering: .relaxed),
            yields: counters.yields.load(ordering: .relaxed),
            zapSteps: counters.zapSteps.load(ordering: .relaxed),
            largestStepTables: counters.largestStepTables.load(ordering: .relaxed),
            rootsCreated: counters.rootsCreated.load(ordering: .relaxed),
            rootsReused: counters.rootsReused.load(ordering: .relaxed),
            rootsFreed: counters.rootsFreed.load(ordering: .relaxed),
            rootZaps: counters.rootZaps.load(ordering: .relaxed),
            workItemsQueued: counters.workItemsQueued.load(ordering: .relaxed),
            workItemsRejected: counters.workItemsRejected.load(ordering: .relaxed),
            fastZaps: counters.fastZaps.load(ordering: .relaxed),
            fullZaps: counters.fullZaps.load(ordering: .relaxed))
    }

    // MARK: - The roots list

    func appendRoot(_ root: Root) {
        rootsListLock.withLock { rootsList.append(root) }
    }

    /// `list_del_rcu(&root->link)`.
    func removeRoot(_ root: Root) {
        rootsListLock.withLock { rootsList.removeAll { $0 === root } }
    }

    /// Roots of the list, skipping SMM when that bug is injected (the iterators'
    /// `for_each_tdp_mmu_root` over every address space).
    func rootsToVisit() -> [Root] {
        let all = roots
        guard injectsSkipSMM else { return all }
        let visited = all.filter { $0.role.addressSpace == .normal }
        if visited.count < all.count { noteInjectedPath(.skipSMM) }
        return visited
    }

    func makeRootID() -> Int { nextRootID.loadThenWrappingIncrement(ordering: .relaxed) }

    var allVCPUs: [VCPU] { vcpuListLock.withLock { vcpus } }

    func markTornDown() -> Bool { !tornDown.exchange(true, ordering: .acquiringAndReleasing) }
}
