import Testing
import ZapfleetTestSupport
@testable import ZapEngine
import ZapPlatform
import Atomics

/// The checks that watch the zap code from outside: `mmu_lock`'s judgement of its holders, the
/// page-table audits, the pool's generations and the checker's own reference tally. Each test
/// breaks the rule by hand, the way a bug in the zap code would, and expects the named violation.
@Suite("The checker watches from outside the zap code")
struct OutsideCheckerTests {
    private func makeVM(_ policy: ZapPolicy = .async) throws -> VirtualMachine {
        try VirtualMachine(configuration: VMConfiguration(policy: policy, workqueueWidth: 1, pageTableBudgetBytes: 512 << 20))
    }

    /// Holds `mmu_lock` for read until a writer waits, then runs `body` as the holder.
    private func whileAWriterWaits(_ vm: VirtualMachine, _ body: () -> Void) {
        vm.mmuLock.lockShared()
        let writer = OSThread(name: "writer") { vm.mmuLock.withExclusive {} }
        #expect(eventually { vm.mmuLock.writerIsWaiting })
        body()
        vm.mmuLock.unlockShared()
        writer.join()
    }

    @Test("a holder that frees tables in a second step while a writer waits is writer-starved; one step is allowed")
    func secondStepWhileContended() throws {
        let vm = try makeVM()
        whileAWriterWaits(vm) { vm.mmuLock.noteTablesRetired(10, stepBound: 513) }
        #expect(!vm.checker.saw(.writerStarved), "\(vm.checker.violations)")
        whileAWriterWaits(vm) {
            vm.mmuLock.noteTablesRetired(10, stepBound: 513)
            vm.mmuLock.noteTablesRetired(10, stepBound: 513)
        }
        #expect(vm.checker.saw(.writerStarved), "\(vm.checker.violations)")
    }

    @Test("the sync put path's unyielding zap is exempt from the waiter rule, and only it")
    func unyieldingZapIsExempt() throws {
        let vm = try makeVM(.sync)
        whileAWriterWaits(vm) {
            vm.mmuLock.withoutYieldRule {
                vm.mmuLock.noteTablesRetired(10, stepBound: 513)
                vm.mmuLock.noteTablesRetired(10, stepBound: 513)
            }
        }
        #expect(!vm.checker.saw(.writerStarved), "\(vm.checker.violations)")
    }

    @Test("a step over the bound is oversized-step")
    func oversizedStep() throws {
        let vm = try makeVM()
        vm.mmuLock.withShared { vm.mmuLock.noteTablesRetired(513, stepBound: 513) }
        #expect(!vm.checker.saw(.oversizedStep))
        vm.mmuLock.withShared { vm.mmuLock.noteTablesRetired(514, stepBound: 513) }
        #expect(vm.checker.saw(.oversizedStep), "\(vm.checker.violations)")
    }

    @Test("a yield with nothing removed since the lock was taken is no-forward-progress; after progress it is not")
    func yieldWithoutProgress() throws {
        let vm = try makeVM()
        vm.mmuLock.withShared {
            vm.mmuLock.noteProgress()
            vm.mmuLock.yieldShared()
        }
        #expect(!vm.checker.saw(.noForwardProgress), "\(vm.checker.violations)")
        _ = vm.mmuLock.withShared { vm.mmuLock.yieldShared() }
        #expect(vm.checker.saw(.noForwardProgress), "\(vm.checker.violations)")
    }

    @Test(
        "the two-pass zap of a fully populated 1 GiB region stays within the step bound",
        arguments: [ZapPolicy.async, .preserve])
    func twoPassBoundOnRealZaps(policy: ZapPolicy) throws {
        let vm = try makeVM(policy)
        let vcpu = vm.makeVCPU()
        for region in 0..<UInt64(512) { vcpu.populate2MRegion(firstFrame: region * 512) }
        vm.fastZap()
        vm.teardown()
        #expect(!vm.checker.saw(.oversizedStep), "\(vm.checker.violations)")
        #expect(vm.statistics.largestStepTables <= VirtualMachine.stepBound(policy))
    }

    @Test("the page-table audit finds mappings that outlive a zap, whatever the root's state says")
    func auditReadsTheTables() throws {
        let vm = try makeVM(.preserve)
        let vcpu = vm.makeVCPU()
        vcpu.populate2MRegion(firstFrame: 0)
        vcpu.fault(gfn: 1 << 20, size: .size2M)
        let root = try #require(vcpu.loadedRoot)
        root.advance(to: .zapped)  // the zap code's belief, not the tables' state
        vm.mmuLock.withShared { vm.auditEmpty([root], after: "a test") }
        let stale = vm.checker.violations.filter { $0.kind == .staleSPTE }
        #expect(stale.count == 1 && stale.first?.detail.hasPrefix("513 present SPTEs") == true, "\(vm.checker.violations)")
        vm.fastZap()
        #expect(vm.checker.countsByKind[.staleSPTE] == 1, "a real fast zap leaves nothing: \(vm.checker.violations)")
        vm.teardown()
    }

    @Test("a zap, put or fault on a root whose table was freed is use-after-free, before the memory is read")
    func freedRootIsNotWalked() throws {
        let vm = try makeVM(.async)
        let vcpu = vm.makeVCPU()
        vcpu.populate2MRegion(firstFrame: 0)
        let root = try #require(vcpu.loadedRoot)
        // Free the root's table behind the engine's back and reuse the page for a table full of leaves.
        #expect(vm.pool.free(root.table))
        let reused = try #require(vm.pool.allocate())
        let table = vm.pool.table(reused)
        for index in 0..<PagingGeometry.entriesPerTable {
            table.storeExclusive(index, SPTE(rawValue: SPTE.presentBit | (UInt64(1 << 30 + index) << 12)))
        }
        let zapped = vm.mmuLock.withExclusive { vm.zapRoot(root, mode: .exclusive, yieldable: true) }
        #expect(zapped == 0)
        #expect(vm.checker.saw(.useAfterFree), "\(vm.checker.violations)")
        vcpu.fault(gfn: 7)
        #expect(vm.checker.countsByKind[.useAfterFree, default: 0] >= 2, "\(vm.checker.violations)")
    }

    @Test("a get that revives a root whose last reference was put is get-after-zero; a count off the tally is refcount-mismatch")
    func referenceTally() throws {
        let vm = try makeVM(.async)
        let vcpu = vm.makeVCPU()
        vcpu.loadRoot()
        let root = try #require(vcpu.loadedRoot)
        #expect(vm.getRoot(root))
        #expect(!vm.checker.saw(.getAfterZero))
        // Drop both references in the tally only, as a put that forgot the count would: the
        // root's count says 2, the checker's tally says 0.
        root.tallyLive.store(0, ordering: .relaxed)
        #expect(vm.getRoot(root))
        #expect(vm.checker.saw(.getAfterZero), "\(vm.checker.violations)")
        root.tallyLive.store(5, ordering: .relaxed)
        vm.mmuLock.withExclusive {
            for _ in 0..<3 { vm.putRoot(root, mode: .exclusive) }
        }
        #expect(vm.checker.saw(.refcountMismatch), "\(vm.checker.violations)")
    }
}
