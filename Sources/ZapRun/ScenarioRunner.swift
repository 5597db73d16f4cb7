import Atomics
import ZapEngine
import ZapScenario
import ZapPlatform
#if canImport(Glibc)
import Glibc
#endif

/// How to run a scenario.
public struct RunOptions: Sendable {
    /// Kernel cost of zapping one SPTE, for the projection (the seed's 900 s / 2^34 ≈ 52 ns).
    public var kernelNanosecondsPerSPTE: Double
    /// Record block times (off only to measure the measurement's own overhead).
    public var measure: Bool
    /// The memslots to run; nil for the whole VM.
    public var slice: MemorySlice?
    /// Set to stop early; the run still tears down and reports.
    public var cancellation: CancellationFlag
    /// Called from a monitor thread every `progressInterval` while a policy runs.
    public var progress: (@Sendable (RunProgress) -> Void)?
    /// How often `progress` is called, in nanoseconds.
    public var progressInterval: UInt64

    /// Options with the seed's projection cost and measurement on.
    public init(
        kernelNanosecondsPerSPTE: Double = 52, measure: Bool = true, slice: MemorySlice? = nil,
        cancellation: CancellationFlag = CancellationFlag(),
        progress: (@Sendable (RunProgress) -> Void)? = nil, progressInterval: UInt64 = 500_000_000
    ) {
        self.kernelNanosecondsPerSPTE = kernelNanosecondsPerSPTE
        self.measure = measure
        self.slice = slice
        self.cancellation = cancellation
        self.progress = progress
        self.progressInterval = progressInterval
    }
}

/// Where a run is, for progress displays.
public struct RunProgress: Sendable {
    /// The policy running.
    public var policy: ZapPolicy
    /// The step running, 1-based, and how many the timeline has (repeats included).
    public var step: Int
    /// Steps in all.
    public var steps: Int
    /// The step's name.
    public var stepName: String
    /// Leaf SPTEs installed so far in this policy's VM.
    public var sptesInstalled: Int
    /// Leaf SPTEs zapped so far.
    public var sptesZapped: Int
    /// SPTEs one population of the VM (or slice) installs, for an ETA.
    public var sptesPerPopulation: Int
    /// Time since the policy started.
    public var elapsedNanoseconds: UInt64

    /// A progress report.
    public init(
        policy: ZapPolicy, step: Int, steps: Int, stepName: String, sptesInstalled: Int, sptesZapped: Int,
        sptesPerPopulation: Int, elapsedNanoseconds: UInt64
    ) {
        self.policy = policy
        self.step = step
        self.steps = steps
        self.stepName = stepName
        self.sptesInstalled = sptesInstalled
        self.sptesZapped = sptesZapped
        self.sptesPerPopulation = sptesPerPopulation
        self.elapsedNanoseconds = elapsedNanoseconds
    }
}

/// How long one step took, and the most it blocked anyone.
public struct StepTiming: Sendable, Codable, Equatable {
    /// The step's name.
    public var name: String
    /// Its wall time.
    public var nanoseconds: UInt64
    /// The longest block any one operation of the step caused.
    public var longestBlockNanoseconds: UInt64
    /// Leaf SPTEs zapped while the step's callers waited.
    public var sptesZappedInline: Int

    /// A step's record.
    public init(name: String, nanoseconds: UInt64, longestBlockNanoseconds: UInt64 = 0, sptesZappedInline: Int = 0) {
        self.name = name
        self.nanoseconds = nanoseconds
        self.longestBlockNanoseconds = longestBlockNanoseconds
        self.sptesZappedInline = sptesZappedInline
    }
}

/// Runs a scenario's timeline on the engine, one policy at a time, with a real thread per vCPU.
public final class ScenarioRunner: Sendable {
    /// The scenario.
    public let scenario: Scenario
    /// The options.
    public let options: RunOptions
    private let slice: MemorySlice

    /// A runner for `scenario`.
    public init(scenario: Scenario, options: RunOptions = RunOptions()) {
        self.scenario = scenario
        self.options = options
        self.slice = options.slice ?? .whole(scenario)
    }

    /// The steps in execution order: the timeline without teardown, `repeat` times, then teardown.
    public var expandedTimeline: [TimelineStep] { scenario.expandedTimeline }

