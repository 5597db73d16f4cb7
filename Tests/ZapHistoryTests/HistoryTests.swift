import Foundation
import GRDB
import Testing
import ZapHistory
import ZapfleetTestSupport

/// The run history on a real SQLite file: adding reports, listing, trends, the regression check
/// and the migration of an older database.
@Suite("Run history")
struct HistoryTests {
    /// A report.json as `zapfleet run` writes it, with the figures that matter here.
    static func report(scenario: String = "quick", resetP999: Double, faultP99: Double = 2_000) -> Data {
        func summary(_ p999: Double, _ p99: Double) -> [String: Any] {
            [
                "count": 100, "min_ns": 10, "mean_ns": p99 / 2, "p50_ns": p99 / 4, "p90_ns": p99 / 2, "p99_ns": p99,
                "p999_ns": p999, "p9999_ns": p999, "max_ns": p999
            ]
        }
        let object: [String: Any] = [
            "schema": "zapfleet-report", "schema_version": 1, "scenario": scenario, "started_at": "2026-12-03T00:00:00Z",
            "policies": [
                [
                    "policy": "async", "wall_seconds": 1.5,
                    "operations": [
                        "reset": ["measured": summary(resetP999, resetP999 / 2)],
                        "fault": ["measured": summary(faultP99 * 2, faultP99)],
                        "teardown": ["measured": ["count": 0]]
                    ]
                ]
            ],
            "verdict": ["exit_code": 0]
        ]
        return try! JSONSerialization.data(withJSONObject: object)
    }

    static func database() throws -> (HistoryDatabase, String) {
        let path = TestPaths.temporaryDirectory() + "/history.db"
        return (try HistoryDatabase(path: path), path)
    }

    @Test("added reports are listed oldest first with their labels, and --where keeps the runs with every label given")
    func addAndList() throws {
        let (database, _) = try Self.database()
        let a = try ReportMetrics.read(Self.report(resetP999: 1000), file: "a.json")
        #expect(a.values["async.reset.p999"] == 1000)
        #expect(a.values["async.fault.p99"] == 2000)
        #expect(a.values["async.teardown.p99"] == nil, "an operation without samples has no figures")
        try database.add(a, labels: ["kernel": "6.6", "host": "n1"], source: "a.json")
        try database.add(a, labels: ["kernel": "6.7", "host": "n1"], source: "b.json")
        try database.add(a, labels: [:], source: "c.json")
        let runs = try database.runs()
        #expect(runs.map(\.source) == ["a.json", "b.json", "c.json"])
        #expect(runs[0].labels == ["kernel": "6.6", "host": "n1"])
        #expect(try database.runs(where: ["host": "n1"]).count == 2)
        #expect(try database.runs(where: ["host": "n1", "kernel": "6.7"]).map(\.source) == ["b.json"])
        #expect(try database.runs(where: ["kernel": "5.15"]).isEmpty)
    }

    @Test("a planted regression (async reset p99.9 ten times the earlier runs) is flagged; the same report again is not")
    func plantedRegression() throws {
        let (database, _) = try Self.database()
        // Earlier runs with the spread a shared machine gives.
        for (index, value) in [1000.0, 1100, 950, 1300, 1050, 990, 1200, 1010].enumerated() {
            try database.add(
                ReportMetrics.read(Self.report(resetP999: value, faultP99: 2000 + Double(index * 37)), file: "r\(index)"), labels: [:],
                source: "r\(index)")
        }
        try database.add(ReportMetrics.read(Self.report(resetP999: 1050), file: "same"), labels: [:], source: "same")
        let quiet = try #require(try HistoryCheck.newest(in: database, metrics: []))
        #expect(quiet.regressions.isEmpty, "\(quiet.regressions.map(\.metric))")
        #expect(quiet.verdicts.contains { $0.metric == "async.reset.p999" })

        try database.add(ReportMetrics.read(Self.report(resetP999: 10_500), file: "slow"), labels: [:], source: "slow")
        let check = try #require(try HistoryCheck.newest(in: database, metrics: []))
        #expect(check.regressions.map(\.metric).contains("async.reset.p999"))
        #expect(!check.regressions.map(\.metric).contains("async.fault.p99"), "a metric that did not move is not flagged")
        // Named explicitly, as the command line spells it.
        let named = try ReportMetrics.normalise(metric: "async.reset.p99.9").get()
        #expect(try HistoryCheck.newest(in: database, metrics: [named])!.regressions.count == 1)
    }

