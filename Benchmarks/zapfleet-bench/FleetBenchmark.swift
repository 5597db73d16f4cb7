import ArgumentParser
import Foundation
import Logging
import ZapCluster
import ZapEngine
import ZapPlatform
import ZapRun
import ZapScenario

/// The fleet path against the engine's own work: a sharded local run (coordinator and
/// in-process workers over ZeroMQ, results encoded, checked, merged and reported) next to what
/// its SPTEs cost the engine alone, measured in the same invocation.
struct FleetBenchmark: SummarisedBenchmark {
    static let configuration = CommandConfiguration(
        commandName: "fleet",
        abstract: "End to end: a sharded run's wall time against the engine's own cost of its SPTEs.",
        discussion: """
            The engine figures (as `zapfleet-bench engine`, best of --repetitions, at least 3): populate with \
            2 MiB batch faults, the zap under the read lock (async's worker) and under the write lock \
            (sync's put); and SCENARIO at --size, cut into shards for --workers in-process workers \
            within --max-memory, as `zapfleet run --shard` runs it, --repetitions times. The two \
            alternate (an engine measurement, a run, ...), so that both sample the same minutes of a \
            machine whose speed drifts. The engine's \
            share of the run is each policy's SPTEs installed times the populate cost plus its SPTEs \
            zapped times its zap's cost (write lock under sync, read lock otherwise), over the cores \
            the workers can use. Reported: the run's wall time (first and best), the ratio of the best \
            to that share (target <= 1.3x), and the process's peak resident memory (bound: --max-memory).
            """
    )

    @Argument(help: "Built-in scenario to run.")
    var scenario: String = "seed-64t"

    @Option(help: "Guest memory of the run, e.g. 2TiB.")
    var size: String = "2TiB"

    @Option(help: "Memory the whole process may hold, e.g. 3GiB; the run is sharded to fit.")
    var maxMemory: String = "3GiB"

    @Option(help: "In-process workers.")
    var workers: Int = 2

    @Option(help: "GiB of guest memory for the engine figures (default: the run's largest shard, so that both walk trees of one size).")
    var gib: Int?

    // 5: the engine figures and the run's wall each moved by up to 2x between invocations of
    // best of 3 on a shared 2-core machine; the best of more is steadier on both sides.
    @Option(help: "Runs of each measurement; the best is reported.")
    var repetitions: Int = 5

    func validate() throws {
        guard Quantities.parseSize(size) != nil else { throw ValidationError("--size: \(size) is not a size such as 2TiB") }
        guard Quantities.parseSize(maxMemory) != nil else { throw ValidationError("--max-memory: \(maxMemory) is not a size such as 3GiB") }
        guard (1...64).contains(workers) else { throw ValidationError("--workers must be between 1 and 64, got \(workers)") }
        if let gib, !(1...4096).contains(gib) { throw ValidationError("--gib must be between 1 and 4096, got \(gib)") }
        guard repetitions >= 1 else { throw ValidationError("--repetitions must be at least 1") }
    }

    @Option(help: "A bound on the best run's wall time in seconds, reported beside it (the seed's 64 TiB: 150).")
    var targetSeconds: Double?

