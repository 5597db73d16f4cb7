import Foundation
import Testing
import ZapfleetTestSupport

/// `zapfleet history` as a nightly job uses it: `run --history`, then `history check`.
@Suite("zapfleet history", .serialized, .timeLimit(.minutes(5)))
struct HistoryCommandTests {
    @Test("run --history adds the run; identical runs pass history check; a copy with async reset p99.9 ×10 fails it (exit 1)")
    func nightly() throws {
        let directory = TestPaths.temporaryDirectory()
        let database = directory + "/nightly.db"
        let run = try ZapfleetBinary.run([
            "run", "quick", "--quiet", "--out", directory + "/night1", "--history", database, "--label", "kernel=6.6.8", "--label",
            "host=node7"
        ])
        #expect(run.status == 0, "\(run.err)")
        #expect(run.out.contains("added run 1"), "\(run.out)")
        let report = directory + "/night1/report.json"
        for night in 2...7 {
            let added = try ZapfleetBinary.run(["history", "add", database, report, "--label", "kernel=6.6.8", "--label", "night=\(night)"])
            #expect(added.status == 0, "\(added.err)")
        }
        let list = try ZapfleetBinary.run(["history", "list", database, "--where", "host=node7"])
        #expect(list.status == 0)
        #expect(list.out.split(separator: "\n").count == 1 && list.out.contains("kernel=6.6.8"), "\(list.out)")

        let quiet = try ZapfleetBinary.run(["history", "check", database])
        #expect(quiet.status == 0, "\(quiet.out)\(quiet.err)")
        #expect(quiet.out.contains("0 regression(s)"), "\(quiet.out)")

        // Plant the regression: async's reset p99.9 (and what lies above it) ten times tonight's.
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as! [String: Any]
        var policies = json["policies"] as! [[String: Any]]
        let index = try #require(policies.firstIndex { $0["policy"] as? String == "async" })
        var operations = policies[index]["operations"] as! [String: Any]
        var reset = operations["reset"] as! [String: Any]
        var measured = reset["measured"] as! [String: Any]
        let p999 = try #require((measured["p999_ns"] as? NSNumber)?.doubleValue)
        for key in ["p999_ns", "p9999_ns", "max_ns"] { measured[key] = p999 * 10 }
        reset["measured"] = measured
        operations["reset"] = reset
        policies[index]["operations"] = operations
        json["policies"] = policies
        let slow = directory + "/slow.json"
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: slow))
        #expect(try ZapfleetBinary.run(["history", "add", database, slow, "--label", "kernel=6.6.9"]).status == 0)
        let flagged = try ZapfleetBinary.run(["history", "check", database])
        #expect(flagged.status == 1, "\(flagged.out)\(flagged.err)")
        #expect(flagged.out.contains("REGRESSION async.reset.p999"), "\(flagged.out)")

        let html = directory + "/trend.html"
        let trend = try ZapfleetBinary.run(["history", "trend", database, "--metric", "async.reset.p99.9", "--by", "kernel", "--out", html])
        #expect(trend.status == 0, "\(trend.err)")
        let page = try String(contentsOfFile: html, encoding: .utf8)
        #expect(page.contains("<svg") && page.contains("6.6.9"))
        let csv = directory + "/trend.csv"
        #expect(try ZapfleetBinary.run(["history", "trend", database, "--metric", "async.reset.p999", "--out", csv, "--csv"]).status == 0)
        #expect(try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n").count == 9)
    }

    @Test("bad input is refused with exit 64 and what to give instead; --history without --out is a usage error")
    func badInput() throws {
        let directory = TestPaths.temporaryDirectory()
        let notReport = directory + "/x.json"
        try "[1, 2]".write(toFile: notReport, atomically: true, encoding: .utf8)
        let add = try ZapfleetBinary.run(["history", "add", directory + "/h.db", notReport])
        #expect(add.status == 64 && add.err.contains("not a zapfleet report"), "\(add.err)")
        let label = try ZapfleetBinary.run(["history", "add", directory + "/h.db", notReport, "--label", "kernel"])
        #expect(label.status == 64 && label.err.contains("KEY=VALUE"), "\(label.err)")
        let metric = try ZapfleetBinary.run(["history", "check", directory + "/h.db", "--metric", "reset"])
        #expect(metric.status == 64 && metric.err.contains("POLICY.OPERATION.STAT"), "\(metric.err)")
        let noOut = try ZapfleetBinary.run(["run", "quick", "--history", directory + "/h.db"])
        #expect(noOut.status == 64 && noOut.err.contains("--out"), "\(noOut.err)")
        let database = try ZapfleetBinary.run(["history", "list", "/proc/nonexistent/h.db"])
        #expect(database.status == 64 && database.err.contains("history database"), "\(database.err)")
    }
}
