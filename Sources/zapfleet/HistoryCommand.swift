import ArgumentParser
import Foundation
import ZapHistory

/// `zapfleet history`: the runs of a nightly job kept in SQLite, listed, plotted and checked.
struct HistoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "Keep run reports in a SQLite history; list them, plot a metric's trend, check the newest for regressions.",
        discussion: """
            A history is one SQLite file. `add` keeps a report.json's figures (every operation's measured \
            count, min, mean, p50, p90, p99, p999, p9999 and max, per policy, as POLICY.OPERATION.STAT, \
            e.g. async.reset.p999) under labels such as kernel=6.6.8 host=node7 commit=abc123; `run` and \
            `coordinator` add themselves with --history DB --label KEY=VALUE. A database written by an \
            older zapfleet is migrated when opened.

            Nightly:
              zapfleet run seed-64t --shard --out runs/$(date +%F) --history nightly.db --label kernel=$(uname -r)
              zapfleet history check nightly.db || alert "zapfleet: a regression"
            """,
        subcommands: [HistoryAdd.self, HistoryList.self, HistoryTrend.self, HistoryCheckCommand.self]
    )
}

/// Opens a history, or exits 64 saying why.
func openHistory(_ path: String) throws -> HistoryDatabase {
    do {
        return try HistoryDatabase(path: path)
    } catch {
        printError("\(error.message); give a path where a SQLite file can be created or read")
        throw ZapfleetExitCode.badInput
    }
}

/// Adds a report to a history: what `history add` does, and `run`/`coordinator --history`.
func addToHistory(database path: String, report: String, labels pairs: [String]) throws {
    let labels: [String: String]
    let metrics: ReportMetrics
    do {
        labels = try HistoryDatabase.labels(pairs)
        guard let data = FileManager.default.contents(atPath: report) else {
            throw HistoryError(.badReport, "\(report) cannot be read; give the report.json a run wrote (zapfleet run --out DIR)")
        }
        metrics = try ReportMetrics.read(data, file: report)
    } catch let error as HistoryError {
        printError(error.message)
        throw ZapfleetExitCode.badInput
    }
    let database = try openHistory(path)
    do {
        let id = try database.add(metrics, labels: labels, source: report)
        print("history \(path): added run \(id) (\(metrics.scenario), \(metrics.values.count) metrics)")
    } catch {
        printError(error.message)
        throw ZapfleetExitCode.internalError
    }
}

struct HistoryAdd: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Add a report.json to a history.")

    @Argument(help: "The history (a SQLite file; created if missing).")
    var database: String

    @Argument(help: "The report.json to add.")
    var report: String

    @Option(name: .customLong("label"), help: "A label KEY=VALUE for the run (repeatable), e.g. --label kernel=6.6.8.")
    var labels: [String] = []

    func run() throws { try addToHistory(database: database, report: report, labels: labels) }
}

struct HistoryList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List a history's runs, oldest first.")

    @Argument(help: "The history.")
    var database: String

    @Option(name: .customLong("where"), help: "Only runs with this label KEY=VALUE (repeatable: all must hold).")
    var filters: [String] = []

    func run() throws {
        let filter: [String: String]
        do { filter = try HistoryDatabase.labels(filters) } catch {
            printError(error.message)
            throw ZapfleetExitCode.badInput
        }
        for run in try openHistory(database).runs(where: filter) {
            let labels = run.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            print("\(run.id)\t\(run.startedAt)\t\(run.scenario)\texit \(run.exitCode)\t\(labels)")
        }
    }
}

struct HistoryTrend: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trend", abstract: "Plot one metric over a history's runs (self-contained HTML; CSV with --csv).")

    @Argument(help: "The history.")
    var database: String

    @Option(help: "The metric, POLICY.OPERATION.STAT, e.g. async.reset.p999.")
    var metric: String

    @Option(help: "A label whose values split the runs into series, e.g. kernel.")
    var by: String?

    @Option(help: "Where to write the plot (HTML, or CSV with --csv).")
    var out: String

    @Flag(help: "Write CSV instead of HTML.")
    var csv = false

    func run() throws {
        let name: String
        switch ReportMetrics.normalise(metric: metric) {
        case .success(let normalised): name = normalised
        case .failure(let error):
            printError(error.message)
            throw ZapfleetExitCode.badInput
        }
        let trend = try Trend.of(name, by: by, in: openHistory(database))
        do {
            try (csv ? trend.csv : trend.html).write(toFile: out, atomically: true, encoding: .utf8)
        } catch {
            printError("cannot write \(out): \(error.localizedDescription)")
            throw ZapfleetExitCode.badInput
        }
        print("wrote \(out): \(name), \(trend.series.values.reduce(0) { $0 + $1.count }) point(s) in \(trend.series.count) series")
    }
}

struct HistoryCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check the newest run of a history against the runs before it; exit 1 on a regression.",
        discussion: """
            For each metric (--metric, repeatable; by default every p99 and p999 the newest run has), \
            the baseline is that metric in up to --window earlier runs of the same scenario (at least 5 \
            are needed for a verdict). The newest value regresses when it is more than --factor times \
            the worst baseline value (tail percentiles on shared machines are heavy-tailed: a band \
            around the median raised alarms on most A/A runs; see the README). Only increases count.

            Exit codes: 0 no regression (or too little history); 1 a regression; 64 bad input.
            """
    )

    @Argument(help: "The history.")
    var database: String

    @Option(help: "Earlier runs of the same scenario to compare with.")
    var window: Int = RegressionRule.standard.window

    @Option(help: "How many times the worst earlier value the newest must exceed to count as a regression.")
    var factor: Double = RegressionRule.standard.factor

    @Option(name: .customLong("metric"), help: "A metric to check, POLICY.OPERATION.STAT (repeatable).")
    var metrics: [String] = []

    func validate() throws {
        guard (1...10_000).contains(window) else { throw ValidationError("--window must be between 1 and 10000, got \(window)") }
        guard factor.isFinite, factor >= 1, factor <= 1000 else {
            throw ValidationError("--factor must be a number from 1 to 1000, got \(factor)")
        }
    }

    func run() throws {
        var names: [String] = []
        for metric in metrics {
            switch ReportMetrics.normalise(metric: metric) {
            case .success(let name): names.append(name)
            case .failure(let error):
                printError(error.message)
                throw ZapfleetExitCode.badInput
            }
        }
        var rule = RegressionRule.standard
        rule.window = window
        rule.factor = factor
        guard let check = try HistoryCheck.newest(in: openHistory(database), metrics: names, rule: rule) else {
            print("history \(database) is empty: nothing to check")
            return
        }
        let judged = check.verdicts.filter { if case .notEnoughHistory = $0.verdict { false } else { true } }
        for (metric, verdict) in check.regressions {
            if case .regressed(let value, let median, let bound) = verdict {
                print(
                    "REGRESSION \(metric): \(Trend.format(value)), more than \(Trend.format(factor)) × the worst of the runs before it (bound \(Trend.format(bound)); their median \(Trend.format(median)))"
                )
            }
        }
        print(
            "run \(check.run.id) (\(check.run.scenario)): \(check.regressions.count) regression(s) in \(judged.count) metric(s) judged, \(check.verdicts.count - judged.count) without enough history"
        )
        if !check.regressions.isEmpty { throw ZapfleetExitCode.sloMissed }
    }
}