    /// Runs the timeline under `policy` and returns what it measured.
    public func run(policy: ZapPolicy) throws -> PolicyRun {
        let layout = GuestLayout(scenario: scenario, slice: slice)
        let sliceBytes = UInt64(slice.slotCount) * scenario.vm.memslotBytes
        let estimate = MemoryEstimate.estimate(scenario, bytes: sliceBytes)
        let observer = RunObserver(kernelNanosecondsPerSPTE: options.kernelNanosecondsPerSPTE, enabled: options.measure)
        // The pool only reserves address space; pages are backed as tables are built.
        let budget = Int(min(max(estimate.peakBytes * 2, 256 << 20), 1 << 46))
        let vm = try VirtualMachine(
            configuration: VMConfiguration(
                policy: policy, workqueueWidth: scenario.workqueueWidth, pageTableBudgetBytes: budget,
                injectedBugs: Set(scenario.injectedBugs), name: policy.rawValue, observer: observer,
                chaos: scenario.chaos, nxRecovery: scenario.nxRecovery))
        let vcpus = (0..<scenario.workload.vcpus).map { _ in vm.makeVCPU() }
        var deleted = [Bool](repeating: false, count: slice.slotCount)
        var recorder = emptyRecorder()
        var timings: [StepTiming] = []
        let steps = expandedTimeline
        let start = monotonicNanoseconds()
        let currentStep = ManagedAtomic<Int>(0)
        let monitor = progressMonitor(
            vm: vm, policy: policy, steps: steps, currentStep: currentStep, start: start,
            sptesPerPopulation: Int(sliceBytes >> 12))
        var complete = true
        var interference = scenario.workload.guestWork ? CPUInterference() : nil
        // Threads the watchdog found stuck inside the VM and the run left behind. After that the
        // timeline stops, and the VM is not torn down under them.
        var abandoned = 0
        // With guest work, the VM thread is the VMM task that issues every ioctl, teardown
        // included: its cpuset (here, the last CPU) holds the zaps it runs itself (sync,
        // preserve); an unbound worker escapes it (the v6.6 story). vCPU threads it starts drop
        // the pin (`onEveryVCPU`).
        if interference != nil { CPUAccounting.pinCallingThread(to: GuestWork.vmmCPU) }
        defer { if interference != nil { CPUAccounting.unpinCallingThread() } }

        for (index, step) in steps.enumerated() {
            // A stall is a verdict (the watchdog's `livelock`), not an interruption: the run skips
            // the rest of its timeline but is complete. A stop by the user or the fleet is not.
            if abandoned > 0 || (step != .teardown && vm.isStalled) { continue }
            if step != .teardown && options.cancellation.isCancelled {
                complete = false
                continue
            }
            currentStep.store(index, ordering: .relaxed)
            let guestWork = interference != nil && step.zaps ? startGuestWork(&interference!) : nil
            let stepStart = monotonicNanoseconds()
            var stepRecorder = emptyRecorder()
            switch step {
            case .populate:
                let deletedNow = deleted
                stepRecorder = onEveryVCPU(vcpus, vm: vm, step: index, abandoned: &abandoned) { vcpu, id, recorder, _ in
                    self.populate(vcpu, id: id, layout: layout, deleted: deletedNow, into: &recorder)
                }
            case .run(let faults):
                let deletedNow = deleted
                stepRecorder = onEveryVCPU(vcpus, vm: vm, step: index, abandoned: &abandoned) { vcpu, id, recorder, seed in
                    self.fault(vcpu, id: id, count: faults, seed: seed, layout: layout, deleted: deletedNow, into: &recorder)
                }
            case .resetVCPUs:
                stepRecorder = onEveryVCPU(vcpus, vm: vm, step: index, abandoned: &abandoned) { vcpu, _, recorder, _ in
                    recorder.record(.reset, vcpu.reset())
                }
            case .deleteMemslots(let fraction):
                var generator = SplitMix64(seed: scenario.seed ^ UInt64(index) &* 0xD1B5_4A32_D192_ED03)
                var live = deleted.indices.filter { !deleted[$0] }
                let count = fraction == 0 ? 0 : min(live.count, max(1, Int((fraction * Double(live.count)).rounded())))
                for chosen in 0..<count {
                    if vm.isStalled { break }
                    if options.cancellation.isCancelled { complete = false; break }
                    let pick = chosen + Int(generator.next() % UInt64(live.count - chosen))
                    live.swapAt(chosen, pick)
                    deleted[live[chosen]] = true
                    let zapCPUBefore = interference != nil ? vm.zapCPUNanoseconds : []
                    if interference != nil { vm.resetZapConcurrencyPeak() }
                    stepRecorder.record(.fastZap, vm.fastZap())
                    if interference != nil {
                        interference!.addDeletion(before: zapCPUBefore, after: vm.zapCPUNanoseconds, parallelZaps: vm.zapConcurrencyPeak)
                    }
                }
            case .fullZap:
                stepRecorder.record(.fullZap, vm.fullZap())
            case .unmap(let fraction):
                var generator = SplitMix64(seed: scenario.seed ^ UInt64(index) &* 0x94D0_49BB_1331_11EB)
                var slots = Array(0..<slice.slotCount)
                let count = fraction == 0 ? 0 : min(slots.count, max(1, Int((fraction * Double(slots.count)).rounded())))
                for chosen in 0..<count {
                    if vm.isStalled { break }
                    if options.cancellation.isCancelled { complete = false; break }
                    slots.swapAt(chosen, chosen + Int(generator.next() % UInt64(slots.count - chosen)))
                    stepRecorder.record(.unmap, vm.unmapRange(layout.frames(ofSlot: slice.firstSlot + slots[chosen])))
                }
            case .dirtyLog(.enable):
                stepRecorder.record(.dirtyLog, vm.enableDirtyLog())
            case .dirtyLog(.clear):
                stepRecorder.record(.dirtyLog, vm.clearDirtyLog())
            case .dirtyLog(.disable):
                stepRecorder.record(.dirtyLog, vm.zapCollapsibleSPTEs())
            case .fastFaults(let faults):
                let deletedNow = deleted
                stepRecorder = onEveryVCPU(vcpus, vm: vm, step: index, abandoned: &abandoned) { vcpu, id, recorder, seed in
                    self.fault(vcpu, id: id, count: faults, seed: seed, layout: layout, deleted: deletedNow, fast: true, into: &recorder)
                }
            case .dirtyMemory:
                let deletedNow = deleted
                stepRecorder = onEveryVCPU(vcpus, vm: vm, step: index, abandoned: &abandoned) { vcpu, id, recorder, _ in
                    self.dirtyMemory(vcpu, id: id, layout: layout, deleted: deletedNow, into: &recorder)
                }
            case .workout(let operations):
                stepRecorder = workout(
                    vm: vm, vcpus: vcpus, operations: operations, step: index, layout: layout,
                    deleted: deleted, abandoned: &abandoned)
            case .teardown:
                stepRecorder.record(.teardown, vm.teardown())
            }
            if let guestWork { interference!.addGuestWork(guestWork.stop()) }
            recorder.merge(stepRecorder)
            timings.append(
                StepTiming(
                    name: step.name, nanoseconds: monotonicNanoseconds() &- stepStart,
                    longestBlockNanoseconds: stepRecorder.longestBlock,
                    sptesZappedInline: stepRecorder.sptesZappedInline))
        }
        monitor?.stop()
        if abandoned > 0 { vm.keepAliveForStuckThreads() }
        recorder.merge(observer.lifetimes)
        if interference != nil {
            for (cpu, nanoseconds) in vm.zapCPUNanoseconds.enumerated() where nanoseconds > 0 {
                interference!.zapCpuNs[String(cpu)] = UInt64(nanoseconds)
            }
        }
        let throughput = observer.zapThroughput
        let outcome = PolicyOutcome(
            policy: policy, statistics: vm.statistics,
            violations: vm.checker.violations, violationCounts: vm.checker.countsByKind,
            steps: timings, wallNanoseconds: monotonicNanoseconds() &- start, complete: complete,
            zapThroughput: throughput.nanoseconds == 0 ? 0 : Double(throughput.sptes) * 1e9 / Double(throughput.nanoseconds),
            injectedPathRuns: vm.injectedPathRuns, tlbFlushes: vm.tlbFlushes, interference: interference)
        return PolicyRun(outcome, recorder: recorder)
    }

