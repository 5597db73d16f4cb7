import ArgumentParser
import Foundation
import ZapPlatform

/// One figure a benchmark measured, beside its target where the project has one.
struct BenchmarkFigure {
    /// What was measured, with the size it was measured at.
    var name: String
    /// The figure, with its unit.
    var measured: String
    /// The bound or target ("" where there is none).
    var target = ""
    /// Whether the figure meets it (nil where there is none).
    var met: Bool?

    /// `value` as a ratio to `bound` (a raw operation's cost), with `atMost` as the target.
    static func ratio(
        _ name: String, _ value: Double, _ unit: String, of bound: Double, _ boundName: String, atMost: Double
    )
        -> BenchmarkFigure
    {
        BenchmarkFigure(
            name: name, measured: String(format: "%.2f %@ = %.2fx %@", value, unit, value / bound, boundName),
            target: String(format: "<= %.1fx", atMost), met: value / bound <= atMost)
    }
}

/// A benchmark that prints its details as it goes and returns its headline figures, so that
/// `zapfleet-bench all` can set every figure beside its target in one table.
protocol SummarisedBenchmark: ParsableCommand {
    /// Runs the benchmark, printing as it goes; the headline figures.
    func measure() throws -> [BenchmarkFigure]
}

extension SummarisedBenchmark {
    func run() throws { _ = try measure() }
}

/// Prints figures as a table: name, measured, target, verdict.
func printSummary(_ figures: [BenchmarkFigure]) {
    let nameWidth = min(100, figures.map(\.name.count).max() ?? 0)
    let measuredWidth = figures.map(\.measured.count).max() ?? 0
    let targetWidth = figures.map(\.target.count).max() ?? 0
    for figure in figures {
        let verdict = figure.met.map { $0 ? "met" : "MISSED" } ?? ""
        print(
            "  " + figure.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  "
                + figure.measured.padding(toLength: measuredWidth, withPad: " ", startingAt: 0) + "  "
                + figure.target.padding(toLength: targetWidth, withPad: " ", startingAt: 0) + "  " + verdict)
    }
}

/// Every benchmark of the performance targets, one after another, then one table of every
/// figure beside its target.
struct AllBenchmarks: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "all",
        abstract: "Every performance figure beside its target: engine, measurement, fleet, coordinator, journal, dispatch.",
        discussion: """
            Runs, in this order: `engine --gib 16`; `measurement`; `fleet` (seed-64t at 2TiB on 2 \
            workers within 3GiB: the run against the engine's own cost, measured in the same \
            invocation); `fleet --size 64TiB --repetitions 1 --target-seconds 150` (the seed's whole \
            experiment); `coordinator --workers 10000 --shards 60000 --result-seconds 10 \
            --heartbeat-seconds 40`; `journal` in .build/journal-bench; and `dispatch --hosts 2,4,8` \
            (network-namespace hosts; root only). Each prints its details as it runs; a table of the \
            headline figures, each beside its target, comes last. About 10 minutes on 2 cores. Exit \
            status 0 when every benchmark ran (a missed target is reported, not an error), 1 otherwise.
            """
    )

    @Flag(help: "Leave out the 64 TiB run (about 2 minutes) and the 10,000-worker coordinator (about 2 minutes).")
    var short = false

    func run() throws {
        // Progress as it happens, also when the output goes to a file (a nightly job's log).
        StandardOutput.lineBuffered()
        var plan: [(String, () throws -> any SummarisedBenchmark)] = [
            ("engine --gib 16", { try EngineBenchmark.parse(["--gib", "16"]) }),
            ("measurement", { try MeasurementBenchmark.parse([]) }),
            ("fleet", { try FleetBenchmark.parse([]) })
        ]
        if !short {
            plan.append(
                (
                    "fleet --size 64TiB --repetitions 1 --target-seconds 150",
                    { try FleetBenchmark.parse(["--size", "64TiB", "--repetitions", "1", "--target-seconds", "150"]) }
                ))
            plan.append(
                (
                    "coordinator --workers 10000 --shards 60000 --result-seconds 10 --heartbeat-seconds 40",
                    {
                        try CoordinatorBenchmark.parse([
                            "--workers", "10000", "--shards", "60000", "--result-seconds", "10", "--heartbeat-seconds", "40"
                        ])
                    }
                ))
        }
        try FileManager.default.createDirectory(atPath: ".build/journal-bench", withIntermediateDirectories: true)
        plan.append(("journal --directory .build/journal-bench", { try JournalBenchmark.parse(["--directory", ".build/journal-bench"]) }))
        plan.append(("dispatch --hosts 2,4,8", { try DispatchBenchmark.parse(["--hosts", "2,4,8"]) }))

        var figures: [BenchmarkFigure] = []
        var failures: [String] = []
        for (command, make) in plan {
            print("\n== zapfleet-bench \(command)")
            do {
                figures += try make().measure()
            } catch {
                print("error: \(error)")
                failures.append(command)
                figures.append(BenchmarkFigure(name: "zapfleet-bench \(command)", measured: "did not run: \(error)"))
            }
        }
        print("\n== every figure beside its target (release build, \(ProcessInfo.processInfo.activeProcessorCount) CPUs)")
        printSummary(figures)
        if !failures.isEmpty { throw ExitCode(1) }
    }
}
