import Atomics
import ZapPlatform

/// Where zap work runs: CPU time spent in whole-root zaps, by the CPU that ran it. An unbound
/// workqueue's workers run on any CPU; `sync` and `preserve` zap on the caller's own (the
/// trade-off behind v6.6's commit 0df9dab891ff: docs/model.md, "CPU interference").
final class ZapCPUTime: @unchecked Sendable {
    private let byCPU: [ManagedAtomic<Int>]
    /// Whole-root zaps running now, and the most at once since ``resetPeak()``.
    private let running = ManagedAtomic<Int>(0)
    let peakRunning = ManagedAtomic<Int>(0)

    /// A zap starts: counted among those running at once.
    func zapStarted() { peakRunning.raise(to: running.wrappingIncrementThenLoad(ordering: .relaxed)) }

    /// A zap ended after `nanoseconds` of CPU time on the calling thread.
    func zapEnded(cpuNanoseconds nanoseconds: Int) {
        running.wrappingDecrement(ordering: .relaxed)
        add(nanoseconds)
    }

    /// Starts a new peak from the zaps running now.
    func resetPeak() { peakRunning.store(running.load(ordering: .relaxed), ordering: .relaxed) }

    init() {
        byCPU = (0..<CPUAccounting.configuredCPUs).map { _ in ManagedAtomic<Int>(0) }
    }

    /// Adds `nanoseconds` of the calling thread's CPU time to the CPU it is on now (a thread that
    /// migrated during the zap is counted where it ended).
    func add(_ nanoseconds: Int) {
        let cpu = CPUAccounting.currentCPU()
        guard cpu >= 0 && cpu < byCPU.count else { return }
        byCPU[cpu].wrappingIncrement(by: nanoseconds, ordering: .relaxed)
    }

    /// Nanoseconds by CPU number.
    var snapshot: [Int] { byCPU.map { $0.load(ordering: .relaxed) } }
}

extension VirtualMachine {
    /// CPU time spent in whole-root zaps so far, by CPU number: where each policy ran its zap work.
    public var zapCPUNanoseconds: [Int] { zapCPUTime.snapshot }

    /// The most whole-root zaps that ran at once since the last ``resetZapConcurrencyPeak()``:
    /// several under `async`'s unbound workqueue, one under `sync` and `preserve`, whose caller zaps.
    public var zapConcurrencyPeak: Int { zapCPUTime.peakRunning.load(ordering: .relaxed) }

    /// Starts a new ``zapConcurrencyPeak`` from the zaps running now.
    public func resetZapConcurrencyPeak() { zapCPUTime.resetPeak() }
}