    /// Guest work on every vCPU for a step in which the VM zaps. The first time, guest work runs
    /// alone for a quiet window first: the machine's own share of lost time.
    private func startGuestWork(_ interference: inout CPUInterference) -> GuestWork {
        if interference.quietGuestNs == 0 {
            let quiet = GuestWork(vcpus: scenario.workload.vcpus)
            sleepNanoseconds(50_000_000)
            for share in quiet.stop() {
                interference.quietGuestNs &+= share.guestNs
                interference.quietLostNs &+= share.lostNs
            }
        }
        return GuestWork(vcpus: scenario.workload.vcpus)
    }

    // MARK: - Steps

    /// A recorder with the run's projection costs: per SPTE (the options) and per remote TLB
    /// flush (the scenario).
    private func emptyRecorder() -> BlockTimeRecorder {
        BlockTimeRecorder(
            kernelNanosecondsPerSPTE: options.kernelNanosecondsPerSPTE,
            kernelNanosecondsPerFlush: scenario.tlbFlushCostNanoseconds, enabled: options.measure)
    }

    /// Runs `body` for every vCPU on its own thread, each with its own recorder, and merges them.
    /// Threads still stuck in the VM after the watchdog reported it are left behind and counted
    /// in `abandoned`.
    private func onEveryVCPU(
        _ vcpus: [VCPU], vm: VirtualMachine, step: Int, abandoned: inout Int,
        _ body: @escaping @Sendable (VCPU, Int, inout BlockTimeRecorder, UInt64) -> Void
    ) -> BlockTimeRecorder {
        let results = RecorderSlots(count: vcpus.count)
        let seed = scenario.seed
        let threads = vcpus.enumerated().map { id, vcpu in
            OSThread(name: "vcpu\(id)") {
                // A vCPU thread runs anywhere, whatever the VM thread that started it is pinned to.
                CPUAccounting.unpinCallingThread()
                var recorder = self.emptyRecorder()
                body(vcpu, id, &recorder, seed ^ (UInt64(step) << 32) ^ UInt64(id))
                results.store(id, recorder)
            }
        }
        for thread in threads where !thread.join(giveUpWhen: { vm.shouldAbandonThreads() }) { abandoned += 1 }
        return results.merged(orEmpty: emptyRecorder())
    }

