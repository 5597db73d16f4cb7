import ZapPlatform
import Atomics

/// A virtual CPU: loads a root for its address space, faults through it, and drops it on reset.
///
/// A vCPU is driven by one thread at a time, as a real vCPU is by its own task. Each operation
/// returns how long it blocked that thread.
public final class VCPU: @unchecked Sendable {
    /// The vCPU's index in its VM.
    public let id: Int
    /// The address space the vCPU runs in (SMM or not).
    public private(set) var addressSpace: AddressSpace = .normal
    private unowned let vm: VirtualMachine
    private var loaded: Root?
    /// What this vCPU is doing, for the watchdog.
    let activity: ActivitySlot
    /// This vCPU's fresh page-table pages (`vcpu->arch.mmu_shadow_page_cache`).
    private let tableCache: PageTablePool.PageCache
    /// This vCPU's fault counters (`vcpu->stat`).
    private let tally: FaultTally

    init(id: Int, vm: VirtualMachine, activity: ActivitySlot) {
        self.id = id
        self.vm = vm
        self.activity = activity
        tableCache = vm.pool.makeCache()
        tally = vm.counters.makeFaultTally()
    }

    /// Takes `mmu_lock` for write, telling the watchdog while it waits.
    @inline(__always)
    private func lockExclusive() {
        activity.wait(.mmuLockWrite)
        vm.mmuLock.lockExclusive()
        activity.wait(.running)
    }

    /// The root the vCPU has loaded, if any.
    public var loadedRoot: Root? { loaded }

    /// `kvm_mmu_load`: takes a root for the current address space under the write lock,
    /// reusing a valid one if another vCPU made it. A loaded valid root is kept.
    @discardableResult
    public func loadRoot() -> OperationOutcome {
        let start = BlockClock.nanoseconds()
        activity.begin(.loadRoot)
        defer { finishOperation() }
        lockExclusive()
        loadRootLocked()
        vm.mmuLock.unlockExclusive()
        return OperationOutcome(blockedNanoseconds: BlockClock.elapsed(since: start))
    }

    /// With `mmu_lock` held for write: drops an obsolete root and loads a current one.
    @discardableResult
    private func loadRootLocked() -> Int {
        var zapped = 0
        if let root = loaded, root.isInvalid || root.role.addressSpace != addressSpace {
            // `kvm_mmu_free_obsolete_roots`.
            loaded = nil
            zapped = vm.putRoot(root, mode: .exclusive)
        }
        if loaded == nil {
            loaded = vm.getOrCreateRoot(role: RootRole(addressSpace: addressSpace))
        }
        return zapped
    }

    /// `kvm_mmu_unload` (vCPU reset): puts the loaded root under the write lock. Under `async`
    /// a root whose last reference this drops becomes defunct and goes to the workqueue; under
    /// `sync` this call zaps it, and the vCPU waits for the whole zap.
    @discardableResult
    public func reset() -> OperationOutcome {
        let start = BlockClock.nanoseconds()
        let flushMark = ThreadTLBFlushes.count
        activity.begin(.reset)
        defer { finishOperation() }
        var zapped = 0
        if let root = loaded {
            loaded = nil
            lockExclusive()
            zapped = vm.putRoot(root, mode: .exclusive)
            vm.mmuLock.unlockExclusive()
        }
        return OperationOutcome(
            blockedNanoseconds: BlockClock.elapsed(since: start), sptesZappedInline: zapped,
            tlbFlushes: ThreadTLBFlushes.count &- flushMark)
    }

    private func finishOperation() {
        activity.end()
        vm.counters.operationsCompleted.wrappingIncrement(ordering: .relaxed)
    }

    /// Enters or leaves SMM: the next fault loads the root of that address space
    /// (`kvm_mmu_reset_context` unloads the current one).
    @discardableResult
    public func switchAddressSpace(to space: AddressSpace) -> OperationOutcome {
        guard space != addressSpace else { return OperationOutcome(blockedNanoseconds: 0) }
        addressSpace = space
        return reset()
    }

    /// A page fault on guest frame `gfn` that maps it with a leaf of `size`.
    @discardableResult
    ///
    /// With `replacingHugePages` (dirty logging or NX forcing `size`), a larger leaf in the way is
    /// zapped and replaced by a table; otherwise the fault finds the page already mapped.
    /// While dirty logging is on, a write fault replaces huge leaves too: the memslot may map only
    /// 4 KiB pages writable (under `sync`, with no eager split, this is where huge pages split).
    public func fault(gfn: UInt64, size: PageSize = .size4K, write: Bool = true, replacingHugePages: Bool = false) -> OperationOutcome {
        let vm = self.vm
        let replacing = replacingHugePages || (write && size == .size4K && vm.dirtyLogging.load(ordering: .relaxed))
        return faultLoop { root in
            vm.mapFrame(root, gfn: gfn, size: size, writable: true, dirty: write, replacingHugePages: replacing, cache: tableCache)
        }
    }

