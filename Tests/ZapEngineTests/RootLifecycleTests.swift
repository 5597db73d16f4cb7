import Testing
import ZapfleetTestSupport
@testable import ZapEngine
import ZapPlatform

/// A root's life under each policy: creation, sharing, invalidation, zap, unlink, free.
@Suite("Root lifecycle", .timeLimit(.minutes(1)))
struct RootLifecycleTests {
    private func makeVM(_ policy: ZapPolicy, width: Int = 1, bugs: Set<InjectedBug> = []) throws -> VirtualMachine {
        try VirtualMachine(
            configuration: VMConfiguration(
                policy: policy, workqueueWidth: width, pageTableBudgetBytes: 256 << 20, injectedBugs: bugs))
    }

    /// Occupies the VM's only zap worker until the returned gate opens.

    @Test(
        "a valid root is shared by vCPUs of its role; each holds one reference; preserve adds the MMU's",
        arguments: ZapPolicy.allCases)
    func sharingAndReferences(policy: ZapPolicy) throws {
        let vm = try makeVM(policy)
        let first = vm.makeVCPU(), second = vm.makeVCPU(), smm = vm.makeVCPU()
        first.loadRoot()
        second.loadRoot()
        smm.switchAddressSpace(to: .smm)
        smm.loadRoot()
        let shared = try #require(first.loadedRoot)
        #expect(second.loadedRoot === shared)
        #expect(shared.references == (policy == .preserve ? 3 : 2))
        #expect(smm.loadedRoot !== shared)
        #expect(smm.loadedRoot?.role.addressSpace == .smm)
        #expect(vm.statistics.rootsCreated == 2)
        #expect(vm.statistics.rootsReused == 1)
        vm.teardown()
        #expect(vm.checker.violations.isEmpty, "\(vm.checker.violations)")
        #expect(shared.lifecycle == .freed)
    }

    @Test("async: the put of the last reference makes the root defunct, gifts one reference and queues it; the worker zaps and frees it")
    func asyncDefunctPath() throws {
        let vm = try makeVM(.async)
        let vcpu = vm.makeVCPU()
        vcpu.populate2MRegion(firstFrame: 0)
        let root = try #require(vcpu.loadedRoot)
        let release = try occupyWorker(vm)

        let reset = vcpu.reset()
        #expect(reset.sptesZappedInline == 0, "the vCPU must not zap under async")
        #expect(root.isInvalid)
        #expect(root.references == 1, "the gifted reference")
        #expect(root.lifecycle == .invalidQueued)
        #expect(vm.roots.contains { $0 === root })

        release.open()
        vm.zapQueue?.flush()
        #expect(root.lifecycle >= .unlinked)
        #expect(root.references == 0)
        #expect(!vm.roots.contains { $0 === root })
        vm.gracePeriod.barrier()
        #expect(root.lifecycle == .freed)
        #expect(vm.statistics.sptesZapped == 512)
        vm.teardown()
        #expect(vm.checker.violations.isEmpty, "\(vm.checker.violations)")
    }

    @Test("async: fast zap gifts a reference to each valid root, skips invalid ones, and waits until all are zapped")
    func asyncFastZap() throws {
        let vm = try makeVM(.async)
        let holder = vm.makeVCPU(), leaver = vm.makeVCPU()
        holder.populate2MRegion(firstFrame: 0)
        let kept = try #require(holder.loadedRoot)
        leaver.switchAddressSpace(to: .smm)
        leaver.populate2MRegion(firstFrame: 512)
        let defunct = try #require(leaver.loadedRoot)

        let release = try occupyWorker(vm)
        leaver.reset()  // defunct and pending behind the blocker
        #expect(defunct.lifecycle == .invalidQueued)
        let fastZapDone = Gate()
        let zapper = OSThread(name: "fastzap") {
            vm.fastZap(); fastZapDone.open()
        }
        #expect(eventually { kept.isInvalid }, "fast zap should invalidate the held root")
        #expect(kept.references == 2, "the holder's and the gift")
        release.open()
        fastZapDone.wait()
        zapper.join()
        // Returned only when both were zapped, the skipped defunct one included.
        #expect(kept.lifecycle == .zapped)
        #expect(defunct.lifecycle >= .unlinked)
        #expect(kept.references == 1)
        #expect(vm.statistics.workItemsQueued == 2, "defunct once, kept once (the blocker bypasses the VM)")
        #expect(vm.statistics.workItemsRejected == 0)

        // The holder's next fault finds its root obsolete: it puts it (freeing it) and loads a new one.
        holder.fault(gfn: 7)
        #expect(holder.loadedRoot !== kept)
        #expect(kept.lifecycle >= .unlinked)
        vm.teardown()
        #expect(vm.checker.violations.isEmpty, "\(vm.checker.violations)")
    }