    /// Faults in the vCPU's part of memory, region by region, as the page mix says; then, for a
    /// vCPU that runs in SMM, its share of SMRAM in the SMM address space.
    private func populate(_ vcpu: VCPU, id: Int, layout: GuestLayout, deleted: [Bool], into recorder: inout BlockTimeRecorder) {
        if vcpu.addressSpace != .normal { vcpu.switchAddressSpace(to: .normal) }
        let part = layout.part(of: id)
        let order = Permutation(count: part.count, seed: scenario.seed ^ UInt64(id), shuffled: scenario.workload.coverage == .random)
        let touched = Int((Double(part.count) * scenario.workload.touched).rounded(.up))
        for position in 0..<min(touched, part.count) {
            if position & 63 == 0 && options.cancellation.isCancelled { return }
            let region = part.lowerBound + order[position]
            guard !deleted[layout.slot(ofRegion: region) - slice.firstSlot] else { continue }
            guard let size = layout.pageSize(ofRegion: region) else { continue }
            let frame = UInt64(region) << 9
            switch size {
            case .size4K: recorder.record(.populate, vcpu.populate2MRegion(firstFrame: frame))
            case .size2M, .size1G: recorder.record(.fault, vcpu.fault(gfn: frame, size: size))
            }
        }
        guard let smram = layout.smramPart(of: id) else { return }
        vcpu.switchAddressSpace(to: .smm)
        for region in smram {
            if options.cancellation.isCancelled { return }
            recorder.record(.populate, vcpu.populate2MRegion(firstFrame: UInt64(region) << 9))
        }
    }

