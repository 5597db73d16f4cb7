import Testing
import ZapfleetTestSupport
@testable import ZapEngine
import ZapPlatform

/// Each bug class of docs/model.md, re-created on purpose, is caught by the checker. The same
/// scenario without the injection is clean, so each test shows the checker can tell them apart.
@Suite("Injected bugs are caught", .timeLimit(.minutes(2)))
struct InjectedBugTests {
    private func makeVM(_ policy: ZapPolicy, _ bugs: Set<InjectedBug>) throws -> VirtualMachine {
        try VirtualMachine(
            configuration: VMConfiguration(
                policy: policy, workqueueWidth: 1, pageTableBudgetBytes: 512 << 20, injectedBugs: bugs))
    }

    /// A defunct root waits behind a busy worker while a fast zap runs.
    private func defunctRootMeetsFastZap(_ bugs: Set<InjectedBug>) throws -> VirtualMachine {
        let vm = try makeVM(.async, bugs)
        let vcpu = vm.makeVCPU()
        vcpu.populate2MRegion(firstFrame: 0)
        let release = try occupyWorker(vm)
        vcpu.reset()
        let done = Gate()
        let zapper = OSThread(name: "fastzap") {
            vm.fastZap(); done.open()
        }
        #expect(eventually { vm.statistics.fastZaps == 1 })
        release.open()
        done.wait()
        zapper.join()
        vm.teardown()
        return vm
    }

    @Test("double-queue: re-queueing a pending root is reported, and its leaked reference is found at teardown")
    func doubleQueue() throws {
        let clean = try defunctRootMeetsFastZap([])
        #expect(clean.checker.violations.isEmpty, "\(clean.checker.violations)")

        let vm = try defunctRootMeetsFastZap([.doubleQueue])
        #expect(vm.checker.saw(.doubleQueue))
        #expect(vm.checker.saw(.rootLeaked))
        #expect(vm.checker.saw(.pagesLeaked))
    }

    @Test(
        "no-flush: a fast zap that does not wait returns before its roots are zapped",
        arguments: ZapPolicy.allCases)
    func noFlush(policy: ZapPolicy) throws {
        for bugs: Set<InjectedBug> in [[], [.noFlush]] {
            let vm = try makeVM(policy, bugs)
            let vcpu = vm.makeVCPU()
            vcpu.populate2MRegion(firstFrame: 0)
            let release = policy == .async ? try occupyWorker(vm) : nil
            vcpu.reset()
            let other = vm.makeVCPU()
            other.populate2MRegion(firstFrame: 512)
            let done = Gate()
            let zapper = OSThread(name: "fastzap") {
                vm.fastZap(); done.open()
            }
            if bugs.isEmpty {
                release?.open()
                done.wait()
            } else {
                done.wait()
                release?.open()
            }
            zapper.join()
            vm.teardown()
            #expect(vm.checker.saw(.earlyReturn) == !bugs.isEmpty, "\(policy) \(bugs): \(vm.checker.violations)")
        }
    }

    @Test("defunct-not-queued: the fast zap that skips the defunct root returns early; teardown finds the root")
    func defunctNotQueued() throws {
        let vm = try makeVM(.async, [.defunctNotQueued])
        let vcpu = vm.makeVCPU()
        vcpu.populate2MRegion(firstFrame: 0)
        vcpu.reset()
        vm.fastZap()
        vm.teardown()
        #expect(vm.checker.saw(.earlyReturn))
        #expect(vm.checker.saw(.staleSPTE), "the fast zap's audit finds the root still mapped")
        #expect(vm.checker.saw(.rootLeaked))
        // Teardown starts with the notifier release's kvm_mmu_zap_all, which reaches every root,
        // so the leaked root's SPTEs are zapped then, as in the kernel; only the root leaks.
        #expect(!vm.checker.saw(.sptesLeaked), "\(vm.checker.violations)")
    }

    @Test(
        "double-put: a root freed under a holder is caught when the holder touches it, before its memory is",
        arguments: ZapPolicy.allCases)
    func doublePut(policy: ZapPolicy) throws {
        let vm = try makeVM(policy, [.doublePut])
        let holder = vm.makeVCPU(), bystander = vm.makeVCPU()
        holder.populate2MRegion(firstFrame: 0)
        bystander.loadRoot()
        let root = try #require(holder.loadedRoot)
        #expect(root.references == (policy == .preserve ? 3 : 2))
        vm.fastZap()
        // The zapper's second put took one of the holders' references.
        #expect(root.references == 1)
        holder.fault(gfn: 3)  // finds the root invalid and puts it: the last reference, so it is freed
        vm.gracePeriod.barrier()
        #expect(root.lifecycle == .freed)
        bystander.reset()  // still had it loaded: the put is refused on the pool's generation
        vm.teardown()
        #expect(vm.checker.saw(.useAfterFree), "\(policy): \(vm.checker.violations)")
        #expect(root.references == 0, "the put on the freed root must not have touched its count")
    }

