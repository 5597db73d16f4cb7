import ZapRun
import ZapScenario

/// A contiguous run of memslots handed to one worker as its own slice of the VM.
public struct Shard: Sendable, Equatable {
    /// The shard's id (its position in the plan).
    public var id: UInt64
    /// Its memslots.
    public var slice: MemorySlice
    /// Its guest memory.
    public var bytes: UInt64
    /// What its page tables need at most.
    public var estimatedTableBytes: UInt64
}

extension Shard {
    /// The shard `id` of `scenario` that covers `slice`, with its size and page-table estimate.
    init(id: UInt64, slice: MemorySlice, of scenario: Scenario) {
        let bytes = UInt64(slice.slotCount) * scenario.vm.memslotBytes
        self.init(id: id, slice: slice, bytes: bytes, estimatedTableBytes: MemoryEstimate.estimate(scenario, bytes: bytes).peakBytes)
    }
}

/// Cuts a scenario's memory into shards.
public enum ShardPlanner {
    /// Cuts `scenario`'s memslots, in order, into equal shards (the last may be smaller) as
    /// large as possible such that each one's page tables fit `budgetBytes` and its guest memory
    /// does not exceed `largestShardBytes`. Memslot boundaries are never split.
    ///
    /// With `balancedOver` equal workers, a scenario that must be cut is cut into a multiple of
    /// them, the memslots shared out evenly, so that no worker still runs a last shard while the others
    /// idle: three shards on two workers take two shards' time, four take two half-size ones'.
    /// - Throws: ``PlanError`` if not even one memslot fits.
    public static func plan(
        _ scenario: Scenario, budgetBytes: UInt64, largestShardBytes: UInt64 = .max,
        largestShardSlots: Int = .max, balancedOver workers: Int = 1
    ) throws(PlanError) -> [Shard] {
        let slotBytes = scenario.vm.memslotBytes
        let slots = scenario.memslotCount
        func fits(_ count: Int) -> Bool {
            guard count <= largestShardSlots else { return false }
            let bytes = UInt64(count) * slotBytes
            return bytes <= largestShardBytes && MemoryEstimate.estimate(scenario, bytes: bytes).peakBytes <= budgetBytes
        }
        guard fits(1) else {
            let need = MemoryEstimate.estimate(scenario, bytes: slotBytes).peakBytes
            throw PlanError(
                message:
                    "one \(Quantities.formatSize(slotBytes)) memslot needs \(Quantities.describeSize(Double(need))) of page tables, more than the smallest worker budget (\(Quantities.describeSize(Double(budgetBytes)))) or shard limit allows; give workers more --memory"
            )
        }
        // The largest count that fits: estimates grow with size, so a binary search finds it.
        var low = 1, high = slots
        while low < high {
            let middle = (low + high + 1) / 2
            if fits(middle) { low = middle } else { high = middle - 1 }
        }
        var sizes: [Int]
        let fewest = (slots + low - 1) / low
        // A scenario that fits whole stays one shard: balancing is for runs that must be cut.
        if workers > 1 && fewest > 1 {
            let count = min(slots, (fewest + workers - 1) / workers * workers)
            // Each no larger than `low`, since there are at least `fewest` of them.
            sizes = (0..<count).map { slots / count + ($0 < slots % count ? 1 : 0) }
        } else {
            sizes = stride(from: 0, to: slots, by: low).map { min(low, slots - $0) }
        }
        var shards: [Shard] = []
        var first = 0
        for count in sizes {
            shards.append(Shard(id: UInt64(shards.count), slice: MemorySlice(firstSlot: first, slotCount: count), of: scenario))
            first += count
        }
        return shards
    }
}

/// Why a scenario cannot be sharded for the workers at hand.
public struct PlanError: Error, Sendable, CustomStringConvertible {
    /// What to do about it.
    public let message: String
    /// The message.
    public var description: String { message }
}