    /// Single 4 KiB faults at random addresses of the vCPU's current memory, paced if asked.
    private func fault(
        _ vcpu: VCPU, id: Int, count: Int, seed: UInt64, layout: GuestLayout, deleted: [Bool],
        fast: Bool = false, into recorder: inout BlockTimeRecorder
    ) {
        var generator = SplitMix64(seed: seed)
        let range = vcpu.addressSpace == .smm ? (layout.smramPart(of: id) ?? layout.part(of: id)) : layout.part(of: id)
        guard !range.isEmpty else { return }
        var interval: UInt64?
        if case .faultsPerSecond(let rate) = scenario.workload.pacing { interval = UInt64(1e9 / rate) }
        let start = monotonicNanoseconds()
        for index in 0..<count {
            if index & 255 == 0 && options.cancellation.isCancelled { return }
            if let interval {
                let due = start &+ UInt64(index) &* interval
                let now = monotonicNanoseconds()
                if due > now { sleepNanoseconds(due - now) }
            }
            var region = range.lowerBound + Int(generator.next() % UInt64(range.count))
            if vcpu.addressSpace == .normal {
                // A deleted memslot has no memory to fault; try a few other regions.
                var attempts = 0
                while deleted[layout.slot(ofRegion: region) - slice.firstSlot] && attempts < 8 {
                    region = range.lowerBound + Int(generator.next() % UInt64(range.count))
                    attempts += 1
                }
                if deleted[layout.slot(ofRegion: region) - slice.firstSlot] { continue }
            }
            let frame = UInt64(region) << 9 | (generator.next() & 511)
            if fast {
                recorder.record(.fastFault, vcpu.fastFault(gfn: frame, write: true), expectedInterval: interval)
            } else {
                recorder.record(
                    .fault, vcpu.fault(gfn: frame, size: .size4K, write: generator.next() & 1 == 0),
                    expectedInterval: interval)
            }
        }
    }

    /// `dirty_log_perf_test`'s guest: a write to every 4 KiB page of the vCPU's part, in order, each
    /// through the fast page fault path (which falls back to the slow path to map a missing page,
    /// or, under dirty logging, to replace a write-protected huge page).
    private func dirtyMemory(_ vcpu: VCPU, id: Int, layout: GuestLayout, deleted: [Bool], into recorder: inout BlockTimeRecorder) {
        if vcpu.addressSpace != .normal { recorder.record(.reset, vcpu.switchAddressSpace(to: .normal)) }
        for region in layout.part(of: id) {
            if options.cancellation.isCancelled { return }
            guard !deleted[layout.slot(ofRegion: region) - slice.firstSlot], layout.pageSize(ofRegion: region) != nil else { continue }
            let first = UInt64(region) << 9
            for frame in first..<first + 512 { recorder.record(.fastFault, vcpu.fastFault(gfn: frame, write: true)) }
        }
    }

