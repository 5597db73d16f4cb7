import Atomics

/// Invalidating roots and handing them to whoever zaps them: the other half of a root's life.
extension VirtualMachine {
    /// `tdp_mmu_schedule_zap_root`: queues the root's work item. Called with `mmu_lock` held,
    /// right after the root's `invalid` bit flipped, and only there.
    /// Returns whether the root's work item was pending already (the double-queue case).
    @discardableResult
    func scheduleZap(_ root: Root) -> Bool {
        guard let zapQueue else { return false }
        switch zapQueue.queue(root.zapWork) {
        case .queued:
            counters.workItemsQueued.wrappingIncrement(ordering: .relaxed)
        case .alreadyPending:
            counters.workItemsRejected.wrappingIncrement(ordering: .relaxed)
            checker.record(
                .doubleQueue, root: root,
                "queued while already pending: the second queue is a no-op and its gifted reference leaks")
            return true
        case .refused:
            counters.workItemsRejected.wrappingIncrement(ordering: .relaxed)
            checker.record(.queueRefused, root: root, "queued after the workqueue was destroyed")
        }
        return false
    }

    /// `tdp_mmu_zap_root_work`: the worker zaps an invalid root under the read lock, then puts
    /// the reference it was gifted.
    func zapRootWork(_ root: Root) {
        let slot = activity.claim(.zapWork, actor: "zap worker")
        defer { finishOperation(slot) }
        lockMMU(.shared, telling: slot)
        root.advance(to: .zapping)
        zapRoot(root, mode: .shared, yieldable: true)
        root.advance(to: .zapped)
        // Put through the ordinary path: a vCPU may still hold the root, and whoever puts the
        // last reference frees it, knowing that an invalid root never needs another zap.
        putRoot(root, mode: .shared)
        if injectsDoublePut {
            noteInjectedPath(.doublePut)
            putRoot(root, mode: .shared)
        }
        mmuLock.unlockShared()
    }

    /// `kvm_tdp_mmu_invalidate_all_roots`: with `mmu_lock` held for write, invalidates every
    /// valid root of every address space.
    ///
    /// - `async`: each root not already invalid gets one extra reference, a gift to the worker,
    ///   and is queued. Skipping invalid roots is what keeps a root queued once: a defunct root
    ///   is already queued by the put that made it so.
    /// - `sync` (v5.17): every root whose count is not zero, invalid or not, gets a reference that
    ///   the caller puts after zapping it.
    /// - `preserve`: each is marked "scheduled to zap"; the MMU's own reference is the gift.
    /// - Returns: the roots this call invalidated (those the caller must zap under `sync`).
    func invalidateAllRoots() -> [Root] {
        var invalidated: [Root] = []
        for root in rootsToVisit() {
            switch policy {
            case .async:
                let requeue = root.isInvalid
                if requeue && !injectsDoubleQueue { continue }
                guard getRoot(root) else {
                    // `WARN_ON_ONCE(!kvm_tdp_mmu_get_root(root))`: under the write lock a valid
                    // root always has a reference.
                    if !root.isInvalid {
                        checker.record(.validRootUnreferenced, root: root, "a valid root had no reference under the write lock")
                    }
                    continue
                }
                _ = root.markInvalid()
                root.advance(to: .invalidQueued)
                // The race the bug is about: the work item has not started (it is still pending),
                // so queueing it again is a no-op and the reference just taken leaks. Once the item
                // has started, a second run puts that reference and nothing goes wrong: only the
                // pending case counts as the broken path reached.
                if scheduleZap(root) && requeue { noteInjectedPath(.doubleQueue) }
            case .sync:
                // v5.17 takes a reference on every root it can, invalid ones included (a root an
                // earlier fast zap left listed is zapped again, finding it empty), and its caller
                // zaps and puts each one.
                guard getRoot(root) else { continue }
                _ = root.markInvalid()
                root.advance(to: .invalidQueued)
            case .preserve:
                if root.isInvalid { continue }
                _ = root.markInvalid()
                root.scheduledToZap.store(true, ordering: .releasing)
                root.advance(to: .invalidQueued)
            }
            invalidated.append(root)
        }
        return invalidated
    }

    /// The `sync` fast-zap caller's own zap of the roots it invalidated, under the read lock.
    /// - Returns: leaf SPTEs zapped.
    func zapRootsInvalidatedByCaller(_ invalidated: [Root]) -> Int {
        var zapped = 0
        mmuLock.lockShared()
        for root in invalidated {
            root.advance(to: .zapping)
            zapped += zapRoot(root, mode: .shared, yieldable: true)
            root.advance(to: .zapped)
            zapped += putRoot(root, mode: .shared)
            if injectsDoublePut {
                noteInjectedPath(.doublePut)
                zapped += putRoot(root, mode: .shared)
            }
        }
        mmuLock.unlockShared()
        return zapped
    }

    /// `kvm_tdp_mmu_zap_invalidated_roots` (`preserve`): zaps every root scheduled to zap under
    /// the read lock, then puts the MMU's reference. The put comes after the zap, because the
    /// root must stay reachable by MMU notifiers while it is zapped.
    /// - Returns: leaf SPTEs zapped.
    func zapInvalidatedRoots() -> Int {
        var zapped = 0
        mmuLock.lockShared()
        for root in rootsToVisit() where root.scheduledToZap.exchange(false, ordering: .acquiringAndReleasing) {
            root.advance(to: .zapping)
            zapped += zapRoot(root, mode: .shared, yieldable: true)
            root.advance(to: .zapped)
            putRoot(root, mode: .shared)
            if injectsDoublePut {
                noteInjectedPath(.doublePut)
                putRoot(root, mode: .shared)
            }
        }
        mmuLock.unlockShared()
        return zapped
    }
}
