import ZapPlatform
import Atomics

/// Operations of the VM as a whole: memslot deletion, notifier release and teardown.
extension VirtualMachine {
    /// `kvm_mmu_zap_all_fast` (deleting a memslot): under `slots_lock`, invalidate every root
    /// with `mmu_lock` held for write, drop it, then wait until the invalid roots are zapped:
    /// flush the workqueue (`async`), or zap them here under the read lock (`sync`, `preserve`).
    ///
    /// Invariant 2 is checked on return: every root that was invalid and not yet zapped when the
    /// call invalidated is zapped now, including defunct roots it skipped. Invariant 6 is
    /// checked once invalidation is done: no root of any address space is still valid.
    @discardableResult
    public func fastZap() -> OperationOutcome {
        let start = BlockClock.nanoseconds()
        let flushMark = ThreadTLBFlushes.count
        counters.fastZaps.wrappingIncrement(ordering: .relaxed)
        let slot = activity.claim(.fastZap, actor: "VM thread")
        defer { finishOperation(slot) }
        slot.wait(.slotsLock)
        slotsLock.lock()
        lockMMU(.exclusive, telling: slot)
        let invalidated = invalidateAllRoots()
        // `kvm_make_all_cpus_request(KVM_REQ_MMU_FREE_OBSOLETE_ROOTS)`, under the lock: every vCPU
        // drops its obsolete root and flushes as it loads a new one.
        flushRemoteTLBs(.obsoleteRoots)
        // Every root listed now was there before this invalidation: none may map anything when
        // the call returns, whatever the zap code believes it did.
        let listedAtInvalidation = roots
        let mustBeZapped = listedAtInvalidation.filter { $0.isInvalid && $0.lifecycle < .zapped }
        for root in listedAtInvalidation where !root.isInvalid {
            checker.record(
                .addressSpaceSkipped, root: root,
                "still valid after invalidating all roots (address space \(root.role.addressSpace))")
        }
        mmuLock.unlockExclusive()

        var zapped = 0
        if injectsNoFlush && !mustBeZapped.isEmpty { noteInjectedPath(.noFlush) }
        if !injectsNoFlush {
            switch policy {
            case .async:
                // The caller does not zap, but it waits while the worker does: those SPTEs are
                // the ones its block time stands for.
                let before = counters.sptesZapped.load(ordering: .relaxed)
                slot.wait(.workqueueFlush)
                zapQueue?.flush(giveUpWhen: { isStalled })
                slot.wait(.running)
                zapped = counters.sptesZapped.load(ordering: .relaxed) - before
            case .sync: zapped = zapRootsInvalidatedByCaller(invalidated)
            case .preserve: zapped = zapInvalidatedRoots()
            }
        }
        for root in mustBeZapped where root.lifecycle < .zapped {
            checker.record(
                .earlyReturn, root: root,
                "fast zap returned while the root was \(root.lifecycle): its SPTEs outlive the memslot")
        }
        mmuLock.withShared { auditEmpty(listedAtInvalidation, after: "a fast zap") }
        slotsLock.unlock()
        return OperationOutcome(
            blockedNanoseconds: BlockClock.elapsed(since: start), sptesZappedInline: zapped,
            tlbFlushes: ThreadTLBFlushes.count &- flushMark)
    }

    /// `kvm_mmu_zap_all` (MMU notifier release): with `mmu_lock` held for write, zaps every
    /// root of every address space without invalidating it, holding a reference meanwhile
    /// (`for_each_tdp_mmu_root_yield_safe`).
    @discardableResult
    ///
    /// Remote TLB flushes: v5.17 (`sync`) flushed before each yield and once at the end; later
    /// kernels none (`KVM_RUN` can no longer run when everything is zapped).
    public func fullZap() -> OperationOutcome {
        let start = BlockClock.nanoseconds()
        let flushMark = ThreadTLBFlushes.count
        counters.fullZaps.wrappingIncrement(ordering: .relaxed)
        let slot = activity.claim(.fullZap, actor: "VM thread")
        defer { finishOperation(slot) }
        var zapped = 0
        var flush: PendingTLBFlush? = policy == .sync ? PendingTLBFlush(.rootZap) : nil
        lockMMU(.exclusive, telling: slot)
        // `mmu_invalidate_in_progress`: faults that get the lock while this zap yields must not
        // map anything behind it.
        invalidationsInProgress.wrappingIncrement(ordering: .releasing)
        for root in rootsToVisit() where getRoot(root) {
            zapped += zapRoot(root, mode: .exclusive, yieldable: true, flush: &flush)
            zapped += putRoot(root, mode: .exclusive)
        }
        flush?.flushIfPending(self)
        auditEmpty(roots, after: "a full zap")
        invalidationsInProgress.wrappingDecrement(ordering: .releasing)
        mmuLock.unlockExclusive()
        return OperationOutcome(
            blockedNanoseconds: BlockClock.elapsed(since: start), sptesZappedInline: zapped,
            tlbFlushes: ThreadTLBFlushes.count &- flushMark)
    }

