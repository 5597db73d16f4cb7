import ZapPlatform
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A randomised, bounded workout of one VM: vCPU threads fault (through the slow path under
/// `mmu_lock` and the lockless fast path), reset and switch address spaces while another thread
/// deletes memslots (fast zaps), releases the MMU notifier (full zaps) and runs dirty logging's
/// read-lock iterators on the valid roots (splitting huge pages, write-protecting, clearing dirty
/// bits, zapping collapsible tables), with the VM's NX recovery thread if it is configured; then
/// the VM is torn down and checked.
public struct ConcurrencyStress: Sendable {
    /// The VM to build.
    public var vm: VMConfiguration
    /// vCPU threads.
    public var vcpus: Int
    /// Operations each vCPU performs.
    public var operationsPerVCPU: Int
    /// Fast zaps the VM thread performs while the vCPUs run.
    public var fastZaps: Int
    /// Full zaps among them (each replaces a fast zap).
    public var fullZaps: Int
    /// Guest frames (4 KiB) the vCPUs fault into; rounded up to a whole 1 GiB.
    public var guestFrames: UInt64
    /// Whether vCPUs also enter SMM, so that two address spaces have roots.
    public var useSMM: Bool
    /// Seed of every thread's operation sequence.
    public var seed: UInt64
    /// A bound on the vCPU phase, whatever the operation counts.
    public var timeLimitNanoseconds: UInt64

    /// A workout with sizes that finish in seconds in a debug build.
    public init(
        vm: VMConfiguration, vcpus: Int = 3, operationsPerVCPU: Int = 400, fastZaps: Int = 12,
        fullZaps: Int = 2, guestFrames: UInt64 = 1 << 18, useSMM: Bool = true, seed: UInt64 = 1,
        timeLimitNanoseconds: UInt64 = 20_000_000_000
    ) {
        self.vm = vm
        self.vcpus = vcpus
        self.operationsPerVCPU = operationsPerVCPU
        self.fastZaps = fastZaps
        self.fullZaps = fullZaps
        self.guestFrames = guestFrames
        self.useSMM = useSMM
        self.seed = seed
        self.timeLimitNanoseconds = timeLimitNanoseconds
    }

    /// The longest block each kind of operation caused, in nanoseconds.
    public struct LongestBlocks: Sendable, Equatable {
        /// Any fault (single or 2 MiB batch).
        public var fault: UInt64 = 0
        /// vCPU reset.
        public var reset: UInt64 = 0
        /// Fast zap, as its caller saw it.
        public var fastZap: UInt64 = 0
        /// Full zap.
        public var fullZap: UInt64 = 0
        /// Dirty-log operations (clearing dirty bits, zapping collapsible tables).
        public var dirtyLog: UInt64 = 0
        /// MMU-notifier unmaps.
        public var unmap: UInt64 = 0
        /// Teardown.
        public var teardown: UInt64 = 0

        /// All zero.
        public init() {}

        /// Keeps, for each operation, the longer of the two blocks.
        public mutating func merge(_ other: LongestBlocks) {
            fault = max(fault, other.fault)
            reset = max(reset, other.reset)
            fastZap = max(fastZap, other.fastZap)
            fullZap = max(fullZap, other.fullZap)
            dirtyLog = max(dirtyLog, other.dirtyLog)
            unmap = max(unmap, other.unmap)
            teardown = max(teardown, other.teardown)
        }
    }

    /// What a workout found.
    public struct Report: Sendable {
        /// Every violation kept by the checker (up to its retention limit).
        public var violations: [Violation]
        /// Every violation seen, by kind, including those beyond the retention limit.
        public var violationCounts: [Violation.Kind: Int]
        /// The VM's counters after teardown.
        public var statistics: EngineStatistics
        /// Longest blocks by operation.
        public var longest: LongestBlocks
        /// Operations the vCPUs completed (fewer than asked if the time limit struck).
        public var operationsCompleted: Int
        /// Threads left stuck inside the VM after the watchdog reported a livelock (the VM was
        /// then not torn down).
        public var threadsAbandoned: Int = 0
    }

    /// Runs the workout on real threads and returns what the checker saw.
    public func run() throws -> Report {
        let machine = try VirtualMachine(configuration: vm)
        let frames = max(1 << 18, (guestFrames + (1 << 18) - 1) & ~((1 << 18) - 1))
        let deadline = monotonicNanoseconds() &+ timeLimitNanoseconds
        let results = ResultSlots(count: vcpus + 1)

        var threads: [OSThread] = []
        for index in 0..<vcpus {
            let vcpu = machine.makeVCPU()
            let threadSeed = seed &+ UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15
            let operations = operationsPerVCPU
            let smm = useSMM
            threads.append(
                OSThread(name: "vcpu\(index)") {
                    var rng = SplitMix64(seed: threadSeed)
                    var longest = LongestBlocks()
                    var done = 0
                    for _ in 0..<operations {
                        if monotonicNanoseconds() > deadline { break }
                        let dice = rng.next() % 100
                        let frame = rng.next() % frames
                        switch dice {
                        case 0..<40:
                            longest.fault = max(longest.fault, vcpu.populate2MRegion(firstFrame: frame).blockedNanoseconds)
                        case 40..<62:
                            // One in three as under dirty logging: a huge page in the way is split.
                            longest.fault = max(
                                longest.fault,
                                vcpu.fault(
                                    gfn: frame, size: .size4K, write: dice & 1 == 0,
                                    replacingHugePages: dice % 3 == 0
                                ).blockedNanoseconds)
                        case 62..<75:
                            longest.fault = max(longest.fault, vcpu.fastFault(gfn: frame, write: dice & 1 == 0).blockedNanoseconds)
                        case 75..<82:
                            longest.fault = max(longest.fault, vcpu.fault(gfn: frame, size: .size2M).blockedNanoseconds)
                        case 82..<85:
                            longest.fault = max(longest.fault, vcpu.fault(gfn: frame, size: .size1G).blockedNanoseconds)
                        case 85..<95:
                            longest.reset = max(longest.reset, vcpu.reset().blockedNanoseconds)
                        default:
                            if smm {
                                let space: AddressSpace = vcpu.addressSpace == .normal ? .smm : .normal
                                longest.reset = max(longest.reset, vcpu.switchAddressSpace(to: space).blockedNanoseconds)
                            } else {
                                vcpu.loadRoot()
                            }
                        }
                        done += 1
                    }
                    results.store(index, longest: longest, operations: done)
                })
        }

        let zapCount = fastZaps
        let fullCount = fullZaps
        let zapSeed = seed
        let vcpusRunning = results
        let zapper = OSThread(name: "vm-zapper") {
            var rng = SplitMix64(seed: zapSeed ^ 0x5A0)
            var longest = LongestBlocks()
            for index in 0..<zapCount {
                // Space the zaps out over the vCPUs' run.
                usleep(UInt32(200 + rng.next() % 1500))
                if vcpusRunning.finishedCount >= vcpusRunning.count - 1 && index > 0 { break }
                let stride = max(1, zapCount / max(1, fullCount))
                if fullCount > 0 && index % stride == stride - 1 {
                    longest.fullZap = max(longest.fullZap, machine.fullZap().blockedNanoseconds)
                } else {
                    longest.fastZap = max(longest.fastZap, machine.fastZap().blockedNanoseconds)
                }
                // Dirty logging between memslot operations, racing the vCPUs in valid roots.
                usleep(UInt32(100 + rng.next() % 800))
                switch rng.next() % 4 {
                case 0:
                    longest.dirtyLog = max(longest.dirtyLog, machine.clearDirtyLog().blockedNanoseconds)
                case 3:
                    longest.dirtyLog = max(longest.dirtyLog, machine.enableDirtyLog().blockedNanoseconds)
                case 1:
                    longest.dirtyLog = max(longest.dirtyLog, machine.zapCollapsibleSPTEs().blockedNanoseconds)
                default:
                    // Host memory of 2 MiB to 1 GiB goes away, 2 MiB-aligned: every root loses it.
                    let length = UInt64(512) << (rng.next() % 10)
                    let first = (rng.next() % frames) & ~511
                    longest.unmap = max(longest.unmap, machine.unmapRange(first..<min(frames, first + length)).blockedNanoseconds)
                }
            }
            vcpusRunning.store(vcpusRunning.count - 1, longest: longest, operations: 0)
        }
        // A thread stuck inside the VM (the watchdog reports it as a livelock) is left behind, and
        // so is the VM: tearing it down under the thread would hang or crash the run.
        var abandoned = 0
        for thread in threads + [zapper] where !thread.join(giveUpWhen: { machine.shouldAbandonThreads() }) {
            abandoned += 1
        }

        var longest = results.longest
        if abandoned == 0 {
            longest.teardown = machine.teardown().blockedNanoseconds
        } else {
            machine.keepAliveForStuckThreads()
        }
        return Report(
            violations: machine.checker.violations, violationCounts: machine.checker.countsByKind,
            statistics: machine.statistics,
            longest: longest, operationsCompleted: results.operations, threadsAbandoned: abandoned)
    }
}

/// Per-thread results, written once by each thread.
private final class ResultSlots: @unchecked Sendable {
    let count: Int
    private let mutex = PThreadMutex()
    private var merged = ConcurrencyStress.LongestBlocks()
    private var completed = 0
    private var finished = 0

    init(count: Int) { self.count = count }

    func store(_ slot: Int, longest: ConcurrencyStress.LongestBlocks, operations: Int) {
        mutex.withLock {
            merged.merge(longest)
            completed += operations
            finished += 1
        }
    }

    var finishedCount: Int { mutex.withLock { finished } }
    var longest: ConcurrencyStress.LongestBlocks { mutex.withLock { merged } }
    var operations: Int { mutex.withLock { completed } }
}
