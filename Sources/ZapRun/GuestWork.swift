import Atomics
import ZapEngine
import ZapPlatform
#if canImport(Glibc)
import Glibc
#endif

/// Guest run time lost to zap work, per policy: what v6.6 weighed against `async`'s gain
/// (commit 0df9dab891ff: an unbound worker "occupying all logical CPUs for ~8ms" on a memslot
/// deletion, audio blips on ChromeOS). docs/measurements.md, "CPU interference".
public struct CPUInterference: Sendable, Codable, Equatable {
    /// One vCPU's guest work while the VM zapped.
    public struct VCPUShare: Sendable, Codable, Equatable {
        /// The vCPU.
        public var vcpu: Int
        /// The CPU its guest-work thread was pinned to (-1: pinning refused).
        public var cpu: Int
        /// Wall time it ran guest work.
        public var guestNs: UInt64
        /// Of that, time it was runnable but not running (wall − its CPU time), as steal time is.
        public var lostNs: UInt64
        /// Units of guest work done (each a fixed loop of arithmetic).
        public var units: UInt64

        /// A share.
        public init(vcpu: Int, cpu: Int, guestNs: UInt64, lostNs: UInt64, units: UInt64) {
            self.vcpu = vcpu
            self.cpu = cpu
            self.guestNs = guestNs
            self.lostNs = lostNs
            self.units = units
        }
    }

    /// Per vCPU, over every step in which the VM zapped.
    public var vcpus: [VCPUShare] = []
    /// Guest work with nothing else of the run going on (before the first such step): the
    /// machine's own noise, to read the lost time against.
    public var quietGuestNs: UInt64 = 0
    /// Time lost in the quiet window.
    public var quietLostNs: UInt64 = 0
    /// CPU time of whole-root zaps by CPU number, as text (CPUs with none left out).
    public var zapCpuNs: [String: UInt64] = [:]
    /// Memslot deletions (fast zaps) measured.
    public var memslotDeletions: Int = 0
    /// CPU time of the zaps the deletions waited for, in total.
    public var deletionZapCpuNs: UInt64 = 0
    /// The most zap CPU time one deletion took.
    public var deletionZapCpuNsMax: UInt64 = 0
    /// The most CPUs that did zap work during one deletion.
    public var deletionCpusMax: Int = 0
    /// The most whole-root zaps that ran at once during one deletion.
    public var deletionParallelZapsMax: Int = 0

    /// Nothing measured.
    public init() {}

    /// Lost time over guest time during zaps, in percent.
    public var lostPercent: Double {
        let guest = vcpus.reduce(UInt64(0)) { $0 &+ $1.guestNs }
        return guest == 0 ? 0 : Double(vcpus.reduce(UInt64(0)) { $0 &+ $1.lostNs }) * 100 / Double(guest)
    }

    /// Lost time over guest time in the quiet window, in percent.
    public var quietLostPercent: Double { quietGuestNs == 0 ? 0 : Double(quietLostNs) * 100 / Double(quietGuestNs) }

    /// Two shards' figures together: per vCPU and per CPU summed (CPU numbers are each worker's
    /// own), deletions summed, maxima kept.
    public func adding(_ other: CPUInterference) -> CPUInterference {
        var sum = self
        for share in other.vcpus {
            if let index = sum.vcpus.firstIndex(where: { $0.vcpu == share.vcpu }) {
                sum.vcpus[index].guestNs &+= share.guestNs
                sum.vcpus[index].lostNs &+= share.lostNs
                sum.vcpus[index].units &+= share.units
            } else {
                sum.vcpus.append(share)
            }
        }
        sum.vcpus.sort { $0.vcpu < $1.vcpu }
        sum.quietGuestNs &+= other.quietGuestNs
        sum.quietLostNs &+= other.quietLostNs
        sum.zapCpuNs.merge(other.zapCpuNs, uniquingKeysWith: &+)
        sum.memslotDeletions &+= other.memslotDeletions
        sum.deletionZapCpuNs &+= other.deletionZapCpuNs
        sum.deletionZapCpuNsMax = max(deletionZapCpuNsMax, other.deletionZapCpuNsMax)
        sum.deletionCpusMax = max(deletionCpusMax, other.deletionCpusMax)
        sum.deletionParallelZapsMax = max(deletionParallelZapsMax, other.deletionParallelZapsMax)
        return sum
    }