    /// VM destruction in the kernel's order (`kvm_destroy_vm`): the NX recovery thread is stopped
    /// (`kvm_arch_pre_destroy_vm`), the MMU notifier is unregistered,
    /// whose release zaps every root under the write lock (`kvm_mmu_zap_all`); then the vCPUs
    /// are freed, each putting its root; then `kvm_mmu_uninit_tdp_mmu` runs: the workqueue is
    /// flushed and destroyed (`async`), or every root is invalidated and zapped (`preserve`);
    /// after a grace-period barrier the roots list and the pool must be empty.
    ///
    /// Invariant 1 is checked here. The vCPUs' threads must have stopped. Tearing down twice
    /// does nothing the second time.
    @discardableResult
    public func teardown() -> OperationOutcome {
        let start = BlockClock.nanoseconds()
        let flushMark = ThreadTLBFlushes.count
        guard markTornDown() else { return OperationOutcome(blockedNanoseconds: 0) }
        let slot = activity.claim(.teardown, actor: "VM thread")
        defer {
            finishOperation(slot)
            stopWatchdog()
        }
        stopNXRecovery()
        // `mmu_notifier_unregister` → `kvm_mmu_notifier_release` → `kvm_mmu_zap_all`.
        var zapped = fullZap().sptesZappedInline
        // `kvm_arch_destroy_vm` → `kvm_destroy_vcpus` → `kvm_mmu_unload`: each put finds its root empty.
        for vcpu in allVCPUs { zapped += vcpu.reset().sptesZappedInline }
        switch policy {
        case .async:
            let before = counters.sptesZapped.load(ordering: .relaxed)
            slot.wait(.workqueueFlush)
            zapQueue?.flush(giveUpWhen: { isStalled })
            zapQueue?.destroy(giveUpWhen: { isStalled })
            slot.wait(.running)
            zapped += counters.sptesZapped.load(ordering: .relaxed) - before
        case .preserve:
            // Invalidating schedules every root, so zapping the invalidated roots puts the MMU's
            // reference to each and ultimately frees them all.
            mmuLock.withExclusive { _ = invalidateAllRoots() }
            zapped += zapInvalidatedRoots()
        case .sync:
            break
        }
        gracePeriod.barrier(giveUpWhen: { isStalled })

        for root in roots {
            checker.record(.rootLeaked, root: root, "still listed at teardown: \(root)")
        }
        // Read from the queue's side, whatever the teardown code did: nothing of a destroyed VM may
        // still be queued or running.
        if let zapQueue, !zapQueue.isDestroyed {
            checker.record(
                .workLeaked,
                "teardown returned with the zap workqueue alive and \(zapQueue.itemsInFlight) items queued or running: it must be flushed and destroyed first"
            )
        }
        if pool.livePages > 0 {
            checker.record(.pagesLeaked, "\(pool.livePages) page-table pages not returned to the pool at teardown")
        }
        let installed = counters.installedTotal
        let removed = counters.sptesZapped.load(ordering: .relaxed)
        if installed != removed {
            checker.record(.sptesLeaked, "\(installed) leaf SPTEs installed but \(removed) zapped at teardown")
        }
        return OperationOutcome(
            blockedNanoseconds: BlockClock.elapsed(since: start), sptesZappedInline: zapped,
            tlbFlushes: ThreadTLBFlushes.count &- flushMark)
    }

    /// Takes `mmu_lock` in `mode`, telling the watchdog through `slot` while it waits.
    func lockMMU(_ mode: MMULockMode, telling slot: ActivitySlot) {
        slot.wait(mode == .shared ? .mmuLockRead : .mmuLockWrite)
        if mode == .shared { mmuLock.lockShared() } else { mmuLock.lockExclusive() }
        slot.wait(.running)
    }

    /// Ends a VM operation's activity and counts it as progress.
    func finishOperation(_ slot: ActivitySlot) {
        activity.release(slot)
        counters.operationsCompleted.wrappingIncrement(ordering: .relaxed)
    }
}
