import Atomics
import CLinuxScheduling
#if canImport(Glibc)
import Glibc
#endif

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

/// The calling thread's CPU, CPU time and affinity.
public enum CPUAccounting {
    /// CPUs the system has (`_SC_NPROCESSORS_CONF`), at least 1 and at most 4096.
    public static let configuredCPUs: Int = min(4096, max(1, sysconf(Int32(_SC_NPROCESSORS_CONF))))

    /// CPUs this process may run on now.
    public static var onlineCPUs: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// The CPU the calling thread runs on (`sched_getcpu`), or -1.
    public static func currentCPU() -> Int { Int(zf_current_cpu()) }

    /// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`), in nanoseconds.
    public static func threadCPUNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }

    /// Pins the calling thread to `cpu` (`sched_setaffinity`). Returns false when the system
    /// refuses (the CPU is not in the process's set, e.g. under a container's cpuset).
    @discardableResult
    public static func pinCallingThread(to cpu: Int) -> Bool {
        guard let cpu = Int32(exactly: cpu) else { return false }
        return zf_pin_calling_thread(cpu) == 0
    }
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
