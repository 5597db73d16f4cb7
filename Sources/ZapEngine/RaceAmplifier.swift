import ZapPlatform
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A window in which two of the engine's actors can race, where a delay makes the race likely.
public enum RaceWindow: String, CaseIterable, Sendable, Codable, CustomStringConvertible {
    /// Before a workqueue worker takes a pending item: the item stays pending, so a fast zap
    /// meets a defunct root whose work has not started.
    case beforeWorkItem = "before-work-item"
    /// At a zap's step boundary, before it accounts the step and looks for waiters.
    case zapStep = "zap-step"
    /// Between giving `mmu_lock` up and taking it back in a yield.
    case lockHandoff = "lock-handoff"
    /// Between the levels of a fault's walk under the read lock, and while a fault holds a huge
    /// leaf frozen to replace it (the kernel's TLB flush).
    case faultWalk = "fault-walk"
    /// Between the levels of a lockless (RCU-only) walk.
    case locklessWalk = "lockless-walk"
    /// Between filling the table that splits a huge page and linking it in the leaf's place.
    case hugePageSplit = "huge-page-split"

    /// The window's name, as scenario files and `--chaos` take it.
    public var description: String { rawValue }

    /// The window's position in `allCases`, without a search on the hot path.
    var ordinal: Int {
        switch self {
        case .beforeWorkItem: 0
        case .zapStep: 1
        case .lockHandoff: 2
        case .faultWalk: 3
        case .locklessWalk: 4
        case .hugePageSplit: 5
        }
    }
}

/// Race amplification: seeded, bounded delays at the race windows, so that races the kernel
/// meets once in a blue moon happen within a short run.
///
/// Each thread draws its delays from its own generator, seeded by the chaos seed and the
/// thread's name (`vcpu3`, `kvm-vm/1`): the same seed gives every actor the same sequence of
/// delays.
public struct ChaosConfiguration: Sendable, Equatable, Codable {
    /// Seed of every thread's delay sequence.
    public var seed: UInt64
    /// Chance, per passage through a window, of a delay (0...1).
    public var probability: Double
    /// The longest delay, in nanoseconds; each delay is uniform in 0...this.
    public var maxDelayNanoseconds: UInt64
    /// The windows that delay; the others pass straight through.
    public var windows: Set<RaceWindow>

    /// A configuration; by default every window, one passage in ten, up to 200 µs.
    public init(
        seed: UInt64 = 1, probability: Double = 0.1, maxDelayNanoseconds: UInt64 = 200_000,
        windows: Set<RaceWindow> = Set(RaceWindow.allCases)
    ) {
        self.seed = seed
        self.probability = probability
        self.maxDelayNanoseconds = maxDelayNanoseconds
        self.windows = windows
    }
}

extension ChaosConfiguration {
    /// A problem with a `--chaos` value, in words.
    public struct ParseError: Error, CustomStringConvertible {
        /// What is wrong and what to write instead.
        public var description: String
    }

    /// Parses `off`, `PROBABILITY` or `PROBABILITY,MAX-DELAY` (`0.05`, `0.2,1ms`, `1,500us`;
    /// units ns, us, ms) for the given seed; nil for `off` or a probability of 0.
    public static func parse(_ text: String, seed: UInt64) throws -> ChaosConfiguration? {
        let trimmed = String(text.lowercased().filter { $0 != " " })
        if trimmed == "off" || trimmed == "none" { return nil }
        let parts = trimmed.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= 2, let probability = Double(parts[0]), probability.isFinite, probability >= 0, probability <= 1 else {
            throw ParseError(description: "'\(text)' is not off, PROBABILITY (0 to 1) or PROBABILITY,MAX-DELAY (e.g. 0.05 or 0.2,1ms)")
        }
        if probability == 0 { return nil }
        var delay: UInt64 = 100_000
        if parts.count == 2 {
            guard let parsed = parseShortDuration(parts[1]) else {
                throw ParseError(description: "max delay '\(parts[1])' is not a whole number of ns, us or ms up to 1 s (e.g. 200us)")
            }
            delay = parsed
        }
        return ChaosConfiguration(seed: seed, probability: probability, maxDelayNanoseconds: delay)
    }
}

/// A whole number of `ns`, `us` (or `µs`) or `ms` up to one second, in nanoseconds; nil otherwise.
func parseShortDuration(_ text: String) -> UInt64? {
    let units: [(String, UInt64)] = [("ns", 1), ("us", 1_000), ("µs", 1_000), ("ms", 1_000_000)]
    guard let (suffix, scale) = units.first(where: { text.hasSuffix($0.0) }),
        let value = UInt64(text.dropLast(suffix.count)), value <= 1_000_000_000 / scale
    else { return nil }
    return value * scale
}

/// Applies a ``ChaosConfiguration`` at the windows a VM passes through.
final class RaceAmplifier: @unchecked Sendable {
    private let configuration: ChaosConfiguration
    private let threshold: UInt64
    private let enabled: [Bool]
    private let key: pthread_key_t

    init(_ configuration: ChaosConfiguration) {
        self.configuration = configuration
        let probability = min(1, max(0, configuration.probability))
        threshold = probability >= 1 ? .max : UInt64(probability * Double(UInt64.max))
        enabled = RaceWindow.allCases.map { configuration.windows.contains($0) }
        assert(RaceWindow.allCases.enumerated().allSatisfy { $0.offset == $0.element.ordinal })
        var key = pthread_key_t()
        pthread_key_create(&key) { pointer in pointer?.deallocate() }
        self.key = key
    }

    deinit { pthread_key_delete(key) }

    /// The calling thread passes through `window`: maybe it waits a while.
    @inline(__always)
    func pass(_ window: RaceWindow) {
        guard enabled[window.ordinal] else { return }
        let generator = threadGenerator()
        guard generator.pointee.next() <= threshold else { return }
        let delay = configuration.maxDelayNanoseconds == 0 ? 0 : generator.pointee.next() % (configuration.maxDelayNanoseconds + 1)
        wait(delay)
    }

    /// The next `count` raw draws of the calling thread's generator (for tests of determinism).
    func draws(count: Int) -> [UInt64] {
        let generator = threadGenerator()
        return (0..<count).map { _ in generator.pointee.next() }
    }

    private func threadGenerator() -> UnsafeMutablePointer<SplitMix64> {
        if let existing = pthread_getspecific(key) { return existing.assumingMemoryBound(to: SplitMix64.self) }
        let generator = UnsafeMutablePointer<SplitMix64>.allocate(capacity: 1)
        generator.initialize(to: SplitMix64(seed: configuration.seed ^ stableHash(currentThreadName())))
        pthread_setspecific(key, generator)
        return generator
    }

    /// Short delays spin (a sleep would last far longer than asked); long ones sleep.
    private func wait(_ nanoseconds: UInt64) {
        if nanoseconds < 20_000 {
            let end = monotonicNanoseconds() &+ nanoseconds
            while monotonicNanoseconds() < end { yieldProcessor() }
        } else {
            var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
            nanosleep(&request, nil)
        }
    }
}

/// The thread's ``OSThread`` name; other threads (a runner's own) share one sequence name.
private func currentThreadName() -> String { OSThread.currentName ?? "caller" }

/// FNV-1a: stable across processes, unlike `Hasher`.
private func stableHash(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    return hash
}
