import Foundation
import GRDB

/// The run history: one SQLite file (GRDB), a row per report added, its figures and labels.
///
/// Schema, by migration (GRDB records which ran in `grdb_migrations`; a database an older
/// zapfleet wrote is brought up to date when opened):
/// - `v1`: `run` (id, added_at, scenario, started_at, exit_code, source) and `metric` (run_id,
///   name, value): a report's figures by `POLICY.OPERATION.STAT`.
/// - `v2`: `label` (run_id, key, value): what a nightly job says of a run (kernel, host, commit).
public final class HistoryDatabase {
    private let queue: DatabaseQueue

    /// One run as listed.
    public struct Run: Sendable, Equatable {
        public var id: Int64
        public var addedAt: String
        public var scenario: String
        public var startedAt: String
        public var exitCode: Int
        public var source: String
        public var labels: [String: String]
    }

    /// Opens (creating it if need be) the history at `path` and brings its schema up to date.
    public init(path: String) throws(HistoryError) {
        do {
            queue = try DatabaseQueue(path: path)
            try Self.migrator.migrate(queue)
        } catch {
            throw HistoryError(.database, "cannot open the history database \(path): \(error)")
        }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "run") { table in
                table.autoIncrementedPrimaryKey("id")
                table.column("added_at", .text).notNull()
                table.column("scenario", .text).notNull()
                table.column("started_at", .text).notNull()
                table.column("exit_code", .integer).notNull()
                table.column("source", .text).notNull()
            }
            try db.create(table: "metric") { table in
                table.column("run_id", .integer).notNull().references("run", onDelete: .cascade)
                table.column("name", .text).notNull()
                table.column("value", .double).notNull()
                table.primaryKey(["run_id", "name"])
            }
        }
        migrator.registerMigration("v2") { db in
            try db.create(table: "label") { table in
                table.column("run_id", .integer).notNull().references("run", onDelete: .cascade)
                table.column("key", .text).notNull()
                table.column("value", .text).notNull()
                table.primaryKey(["run_id", "key"])
            }
        }
        return migrator
    }

    /// Adds a report's figures under `labels`; the new run's id.
    @discardableResult
    public func add(_ report: ReportMetrics, labels: [String: String], source: String, addedAt: Date = Date()) throws(HistoryError) -> Int64
    {
        do {
            return try queue.write { db in
                try db.execute(
                    sql: "INSERT INTO run (added_at, scenario, started_at, exit_code, source) VALUES (?, ?, ?, ?, ?)",
                    arguments: [ISO8601DateFormatter().string(from: addedAt), report.scenario, report.startedAt, report.exitCode, source])
                let id = db.lastInsertedRowID
                for (name, value) in report.values.sorted(by: { $0.key < $1.key }) {
                    try db.execute(sql: "INSERT INTO metric (run_id, name, value) VALUES (?, ?, ?)", arguments: [id, name, value])
                }
                for (key, value) in labels.sorted(by: { $0.key < $1.key }) {
                    try db.execute(sql: "INSERT INTO label (run_id, key, value) VALUES (?, ?, ?)", arguments: [id, key, value])
                }
                return id
            }
        } catch {
            throw HistoryError(.database, "cannot add to the history: \(error)")
        }
    }

    /// The runs, oldest first, that carry every label of `filter`.
    public func runs(where filter: [String: String] = [:]) throws(HistoryError) -> [Run] {
        do {
            return try queue.read { db in
                let rows = try Row.fetchAll(db, sql: "SELECT * FROM run ORDER BY id")
                var labels: [Int64: [String: String]] = [:]
                for row in try Row.fetchAll(db, sql: "SELECT run_id, key, value FROM label") {
                    labels[row["run_id"], default: [:]][row["key"]] = row["value"] as String
                }
                return rows.map { row in
                    Run(
                        id: row["id"], addedAt: row["added_at"], scenario: row["scenario"], startedAt: row["started_at"],
                        exitCode: row["exit_code"], source: row["source"], labels: labels[row["id"]] ?? [:])
                }.filter { run in filter.allSatisfy { run.labels[$0.key] == $0.value } }
            }
        } catch {
            throw HistoryError(.database, "cannot read the history: \(error)")
        }
    }

    /// The value of `metric` in each run that has it, by run id.
    public func values(of metric: String) throws(HistoryError) -> [Int64: Double] {
        do {
            return try queue.read { db in
                var values: [Int64: Double] = [:]
                for row in try Row.fetchAll(db, sql: "SELECT run_id, value FROM metric WHERE name = ?", arguments: [metric]) {
                    values[row["run_id"]] = row["value"] as Double
                }
                return values
            }
        } catch {
            throw HistoryError(.database, "cannot read the history: \(error)")
        }
    }

    /// Every metric name of one run.
    public func metricNames(of run: Int64) throws(HistoryError) -> [String] {
        do {
            return try queue.read { db in
                try String.fetchAll(db, sql: "SELECT name FROM metric WHERE run_id = ? ORDER BY name", arguments: [run])
            }
        } catch {
            throw HistoryError(.database, "cannot read the history: \(error)")
        }
    }
}

extension HistoryDatabase {
    /// `KEY=VALUE` strings as labels; an error names the one that is not.
    public static func labels(_ pairs: [String]) throws(HistoryError) -> [String: String] {
        var labels: [String: String] = [:]
        for pair in pairs {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw HistoryError(.badLabel, "label '\(pair)' is not KEY=VALUE, e.g. kernel=6.6.8")
            }
            labels[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
        }
        return labels
    }
}
