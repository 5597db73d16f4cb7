import ArgumentParser
import Foundation
import Logging
import ZapCluster
import ZapEngine
import ZapRun
import ZapScenario
import ZapPlatform

/// `zapfleet sweep`: a scaling experiment, one local run per cell of a matrix.
struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Run a matrix of sizes × vCPUs × workers (each cell with the chosen policies) and plot how block time scales.",
        discussion: """
            Each cell is one local run (coordinator and in-process workers, as `zapfleet run`) of the base \
            scenario with that cell's guest memory, vCPU count and worker count, every policy of --policy \
            in it. OUT gets a directory per cell (report.json, report.html, .hgrm files), sweep.csv (one row \
            per cell, policy and operation: counts, p50/p99/max, projection, throughput, exit code) and \
            sweep.html (reset block time against size per policy, zap throughput against workers).

            The matrix comes from the flags or from a YAML file (--matrix) with the keys scenario, sizes, \
            policies, vcpus and workers.

            On a fleet: with --bind, each cell is a coordinator run on that endpoint instead, using the \
            first N workers to join for a cell of N workers (start them with `zapfleet worker --keep-running` \
            so that they stay for every cell; --key and --allow-keys as for `zapfleet coordinator`).

            Exit code: the worst of the cells' (70, then 2, then 1, then 0); 64 bad input; 130 interrupted.

            Examples:
              zapfleet sweep --sizes 16GiB,64GiB,256GiB --policy sync --policy async --out runs/sweep
              zapfleet sweep --matrix sweep.yaml --out runs/nightly-sweep
              zapfleet sweep --sizes 1TiB,4TiB --workers 2,4,8 --bind tcp://0.0.0.0:5555 --key keys/coordinator.key \\
                --allow-keys keys/workers --out runs/fleet-sweep
            """
    )

    @Option(help: "The base scenario: its timeline, memslot size and objectives (default: quick).")
    var scenario: String?

    @Option(help: "Guest memory sizes, comma-separated, e.g. 16GiB,64GiB,256GiB.")
    var sizes: String?

    @Option(help: "A policy of every cell; repeat for several (default: sync and async).")
    var policy: [ZapPolicy] = []

    @Option(help: "vCPU counts, comma-separated (default: the scenario's).")
    var vcpus: String?

    @Option(help: "In-process worker counts, comma-separated (default: 1).")
    var workers: String?

    @Option(help: "A YAML file with the matrix instead of the flags above.")
    var matrix: String?

    @Option(help: "Directory for sweep.csv, sweep.html and a directory per cell.")
    var out: String

    @Option(help: "Refuse cells whose page tables would need more than this (default: 80% of available memory).")
    var maxMemory: String?

    @Option(
        help:
            "Kernel cost of zapping one SPTE for the projection: nanoseconds (the seed's 52), or a calibration file from `zapfleet calibrate`."
    )
    var kernelSpteNs: String = "52"

    @Option(help: "Run each cell on a fleet: the endpoint to bind a coordinator on (workers connect with --keep-running).")
    var bind: String?

    @Option(help: "With --bind: how long each cell waits for its workers, e.g. 60s.")
    var wait: String = "60s"

    @OptionGroup(title: "Security (with --bind)")
    var security: CoordinatorSecurityOptions

    func validate() throws {
        if matrix != nil && (sizes != nil || scenario != nil || vcpus != nil || workers != nil || !policy.isEmpty) {
            throw ValidationError("--matrix holds the whole matrix; drop --scenario, --sizes, --policy, --vcpus and --workers")
        }
        if matrix == nil && sizes == nil { throw ValidationError("give --sizes (e.g. 16GiB,64GiB) or a --matrix file") }
        for size in (sizes ?? "").split(separator: ",") {
            _ = try OptionChecks.size(
                size.trimmingCharacters(in: .whitespaces), option: "--sizes", within: (2 << 20)...(1 << 48), example: "16GiB,64GiB")
        }
        if let maxMemory { _ = try OptionChecks.size(maxMemory, option: "--max-memory", within: (1 << 20)...(1 << 60), example: "16GiB") }
        _ = try OptionChecks.duration(wait, option: "--wait", within: 0...OptionChecks.week, example: "60s")
        _ = try OptionChecks.kernelCost(kernelSpteNs)
        if let bind { try EndpointCheck.validate(bind, option: "--bind", binding: true) }
    }

    /// The matrix from --matrix or the flags, with errors that say where.
    private func resolveMatrix() throws(ScenarioError) -> SweepMatrix {
        if let matrix {
            guard let text = try? String(contentsOfFile: matrix, encoding: .utf8) else {
                throw ScenarioError(.unreadable, file: matrix, "cannot read the sweep file")
            }
            return try SweepMatrix.parse(text, file: matrix)
        }
        func items(_ text: String?) -> [String] { (text ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        let workerCounts = try SweepMatrix.counts(items(workers), file: "command line", key: "--workers")
        return SweepMatrix(
            scenario: scenario ?? "quick", sizes: try SweepMatrix.sizes(items(sizes), file: "command line", key: "--sizes"),
            policies: policy.isEmpty ? [.sync, .async] : policy,
            vcpus: try SweepMatrix.counts(items(vcpus), file: "command line", key: "--vcpus"),
            workers: workerCounts.isEmpty ? [1] : workerCounts)
    }

    func run() throws {
        let logger = Logger(label: "zapfleet.sweep")
        try OutputError.checkOutputs(out: out, junit: nil)
        let kernelSpteNs = try OptionChecks.kernelCost(self.kernelSpteNs)
        let limit = maxMemory.flatMap(Quantities.parseSize) ?? SystemMemory.defaultLimit
        let cells: [SweepMatrix.Cell]
        let matrix: SweepMatrix
        do {
            matrix = try resolveMatrix()
            cells = try matrix.cells(base: try ScenarioCatalog.load(matrix.scenario))
            for cell in cells where MemoryEstimate.estimate(cell.scenario).peakBytes > limit {
                throw ScenarioError(
                    .tooLarge, file: "sweep cell \(cell.name)",
                    "needs about \(Quantities.describeSize(Double(MemoryEstimate.estimate(cell.scenario).peakBytes))) of page tables, more than the limit of \(Quantities.describeSize(Double(limit))); drop that size or raise --max-memory"
                )
            }
        } catch {
            printError("\(error)")
            throw ZapfleetExitCode.badInput
        }
        let fleetSecurity = try bind.map { try security.resolve(bind: $0, logger: logger) } ?? nil
        let cancellation = CancellationFlag()
        let interrupt = InterruptHandler { cancellation.cancel() }
        defer { interrupt.cancel() }
        var quiet = Logger(label: "zapfleet.sweep.fleet")
        quiet.logLevel = .warning
        var results: [SweepReport.CellResult] = []
        var worst: Int32 = 0
        for (index, cell) in cells.enumerated() {
            guard !cancellation.isCancelled else { break }
            logger.info("cell \(index + 1)/\(cells.count) \(cell.name): running")
            let started = Date()
            let start = monotonicNanoseconds()
            // Every worker gets a share: the memory is cut into one shard per worker (whole memslots).
            let slot = cell.scenario.vm.memslotBytes
            let slotsPerWorker = (UInt64(cell.scenario.memslotCount) + UInt64(cell.workers) - 1) / UInt64(cell.workers)
            let shardBytes = max(1, slotsPerWorker) * slot
            let outcome: FleetRunOutcome
            if let bind {
                var configuration = CoordinatorConfiguration(
                    bind: bind, expectWorkers: cell.workers, waitSeconds: Quantities.parseDuration(wait)! / 1e9,
                    kernelNanosecondsPerSPTE: kernelSpteNs, shardBytes: shardBytes, security: fleetSecurity)
                configuration.useWorkers = cell.workers
                do {
                    outcome = try Coordinator.run(
                        scenario: cell.scenario, configuration: configuration, logger: quiet,
                        cancellation: cancellation)
                } catch let error as FleetTransportError {
                    printError("cannot run the coordinator of cell \(cell.name): \(error); check --bind")
                    throw ZapfleetExitCode.badInput
                }
            } else {
                outcome = try LocalFleet.run(
                    scenario: cell.scenario, workers: cell.workers, memoryBudgetBytes: limit / UInt64(cell.workers),
                    kernelNanosecondsPerSPTE: kernelSpteNs, logger: quiet, cancellation: cancellation,
                    shardBytes: shardBytes)
            }
            let report = ReportOutput.report(
                scenario: cell.scenario, outcome: outcome, started: started,
                wallNanoseconds: monotonicNanoseconds() - start, kernelNanosecondsPerSPTE: kernelSpteNs)
            try ReportFiles.write(
                report, runs: outcome.runs, to: (out as NSString).appendingPathComponent(cell.name), external: outcome.external)
            results.append(
                SweepReport.CellResult(
                    name: cell.name, sizeBytes: cell.scenario.vm.memoryBytes, vcpus: cell.scenario.workload.vcpus,
                    workers: cell.workers, report: report))
            let resets = report.policies.map {
                "\($0.policy) reset max \(Quantities.formatDuration(Double($0.operations["reset"]?.measured.maxNs ?? 0)))"
            }
            logger.info("cell \(cell.name): \(report.verdict.summary); \(resets.joined(separator: ", "))")
            worst = Self.worse(worst, report.verdict.exitCode)
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try Data(SweepReport.csv(results).utf8).write(to: URL(fileURLWithPath: (out as NSString).appendingPathComponent("sweep.csv")))
        try Data(SweepReport.html(results, title: matrix.scenario).utf8).write(
            to: URL(fileURLWithPath: (out as NSString).appendingPathComponent("sweep.html")))
        print("sweep of \(matrix.scenario): \(results.count) of \(cells.count) cell(s) run; wrote \(out)/sweep.csv and sweep.html")
        if cancellation.isCancelled { worst = 130 }
        if worst != 0 { throw ExitCode(worst) }
    }

    /// The exit code that says more: a failure over a violation over a missed objective.
    static func worse(_ a: Int32, _ b: Int32) -> Int32 {
        let rank: [Int32: Int] = [0: 0, 1: 1, 4: 2, 2: 3, 130: 4, 70: 5]
        return (rank[a] ?? 6) >= (rank[b] ?? 6) ? a : b
    }
}
