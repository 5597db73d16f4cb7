import ArgumentParser
import Foundation
import ZapRun
import ZapScenario

/// `zapfleet compare`: a nightly job's regression check between two reports.
struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Compare two report.json files and flag regressions.",
        discussion: """
            Compares p50, p99, p99.9 and max of every operation's measured block time, per policy, and \
            the violation counts. A latency regresses when it grew by more than --tolerance and by more \
            than --noise-floor; violations regress when they grow at all. Both reports must have the same \
            schema version and scenario.

            Exit codes: 0 no regression; 1 a regression; 64 the files cannot be read or compared.

            Example:
              zapfleet compare runs/baseline/report.json runs/tonight/report.json --tolerance 10%
            """
    )

    @Argument(help: "The baseline report.json.")
    var baseline: String

    @Argument(help: "The current report.json.")
    var current: String

    @Option(help: "Allowed growth before a latency counts as a regression, e.g. 10%.")
    var tolerance: String = "10%"

    @Option(help: "Growth smaller than this never counts, e.g. 1us (timer noise).")
    var noiseFloor: String = "1us"

    @Flag(help: "List every metric, not only the regressions and the largest changes.")
    var all = false

    func validate() throws {
        guard parsedTolerance != nil else {
            throw ValidationError("--tolerance '\(tolerance)' is not a percentage from 0% to 1000000%, e.g. 10%")
        }
        _ = try OptionChecks.duration(noiseFloor, option: "--noise-floor", within: 0...3600e9, example: "1us")
    }

    private var parsedTolerance: Double? {
        let text = tolerance.hasSuffix("%") ? String(tolerance.dropLast()) : tolerance
        guard let value = Double(text), value.isFinite, value >= 0, value <= 1_000_000 else { return nil }
        return value / 100
    }

    func run() throws {
        let reports = try [baseline, current].map { path throws -> RunReport in
            do {
                return try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: path)))
            } catch {
                printError(
                    "\(path): not a readable zapfleet report.json (\(OptionChecks.reason(error))); compare the report.json files that `run --out` or `coordinator --out` write"
                )
                throw ZapfleetExitCode.badInput
            }
        }
        let comparison: ReportComparison
        do {
            comparison = try ReportComparison.compare(
                baseline: reports[0], current: reports[1], tolerance: parsedTolerance!,
                noiseFloorNanoseconds: Quantities.parseDuration(noiseFloor)!)
        } catch {
            printError("cannot compare: \(error)")
            throw ZapfleetExitCode.badInput
        }
        let shown =
            all
            ? comparison.changes
            : comparison.regressions
                + comparison.changes.filter { !$0.regression }.sorted { abs($0.relative) > abs($1.relative) }.prefix(10)
        print("metric".padding(toLength: 40, withPad: " ", startingAt: 0) + "    baseline     current   change")
        for change in shown {
            let format: (Double) -> String =
                change.metric.hasSuffix("violations")
                ? { Quantities.rounded($0, 0) } : { Quantities.formatDuration($0) }
            let relative =
                change.relative.isInfinite ? "new" : "\(change.relative >= 0 ? "+" : "")\(Quantities.rounded(change.relative * 100, 1))%"
            print(
                change.metric.padding(toLength: 40, withPad: " ", startingAt: 0)
                    + format(change.baseline).leftPadded(12) + format(change.current).leftPadded(12) + relative.leftPadded(9)
                    + (change.regression ? "  REGRESSION" : ""))
        }
        let regressions = comparison.regressions.count
        print("\(comparison.changes.count) metrics compared, \(regressions) regression(s) beyond \(tolerance)")
        if regressions > 0 { throw ZapfleetExitCode.sloMissed }
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}
