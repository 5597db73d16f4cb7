import Testing
import ZapCluster
import ZapPlatform
import ZapRun

/// `zapfleet run --shard --max-memory`: the limit is the process's, not the page tables'.
@Suite("Local fleet budget")
struct LocalFleetBudgetTests {
    @Test("sharded, the workers' page tables, what the process holds and each worker's allowance fit in the limit together")
    func shardedBudgetFits() throws {
        let held = try #require(ProcessMemory.residentBytes())
        #expect(held > 1 << 20, "a Swift test process holds more than a MiB")
        for workers in [1, 2, 8] {
            let limit: UInt64 = 3 << 30
            let budget = LocalFleet.workerBudget(limit: limit, workers: workers, vcpus: 8, sharded: true)
            let total = budget * UInt64(workers) + held + UInt64(workers) * LocalFleet.allowanceBytes(vcpus: 8)
            #expect(total <= limit, "\(workers) workers: \(total) bytes planned against \(limit)")
            #expect(budget > limit / UInt64(workers) / 2, "the allowance does not eat the budget")
        }
    }

    @Test("a scenario that fits whole runs as one shard with the whole limit")
    func unshardedGetsTheLimit() {
        #expect(LocalFleet.workerBudget(limit: 1 << 30, workers: 2, vcpus: 8, sharded: false) == 1 << 30)
    }

    @Test("each vCPU's histograms are part of a worker's allowance")
    func allowanceGrowsWithVCPUs() {
        let recorder = UInt64(BlockTimeRecorder.footprintBytes)
        #expect(recorder > 1 << 20, "a recorder's histograms hold megabytes")
        #expect(LocalFleet.allowanceBytes(vcpus: 64) - LocalFleet.allowanceBytes(vcpus: 8) == 56 * recorder)
    }
}
