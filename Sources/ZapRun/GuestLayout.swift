import ZapEngine
import ZapPlatform
import ZapScenario

/// A contiguous run of memslots: the whole VM for a local run, one shard on the fleet.
public struct MemorySlice: Sendable, Codable, Equatable, CustomStringConvertible {
    /// First memslot of the slice.
    public var firstSlot: Int
    /// Memslots in the slice.
    public var slotCount: Int

    /// A slice of `slotCount` memslots from `firstSlot`.
    public init(firstSlot: Int, slotCount: Int) {
        self.firstSlot = firstSlot
        self.slotCount = slotCount
    }

    /// Every memslot of `scenario`.
    public static func whole(_ scenario: Scenario) -> MemorySlice {
        MemorySlice(firstSlot: 0, slotCount: scenario.memslotCount)
    }

    /// `slots 0..<16`.
    public var description: String { "slots \(firstSlot)..<\(firstSlot + slotCount)" }
}

/// Where each vCPU works and how each 2 MiB region is mapped, derived from the scenario and its
/// seed alone, so that every run of the same scenario (and every shard) makes the same choices.
struct GuestLayout {
    let scenario: Scenario
    let slice: MemorySlice
    /// 2 MiB regions per memslot.
    let regionsPerSlot: Int
    /// Global index of the slice's first region.
    let firstRegion: Int
    /// Regions in the slice.
    let regionCount: Int
    private let mix: PageMix

    init(scenario: Scenario, slice: MemorySlice) {
        self.scenario = scenario
        self.slice = slice
        regionsPerSlot = Int(scenario.vm.memslotBytes >> 21)
        firstRegion = slice.firstSlot * regionsPerSlot
        regionCount = slice.slotCount * regionsPerSlot
        mix = scenario.vm.effectivePageMix
    }

    /// The guest frames of memslot `slot` (a global index).
    func frames(ofSlot slot: Int) -> Range<UInt64> {
        let first = UInt64(slot * regionsPerSlot) << 9
        return first..<(first + (UInt64(regionsPerSlot) << 9))
    }

    /// Global region indices vCPU `vcpu` covers.
    func part(of vcpu: Int) -> Range<Int> {
        let vcpus = scenario.workload.vcpus
        let lower = firstRegion + regionCount * vcpu / vcpus
        let upper = firstRegion + regionCount * (vcpu + 1) / vcpus
        return lower..<upper
    }

    /// The memslot a global region belongs to.
    func slot(ofRegion region: Int) -> Int { region / regionsPerSlot }

    /// How region `region` is mapped; nil when it lies inside a 1 GiB page mapped from the
    /// chunk's first region.
    func pageSize(ofRegion region: Int) -> PageSize? {
        let chunk = region / 512
        if mix.fraction1G > 0 && unitInterval(scenario.seed ^ 0x1_0000_0000, UInt64(chunk)) < mix.fraction1G {
            return region % 512 == 0 ? .size1G : nil
        }
        let rest = 1 - mix.fraction1G
        if mix.fraction2M > 0 && unitInterval(scenario.seed ^ 0x2_0000_0000, UInt64(region)) * rest < mix.fraction2M {
            return .size2M
        }
        return .size4K
    }

    /// SMRAM regions (global indices from 0) that vCPU `vcpu` maps in SMM, if it runs in SMM:
    /// the odd-numbered vCPUs do, sharing SMRAM, and only in the slice holding memslot 0.
    func smramPart(of vcpu: Int) -> Range<Int>? {
        guard scenario.vm.smm, vcpu % 2 == 1, slice.firstSlot == 0 else { return nil }
        let smmVCPUs = scenario.workload.vcpus / 2
        let regions = Int(scenario.vm.smramBytes >> 21)
        let index = vcpu / 2
        return (regions * index / smmVCPUs)..<(regions * (index + 1) / smmVCPUs)
    }

    private func unitInterval(_ seed: UInt64, _ value: UInt64) -> Double {
        var generator = SplitMix64(seed: seed ^ (value &* 0x9E37_79B9_7F4A_7C15))
        return Double(generator.next() >> 11) / Double(1 << 53)
    }
}

/// A bijection of `0..<count` without storage: an affine map modulo `count` whose multiplier is
/// coprime with it, so a vCPU can cover terabytes in a seeded random order.
struct Permutation {
    let count: Int
    private let multiplier: Int
    private let offset: Int

    init(count: Int, seed: UInt64, shuffled: Bool) {
        self.count = max(count, 1)
        guard shuffled, count > 1 else {
            multiplier = 1
            offset = 0
            return
        }
        var generator = SplitMix64(seed: seed)
        var candidate = Int(generator.next() % UInt64(count)) | 1
        while gcd(candidate, count) != 1 { candidate += 2 }
        multiplier = candidate % count == 0 ? 1 : candidate
        offset = Int(generator.next() % UInt64(count))
    }

    subscript(index: Int) -> Int {
        Int((UInt64(index) &* UInt64(multiplier) &+ UInt64(offset)) % UInt64(count))
    }
}

private func gcd(_ a: Int, _ b: Int) -> Int {
    var (x, y) = (a, b)
    while y != 0 { (x, y) = (y, x % y) }
    return x
}