    @Test("an invalid root is never reused, even while referenced", arguments: ZapPolicy.allCases)
    func invalidRootNotReused(policy: ZapPolicy) throws {
        let vm = try makeVM(policy)
        let holder = vm.makeVCPU(), newcomer = vm.makeVCPU()
        holder.fault(gfn: 1)
        let old = try #require(holder.loadedRoot)
        vm.fastZap()
        #expect(old.isInvalid)
        newcomer.fault(gfn: 1)
        #expect(newcomer.loadedRoot !== old)
        #expect(newcomer.loadedRoot?.isInvalid == false)
        vm.teardown()
        #expect(vm.checker.violations.isEmpty, "\(vm.checker.violations)")
    }

    @Test("sync: the vCPU that puts the last reference zaps the root itself, and it is gone on return")
    func syncPutZapsInline() throws {
        let vm = try makeVM(.sync)
        let vcpu = vm.makeVCPU()
        for region in 0..<UInt64(4) { vcpu.populate2MRegion(firstFrame: region * 512) }
        let root = try #require(vcpu.loadedRoot)
        let reset = vcpu.reset()
        #expect(reset.sptesZappedInline == 4 * 512)
        #expect(root.lifecycle >= .unlinked)
        #expect(vm.roots.isEmpty)
        #expect(vm.zapQueue == nil)
        vm.teardown()
        #expect(vm.checker.violations.isEmpty, "\(vm.checker.violations)")
    }

    @Test("preserve: a reset keeps the root and its mappings; a reload reuses it; only invalidation tears it down")
    func preserveKeepsRoots() throws {
        let vm = try makeVM(.preserve)
        let vcpu = vm.makeVCPU()
        vcpu.populate2MRegion(firstFrame: 0)
        let root = try #require(vcpu.loadedRoot)
        #expect(root.references == 2)
        #expect(vcpu.reset().sptesZappedInline == 0)
        #expect(root.references == 1, "the MMU's own reference")
        #expect(!root.isInvalid)
        #expect(vcpu.populate2MRegion(firstFrame: 0).sptesInstalled == 0, "mappings survived the reset")
        #expect(vcpu.loadedRoot === root)
        let zap = vm.fastZap()
        #expect(zap.sptesZappedInline == 512, "the fast-zap caller zaps under preserve")
        #expect(root.lifecycle == .zapped)
        vm.teardown()
        #expect(root.lifecycle == .freed)
        #expect(vm.checker.violations.isEmpty, "\(vm.checker.violations)")
    }

    @Test("a reference cannot be taken on a root whose count is zero")
    func getFailsAtZero() throws {
        let vm = try makeVM(.sync)
        let root = Root(id: 99, role: RootRole(addressSpace: .normal), table: .none, tableGeneration: 0, initialReferences: 0)
        #expect(!root.tryGetReference())
        #expect(root.references == 0)
        let live = Root(id: 100, role: RootRole(addressSpace: .normal), table: .none, tableGeneration: 0, initialReferences: 1)
        #expect(live.tryGetReference())
        #expect(live.references == 2)
        _ = vm
    }

    @Test("full zap empties every root without invalidating it; faults repopulate", arguments: ZapPolicy.allCases)
    func fullZap(policy: ZapPolicy) throws {
        let vm = try makeVM(policy)
        let vcpu = vm.makeVCPU(), smm = vm.makeVCPU()
        vcpu.populate2MRegion(firstFrame: 0)
        smm.switchAddressSpace(to: .smm)
        smm.populate2MRegion(firstFrame: 0)
        let outcome = vm.fullZap()
        #expect(outcome.sptesZappedInline == 1024)
        #expect(vcpu.loadedRoot?.isInvalid == false)
        #expect(vcpu.populate2MRegion(firstFrame: 0).sptesInstalled == 512)
        vm.teardown()
        #expect(vm.statistics.sptesInstalled == vm.statistics.sptesZapped)
        #expect(vm.checker.violations.isEmpty, "\(vm.checker.violations)")
    }
}