    @Test("identical reports never raise an alarm, and too little history gives no verdict")
    func identicalReports() throws {
        let (database, _) = try Self.database()
        for index in 0..<12 {
            try database.add(ReportMetrics.read(Self.report(resetP999: 1000), file: "r"), labels: [:], source: "r\(index)")
            let check = try #require(try HistoryCheck.newest(in: database, metrics: []))
            #expect(check.regressions.isEmpty)
            if index < 5 {
                #expect(check.verdicts.allSatisfy { if case .notEnoughHistory = $0.verdict { true } else { false } })
            }
        }
    }

    @Test("runs of another scenario are not a baseline")
    func scenariosApart() throws {
        let (database, _) = try Self.database()
        for index in 0..<8 {
            try database.add(
                ReportMetrics.read(Self.report(scenario: "big", resetP999: 50_000), file: "b"), labels: [:], source: "b\(index)")
        }
        try database.add(ReportMetrics.read(Self.report(scenario: "quick", resetP999: 1000), file: "q"), labels: [:], source: "q")
        let check = try #require(try HistoryCheck.newest(in: database, metrics: []))
        #expect(check.verdicts.allSatisfy { if case .notEnoughHistory(0) = $0.verdict { true } else { false } })
    }

    @Test("a database written before labels existed (schema v1) is migrated when opened, its runs kept")
    func migratesOlderSchema() throws {
        let path = TestPaths.temporaryDirectory() + "/old.db"
        // The schema of v1 as an older zapfleet created it, and one run in it.
        let old = try DatabaseQueue(path: path)
        try old.write { db in
            try db.execute(
                sql: """
                    CREATE TABLE grdb_migrations (identifier TEXT NOT NULL PRIMARY KEY);
                    INSERT INTO grdb_migrations VALUES ('v1');
                    CREATE TABLE run (id INTEGER PRIMARY KEY AUTOINCREMENT, added_at TEXT NOT NULL, scenario TEXT NOT NULL,
                        started_at TEXT NOT NULL, exit_code INTEGER NOT NULL, source TEXT NOT NULL);
                    CREATE TABLE metric (run_id INTEGER NOT NULL REFERENCES run(id) ON DELETE CASCADE, name TEXT NOT NULL,
                        value DOUBLE NOT NULL, PRIMARY KEY (run_id, name));
                    INSERT INTO run (added_at, scenario, started_at, exit_code, source) VALUES ('2026-01-01T00:00:00Z', 'quick', 'then', 0, 'old.json');
                    INSERT INTO metric VALUES (1, 'async.reset.p999', 1234);
                    """)
        }
        try old.close()
        let database = try HistoryDatabase(path: path)
        let runs = try database.runs()
        #expect(runs.count == 1 && runs[0].source == "old.json" && runs[0].labels.isEmpty)
        #expect(try database.values(of: "async.reset.p999") == [1: 1234])
        try database.add(ReportMetrics.read(Self.report(resetP999: 1000), file: "new"), labels: ["kernel": "6.6"], source: "new")
        #expect(try database.runs(where: ["kernel": "6.6"]).map(\.source) == ["new"])
    }

    @Test("a trend splits the runs by a label: CSV a line per point, HTML an SVG polyline per series")
    func trend() throws {
        let (database, _) = try Self.database()
        for (index, kernel) in ["6.6", "6.7", "6.6", "6.7"].enumerated() {
            try database.add(
                ReportMetrics.read(Self.report(resetP999: Double(1000 + index)), file: "r"), labels: ["kernel": kernel], source: "r\(index)"
            )
        }
        let trend = try Trend.of("async.reset.p999", by: "kernel", in: database)
        #expect(trend.series["6.6"]?.map(\.value) == [1000, 1002])
        #expect(trend.series["6.7"]?.map(\.value) == [1001, 1003])
        let lines = trend.csv.split(separator: "\n")
        #expect(lines.first == "run,started_at,kernel,async.reset.p999")
        #expect(lines.count == 5)
        #expect(trend.html.components(separatedBy: "<polyline").count - 1 == 2)
        #expect(trend.html.contains("<svg") && !trend.html.contains("<script"))
    }

    @Test("what is not a report, a metric or a label is refused with what to give instead")
    func badInput() throws {
        #expect(throws: HistoryError.self) { try ReportMetrics.read(Data("not json".utf8), file: "x") }
        #expect(throws: HistoryError.self) { try ReportMetrics.read(Data("{\"schema\": \"other\"}".utf8), file: "x") }
        #expect(throws: HistoryError.self) { try HistoryDatabase.labels(["kernel"]) }
        #expect(throws: HistoryError.self) { try HistoryDatabase.labels(["=6.6"]) }
        #expect(throws: HistoryError.self) { try ReportMetrics.normalise(metric: "async.reset").get() }
        #expect(throws: HistoryError.self) { try ReportMetrics.normalise(metric: "async.reset.p42").get() }
        #expect(try ReportMetrics.normalise(metric: "async.reset.p99.9").get() == "async.reset.p999")
    }
}