    /// Everything at once: each vCPU thread performs `operations` random operations in its part
    /// of memory (slow and fast faults, 2 MiB populations, resets, SMM switches) while a VM thread
    /// runs fast zaps (no memslot deleted), unmaps of single memslots, dirty logging and the odd
    /// full zap against them, until the vCPUs are done.
    private func workout(
        vm: VirtualMachine, vcpus: [VCPU], operations: Int, step: Int, layout: GuestLayout,
        deleted: [Bool], abandoned: inout Int
    ) -> BlockTimeRecorder {
        let done = ManagedAtomic<Bool>(false)
        let vmRecorder = RecorderSlots(count: 1)
        let seed = scenario.seed ^ (UInt64(step) << 40)
        let slots = slice.slotCount
        let firstSlot = slice.firstSlot
        let cancellation = options.cancellation
        let vmThread = OSThread(name: "vm-workout") {
            var generator = SplitMix64(seed: seed)
            var recorder = self.emptyRecorder()
            while !done.load(ordering: .relaxed) && !vm.isStalled && !cancellation.isCancelled {
                sleepNanoseconds(200_000 + generator.next() % 1_000_000)
                switch generator.next() % 10 {
                case 0..<3: recorder.record(.fastZap, vm.fastZap())
                case 3..<5: recorder.record(.unmap, vm.unmapRange(layout.frames(ofSlot: firstSlot + Int(generator.next() % UInt64(slots)))))
                case 5: recorder.record(.dirtyLog, vm.enableDirtyLog())
                case 6: recorder.record(.dirtyLog, vm.clearDirtyLog())
                case 7..<9: recorder.record(.dirtyLog, vm.zapCollapsibleSPTEs())
                default: recorder.record(.fullZap, vm.fullZap())
                }
            }
            vmRecorder.store(0, recorder)
        }
        let smm = scenario.vm.smm
        var merged = onEveryVCPU(vcpus, vm: vm, step: step, abandoned: &abandoned) { vcpu, id, recorder, seed in
            var generator = SplitMix64(seed: seed)
            let part = layout.part(of: id)
            guard !part.isEmpty else { return }
            for index in 0..<operations {
                if index & 63 == 0 && (cancellation.isCancelled || vm.isStalled) { return }
                let region = part.lowerBound + Int(generator.next() % UInt64(part.count))
                let inDeletedSlot = deleted[layout.slot(ofRegion: region) - layout.slice.firstSlot]
                let frame = UInt64(region) << 9 | (generator.next() & 511)
                switch generator.next() % 100 {
                case 0..<35 where !inDeletedSlot || vcpu.addressSpace == .smm:
                    recorder.record(.fastFault, vcpu.fastFault(gfn: frame, write: generator.next() & 1 == 0))
                case 35..<65 where !inDeletedSlot || vcpu.addressSpace == .smm:
                    // One in three as under dirty logging: a huge page in the way is split.
                    let draw = generator.next()
                    recorder.record(.fault, vcpu.fault(gfn: frame, write: draw & 1 == 0, replacingHugePages: draw % 3 == 0))
                case 65..<85 where !inDeletedSlot || vcpu.addressSpace == .smm:
                    recorder.record(.populate, vcpu.populate2MRegion(firstFrame: frame))
                case 85..<95:
                    recorder.record(.reset, vcpu.reset())
                case 95..<100 where smm:
                    recorder.record(.reset, vcpu.switchAddressSpace(to: vcpu.addressSpace == .normal ? .smm : .normal))
                default:
                    break
                }
            }
            if vcpu.addressSpace != .normal { recorder.record(.reset, vcpu.switchAddressSpace(to: .normal)) }
        }
        done.store(true, ordering: .relaxed)
        if vmThread.join(giveUpWhen: { vm.shouldAbandonThreads() }) {
            merged.merge(vmRecorder.merged(orEmpty: emptyRecorder()))
        } else {
            abandoned += 1
        }
        return merged
    }

    // MARK: - Progress

    private func progressMonitor(
        vm: VirtualMachine, policy: ZapPolicy, steps: [TimelineStep],
        currentStep: ManagedAtomic<Int>, start: UInt64, sptesPerPopulation: Int
    ) -> ProgressMonitor? {
        guard let callback = options.progress else { return nil }
        let interval = options.progressInterval
        return ProgressMonitor(interval: interval) {
            let stats = vm.statistics
            let index = currentStep.load(ordering: .relaxed)
            callback(
                RunProgress(
                    policy: policy, step: index + 1, steps: steps.count, stepName: steps[index].name,
                    sptesInstalled: stats.sptesInstalled, sptesZapped: stats.sptesZapped,
                    sptesPerPopulation: sptesPerPopulation,
                    elapsedNanoseconds: monotonicNanoseconds() &- start))
        }
    }
}

/// Calls `tick` every `interval` on its own thread until stopped.
final class ProgressMonitor: @unchecked Sendable {
    private let stopped = ManagedAtomic<Bool>(false)
    private var thread: OSThread?

    init(interval: UInt64, tick: @escaping @Sendable () -> Void) {
        thread = OSThread(name: "progress") { [stopped] in
            while !stopped.load(ordering: .relaxed) {
                var slept: UInt64 = 0
                while slept < interval && !stopped.load(ordering: .relaxed) {
                    sleepNanoseconds(min(50_000_000, interval - slept))
                    slept += 50_000_000
                }
                if !stopped.load(ordering: .relaxed) { tick() }
            }
        }
    }

    func stop() {
        stopped.store(true, ordering: .relaxed)
        thread?.join()
    }
}

/// Per-vCPU recorders, stored once by each thread.
private final class RecorderSlots: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private var slots: [BlockTimeRecorder?]

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func store(_ index: Int, _ recorder: BlockTimeRecorder) { mutex.withLock { slots[index] = recorder } }

    func merged(orEmpty empty: BlockTimeRecorder) -> BlockTimeRecorder {
        mutex.withLock {
            let filled = slots.compactMap { $0 }
            guard var total = filled.first else { return empty }
            for recorder in filled.dropFirst() { total.merge(recorder) }
            return total
        }
    }
}

func sleepNanoseconds(_ nanoseconds: UInt64) {
    var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}
