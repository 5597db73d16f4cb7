/// Creating, sharing and releasing roots: the reference-count half of a root's life.
extension VirtualMachine {
    /// `kvm_tdp_mmu_get_vcpu_root_hpa`: returns a referenced valid root for `role`, reusing one
    /// on the list if there is one, otherwise creating it. Caller holds `mmu_lock` for write.
    ///
    /// An invalid root is never reused: its tables are on their way out.
    func getOrCreateRoot(role: RootRole) -> Root? {
        for root in roots where root.role == role && !root.isInvalid {
            if root.lifecycle == .freed {
                checker.record(.useAfterFree, root: root, "a freed root is still on the roots list")
                continue
            }
            if root.tryGetReference() {
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
        let root = Root(id: makeRootID(), role: role, table: table,
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
        if root.lifecycle == .freed {
            checker.record(.useAfterFree, root: root, "put on a root whose table was already freed")
        }
        let remaining = root.referenceCount.wrappingDecrementThenLoad(ordering: .acquiringAndReleasing)
        if remaining < 0 {
            checker.record(.refcountUnderflow, root: root, "reference count went to \(remaining)")
            return 0
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
                zapped = zapRoot(root, mode: mode, yieldable: false)
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

    /// `call_rcu(&root->rcu_head, tdp_mmu_free_sp_rcu_callback)`: the root is off the list;
    /// its table goes back to the pool once no walker can still be inside it.
    func freeRootAfterGracePeriod(_ root: Root) {
        root.advance(to: .unlinked)
        let observer = configuration.observer
        gracePeriod.afterGracePeriod { [pool, counters] in
            pool.free(root.table)
            root.advance(to: .freed)
            counters.rootsFreed.wrappingIncrement(ordering: .relaxed)
            let invalidatedAt = root.invalidatedAt.load(ordering: .relaxed)
            if let observer, invalidatedAt > 0 {
                observer.rootReclaimed(rootID: root.id, nanosecondsSinceInvalidation: monotonicNanoseconds() &- invalidatedAt)
            }
        }
        gracePeriod.reclaim()
    }
}
