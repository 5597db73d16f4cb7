import Testing
@testable import ZapEngine
import ZapPlatform
#if canImport(Glibc)
import Glibc
#endif

/// REMOVED_SPTE at work: a fault already inside a table that a read-lock zap unlinks must meet
/// frozen entries and retry, never install into the table on its way out.
@Suite("Faults racing read-lock zaps of valid roots")
struct FreezeRaceTests {
    @Test("a fault paused inside a 4 KiB table while dirty logging zaps it retries and maps into a new table; nothing is lost")
    func faultInsideAZappedTableRetries() throws {
        // Every step of a fault's walk waits up to 30 ms: the zap gets in between.
        let vm = try VirtualMachine(
            configuration: VMConfiguration(
                policy: .async, pageTableBudgetBytes: 256 << 20,
                chaos: ChaosConfiguration(seed: 5, probability: 1, maxDelayNanoseconds: 30_000_000, windows: [.faultWalk])))
        let vcpu = vm.makeVCPU()
        vcpu.populate2MRegion(firstFrame: 0)  // a 4 KiB table under gfn 0..511
        vcpu.reset()
        vcpu.loadRoot()
        vcpu.populate2MRegion(firstFrame: 0)
        let faulting = OSThread(name: "vcpu-racer") { vcpu.fault(gfn: 1 << 9 | 7) }
        var zapped = 0
        for _ in 0..<20 {  // keep zapping collapsible tables while the fault walks
            zapped += vm.zapCollapsibleSPTEs().sptesZappedInline
            vcpu.populate2MRegion(firstFrame: 1 << 9)
            usleep(3_000)
        }
        faulting.join()
        #expect(zapped > 0)
        vm.teardown()
        // Whatever the interleaving, every leaf installed was zapped: none went down with a table.
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
        #expect(vm.statistics.sptesInstalled == vm.statistics.sptesZapped)
    }
}
