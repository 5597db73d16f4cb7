import Foundation
import ZapCluster
import ZapRun
import ZapScenario
import ArgumentParser

/// Turns a fleet outcome into what the user sees: the table, the files, the exit code.
enum ReportOutput {
    /// Prints the report of `outcome`, writes its files into `out` if given, and returns the
    /// exit code its verdict calls for.
    static func emit(
        scenario: Scenario, outcome: FleetRunOutcome, started: Date, wallNanoseconds: UInt64,
        kernelNanosecondsPerSPTE: Double, out: String?, fleetDetail: Bool, junit: String? = nil,
        events: FleetEventLog? = nil, history: (database: String, labels: [String])? = nil,
        onReport: ((RunReport, ReportFiles.Rendered) -> Void)? = nil
    ) throws -> Int32 {
        let report = self.report(
            scenario: scenario, outcome: outcome, started: started, wallNanoseconds: wallNanoseconds,
            kernelNanosecondsPerSPTE: kernelNanosecondsPerSPTE)
        print(
            "zapfleet \(scenario.name): \(Quantities.formatSize(scenario.vm.memoryBytes)), \(scenario.workload.vcpus) vCPUs, seed \(scenario.seed)"
        )
        // report.json and report.html, rendered once for the files and the live view.
        let rendered =
            out != nil || onReport != nil ? Result { try ReportFiles.render(report, runs: outcome.runs, external: outcome.external) } : nil
        if let onReport, case .success(let page)? = rendered { onReport(report, page) }
        print(ReportTable.render(report, fleetDetail: fleetDetail), terminator: "")
        if let failure = outcome.failure { printError(failure.description) }
        if let out {
            do {
                let files = try ReportFiles.write(
                    report, rendered: rendered!.get(), runs: outcome.runs, to: out, intervalLog: fleetDetail ? outcome.intervalLog : nil)
                print("wrote \(files.count) files to \(out)")
            } catch {
                printError("cannot write the report to \(out): \(OptionChecks.reason(error)); the measurements are in the table above")
                return ZapfleetExitCode.internalError.rawValue
            }
        }
        if let junit {
            do {
                try Data(JUnitReport.render(report).utf8).write(to: URL(fileURLWithPath: junit), options: .atomic)
            } catch {
                printError("cannot write JUnit XML to \(junit): \(OptionChecks.reason(error))")
                return ZapfleetExitCode.internalError.rawValue
            }
        }
        if let history, let out {
            do {
                try addToHistory(
                    database: history.database, report: (out as NSString).appendingPathComponent("report.json"), labels: history.labels)
            } catch {
                // The run's own verdict stands; a run that passed but could not be kept is not a pass.
                if report.verdict.exitCode == 0 { return ZapfleetExitCode.internalError.rawValue }
            }
        }
        var fields: [String: FleetEvent.Value] = [
            "exit_code": .number(report.verdict.exitCode), "verdict": .string(report.verdict.summary),
            "complete": .boolean(report.complete),
            "scenario": .string(scenario.name)
        ]
        if let failure = outcome.failure { fields["failure"] = .string(failure.code.rawValue) }
        if let out { fields["out"] = .string(out) }
        events?.record(FleetEvent(.runFinished, .info, "verdict: \(report.verdict.summary) (exit \(report.verdict.exitCode))", fields))
        return report.verdict.exitCode
    }

    /// The report of a fleet outcome; an outcome stopped before every shard had its result is
    /// marked incomplete, exit 130.
    static func report(
        scenario: Scenario, outcome: FleetRunOutcome, started: Date, wallNanoseconds: UInt64,
        kernelNanosecondsPerSPTE: Double
    ) -> RunReport {
        var report = RunReport(
            scenario: scenario, runs: outcome.runs, slice: .whole(scenario),
            kernelNanosecondsPerSPTE: kernelNanosecondsPerSPTE, startedAt: started,
            wallNanoseconds: wallNanoseconds, version: ZapfleetVersion.current,
            fleet: outcome.fleet, failure: outcome.failure.map { "\($0.description) [\($0.code.rawValue)]" }, external: outcome.external)
        if !outcome.complete && report.complete {
            report.complete = false
            if [RunExitCode.met, .objectiveMissed, .inconclusive].map(\.rawValue).contains(report.verdict.exitCode) {
                report.verdict.exitCode = RunExitCode.interrupted.rawValue
                report.verdict.summary = "interrupted: the report holds what was measured before the stop"
            }
        }
        return report
    }
}

/// Writes `message` to standard error.
func printError(_ message: String) {
    FileHandle.standardError.write(Data(("zapfleet: " + message + "\n").utf8))
}
