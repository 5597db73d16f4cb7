import Testing
import ZapfleetTestSupport
@testable import ZapEngine
import Atomics

/// The remote TLB flushes each policy's kernel would issue for the engine's work, with that
/// kernel's batching (`TLBFlushCause`): v5.17 for `sync`, v5.18 for `async`, v6.6 for `preserve`.
/// Every VM here is driven from one thread with nobody waiting for `mmu_lock`, so no zap yields
/// and every count is exact.
@Suite("Remote TLB flushes by policy")
struct TLBFlushTests {
    private func makeVM(_ policy: ZapPolicy) throws -> VirtualMachine {
        try VirtualMachine(configuration: VMConfiguration(policy: policy, workqueueWidth: 1, pageTableBudgetBytes: 256 << 20))
    }

    /// One write through the fast page fault path alone, inside its read-side section.
    private func fastFault(_ vm: VirtualMachine, _ root: Root, gfn: UInt64) -> FastFaultResult {
        let token = vm.gracePeriod.enterReadSide()
        defer { vm.gracePeriod.exitReadSide(token) }
        return vm.fastPageFault(root, gfn: gfn, write: true)
    }

    /// A VM under `policy` whose one vCPU mapped four 2 MiB regions of 4 KiB leaves: one table
    /// at each of levels 3 and 2, four at level 1.
    private func populatedVM(_ policy: ZapPolicy) throws -> (VirtualMachine, VCPU) {
        let vm = try makeVM(policy)
        let vcpu = vm.makeVCPU()
        for region: UInt64 in 0..<4 { vcpu.populate2MRegion(firstFrame: region << 9) }
        return (vm, vcpu)
    }

    @Test(
        "a fast zap sends one obsolete-roots request under every policy; v5.17 (sync) also flushes per top-level entry and per table it removes, later kernels never for a whole-root zap",
        arguments: ZapPolicy.allCases)
    func fastZap(policy: ZapPolicy) throws {
        let (vm, _) = try populatedVM(policy)
        let outcome = vm.fastZap()
        #expect(vm.tlbFlushes[.obsoleteRoots] == 1)
        // sync: the root's one top-level entry, then its tables: 1 at level 3, 1 at level 2, 4 at level 1.
        let rootZap = policy == .sync ? 1 + 6 : 0
        #expect(vm.tlbFlushes[.rootZap] == rootZap)
        // async: the worker zapped meanwhile without a flush; the caller waited for the request only.
        #expect(outcome.tlbFlushes == 1 + rootZap)
        vm.teardown()
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
    }

    @Test(
        "a vCPU reset under sync pays v5.17's flush for every table its put removes; async and preserve zap elsewhere, without flushes",
        arguments: ZapPolicy.allCases)
    func resetPut(policy: ZapPolicy) throws {
        let (vm, vcpu) = try populatedVM(policy)
        let outcome = vcpu.reset()
        #expect(outcome.tlbFlushes == (policy == .sync ? 6 : 0))
        vm.teardown()
        #expect(vm.tlbFlushes[.rootZap] == (policy == .sync ? 6 : 0), "the put under the write lock flushes no top-level entry")
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
    }

    @Test(
        "an MMU-notifier unmap flushes once when it ends (v5.17: also once per table removed); an unmap that zaps nothing flushes nothing",
        arguments: ZapPolicy.allCases)
    func unmap(policy: ZapPolicy) throws {
        let (vm, _) = try populatedVM(policy)
        // Two whole 2 MiB entries: each zapped at level 2 with its table of leaves.
        let outcome = vm.unmapRange(0..<1024)
        #expect(outcome.sptesZappedInline == 1024)
        #expect(outcome.tlbFlushes == (policy == .sync ? 1 + 2 : 1))
        #expect(vm.tlbFlushes[.unmap] == outcome.tlbFlushes)
        #expect(vm.unmapRange(1 << 20..<(1 << 20) + 512).tlbFlushes == 0)
        vm.teardown()
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
    }

