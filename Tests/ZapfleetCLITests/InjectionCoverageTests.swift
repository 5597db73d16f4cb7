import Foundation
import Testing
import ZapfleetTestSupport
import ZapEngine
@testable import ZapRun

/// An injected bug proves something only if its broken path ran: each `--inject` counts how often
/// it did, and a run whose injected path never ran is inconclusive (exit 4), never a success.
@Suite("Injection coverage", .serialized, .timeLimit(.minutes(10)))
struct InjectionCoverageTests {
    @Test(
        "`zapfleet run quick --inject X`, for every X: exit 2 naming a violation with X's path counted, or exit 4 saying the path never ran",
        arguments: InjectedBug.allCases)
    func everyInjection(_ bug: InjectedBug) throws {
        let directory = TestPaths.temporaryDirectory()
        let result = try ZapfleetBinary.run(["run", "quick", "--inject", bug.rawValue, "--out", directory])
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/report.json")))
        let runs = report.policies.filter { policy in bug.applicablePolicies.map(\.rawValue).contains(policy.policy) }
            .map { $0.injectedPathRuns?[bug.rawValue] ?? 0 }
        switch result.status {
        case 2:
            #expect(report.verdict.violations > 0)
            #expect(runs.contains { $0 > 0 }, "a violation with the injected path counted: \(runs)")
        case 4:
            #expect(runs.allSatisfy { $0 == 0 }, "\(runs)")
            #expect(result.out.contains("injected \(bug.rawValue): the broken path never ran"), "\(result.out)")
            #expect(report.injectionsNotReached == [bug.rawValue])
        default:
            Issue.record("\(bug): exit \(result.status), neither a violation nor inconclusive\n\(result.out)")
        }
    }

    @Test("a sync-only run with an async-only injection never reaches it: exit 4, not 0")
    func injectionOutsideItsPolicy() throws {
        let directory = TestPaths.temporaryDirectory()
        let result = try ZapfleetBinary.run(["run", "quick", "--policy", "sync", "--inject", "zap-unreferenced", "--out", directory])
        #expect(result.status == 4, "\(result.out)")
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/report.json")))
        #expect(report.verdict.summary.contains("zap-unreferenced"))
    }
}
