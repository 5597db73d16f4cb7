import ArgumentParser
import Dispatch
import Foundation
import Logging
import ZapCluster
import ZapLive
import ZapEngine
import ZapRun
import ZapScenario
import ZapPlatform

/// `zapfleet run`: runs a scenario on this machine, every policy side by side, and reports.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a scenario on this machine and compare the policies side by side.",
        discussion: """
            SCENARIO is a built-in name (see `zapfleet scenarios`) or a YAML file; the default is `quick`. \
            Options override the scenario. The table goes to standard output; progress goes to standard \
            error (a live line on a terminal, log lines otherwise).

            --out DIR writes report.json (schema in the README), one .hgrm percentile distribution per \
            histogram (values in microseconds) and scenario.yaml, the exact scenario run.

            Exit codes: 0 every objective met and no invariant violated; 1 an objective missed; \
            2 an invariant violated; 4 inconclusive (an --inject bug whose broken path never ran); \
            64 bad input (nothing was run); 70 internal error; \
            130 interrupted by Ctrl-C (what was measured is still reported, marked incomplete).

            Examples:
              zapfleet run
              zapfleet run max-guest-memory --policy sync --policy async --out runs/mgm
              zapfleet run quick --inject double-queue
            """
    )

    @Argument(help: "Built-in scenario name or YAML file.")
    var scenario: String = "quick"

    @Option(help: "Run only this policy; repeat for several (sync, async, preserve).")
    var policy: [ZapPolicy] = []

    @Option(help: "Number of vCPU threads.")
    var vcpus: Int?

    @Option(help: "Guest memory, e.g. 64GiB (a whole number of memslots).")
    var size: String?

    @Option(help: "Re-create a known bug: \(InjectedBug.allCases.map(\.rawValue).joined(separator: ", ")). Repeatable.")
    var inject: [InjectedBug] = []

    @Option(help: "Seed of every random choice.")
    var seed: UInt64?

    @Option(
        help: ArgumentHelp(
            "Race amplification, replacing the scenario's chaos section: PROBABILITY[,MAX-DELAY] or 'off'.",
            discussion:
                "A seeded delay (uniform up to MAX-DELAY, default 100us) at each pass through a race window (\(RaceWindow.allCases.map(\.rawValue).joined(separator: ", "))) with the given probability; the scenario's seed fixes every delay."
        ))
    var chaos: String?

    @OptionGroup(title: "Report")
    var report: ReportOptions

    @Option(
        help: ArgumentHelp(
            "Also run the scenario's timeline on this host's real KVM, with this much guest memory (e.g. 1GiB), and show it as the column kvm:HOST.",
            discussion:
                "zapfleet-kvm-probe (make -C clients/c) runs populate, reset, populate, delete half the memslots and close on /dev/kvm (root here) with the scenario's memslots and vCPUs scaled to the size, with and without the zap-all quirk; the column is labelled with the kernel and the MMU it found (TDP or shadow, nested or not), and its deletes calibrate the projection's cost per SPTE. The guest's memory is real host memory: the probe refuses more than is available.",
            valueName: "size"))
    var kvm: String?

    @Option(help: "Refuse runs whose page tables would need more than this (default: 80% of available memory).")
    var maxMemory: String?

    @Option(help: "In-process workers (default: one per core). The scenario runs as one shard when it fits in --max-memory.")
    var workers: Int?

    @Flag(
        help:
            "Cut a scenario larger than --max-memory into shards, run on the in-process workers within it (each gets its share), instead of refusing it."
    )
    var shard = false

    @Flag(help: "No progress output.")
    var quiet = false

    @OptionGroup var eventsOption: EventsOption

    @OptionGroup(title: "Live view") var live: LiveOptions

    func validate() throws {
        if let vcpus { try OptionChecks.count(vcpus, option: "--vcpus", within: 1...4096) }
        // A 4-level root maps 256 TiB.
        if let size { _ = try OptionChecks.size(size, option: "--size", within: (2 << 20)...(1 << 48), example: "64GiB") }
        if let maxMemory { _ = try OptionChecks.size(maxMemory, option: "--max-memory", within: (1 << 20)...(1 << 60), example: "16GiB") }
        if let kvm { _ = try OptionChecks.size(kvm, option: "--kvm", within: (16 << 20)...(64 << 30), example: "1GiB") }
        if let workers { try OptionChecks.count(workers, option: "--workers", within: 1...256) }
        // Scenario files carry seeds up to 2^63 - 1, and the run is re-run from its scenario.yaml.
        if let seed, seed > UInt64(Int64.max) { throw ValidationError("--seed must be between 0 and \(Int64.max), got \(seed)") }
        if let chaos {
            do { _ = try ChaosConfiguration.parse(chaos, seed: 0) } catch { throw ValidationError("--chaos: \(error)") }
        }
    }

    func run() throws {
        // A job's log (a file, a pipe) gets each line as it is printed, the verdict included.
        StandardOutput.lineBuffered()
        let logger = Logger(label: "zapfleet.run")
        let out = report.out, junit = report.junit
        try OutputError.checkOutputs(out: out, junit: junit)
        let events = try eventsOption.open()
        let resolved: Scenario
        do {
            resolved = try applyOverrides(to: try ScenarioCatalog.load(scenario))
        } catch {
            printError(error.description)
            throw ZapfleetExitCode.badInput
        }
        let estimate = MemoryEstimate.estimate(resolved)
        let limit = maxMemory.flatMap(Quantities.parseSize) ?? SystemMemory.defaultLimit
        if estimate.peakBytes > limit && !shard {
            printError(
                """
                \(resolved.name): the page tables of \(Quantities.formatSize(resolved.vm.memoryBytes)) need about \
                \(Quantities.describeSize(Double(estimate.peakBytes))), more than the limit of \(Quantities.describeSize(Double(limit))). \
                Run it on a fleet, where it is cut into shards (`zapfleet coordinator`), cut it into shards \
                here with --shard (slower: one shard after another), use a smaller --size, or raise --max-memory \
                if this machine really has the memory.
                """)
            throw ZapfleetExitCode.badInput
        }

        // The real kernel first: a probe that cannot run (no KVM, too little memory) ends the run
        // before the simulation spends anything.
        var realKernel: (column: ExternalMeasurement, result: KernelProbeResult)?
        if let kvm, let bytes = Quantities.parseSize(kvm) {
            if !quiet { logger.info("measuring this host's KVM with \(kvm) of guest memory (zapfleet-kvm-probe)") }
            do {
                realKernel = try KernelProbeRunner.run(scenario: resolved, bytes: bytes)
            } catch {
                printError(error.description)
                throw error.badInput ? ZapfleetExitCode.badInput : ZapfleetExitCode.internalError
            }
        }
        // The projection's cost: as given, else the host's calibration, else the seed's 52 ns.
        let given = try report.kernelCost()
        let kernelSpteNs = given ?? realKernel?.result.calibration?.nanosecondsPerSPTE ?? 52

        let cancellation = CancellationFlag()
        let interrupt = InterruptHandler { cancellation.cancel() }
        defer { interrupt.cancel() }
        let progress = quiet ? nil : ProgressReporter(logger: logger)
        if !quiet {
            logger.info(
                "running \(resolved.name): \(Quantities.formatSize(resolved.vm.memoryBytes)), \(resolved.workload.vcpus) vCPUs, policies \(resolved.policies.map(\.rawValue).joined(separator: ", ")), page tables ≈ \(Quantities.describeSize(Double(estimate.peakBytes))), \(workerCount) in-process worker(s)"
            )
        }
        // The in-process fleet's routine messages (joins, assignments) would bury the progress
        // line; its warnings and errors still show.
        var clusterLogger = logger
        clusterLogger.logLevel = .warning
        let liveView = try live.start()
        let started = Date()
        let start = monotonicNanoseconds()
        var outcome: FleetRunOutcome
        do {
            // The local path is the fleet path: a coordinator and in-process workers over inproc sockets.
            outcome = try LocalFleet.run(
                scenario: resolved, workers: workerCount,
                memoryBudgetBytes: LocalFleet.workerBudget(
                    limit: limit, workers: workerCount, vcpus: resolved.workload.vcpus, sharded: estimate.peakBytes > limit),
                kernelNanosecondsPerSPTE: kernelSpteNs, events: events,
                logger: quiet ? Logger(label: "zapfleet.quiet", factory: { _ in SwiftLogNoOpLogHandler() }) : clusterLogger,
                cancellation: cancellation,
                progress: progress.map { reporter in { @Sendable _, update in reporter.update(update) } },
                snapshots: liveView.map { live in { @Sendable snapshot in live.view.publish(snapshot) } })
        } catch {
            printError("internal error: \(error)")
            throw ZapfleetExitCode.internalError
        }
        progress?.clear()
        if let realKernel {
            outcome.external.append(realKernel.column)
            print("real kernel: \(realKernel.column.name) is \(realKernel.column.source)")
            if given == nil, let calibration = realKernel.result.calibration {
                print(
                    "projection: \(Quantities.rounded(calibration.nanosecondsPerSPTE, 1)) ns per SPTE, this host's calibration (the seed's figure is 52 ns)"
                )
            }
        }
        let code = try ReportOutput.emit(
            scenario: resolved, outcome: outcome, started: started,
            wallNanoseconds: monotonicNanoseconds() - start, kernelNanosecondsPerSPTE: kernelSpteNs,
            out: out, fleetDetail: estimate.peakBytes > limit, junit: junit, events: events, history: report.historyEntry,
            onReport: liveView.map { live in { live.view.finish($0, rendered: $1) } })
        liveView?.server.stop(linger: live.httpLinger) { cancellation.isCancelled }
        if code != 0 { throw ExitCode(code) }
    }

    private var workerCount: Int { workers ?? ProcessInfo.processInfo.activeProcessorCount }

    /// The scenario with the command line's overrides, validated as a file would be.
    private func applyOverrides(to base: Scenario) throws(ScenarioError) -> Scenario {
        var scenario = base
        if !policy.isEmpty { scenario.policies = policy }
        if let vcpus { scenario.workload.vcpus = vcpus }
        if let size, let bytes = Quantities.parseSize(size) { scenario.vm.memoryBytes = bytes }
        if !inject.isEmpty { scenario.injectedBugs = inject }
        if let seed { scenario.seed = seed }
        if let chaos {
            do {
                scenario.chaos = try ChaosConfiguration.parse(chaos, seed: scenario.seed)
            } catch {
                throw ScenarioError(.badValue, file: "--chaos", "\(error)")
            }
        }
        scenario.chaos?.seed = scenario.seed
        // Objectives naming a policy that is no longer run are dropped with the policy.
        scenario.objectives = scenario.objectives.filter { $0.policy.map(scenario.policies.contains) ?? true }
        return try ScenarioParser.parse(ScenarioWriter.yaml(scenario), file: "\(self.scenario) (with command-line overrides)")
    }
}