    /// A fault the fast path may fix without `mmu_lock` (`fast_page_fault`): a write to a clean
    /// page, or an access to an access-tracked one. Under RCU only, it walks the loaded root, even
    /// one being zapped, and sets the accessed and dirty bits of a present leaf atomically;
    /// anything else takes the slow path, ``fault(gfn:size:write:)``.
    @discardableResult
    public func fastFault(gfn: UInt64, write: Bool = true) -> OperationOutcome {
        let start = BlockClock.nanoseconds()
        if let root = loaded {
            activity.begin(.fault, at: start)
            let token = vm.gracePeriod.enterReadSide(stripe: id &+ 1)
            let result = vm.fastPageFault(root, gfn: gfn, write: write)
            vm.gracePeriod.exitReadSide(token)
            activity.end()
            switch result {
            case .fixed:
                vm.counters.fastFaultsFixed.wrappingIncrement(ordering: .relaxed)
                return OperationOutcome(blockedNanoseconds: BlockClock.elapsed(since: start))
            case .spurious:
                return OperationOutcome(blockedNanoseconds: BlockClock.elapsed(since: start))
            case .needsSlowPath:
                break
            }
        }
        var outcome = fault(gfn: gfn, write: write)
        outcome.blockedNanoseconds = BlockClock.elapsed(since: start)
        return outcome
    }

    /// Faults in the whole 2 MiB region containing `firstFrame` as 4 KiB leaves, in one walk.
    @discardableResult
    public func populate2MRegion(firstFrame: UInt64, write: Bool = true) -> OperationOutcome {
        let vm = self.vm
        return faultLoop { root in
            vm.mapRegion2M(root, firstFrame: firstFrame, writable: true, dirty: write, cache: tableCache)
        }
    }

    /// The shape of `kvm_tdp_page_fault`: under the read lock, check that the root is current,
    /// walk and install; on a stale root, reload it (write lock) and fault again; on a frozen
    /// entry, retry.
    private func faultLoop(_ map: (Root) -> MapResult) -> OperationOutcome {
        let start = BlockClock.nanoseconds()
        // One strong reference for the whole fault: every access through `unowned` is an
        // atomic reference-count check.
        let vm = self.vm
        var installed = 0
        var zapped = 0
        var flushes = 0
        tally.add(.faults)
        activity.begin(.fault, at: start)
        defer { activity.end() }
        attempts: while true {
            if loaded == nil || loaded!.isInvalid || loaded!.role.addressSpace != addressSpace {
                lockExclusive()
                // Rare (a root load), so the thread's flush tally is cheap here: a put of the old
                // root may zap it (`sync`) and flush.
                let flushMark = ThreadTLBFlushes.count
                zapped += loadRootLocked()
                flushes += ThreadTLBFlushes.count &- flushMark
                vm.mmuLock.unlockExclusive()
                guard loaded != nil else { break attempts }
            }
            let root = loaded!
            activity.wait(.mmuLockRead)
            vm.mmuLock.lockShared()
            activity.wait(.running)
            // The root cannot be invalidated while the read lock is held: invalidation takes the
            // write lock. So a root valid here stays valid for the whole walk.
            if root.isInvalid {
                vm.mmuLock.unlockShared()
                activity.retried(.usableRoot)
                // A fault that can never get a valid root is a livelock: once the watchdog has
                // said so, give up instead of spinning until the run is killed.
                if vm.isStalled { break attempts }
                continue attempts
            }
            if !vm.rootTableIsIntact(root, "vCPU \(id) faulted through a root whose table was already freed") {
                vm.mmuLock.unlockShared()
                loaded = nil
                break attempts
            }
            // `is_page_fault_stale`: an invalidation is running (it yielded the lock to us), so
            // whatever this fault maps could be behind it. Return to the guest, which faults again.
            if vm.invalidationsInProgress.load(ordering: .acquiring) > 0 {
                vm.mmuLock.unlockShared()
                vm.counters.faultRetries.wrappingIncrement(ordering: .relaxed)
                break attempts
            }
            let token = vm.gracePeriod.enterReadSide(stripe: id &+ 1)
            let result = map(root)
            vm.gracePeriod.exitReadSide(token)
            vm.mmuLock.unlockShared()
            switch result {
            case .installed(let count):
                installed += count
                break attempts
            case .alreadyMapped:
                vm.counters.spuriousFaults.wrappingIncrement(ordering: .relaxed)
                break attempts
            case .replacedHugeLeaf(let tlbFlushes):
                flushes += tlbFlushes
                continue attempts
            case .retry(let count):
                installed += count
                vm.counters.faultRetries.wrappingIncrement(ordering: .relaxed)
                activity.retried(.frozenEntry)
                if vm.isStalled { break attempts }
                yieldProcessor()
            case .outOfTableMemory:
                break attempts
            }
        }
        if installed > 0 { tally.add(.sptesInstalled, installed) }
        return OperationOutcome(
            blockedNanoseconds: BlockClock.elapsed(since: start),
            sptesZappedInline: zapped, sptesInstalled: installed, tlbFlushes: flushes)
    }
}
