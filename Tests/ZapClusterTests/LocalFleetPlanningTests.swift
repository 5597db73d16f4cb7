import Testing
import ZapCluster
import ZapPlatform
import ZapRun
import ZapScenario
import ZapfleetTestSupport

/// `zapfleet run --shard --max-memory`: the limit is the process's, not the page tables'.
@Suite("Local fleet budget")
struct LocalFleetBudgetTests {
    @Test("sharded, the workers' page tables, what the process holds and each worker's allowance fit in the limit together")
    func shardedBudgetFits() throws {
        let limit: UInt64 = 3 << 30
        for held: UInt64 in [0, 40 << 20, 1 << 30] {
            for workers in [1, 2, 8] {
                let budget = LocalFleet.workerBudget(limit: limit, workers: workers, vcpus: 8, sharded: true, held: held)
                let total = budget * UInt64(workers) + held + UInt64(workers) * LocalFleet.allowanceBytes(vcpus: 8)
                #expect(total <= limit, "\(workers) workers, \(held) held: \(total) bytes planned against \(limit)")
                #expect(limit - total < UInt64(workers), "nothing left unused but rounding")
            }
        }
        #expect(LocalFleet.workerBudget(limit: 1 << 30, workers: 2, vcpus: 8, sharded: true, held: 1 << 30) == 0, "nothing left: 0")
        // Measured: this process's own memory comes off the limit.
        let measured = LocalFleet.workerBudget(limit: limit, workers: 2, vcpus: 8, sharded: true)
        #expect(measured < limit / 2 && measured > 0)
        #expect(try #require(ProcessMemory.residentBytes()) > 1 << 20, "a Swift test process holds more than a MiB")
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

/// Cutting a scenario into shards.
@Suite("Shard planning")
struct ShardPlanningTests {
    static let scenario = ScenarioFixture.fleet(name: "plan", memory: "2TiB", memslot: "2GiB")

    @Test("the fewest shards whose page tables fit, memslots in order, every memslot once", arguments: [64 << 20, 1 << 30, 3 << 30])
    func fewestThatFit(budget: UInt64) throws {
        let scenario = try ScenarioFixture.parse(Self.scenario)
        let shards = try ShardPlanner.plan(scenario, budgetBytes: budget)
        #expect(shards.allSatisfy { $0.estimatedTableBytes <= budget })
        #expect(shards.map(\.slice.slotCount).reduce(0, +) == scenario.memslotCount)
        #expect(zip(shards, shards.dropFirst()).allSatisfy { $0.slice.firstSlot + $0.slice.slotCount == $1.slice.firstSlot })
        // One memslot more in the first shard would not fit.
        let larger = MemoryEstimate.estimate(scenario, bytes: UInt64(shards[0].slice.slotCount + 1) * scenario.vm.memslotBytes)
        #expect(shards.count == 1 || larger.peakBytes > budget)
    }

    @Test(
        "balanced over equal workers: a multiple of them, sizes within one memslot of each other, each still fits",
        arguments: [(2, 1 << 30), (2, 3 << 30), (3, 3 << 30), (8, 64 << 20)])
    func balanced(workers: Int, budget: UInt64) throws {
        let scenario = try ScenarioFixture.parse(Self.scenario)
        let fewest = try ShardPlanner.plan(scenario, budgetBytes: budget)
        let shards = try ShardPlanner.plan(scenario, budgetBytes: budget, balancedOver: workers)
        #expect(shards.count % workers == 0 || shards.count == scenario.memslotCount)
        #expect(shards.count >= fewest.count && shards.count < fewest.count + workers)
        let sizes = shards.map(\.slice.slotCount)
        #expect(sizes.max()! - sizes.min()! <= 1)
        #expect(sizes.reduce(0, +) == scenario.memslotCount)
        #expect(shards.allSatisfy { $0.estimatedTableBytes <= budget })
        #expect(zip(shards, shards.dropFirst()).allSatisfy { $0.slice.firstSlot + $0.slice.slotCount == $1.slice.firstSlot })
    }

    @Test("a scenario that fits whole stays one shard, however many workers")
    func wholeStaysWhole() throws {
        let scenario = try ScenarioFixture.parse(Self.scenario)
        #expect(try ShardPlanner.plan(scenario, budgetBytes: 64 << 30, balancedOver: 4).count == 1)
    }
}
