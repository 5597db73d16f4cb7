import Testing
import ZapfleetTestSupport
@testable import ZapEngine
import ZapPlatform

/// Race amplification makes rare interleavings happen within a short run.
@Suite("Race amplification")
struct RaceAmplificationTests {
    @Test("a late work item makes a fast zap right after a reset meet the defunct root while its item is pending")
    func lateWorkItemReachesTheDoubleQueueRace() throws {
        let vm = try VirtualMachine(
            configuration: VMConfiguration(
                policy: .async, pageTableBudgetBytes: 256 << 20, injectedBugs: [.doubleQueue],
                chaos: ChaosConfiguration(seed: 1, probability: 1, maxDelayNanoseconds: 50_000_000, windows: [.beforeWorkItem])))
        let vcpus = [vm.makeVCPU(), vm.makeVCPU()]
        for (index, vcpu) in vcpus.enumerated() { vcpu.populate2MRegion(firstFrame: UInt64(index) << 9) }
        for vcpu in vcpus { vcpu.reset() }
        vm.fastZap()
        vm.teardown()
        #expect(vm.injectedPathRuns[.doubleQueue, default: 0] > 0)
        #expect(vm.checker.saw(.doubleQueue), "\(vm.checker.violations)")
    }

    @Test("the same seed gives every thread the same delays")
    func sameSeedSameDelays() {
        func delays(seed: UInt64) -> [UInt64] {
            let amplifier = RaceAmplifier(ChaosConfiguration(seed: seed, probability: 0.5, maxDelayNanoseconds: 1_000))
            let log = Log<UInt64>()
            let thread = OSThread(name: "vcpu1") {
                for _ in 0..<20 {
                    let start = monotonicNanoseconds()
                    amplifier.pass(.faultWalk)
                    log.append(monotonicNanoseconds() - start > 0 ? 1 : 0)
                }
                log.append(amplifier.draws(count: 8).reduce(0, &+))
            }
            thread.join()
            return [log.all.last!]
        }
        #expect(delays(seed: 9) == delays(seed: 9))
        #expect(delays(seed: 9) != delays(seed: 10))
    }
}
