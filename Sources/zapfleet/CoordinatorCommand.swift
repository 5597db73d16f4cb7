import ArgumentParser
import Foundation
import Logging
import ZapCluster
import ZapLive
import ZapEngine
import ZapRun
import ZapScenario
import ZapPlatform

/// `zapfleet coordinator`: cuts a scenario into shards and runs them on workers over ZeroMQ.
struct CoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Run a scenario on a fleet of workers: plan shards, hand them out, merge the results.",
        discussion: """
            Binds a ROUTER socket and waits for --expect-workers workers (`zapfleet worker --connect …`), \
            up to --wait; then cuts the scenario's memory at memslot boundaries into shards that fit the \
            smallest worker budget, hands them out as workers become free, requeues the shard of a worker \
            that goes silent for --liveness heartbeat intervals, keeps the first result of each shard, \
            and merges the histograms exactly. Prints the same table as `zapfleet run`, plus the whole-VM \
            view, workers and shards; --out also writes shards.hlog (HdrHistogram interval log).

            Security: a coordinator binds a network address only with CURVE keys (--key, --allow-keys; \
            see `zapfleet keygen`), or with --insecure on purpose. Workers whose public key is not on \
            the allow-list are refused and logged, and get no shard. Without keys it binds loopback only.

            Durability: with --out, every accepted shard result is appended to OUT/journal.zfj and synced \
            to disk (fsync, a CRC32 per record) before the worker hears it was accepted. If the \
            coordinator dies, `zapfleet coordinator --resume OUT` reloads the journal (a torn last \
            record is detected and ignored), runs only the shards without a result, and takes the \
            workers back as they reconnect; the totals are those of an uninterrupted run.

            Exit codes as `zapfleet run`: 0, 1 objective missed, 2 invariant violated, 4 an injected bug never \
            reached, 64 bad input, \
            70 failure (a shard out of attempts, no workers), 130 interrupted.

            Example:
              zapfleet coordinator --scenario seed-64t --bind tcp://0.0.0.0:5555 --expect-workers 4 \\
                --key keys/coordinator.key --allow-keys keys/workers/ --out runs/seed
            """
    )

    @Option(help: "Built-in scenario name or YAML file (default: quick).")
    var scenario: String?

    @Option(
        help: ArgumentHelp(
            "Take up an interrupted run: RUN_DIR is its --out directory. Its journal gives the scenario, the shards and every result it accepted; only the shards without one are run.",
            valueName: "run-dir"))
    var resume: String?

    @Option(help: "ZeroMQ endpoint to bind, e.g. tcp://0.0.0.0:5555.")
    var bind: String = "tcp://127.0.0.1:5555"

    @Option(help: "Workers to wait for before planning.")
    var expectWorkers: Int = 1

    @Option(
        help:
            "External agents (`zapfleet-agent-c`, real kernels' measurements) to wait for; their samples become the report's \"external\" column, and the run fails if fewer report."
    )
    var expectAgents: Int = 0

    @Option(help: "How long to wait for the expected workers, e.g. 60s; planning then starts with those present.")
    var wait: String = "60s"

    @Option(help: "Heartbeat interval, e.g. 1s.")
    var heartbeatInterval: String = "1s"

    @Option(help: "Silent heartbeat intervals after which a worker is missing and its shard is requeued.")
    var liveness: Int = 3

    @Option(
        help:
            "Attempts of a shard that may come to nothing (worker lost, result refused, progress deadline missed) before the run fails. Give-backs do not count."
    )
    var maxAttempts: Int = 3

    @Option(
        help:
            "Heartbeat intervals a running shard may go without a progress report before its attempt is revoked and the shard requeued (a late result of it is dropped)."
    )
    var progressDeadline: Int = 600

    @Option(
        help:
            "Assignments a worker may give back, let lapse or answer with a refused result in a row before it gets no more shards (the report says which and why)."
    )
    var giveBackLimit: Int = 3

    @Option(help: "Largest shard, e.g. 2TiB (default: as large as the smallest worker budget allows).")
    var shardSize: String?

    @OptionGroup(title: "Report")
    var report: ReportOptions

    @OptionGroup(title: "Security")
    var security: CoordinatorSecurityOptions

    @OptionGroup var eventsOption: EventsOption

    @OptionGroup(title: "Live view") var live: LiveOptions

    func validate() throws {
        try EndpointCheck.validate(bind, option: "--bind", binding: true)
        _ = try OptionChecks.duration(wait, option: "--wait", within: 0...OptionChecks.week, example: "60s")
        _ = try OptionChecks.duration(heartbeatInterval, option: "--heartbeat-interval", within: 10e6...3600e9, example: "1s")
        try OptionChecks.count(expectWorkers, option: "--expect-workers", within: 1...65_536)
        try OptionChecks.count(expectAgents, option: "--expect-agents", within: 0...1024)
        try OptionChecks.count(maxAttempts, option: "--max-attempts", within: 1...1000)
        // Workers clamp the liveness a welcome gives them to 1000: both sides must agree.
        try OptionChecks.count(liveness, option: "--liveness", within: 2...1000)
        try OptionChecks.count(progressDeadline, option: "--progress-deadline", within: 2...1_000_000)
        try OptionChecks.count(giveBackLimit, option: "--give-back-limit", within: 1...1000)
        if let shardSize { _ = try OptionChecks.size(shardSize, option: "--shard-size", within: (2 << 20)...(1 << 48), example: "2TiB") }
        if resume != nil && scenario != nil {
            throw ValidationError("--resume takes the scenario from the run's journal; drop --scenario")
        }
    }

    func run() throws {
        // A job's log (a file, a pipe) gets each line as it is printed, the verdict included.
        StandardOutput.lineBuffered()
        let logger = Logger(label: "zapfleet.coordinator")
        let resolved: Scenario
        var resumed: JournalContents?
        let out = report.out ?? resume, junit = report.junit
        // Before any worker is waited for: a run whose files cannot be written is not started.
        try OutputError.checkOutputs(out: out, junit: junit)
        let events = try eventsOption.open()
        do {
            if let resume {
                let contents = try ResultJournal.load(ResultJournal.path(inRunDirectory: resume))
                resolved = try ScenarioParser.parse(contents.plan.scenarioYAML, file: ResultJournal.path(inRunDirectory: resume))
                resumed = contents
            } else {
                resolved = try ScenarioCatalog.load(scenario ?? "quick")
            }
            if let out { try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true) }
            // Resumed into another directory: the journal goes on there, from a copy of the old one.
            if let resume, let out, URL(fileURLWithPath: resume).standardizedFileURL != URL(fileURLWithPath: out).standardizedFileURL {
                let target = ResultJournal.path(inRunDirectory: out)
                try? FileManager.default.removeItem(atPath: target)
                try FileManager.default.copyItem(atPath: ResultJournal.path(inRunDirectory: resume), toPath: target)
            }
        } catch let error as JournalError {
            printError(error.description)
            throw ZapfleetExitCode.badInput
        } catch let error as ScenarioError {
            printError(error.description)
            throw ZapfleetExitCode.badInput
        } catch {
            printError("cannot use --out \(out ?? ""): \(error)")
            throw ZapfleetExitCode.badInput
        }
        let security = try self.security.resolve(bind: bind, logger: logger)
        // A resumed run keeps the projection it started with.
        let kernelCost = try resumed?.plan.kernelNanosecondsPerSPTE ?? report.kernelCost() ?? 52
        let cancellation = CancellationFlag()
        let interrupt = InterruptHandler { cancellation.cancel() }
        defer { interrupt.cancel() }
        var configuration = CoordinatorConfiguration(
            bind: bind, expectWorkers: expectWorkers, waitSeconds: Quantities.parseDuration(wait)! / 1e9,
            heartbeatIntervalMilliseconds: Int(Quantities.parseDuration(heartbeatInterval)! / 1e6), heartbeatLiveness: liveness,
            maxAttempts: maxAttempts, kernelNanosecondsPerSPTE: kernelCost, shardBytes: shardSize.flatMap(Quantities.parseSize),
            security: security, journalPath: out.map(ResultJournal.path(inRunDirectory:)), resume: resumed)
        configuration.expectAgents = expectAgents
        configuration.progressDeadlineIntervals = progressDeadline
        configuration.giveBackLimit = giveBackLimit
        configuration.events = events
        let liveView = try live.start()
        if let liveView { configuration.snapshots = { liveView.view.publish($0) } }
        let started = Date()
        let start = monotonicNanoseconds()
        let outcome: FleetRunOutcome
        do {
            outcome = try Coordinator.run(scenario: resolved, configuration: configuration, logger: logger, cancellation: cancellation)
        } catch let error as FleetTransportError {
            printError("cannot run the coordinator: \(error); check --bind")
            throw ZapfleetExitCode.badInput
        }
        let code = try ReportOutput.emit(
            scenario: resolved, outcome: outcome, started: started,
            wallNanoseconds: monotonicNanoseconds() - start, kernelNanosecondsPerSPTE: kernelCost,
            out: out, fleetDetail: true, junit: junit, events: events, history: report.historyEntry,
            onReport: liveView.map { live in { live.view.finish($0, rendered: $1) } })
        liveView?.server.stop(linger: live.httpLinger) { cancellation.isCancelled }
        if code != 0 { throw ExitCode(code) }
    }
}
