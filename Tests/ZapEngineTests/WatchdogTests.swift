import Testing
import ZapfleetTestSupport
@testable import ZapEngine
import ZapPlatform
#if canImport(Glibc)
import Glibc
#endif

/// The watchdog turns "no progress for a bound while an operation is in flight" into a
/// `livelock` verdict naming the stuck actors, and stuck retry loops give up once it has.
@Suite("The watchdog turns hangs into a livelock verdict")
struct WatchdogTests {
    private func makeVM(bound: UInt64, _ policy: ZapPolicy = .async) throws -> VirtualMachine {
        try VirtualMachine(
            configuration: VMConfiguration(
                policy: policy, workqueueWidth: 1, pageTableBudgetBytes: 512 << 20, stallBoundNanoseconds: bound))
    }

    @Test("a fault that waits for mmu_lock forever is a livelock naming the vCPU and the lock")
    func faultBlockedOnTheLock() throws {
        let vm = try makeVM(bound: 300_000_000)
        let vcpu = vm.makeVCPU()
        vcpu.loadRoot()
        vm.mmuLock.lockExclusive()  // a holder that never lets go (until the test does)
        let faulting = OSThread(name: "vcpu0") { vcpu.fault(gfn: 42) }
        #expect(eventually { vm.isStalled })
        let violation = vm.checker.violations.first { $0.kind == .livelock }
        #expect(violation?.detail.contains("vCPU 0: a page fault") == true, "\(vm.checker.violations)")
        #expect(violation?.detail.contains("waiting for mmu_lock (read)") == true, "\(vm.checker.violations)")
        vm.mmuLock.unlockExclusive()
        faulting.join()
        vm.teardown()
    }

    @Test("a fault that retries past a frozen entry forever is a livelock, and then gives up")
    func faultSpinningOnAFrozenEntry() throws {
        let vm = try makeVM(bound: 300_000_000)
        let vcpu = vm.makeVCPU()
        vcpu.loadRoot()
        let root = try #require(vcpu.loadedRoot)
        // A zap that froze the root entry covering gfn 0 and never finished.
        vm.pool.table(root.table).store(0, .removed)
        let outcome = vcpu.fault(gfn: 0)  // returns only because the watchdog said so
        #expect(outcome.sptesInstalled == 0)
        let violation = vm.checker.violations.first { $0.kind == .livelock }
        #expect(violation?.detail.contains("retrying past a frozen (REMOVED_SPTE) entry") == true, "\(vm.checker.violations)")
        vm.pool.table(root.table).store(0, .nonPresent)
        vm.teardown()
    }

    @Test("an idle VM, and a busy one that makes progress, are never called stuck")
    func noFalseAlarm() throws {
        let idle = try makeVM(bound: 100_000_000)
        idle.makeVCPU().loadRoot()
        usleep(400_000)
        #expect(!idle.isStalled)
        idle.teardown()

        let report = try ConcurrencyStress(
            vm: VMConfiguration(policy: .async, pageTableBudgetBytes: 1 << 30, stallBoundNanoseconds: 5_000_000_000),
            vcpus: 3, operationsPerVCPU: 300, fastZaps: 8, seed: 7
        ).run()
        #expect(report.violationCounts[.livelock] == nil, "\(report.violations)")
        #expect(report.threadsAbandoned == 0)
    }

    @Test("a runner gives up on a thread stuck in the VM once the watchdog has spoken, and keeps the VM alive")
    func runnerAbandonsStuckThread() throws {
        let vm = try makeVM(bound: 200_000_000)
        let vcpu = vm.makeVCPU()
        vcpu.loadRoot()
        vm.mmuLock.lockExclusive()
        let stuck = OSThread(name: "vcpu0") { vcpu.fault(gfn: 7) }
        #expect(!stuck.join(giveUpWhen: { vm.shouldAbandonThreads(grace: 100_000_000) }))
        #expect(vm.checker.saw(.livelock))
        vm.keepAliveForStuckThreads()
        vm.mmuLock.unlockExclusive()  // lets the detached thread finish before the process ends
    }
}