    @Test(
        "a full zap flushes before yielding and once at the end under v5.17; from v5.18 not at all (KVM_RUN can no longer run)",
        arguments: ZapPolicy.allCases)
    func fullZap(policy: ZapPolicy) throws {
        let (vm, _) = try populatedVM(policy)
        let outcome = vm.fullZap()
        // sync: 6 tables removed, and the zap-all's closing flush.
        #expect(outcome.tlbFlushes == (policy == .sync ? 6 + 1 : 0))
        #expect(vm.tlbFlushes[.rootZap] == outcome.tlbFlushes)
        vm.teardown()
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
    }

    @Test(
        "dirty logging on 2 MiB pages: v5.17 write-protects them whole and each first write replaces one with a flush; v5.18 on splits eagerly and flushes once per write-protect",
        arguments: ZapPolicy.allCases)
    func dirtyLoggingOnHugePages(policy: ZapPolicy) throws {
        let vm = try makeVM(policy)
        let vcpu = vm.makeVCPU()
        for region: UInt64 in 0..<4 { vcpu.fault(gfn: region << 9, size: .size2M) }
        let enabled = vm.enableDirtyLog()
        #expect(enabled.tlbFlushes == 1 && vm.tlbFlushes[.writeProtect] == 1)
        #expect(vm.counters.hugePagesSplit.load(ordering: .relaxed) == (policy == .sync ? 0 : 4), "eager splitting came with v5.18")

        // The guest writes every 4 KiB page, each write trying the fast path first.
        var replaceFlushes = 0
        for frame: UInt64 in 0..<2048 { replaceFlushes += vcpu.fastFault(gfn: frame, write: true).tlbFlushes }
        #expect(replaceFlushes == (policy == .sync ? 4 : 0), "one flush per huge page replaced by a fault, under v5.17 only")
        #expect(vm.tlbFlushes[.largeSPTEReplace] == replaceFlushes)
        let root = try #require(vcpu.loadedRoot)
        for frame: UInt64 in [0, 511, 512, 2047] {
            let mapped = try #require(vm.mapping(of: frame, under: root))
            #expect(
                mapped.level == 1 && mapped.entry.rawValue & SPTE.writableBit != 0,
                "frame \(frame) is a writable 4 KiB page after its write")
        }

        #expect(vm.clearDirtyLog().tlbFlushes == 1)
        // Disabling: up to v5.18 a flush per 4 KiB leaf zapped, from v5.19 one per table.
        let disabled = vm.zapCollapsibleSPTEs()
        #expect(disabled.sptesZappedInline == 2048)
        #expect(disabled.tlbFlushes == (policy == .preserve ? 4 : 2048))
        #expect(vm.tlbFlushes[.collapsibleZap] == disabled.tlbFlushes)
        vm.teardown()
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
        #expect(vm.statistics.sptesInstalled == vm.statistics.sptesZapped)
    }

    @Test(
        "while dirty logging is on, the fast path does not make a write-protected huge page writable (only its first 4 KiB would be logged)"
    )
    func fastPathLeavesHugePagesToTheSlowPath() throws {
        let vm = try makeVM(.sync)
        let vcpu = vm.makeVCPU()
        vcpu.fault(gfn: 0, size: .size2M)
        vm.enableDirtyLog()
        let root = try #require(vcpu.loadedRoot)
        #expect(fastFault(vm, root, gfn: 5) == .needsSlowPath)
        #expect(vm.mapping(of: 5, under: root)?.level == 2, "still the write-protected huge page")
        // Once dirty logging is off again, the fast path fixes it in place.
        vm.zapCollapsibleSPTEs()
        #expect(fastFault(vm, root, gfn: 5) == .fixed)
        vm.teardown()
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
    }

    @Test(
        "NX recovery flushes once at the end of a pass that zapped (v5.17: also per table removed), none for a pass that found nothing",
        arguments: ZapPolicy.allCases)
    func nxRecovery(policy: ZapPolicy) throws {
        let (vm, _) = try populatedVM(policy)
        // Ratio 1: every table of 4 KiB leaves goes.
        let pass = vm.recoverNXHugePages(ratio: 1)
        #expect(pass.sptesZappedInline == 2048)
        #expect(pass.tlbFlushes == (policy == .sync ? 4 + 1 : 1))
        #expect(vm.recoverNXHugePages(ratio: 1).tlbFlushes == 0)
        vm.teardown()
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
    }
}