    func measure() throws -> [BenchmarkFigure] {
        var base = try ScenarioCatalog.load(scenario)
        base.vm.memoryBytes = Quantities.parseSize(size)!
        let resolved = try ScenarioParser.parse(ScenarioWriter.yaml(base), file: "\(scenario) at \(size)")
        let limit = Quantities.parseSize(maxMemory)!

        let sharded = MemoryEstimate.estimate(resolved).peakBytes > limit
        let budget = LocalFleet.workerBudget(limit: limit, workers: workers, vcpus: resolved.workload.vcpus, sharded: sharded)
        let plan = try ShardPlanner.plan(resolved, budgetBytes: budget, balancedOver: sharded ? workers : 1)
        let largestShard = plan.map(\.bytes).max() ?? resolved.vm.memoryBytes
        let gib = self.gib ?? max(1, Int(largestShard >> 30))
        var engine = EngineBenchmark.Figures()
        // At least three even for one run: the first pays the host's first touch of the table
        // memory, which no later measurement (nor the run, which reuses that memory) pays.
        let engineRepetitions = max(3, repetitions)
        var walls: [Double] = []
        var cpuSeconds: [Double] = []
        var last: FleetRunOutcome?
        var peak: UInt64 = 0
        // Alternating, not one block after the other: this machine's speed drifts by up to 2x
        // over minutes, and a ratio of one minute's engine figures to another's runs moved with it
        // (1.02x to 1.55x between invocations of the same build).
        for index in 0..<max(engineRepetitions, repetitions) {
            if index < engineRepetitions { engine.keepBest(try EngineBenchmark.measureOnce(entries: gib << 18)) }
            guard index < repetitions else { continue }
            // The peak that counts is the run's: the engine figures' own memory is not the run's.
            PeakMemory.reset()
            defer { peak = max(peak, PeakMemory.bytes()) }
            let cpuStart = CPUAccounting.processCPUNanoseconds()
            let start = monotonicNanoseconds()
            let outcome = try LocalFleet.run(
                scenario: resolved, workers: workers,
                memoryBudgetBytes: LocalFleet.workerBudget(
                    limit: limit, workers: workers, vcpus: resolved.workload.vcpus, sharded: sharded),
                kernelNanosecondsPerSPTE: 52, logger: Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() }),
                cancellation: CancellationFlag())
            walls.append(Double(monotonicNanoseconds() - start) / 1e9)
            cpuSeconds.append(Double(CPUAccounting.processCPUNanoseconds() - cpuStart) / 1e9)
            guard outcome.complete, outcome.failure == nil else {
                throw ValidationError("the run did not complete: \(outcome.failure?.description ?? "incomplete")")
            }
            last = outcome
        }
        guard let outcome = last else { return [] }
        print("engine figures, \(gib) GiB, best of \(engineRepetitions) (ns/SPTE):")
        print(
            String(
                format: "  populate %.2f, zap under the read lock %.2f, zap under the write lock %.2f",
                engine.populate, engine.zapShared, engine.zapExclusive))

        // The engine's share: every SPTE installed and zapped, at the engine's own rates.
        var engineNanoseconds = 0.0
        for run in outcome.runs {
            let zap = run.policy == .sync ? engine.zapExclusive : engine.zapShared
            engineNanoseconds += Double(run.statistics.sptesInstalled) * engine.populate + Double(run.statistics.sptesZapped) * zap
        }
        let cores = min(workers, CPUAccounting.onlineCPUs)
        let share = engineNanoseconds / 1e9 / Double(cores)
        let best = walls.min()!
        let sptes = outcome.runs.reduce(0) { $0 + $1.statistics.sptesInstalled }
        print(
            "\(resolved.name) at \(size): \(outcome.fleet.shards.count) shards on \(workers) in-process workers within \(maxMemory), "
                + "\(sptes) SPTEs installed and as many zapped over \(outcome.runs.count) policies")
        print(String(format: "  engine's share: %.2f s of CPU, %.2f s on %d cores", engineNanoseconds / 1e9, share, cores))
        print(
            String(
                format: "  run wall: first %.2f s, best of %d %.2f s = %.2fx the engine's share (target <= 1.3x: %@)", walls[0],
                repetitions, best, best / share, best / share <= 1.3 ? "met" : "MISSED"))
        let bestIndex = walls.firstIndex(of: best)!
        // CPU below wall x cores is time a core idled (a worker waiting, or one left at the end).
        print(
            String(
                format: "  best run's CPU: %.2f s of the %.2f s its %d cores had (%.0f%% busy)", cpuSeconds[bestIndex],
                best * Double(cores), cores, 100 * cpuSeconds[bestIndex] / (best * Double(cores))))
        print(
            "  peak resident: \(Quantities.describeSize(Double(peak))) (bound: \(maxMemory): \(peak <= limit ? "met" : "MISSED"))")
        let run = "\(resolved.name) at \(size), \(workers) workers within \(maxMemory)"
        var figures = [
            BenchmarkFigure(
                name: "\(run): wall / engine's own cost", measured: String(format: "%.2fx (%.2f s)", best / share, best),
                target: "<= 1.3x", met: best / share <= 1.3),
            BenchmarkFigure(
                name: "\(run): peak resident", measured: Quantities.describeSize(Double(peak)), target: "<= \(maxMemory)",
                met: peak <= limit)
        ]
        if let targetSeconds {
            figures.append(
                BenchmarkFigure(
                    name: "\(run): wall", measured: String(format: "%.1f s", best), target: String(format: "about %.0f s", targetSeconds),
                    met: best <= targetSeconds))
        }
        return figures
    }
}

/// The process's peak resident memory (`VmHWM`), which Linux lets a process reset (writing 5
/// to `/proc/self/clear_refs`), so that one phase's peak is measured apart from another's.
enum PeakMemory {
    static func reset() { try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8) }

    static func bytes() -> UInt64 {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }
        let kib = line.flatMap { UInt64($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        return kib * 1024
    }
}