    /// Adds one step's guest work, vCPU by vCPU.
    mutating func addGuestWork(_ shares: [VCPUShare]) {
        var step = CPUInterference()
        step.vcpus = shares
        self = adding(step)
    }

    /// Adds the zap CPU time between two snapshots of ``VirtualMachine/zapCPUNanoseconds`` as one
    /// memslot deletion's, during which at most `parallelZaps` whole-root zaps ran at once.
    mutating func addDeletion(before: [Int], after: [Int], parallelZaps: Int = 0) {
        deletionParallelZapsMax = max(deletionParallelZapsMax, parallelZaps)
        let used = zip(before, after).map { UInt64(max(0, $1 - $0)) }
        let total = used.reduce(0, &+)
        memslotDeletions += 1
        deletionZapCpuNs &+= total
        deletionZapCpuNsMax = max(deletionZapCpuNsMax, total)
        deletionCpusMax = max(deletionCpusMax, used.filter { $0 > 0 }.count)
    }
}

/// Guest work on every vCPU while the VM zaps: one thread per vCPU, pinned to CPU `vcpu mod
/// CPUs`, spinning through fixed units of arithmetic until stopped. A thread that spins is always
/// runnable, so the wall time it did not run (wall − its CPU time) is time taken by something
/// else on its CPU: the zap work, wherever the policy ran it, or the machine's own noise.
final class GuestWork: @unchecked Sendable {
    private let stopped = ManagedAtomic<Bool>(false)
    private let started = ManagedAtomic<Int>(0)
    private let results: [ManagedAtomic<UInt64>]  // per vCPU: cpu+1, wall, cpu time, units
    private var threads: [OSThread] = []
    private let vcpus: Int
    private let sink = ManagedAtomic<UInt64>(0)

    /// The CPU the VM's own thread (the VMM task) is pinned to while guest work runs: the last.
    /// vCPUs fill CPUs from the first, so with fewer vCPUs than CPUs it is a CPU of its own.
    static var vmmCPU: Int { CPUAccounting.onlineCPUs - 1 }

    /// Starts guest work on `vcpus` vCPUs and returns once every thread runs.
    init(vcpus: Int) {
        self.vcpus = vcpus
        results = (0..<vcpus * 4).map { _ in ManagedAtomic<UInt64>(0) }
        let cpus = CPUAccounting.onlineCPUs
        threads = (0..<vcpus).map { vcpu in
            OSThread(name: "guest\(vcpu)") { [stopped, started, results, sink] in
                let cpu = vcpu % cpus
                let pinned = CPUAccounting.pinCallingThread(to: cpu)
                started.wrappingIncrement(ordering: .releasing)
                let wallStart = monotonicNanoseconds()
                let cpuStart = CPUAccounting.threadCPUNanoseconds()
                var units: UInt64 = 0
                var state: UInt64 = UInt64(vcpu) &+ 1
                while !stopped.load(ordering: .relaxed) {
                    // One unit: a dependent chain the compiler cannot fold (about a microsecond).
                    for _ in 0..<1000 { state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407 }
                    units &+= 1
                }
                sink.store(state, ordering: .relaxed)  // the work's result is used: it is not optimised away
                results[vcpu * 4].store(pinned ? UInt64(cpu + 1) : 0, ordering: .relaxed)
                results[vcpu * 4 + 1].store(monotonicNanoseconds() &- wallStart, ordering: .relaxed)
                results[vcpu * 4 + 2].store(CPUAccounting.threadCPUNanoseconds() &- cpuStart, ordering: .relaxed)
                results[vcpu * 4 + 3].store(units, ordering: .relaxed)
            }
        }
        while started.load(ordering: .acquiring) < vcpus { sched_yield() }
    }

    /// Stops every thread and returns what each did.
    func stop() -> [CPUInterference.VCPUShare] {
        stopped.store(true, ordering: .relaxed)
        for thread in threads { thread.join() }
        threads = []
        return (0..<vcpus).map { vcpu in
            let wall = results[vcpu * 4 + 1].load(ordering: .relaxed)
            let cpuTime = results[vcpu * 4 + 2].load(ordering: .relaxed)
            return CPUInterference.VCPUShare(
                vcpu: vcpu, cpu: Int(results[vcpu * 4].load(ordering: .relaxed)) - 1, guestNs: wall,
                lostNs: wall > cpuTime ? wall - cpuTime : 0, units: results[vcpu * 4 + 3].load(ordering: .relaxed))
        }
    }
}
