import ZapPlatform
import Atomics

/// Creating, sharing and releasing roots: the reference-count half of a root's life.
extension VirtualMachine {
    /// `kvm_tdp_mmu_get_vcpu_root_hpa`: returns a referenced valid root for `role`, reusing one
    /// on the list if there is one, otherwise creating it. Caller holds `mmu_lock` for write.
    ///
    /// An invalid root is never reused: its tables are on their way out.
    func getOrCreateRoot(role: RootRole) -> Root? {
        for root in roots where root.role == role && !root.isInvalid {
            guard rootTableIsIntact(root, "a root whose table was freed is still on the roots list") else { continue }
            if getRoot(root) {
                counters.rootsReused.wrappingIncrement(ordering: .relaxed)
                return root
            }
        }
        guard let table = pool.allocate() else {
            checker.record(.tableMemoryExhausted, "no page for a new root table: raise the page-table budget")
            return nil
        }
        // Under `preserve` the MMU holds a reference of its own, dropped only when the root is
        // invalidated and zapped: so a vCPU's put never tears a root down.
        let root = Root(
            id: makeRootID(), role: role, table: table, tableGeneration: pool.generation(of: table),
            initialReferences: policy == .preserve ? 2 : 1)
        if policy == .async {
            // Weak both ways: the work item must neither keep its root alive (root -> item ->
            // root) nor touch a VM being deinitialised.
            root.zapWork = WorkItem(label: "zap root#\(root.id)") { [weak self, weak root] in
                guard let self, let root else { return }
                self.zapRootWork(root)
            }
        }
        appendRoot(root)
        counters.rootsCreated.wrappingIncrement(ordering: .relaxed)
        return root
    }

    /// `kvm_tdp_mmu_put_root`: drops one reference. Caller holds `mmu_lock` in `mode`.
    ///
    /// What happens at the last reference is the whole difference between the policies:
    /// `sync` zaps the root right here, in the caller's context; `async` makes a valid root
    /// defunct and hands it to the workqueue with a gifted reference; `preserve` (where the
    /// last reference can only go after invalidation and zap) just frees it.
    /// - Returns: leaf SPTEs zapped in the caller's context.
    @discardableResult
    func putRoot(_ root: Root, mode: MMULockMode) -> Int {
        guard rootTableIsIntact(root, "put on a root whose table was already freed") else { return 0 }
        let remaining = root.referenceCount.wrappingDecrementThenLoad(ordering: .acquiringAndReleasing)
        let tallied = root.tallyLive.wrappingDecrementThenLoad(ordering: .acquiringAndReleasing)
        if remaining < 0 || tallied < 0 {
            checker.record(
                .refcountUnderflow, root: root,
                "reference count went to \(remaining) (the checker's own tally: \(tallied))")
            return 0
        }
        // Every get whose reference this put ends was tallied before it, so at the root's zero
        // the tally must be at zero too.
        if remaining == 0 && tallied != 0 {
            checker.record(.refcountMismatch, root: root, "the count reached 0 but the checker tallied \(tallied) live references")
        }
        guard remaining == 0 else { return 0 }

        switch policy {
        case .sync:
            // v5.17: unreachable now (gets fail at zero), so it is zapped without yielding, in
            // full, while the caller waits: the 900 s of the seed on a 64 TiB root.
            _ = root.markInvalid()
            removeRoot(root)
            // A root the fast-zap caller already zapped has nothing left: it is invalid, and
            // faults never install into an invalid root.
            var zapped = 0
            if root.lifecycle < .zapped {
                root.advance(to: .zapping)
                zapped = mmuLock.withoutYieldRule { zapRoot(root, mode: mode, yieldable: false) }
                root.advance(to: .zapped)
            }
            freeRootAfterGracePeriod(root)
            return zapped
        case .async:
            if !root.markInvalid() {
                // Defunct: the root was valid, so nobody has queued it. Give the worker the
                // reference it will put, and queue it before `mmu_lock` is released, because
                // a concurrent fast zap skips roots that are already invalid.
                if injectsZapUnreferenced {
                    noteInjectedPath(.zapUnreferenced)
                } else {
                    root.referenceCount.store(1, ordering: .releasing)
                }
                root.tallyLive.store(1, ordering: .releasing)
                root.advance(to: .invalidQueued)
                if injectsDefunctNotQueued {
                    noteInjectedPath(.defunctNotQueued)
                } else {
                    scheduleZap(root)
                }
                return 0
            }
            removeRoot(root)
            freeRootAfterGracePeriod(root)
            return 0
        case .preserve:
            // The MMU's own reference is put only after the zap, so the root is invalid here
            // (`KVM_BUG_ON(!root->role.invalid)`); a valid one means an extra put somewhere.
            if !root.markInvalid() {
                checker.record(.validRootFreed, root: root, "the last reference of a valid root was put: a put without a get")
            }
            removeRoot(root)
            freeRootAfterGracePeriod(root)
            return 0
        }
    }

    /// `kvm_tdp_mmu_get_root`: takes a reference unless the count is zero, and tallies it in
    /// the checker's own count, which must not be at zero: a root whose last reference went is
    /// being freed, and a get that revives it hands out a table about to go back to the pool.
    func getRoot(_ root: Root) -> Bool {
        guard root.tryGetReference() else { return false }
        let before = root.tallyLive.loadThenWrappingIncrement(ordering: .acquiringAndReleasing)
        if before <= 0 {
            checker.record(.getAfterZero, root: root, "a get succeeded after the last reference was put (tally \(before))")
        }
        return true
    }

    /// ``Root/tableIsIntact(in:)``, recording `what` as a use after free when it is not.
    func rootTableIsIntact(_ root: Root, _ what: @autoclosure () -> String) -> Bool {
        if root.tableIsIntact(in: pool) { return true }
        checker.record(.useAfterFree, root: root, what())
        return false
    }

    /// `call_rcu(&root->rcu_head, tdp_mmu_free_sp_rcu_callback)`: the root is off the list;
    /// its table goes back to the pool once no walker can still be inside it.
    func freeRootAfterGracePeriod(_ root: Root) {
        root.advance(to: .unlinked)
        let observer = configuration.observer
        gracePeriod.afterGracePeriod { [pool, counters, checker] in
            let tallied = root.tallyLive.load(ordering: .acquiring)
            if tallied != 0 {
                checker.record(.refcountMismatch, root: root, "freed while the checker tallied \(tallied) live references")
            }
            pool.free(root.table)
            root.advance(to: .freed)
            counters.rootsFreed.wrappingIncrement(ordering: .relaxed)
            let invalidatedAt = root.invalidatedAt.load(ordering: .relaxed)
            if let observer, invalidatedAt > 0 {
                observer.rootReclaimed(rootID: root.id, nanosecondsSinceInvalidation: BlockClock.elapsed(since: invalidatedAt))
            }
        }
        gracePeriod.reclaim()
    }
}