    @Test("zap-unreferenced: the worker zaps a defunct root whose count was never restored")
    func zapUnreferenced() throws {
        let vm = try makeVM(.async, [.zapUnreferenced])
        let vcpu = vm.makeVCPU()
        vcpu.populate2MRegion(firstFrame: 0)
        vcpu.reset()
        vm.zapQueue?.flush()
        vm.teardown()
        #expect(vm.checker.saw(.zapUnreferenced))
        #expect(vm.checker.saw(.refcountUnderflow))
    }

    @Test(
        "skip-smm: invalidation that skips an address space leaves its roots valid",
        arguments: ZapPolicy.allCases)
    func skipSMM(policy: ZapPolicy) throws {
        for bugs: Set<InjectedBug> in [[], [.skipSMM]] {
            let vm = try makeVM(policy, bugs)
            let normal = vm.makeVCPU(), smm = vm.makeVCPU()
            normal.populate2MRegion(firstFrame: 0)
            smm.switchAddressSpace(to: .smm)
            smm.populate2MRegion(firstFrame: 0)
            vm.fastZap()
            #expect(smm.loadedRoot?.isInvalid == bugs.isEmpty)
            vm.teardown()
            #expect(vm.checker.saw(.addressSpaceSkipped) == !bugs.isEmpty, "\(policy) \(bugs): \(vm.checker.violations)")
        }
    }

    /// A large root is zapped by whoever the policy says while another thread keeps taking
    /// `mmu_lock` for write; returns the VM after teardown.
    private func zapLargeRootUnderWriters(_ policy: ZapPolicy, _ bugs: Set<InjectedBug>) throws -> VirtualMachine {
        let vm = try makeVM(policy, bugs)
        let vcpu = vm.makeVCPU()
        // 4 GiB of 4 KiB mappings: four 1 GiB zap steps, each long enough for a writer to queue.
        for region in 0..<UInt64(4 * 512) { vcpu.populate2MRegion(firstFrame: region * 512) }
        let writer = vm.makeVCPU()
        let stopped = Log<Int>()
        let writerThread = OSThread(name: "writer") {
            while stopped.count == 0 { writer.loadRoot() }
        }
        vm.fastZap()
        stopped.append(1)
        writerThread.join()
        vm.teardown()
        return vm
    }

    @Test(
        "no-yield: a zap that keeps mmu_lock while a writer waits is caught; with yields it is not",
        arguments: ZapPolicy.allCases)
    func noYield(policy: ZapPolicy) throws {
        let clean = try zapLargeRootUnderWriters(policy, [])
        #expect(!clean.checker.saw(.writerStarved), "\(clean.checker.violations)")
        #expect(clean.statistics.yields > 0, "the writer should have made the zap yield")

        let vm = try zapLargeRootUnderWriters(policy, [.noYield])
        #expect(vm.checker.saw(.writerStarved), "\(policy): \(vm.checker.violations)")
        #expect(vm.statistics.yields == 0)
    }

    @Test(
        "a full zap under the write lock hands mmu_lock to faults waiting at each step",
        arguments: [ZapPolicy.async, .preserve])
    func writeLockedZapHandsOver(policy: ZapPolicy) throws {
        let vm = try makeVM(policy, [])
        let owner = vm.makeVCPU()
        for region in 0..<UInt64(4 * 512) { owner.populate2MRegion(firstFrame: region * 512) }
        let faulter = vm.makeVCPU()
        faulter.fault(gfn: 1 << 30)
        let zapping = Log<Int>()
        let duringZap = Log<Int>()
        let stop = Log<Int>()
        let thread = OSThread(name: "faulter") {
            while stop.count == 0 {
                faulter.fault(gfn: 1 << 30)
                if zapping.count == 1 { duringZap.append(1) }
            }
        }
        zapping.append(1)
        vm.fullZap()
        zapping.append(2)
        stop.append(1)
        thread.join()
        vm.teardown()
        #expect(vm.statistics.yields > 0)
        #expect(duringZap.count > 0, "no fault got mmu_lock while the full zap ran")
        #expect(!vm.checker.saw(.writerStarved), "\(vm.checker.violations)")
    }
}
