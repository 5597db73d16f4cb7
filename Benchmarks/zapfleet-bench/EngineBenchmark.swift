import ArgumentParser
import Atomics
import Foundation
import ZapEngine
import ZapPlatform

/// Zap and populate cost per SPTE against raw sweeps over a plain array of the same size.
struct EngineBenchmark: SummarisedBenchmark {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "Engine zap and populate ns per SPTE next to raw exchange and compare-exchange sweeps.",
        discussion: """
            Populates GiB of guest memory with 4 KiB mappings (2 MiB batch faults: a fresh leaf table is \
            filled with plain stores and linked with one compare-exchange, as the kernel links a split \
            huge page; into an existing table each entry takes a compare-exchange), zaps it with the \
            workqueue under the read lock (atomic exchange per SPTE) and with the caller under the write \
            lock (plain stores), and sweeps a plain array of as many entries with the raw operation each \
            path is bounded by. Each figure is the best of --repetitions runs. Build in release mode.
            """
    )

    @Option(help: "Guest memory to map, in GiB of 4 KiB pages (262,144 SPTEs per GiB).")
    var gib: Int = 16

    @Option(help: "Runs of each measurement; the best is reported.")
    var repetitions: Int = 3

    func validate() throws {
        guard gib >= 1 && gib <= 512 else { throw ValidationError("--gib must be between 1 and 512, got \(gib)") }
        guard repetitions >= 1 else { throw ValidationError("--repetitions must be at least 1") }
    }

    func measure() throws -> [BenchmarkFigure] {
        let entries = gib << 18
        print("engine benchmark: \(gib) GiB of 4 KiB mappings = \(entries) SPTEs, best of \(repetitions)")
        var best = Figures()
        for _ in 0..<repetitions {
            best.keepBest(try Self.measureOnce(entries: entries))
        }
        let rows: [(String, Double, String)] = [
            ("raw compare-exchange sweep (0 -> leaf)", best.rawCompareExchange, ""),
            (
                "engine populate (2 MiB batch faults)", best.populate,
                ratio(best.populate, best.rawCompareExchange, target: 1.5)
            ),
            (
                "engine populate into existing tables", best.populateExisting,
                ratio(best.populateExisting, best.rawCompareExchange, target: 1.5)
            ),
            ("raw atomic exchange sweep (-> REMOVED_SPTE)", best.rawExchange, ""),
            ("engine zap, read lock (async worker)", best.zapShared, ratio(best.zapShared, best.rawExchange, target: 1.5)),
            ("raw plain read+write sweep", best.rawReadWrite, ""),
            ("engine zap, write lock (sync put)", best.zapExclusive, ratio(best.zapExclusive, best.rawReadWrite, target: nil))
        ]
        for (name, value, note) in rows {
            let padded = name.padding(toLength: 46, withPad: " ", startingAt: 0)
            print("  \(padded)" + String(format: "%7.2f ns/SPTE  ", value) + note)
        }
        print(String(format: "  kernel figure from the seed: 52 ns/SPTE; engine zap is %.0fx faster", 52 / best.zapShared))
        try measureSingleFaults()
        try measureConcurrentPopulate(entries: entries, vcpus: 8)
        return [
            .ratio(
                "engine populate (2 MiB batch faults), \(gib) GiB", best.populate, "ns/SPTE", of: best.rawCompareExchange,
                "a raw compare-exchange sweep", atMost: 1.5),
            .ratio(
                "engine zap under the read lock, \(gib) GiB", best.zapShared, "ns/SPTE", of: best.rawExchange,
                "a raw exchange sweep", atMost: 1.5),
            BenchmarkFigure(
                name: "engine zap under the write lock, \(gib) GiB", measured: String(format: "%.2f ns/SPTE", best.zapExclusive))
        ]
    }

    /// Single 4 KiB faults, one thread: installing, and finding the mapping present.
    private func measureSingleFaults() throws {
        let vm = try VirtualMachine(configuration: VMConfiguration(policy: .async, pageTableBudgetBytes: 1 << 30))
        let vcpu = vm.makeVCPU()
        let count = 1 << 20
        var start = monotonicNanoseconds()
        for frame in 0..<UInt64(count) { vcpu.fault(gfn: frame) }
        let install = Double(monotonicNanoseconds() - start) / Double(count)
        start = monotonicNanoseconds()
        for frame in 0..<UInt64(count) { vcpu.fault(gfn: frame) }
        let present = Double(monotonicNanoseconds() - start) / Double(count)
        vm.teardown()
        print(
            String(
                format: "  single 4 KiB fault: %.0f ns installing, %.0f ns when already mapped (one thread, clock reads included)", install,
                present))
    }

    /// Populate by `vcpus` threads at once, each over its own contiguous part (a run's
    /// `sequential` coverage): the CPU it costs per SPTE next to one thread's.
    private func measureConcurrentPopulate(entries: Int, vcpus: Int) throws {
        var best = Double.infinity
        var bestWall = Double.infinity
        for _ in 0..<repetitions {
            let vm = try VirtualMachine(
                configuration: VMConfiguration(policy: .async, workqueueWidth: 1, pageTableBudgetBytes: entries * 8 + (64 << 20)))
            let parts = (0..<vcpus).map { _ in vm.makeVCPU() }
            let regions = entries / 512
            let cpuBefore = CPUAccounting.processCPUNanoseconds()
            let start = monotonicNanoseconds()
            let threads = parts.enumerated().map { id, vcpu in
                OSThread(name: "vcpu\(id)") {
                    for region in (regions * id / vcpus)..<(regions * (id + 1) / vcpus) {
                        vcpu.populate2MRegion(firstFrame: UInt64(region) * 512)
                    }
                }
            }
            for thread in threads { thread.join() }
            bestWall = min(bestWall, Double(monotonicNanoseconds() - start) / Double(entries))
            best = min(best, Double(CPUAccounting.processCPUNanoseconds() - cpuBefore) / Double(entries))
            precondition(vm.statistics.sptesInstalled == entries)
            vm.teardown()
        }
        print(
            String(
                format: "  populate by %d vCPU threads at once: %.2f ns/SPTE of CPU, %.2f of wall (%d cores)", vcpus, best, bestWall,
                CPUAccounting.onlineCPUs))
    }

    private func ratio(_ value: Double, _ bound: Double, target: Double?) -> String {
        let factor = value / bound
        guard let target else { return String(format: "(%.2fx the raw sweep)", factor) }
        return String(format: "(%.2fx the raw sweep; target <= %.1fx: %@)", factor, target, factor <= target ? "met" : "MISSED")
    }

    struct Figures {
        var populate = Double.infinity
        var populateExisting = Double.infinity
        var zapShared = Double.infinity
        var zapExclusive = Double.infinity
        var rawCompareExchange = Double.infinity
        var rawExchange = Double.infinity
        var rawReadWrite = Double.infinity

        mutating func keepBest(_ other: Figures) {
            populate = min(populate, other.populate)
            populateExisting = min(populateExisting, other.populateExisting)
            zapShared = min(zapShared, other.zapShared)
            zapExclusive = min(zapExclusive, other.zapExclusive)
            rawCompareExchange = min(rawCompareExchange, other.rawCompareExchange)
            rawExchange = min(rawExchange, other.rawExchange)
            rawReadWrite = min(rawReadWrite, other.rawReadWrite)
        }
    }

    /// One run of every measurement over `entries` SPTEs.
    static func measureOnce(entries: Int) throws -> Figures {
        var figures = Figures()
        let perEntry = { (nanoseconds: UInt64) in Double(nanoseconds) / Double(entries) }
        let budget = entries * 8 + (64 << 20)

        // The engine, async: populate, then the worker's zap under the read lock.
        do {
            let vm = try VirtualMachine(configuration: VMConfiguration(policy: .async, workqueueWidth: 1, pageTableBudgetBytes: budget))
            let vcpu = vm.makeVCPU()
            let start = monotonicNanoseconds()
            for region in 0..<(entries / 512) { vcpu.populate2MRegion(firstFrame: UInt64(region) * 512) }
            figures.populate = perEntry(monotonicNanoseconds() - start)
            precondition(vm.statistics.sptesInstalled == entries)
            let zapStart = monotonicNanoseconds()
            vcpu.reset()
            // A fast zap waits for the workqueue (`flush_workqueue`): it returns when the worker
            // has zapped the whole root under the read lock. Teardown would not do: its zap-all
            // under the write lock takes over what the worker has not reached yet, so the figure
            // would mix the two zaps.
            vm.fastZap()
            figures.zapShared = perEntry(monotonicNanoseconds() - zapStart)
            precondition(vm.statistics.sptesZapped == entries && vm.checker.violations.isEmpty)
            vm.teardown()
        }
        // The engine, populating regions whose leaf table already exists (one 4 KiB fault each
        // first): every other entry is installed with its own compare-exchange.
        do {
            let vm = try VirtualMachine(configuration: VMConfiguration(policy: .async, workqueueWidth: 1, pageTableBudgetBytes: budget))
            let vcpu = vm.makeVCPU()
            for region in 0..<(entries / 512) { vcpu.fault(gfn: UInt64(region) * 512) }
            let start = monotonicNanoseconds()
            for region in 0..<(entries / 512) { vcpu.populate2MRegion(firstFrame: UInt64(region) * 512) }
            figures.populateExisting = Double(monotonicNanoseconds() - start) / Double(entries - entries / 512)
            vm.teardown()
            precondition(vm.statistics.sptesZapped == entries && vm.checker.violations.isEmpty)
        }
        // The engine, sync: the vCPU's own zap under the write lock.
        do {
            let vm = try VirtualMachine(configuration: VMConfiguration(policy: .sync, pageTableBudgetBytes: budget))
            let vcpu = vm.makeVCPU()
            for region in 0..<(entries / 512) { vcpu.populate2MRegion(firstFrame: UInt64(region) * 512) }
            let reset = vcpu.reset()
            figures.zapExclusive = perEntry(reset.blockedNanoseconds)
            vm.teardown()
            precondition(vm.statistics.sptesZapped == entries && vm.checker.violations.isEmpty)
        }
        // Raw sweeps over memory of the same size, touched first: the engine's pools reuse the
        // memory of the VMs before them (PageTableReservations), so only the first run pays
        // the host's first touch.
        let bytes = entries * 8
        guard let region = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            region != MAP_FAILED
        else { throw ValidationError("cannot map \(bytes) bytes for the raw sweeps") }
        defer { munmap(region, bytes) }
        memset(region, 0, bytes)
        let storage = region.bindMemory(to: UnsafeAtomic<UInt64>.Storage.self, capacity: entries)
        var sink: UInt64 = 0
        var start = monotonicNanoseconds()
        for index in 0..<entries {
            let leaf = 0x23 | (UInt64(index) << 12)
            let (exchanged, original) = UnsafeAtomic<UInt64>(at: storage + index)
                .compareExchange(expected: 0, desired: leaf, ordering: .acquiringAndReleasing)
            if !exchanged { sink &+= original }
        }
        figures.rawCompareExchange = perEntry(monotonicNanoseconds() - start)
        start = monotonicNanoseconds()
        for index in 0..<entries {
            sink &+= UnsafeAtomic<UInt64>(at: storage + index).exchange(0x5a0, ordering: .acquiringAndReleasing) & 1
        }
        figures.rawExchange = perEntry(monotonicNanoseconds() - start)
        start = monotonicNanoseconds()
        for index in 0..<entries {
            let entry = UnsafeAtomic<UInt64>(at: storage + index)
            let old = entry.load(ordering: .relaxed)
            sink &+= old & 1
            entry.store(0, ordering: .relaxed)
        }
        figures.rawReadWrite = perEntry(monotonicNanoseconds() - start)
        if sink == 42 { print("") }  // keeps the sweeps from being optimised away
        return figures
    }
}
