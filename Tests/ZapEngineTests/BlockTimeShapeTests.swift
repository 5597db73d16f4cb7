import Testing
import ZapEngine

/// The seed's point, as a relation rather than an absolute time: under `sync` the vCPU that
/// drops a large root's last reference waits for the whole zap; under `async` it does not.
@Suite("Block-time shape", .serialized, .timeLimit(.minutes(2)))
struct BlockTimeShapeTests {
    /// Populates `gib` GiB of 4 KiB mappings with one vCPU, resets it, and returns the reset.
    private func resetAfterPopulating(_ policy: ZapPolicy, gib: UInt64) throws -> (OperationOutcome, VirtualMachine) {
        let vm = try VirtualMachine(configuration: VMConfiguration(policy: policy, pageTableBudgetBytes: 1 << 30))
        let vcpu = vm.makeVCPU()
        for region in 0..<(gib * 512) { vcpu.populate2MRegion(firstFrame: region * 512) }
        let reset = vcpu.reset()
        vm.teardown()
        return (reset, vm)
    }

    /// The trial with the shortest block.
    private func fastestReset(_ policy: ZapPolicy, gib: UInt64, trials: Int) throws -> (OperationOutcome, VirtualMachine) {
        var best = try resetAfterPopulating(policy, gib: gib)
        for _ in 1..<trials {
            let trial = try resetAfterPopulating(policy, gib: gib)
            if trial.0.blockedNanoseconds < best.0.blockedNanoseconds { best = trial }
        }
        return best
    }

    @Test("sync reset of a 2 GiB root blocks at least 10x longer than async's, which zaps nothing itself")
    func syncBlocksAsyncReturns() throws {
        let (sync, syncVM) = try fastestReset(.sync, gib: 2, trials: 3)
        let (async, asyncVM) = try fastestReset(.async, gib: 2, trials: 9)
        #expect(sync.sptesZappedInline == 2 << 18)
        #expect(async.sptesZappedInline == 0)
        #expect(syncVM.statistics.sptesZapped == 2 << 18)
        #expect(asyncVM.statistics.sptesZapped == 2 << 18, "the worker zapped it instead")
        #expect(
            sync.blockedNanoseconds >= 10 * async.blockedNanoseconds,
            "sync \(sync.blockedNanoseconds) ns vs async \(async.blockedNanoseconds) ns")
        #expect(syncVM.checker.violations.isEmpty && asyncVM.checker.violations.isEmpty)
    }

    @Test("preserve: a reset neither zaps nor frees, so it is as cheap as async's")
    func preserveResetIsCheap() throws {
        let (sync, _) = try fastestReset(.sync, gib: 2, trials: 3)
        let (preserve, vm) = try fastestReset(.preserve, gib: 2, trials: 9)
        #expect(preserve.sptesZappedInline == 0)
        #expect(sync.blockedNanoseconds >= 10 * preserve.blockedNanoseconds)
        #expect(vm.checker.violations.isEmpty)
    }
}
