import Foundation
import Histogram
import ZapCluster
import ZapEngine
import ZapPlatform
import ZapRun

/// What the live server shows: the latest snapshot of the run and, once it is over, its report
/// and verdict. The coordinator's thread publishes; the server's tasks read.
public final class LiveView: @unchecked Sendable {
    private let lock = PThreadMutex()
    private var snapshot: FleetSnapshot?
    private var report: Data?
    private var reportPage: String?
    private var verdict: (code: Int, summary: String)?
    private var version = 0
    /// The status JSON of `version`: every page's event stream and /status.json share one rendering.
    private var rendered: (version: Int, json: String)?
    /// The Prometheus exposition, kept across scrapes so that its counters only grow.
    let metrics = MetricsExposition()

    public init() {}

    /// The run as it stands now (from `CoordinatorConfiguration.snapshots`).
    public func publish(_ snapshot: FleetSnapshot) {
        lock.withLock {
            self.snapshot = snapshot
            version += 1
        }
    }

    /// The run is over: its report.json, its report.html and its verdict.
    public func finish(report: Data, page: String? = nil, exitCode: Int, summary: String) {
        lock.withLock {
            self.report = report
            self.reportPage = page
            verdict = (exitCode, summary)
            version += 1
        }
    }

    /// How many times the view changed (a server pushes when it grows).
    var changes: Int { lock.withLock { version } }

    /// The report, once the run is over.
    var reportJSON: Data? { lock.withLock { report } }

    /// The report as report.html has it, once the run is over.
    var reportHTML: String? { lock.withLock { reportPage } }

    var latest: FleetSnapshot? { lock.withLock { snapshot } }

    /// The page's data: phase, shard states, workers, counters, percentiles and charts so far,
    /// the verdict. Rendered once per change, however many pages listen.
    func statusJSON() -> String {
        let (snapshot, verdict, version, rendered) = lock.withLock { (self.snapshot, self.verdict, self.version, self.rendered) }
        if let rendered, rendered.version == version { return rendered.json }
        let json = Self.render(snapshot: snapshot, verdict: verdict)
        lock.withLock { if self.version == version { self.rendered = (version, json) } }
        return json
    }

    private static func render(snapshot: FleetSnapshot?, verdict: (code: Int, summary: String)?) -> String {
        var status: [String: Any] = ["phase": snapshot?.phase.rawValue ?? "starting"]
        if let snapshot {
            let fleet = snapshot.outcome.fleet
            status["scenario"] = snapshot.scenario
            status["shards"] = String(snapshot.shards.map { $0 == .done ? "d" : $0 == .running ? "r" : "q" })
            status["counts"] = [
                "done": snapshot.count(.done), "running": snapshot.count(.running), "queued": snapshot.count(.queued),
                "requeues": fleet.requeues, "bad_frames": fleet.badFrames, "results_refused": fleet.resultsRefused,
                "keys_refused": fleet.keysRefused
            ]
            status["workers"] = fleet.workers.map { worker -> [String: Any] in
                var entry: [String: Any] = [
                    "name": worker.name, "host": worker.host, "state": worker.state, "shards": worker.shardsCompleted
                ]
                if let shard = snapshot.workerShards[worker.name] { entry["shard"] = shard }
                if let rate = snapshot.workerRates[worker.name], rate.isFinite { entry["sptes_per_second"] = rate }
                return entry
            }
            var rows: [[String: Any]] = []
            for run in snapshot.outcome.runs {
                for (operation, histogram) in run.recorder.measuredByName {
                    guard histogram.totalCount > 0 else { continue }
                    let summary = LatencySummary(histogram)
                    rows.append([
                        "policy": run.policy.rawValue, "operation": operation, "count": summary.count, "p50_ns": summary.p50Ns,
                        "p99_ns": summary.p99Ns, "p999_ns": summary.p999Ns, "max_ns": summary.maxNs
                    ])
                }
            }
            status["percentiles"] = rows
            status["charts"] = HTMLReport.charts(
                HTMLReport.curves(runs: snapshot.outcome.runs, external: []), columns: snapshot.outcome.runs.map(\.policy.rawValue))
        }
        if let verdict { status["verdict"] = ["exit_code": verdict.code, "summary": verdict.summary] }
        let data = (try? JSONSerialization.data(withJSONObject: status, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
