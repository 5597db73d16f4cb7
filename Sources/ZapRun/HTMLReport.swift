import Foundation
import ZapEngine
import ZapScenario
import Histogram

/// `report.html`: one self-contained page (inline SVG and CSS, no script, no fetch) that shows a
/// run to a person: the verdict first, in words; the policies side by side; each operation's
/// percentile distribution on HdrHistogram's log "1/(1-percentile)" axis; the kernel projection
/// beside the measurement; and, for fleet runs, the workers and a heat map of the shards.
public enum HTMLReport {
    /// One curve: a column's histogram of one operation.
    public struct Curve: Sendable {
        /// The column (policy, or `external`).
        public var column: String
        /// The histogram.
        public var histogram: LatencyHistogram

        /// A curve of `histogram` for `column`.
        public init(column: String, histogram: LatencyHistogram) {
            self.column = column
            self.histogram = histogram
        }
    }

    /// The curves of every measured operation of `runs` and `external`, by operation name.
    public static func curves(runs: [PolicyRun], external: [ExternalMeasurement]) -> [String: [Curve]] {
        var curves: [String: [Curve]] = [:]
        for operation in MeasuredOperation.allCases {
            let simulated = runs.map { Curve(column: $0.policy.rawValue, histogram: $0.recorder.histogram(operation)) }
            let real = external.compactMap { measurement in
                measurement.histograms[operation].map { Curve(column: measurement.name, histogram: $0) }
            }
            let all = (simulated + real).filter { $0.histogram.totalCount > 0 }
            if !all.isEmpty { curves[operation.name] = all }
        }
        return curves
    }

    /// The page for `report`, with `curves` from ``curves(runs:external:)``.
    public static func render(_ report: RunReport, curves: [String: [Curve]]) -> String {
        var page = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <title>zapfleet \(escape(report.scenario))</title>
            <style>
            body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d2430;max-width:1200px}
            h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde}
            .verdict{padding:12px 16px;border-radius:6px;margin:12px 0;font-size:16px}
            .ok{background:#e3f5e6;border:1px solid #7bc68a} .bad{background:#fbe4e4;border:1px solid #dd8080}
            table{border-collapse:collapse;margin:6px 0} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
            th:first-child,td:first-child{text-align:left} .missed{color:#b00020;font-weight:600} .met{color:#1b7a2f}
            .charts{display:flex;flex-wrap:wrap;gap:16px} figure{margin:0} figcaption{font-weight:600}
            .muted{color:#667}
            </style></head><body>
            <h1>zapfleet: \(escape(report.scenario))</h1>
            <div class="muted">started \(escape(report.startedAt)), \(format(seconds: report.wallSeconds)) wall, zapfleet \(escape(report.zapfleetVersion)), kernel cost \(report.kernelNsPerSpte) ns per SPTE</div>

            """
        page += verdictSection(report)
        page += policyTable(report)
        page +=
            "<h2>Block time distributions</h2>\n<p class=\"muted\">Each curve is one column's histogram, drawn as HdrHistogram's plotter draws it: the percentile on a log 1/(1−p) axis, the block time on a log axis.</p>\n"
        page += charts(curves, columns: report.policies.map(\.policy))
        page += projectionTable(report)
        if let fleet = report.fleet { page += fleetSection(fleet) }
        page += "</body></html>\n"
        return page
    }

    /// The distribution charts, one figure per operation with samples (the live page shows them too).
    public static func charts(_ curves: [String: [Curve]], columns: [String]) -> String {
        var html = "<div class=\"charts\">\n"
        for operation in MeasuredOperation.allCases.map(\.name) {
            guard let operationCurves = curves[operation] else { continue }
            html +=
                "<figure><figcaption>\(escape(operation))</figcaption>\n" + distributionChart(operationCurves, columns: columns)
                + "</figure>\n"
        }
        return html + "</div>\n"
    }

    // MARK: - Sections

    private static func verdictSection(_ report: RunReport) -> String {
        let good = report.verdict.exitCode == 0
        var html =
            "<div class=\"verdict \(good ? "ok" : "bad")\"><b>\(good ? "Passed" : "Did not pass")</b>: \(escape(report.verdict.summary)) (exit \(report.verdict.exitCode))</div>\n"
        let violated = report.policies.filter { $0.violations > 0 }
        if !violated.isEmpty {
            html += "<h2>Invariant violations</h2><ul>\n"
            for policy in violated {
                let kinds = policy.violationsByKind.sorted { $0.key < $1.key }.map { "\($0.key) × \($0.value)" }.joined(separator: ", ")
                html += "<li><b>\(escape(policy.policy))</b>: \(policy.violations) violation(s): \(escape(kinds))</li>\n"
            }
            html += "</ul>\n"
        }
        if !report.objectives.isEmpty {
            html += "<h2>Objectives</h2><table><tr><th>objective</th><th>column</th><th>measured</th><th>verdict</th></tr>\n"
            for objective in report.objectives {
                html +=
                    "<tr><td>\(escape(objective.objective))</td><td>\(escape(objective.policy))</td><td>\(format(value: objective.value, of: objective.objective))</td>"
                html += "<td class=\"\(objective.met ? "met" : "missed")\">\(objective.met ? "met" : "missed")</td></tr>\n"
            }
            html += "</table>\n"
        }
        return html
    }

    private static func policyTable(_ report: RunReport) -> String {
        var html = "<h2>Policies side by side</h2><table><tr><th>measured</th>"
        html += report.policies.map { "<th>\(escape($0.policy))</th>" }.joined() + "</tr>\n"
        html +=
            "<tr><td class=\"muted\">models</td>" + report.policies.map { "<td class=\"muted\">\(escape($0.kernels))</td>" }.joined()
            + "</tr>\n"
        for operation in MeasuredOperation.allCases.map(\.name) + ["vcpu_block"] {
            let summaries = report.policies.map { $0.operations[operation]?.measured }
            guard summaries.contains(where: { ($0?.count ?? 0) > 0 }) else { continue }
            for (label, value) in [
                ("n", { (s: LatencySummary) in "\(s.count)" }), ("p50", { format(ns: Double($0.p50Ns)) }),
                ("p99", { format(ns: Double($0.p99Ns)) }), ("max", { format(ns: Double($0.maxNs)) })
            ] {
                html += "<tr><td>\(label == "n" ? "<b>\(escape(operation))</b> n" : "&nbsp;&nbsp;\(label)")</td>"
                html +=
                    summaries.map { summary in "<td>\(summary.map { $0.count > 0 ? value($0) : "–" } ?? "–")</td>" }.joined() + "</tr>\n"
            }
        }
        html +=
            "<tr><td>violations</td>"
            + report.policies.map { "<td class=\"\($0.violations > 0 ? "missed" : "")\">\($0.violations)</td>" }.joined() + "</tr>\n"
        html += "<tr><td>complete</td>" + report.policies.map { "<td>\($0.complete ? "yes" : "no")</td>" }.joined() + "</tr>\n"
        return html + "</table>\n"
    }

    private static func projectionTable(_ report: RunReport) -> String {
        let flushCost = report.kernelNsPerTlbFlush ?? 0
        var html =
            "<h2>Measured beside the kernel projection</h2><p class=\"muted\">Projection: the SPTEs each caller zapped while it waited × \(report.kernelNsPerSpte) ns, the kernel's cost per SPTE"
            + (flushCost > 0
                ? ", plus the remote TLB flushes it issued × \(format(ns: flushCost)) (the scenario's <code>tlb_flush_cost</code>)" : "")
            + ".</p>"
        html +=
            "<table><tr><th>longest block</th>"
            + report.policies.map { "<th>\(escape($0.policy)) measured</th><th>projected</th>" }.joined() + "</tr>\n"
        for operation in ["reset", "fault", "fast_zap", "full_zap", "unmap", "dirty_log", "teardown", "vcpu_block"] {
            guard report.policies.contains(where: { ($0.operations[operation]?.measured.count ?? 0) > 0 }) else { continue }
            html +=
                "<tr><td>\(operation)</td>"
                + report.policies.map { policy in
                    let report = policy.operations[operation]
                    return
                        "<td>\(format(ns: Double(report?.measured.maxNs ?? 0)))</td><td>\(format(ns: Double(report?.projected.maxNs ?? 0)))</td>"
                }.joined() + "</tr>\n"
        }
        let flushes = report.policies.map(\.tlbFlushes)
        if flushes.contains(where: { ($0?.total ?? 0) > 0 }) {
            html +=
                "</table><h2>Remote TLB flushes</h2><p class=\"muted\">Counted as the kernel each policy models issues and batches them (README, \"TLB flushes\"); projected at \(format(ns: flushCost)) each.</p>"
            html += "<table><tr><th>cause</th>" + report.policies.map { "<th>\(escape($0.policy))</th>" }.joined() + "</tr>\n"
            for cause in TLBFlushCause.allCases where flushes.contains(where: { ($0?.byCause[cause] ?? 0) > 0 }) {
                html +=
                    "<tr><td>\(cause.name)</td>" + flushes.map { "<td>\($0.map { "\($0.byCause[cause])" } ?? "–")</td>" }.joined()
                    + "</tr>\n"
            }
            html += "<tr><td><b>total</b></td>" + flushes.map { "<td><b>\($0.map { "\($0.total)" } ?? "–")</b></td>" }.joined() + "</tr>\n"
            html +=
                "<tr><td>projected</td>" + flushes.map { "<td>\($0.map { format(ns: $0.projectedSeconds * 1e9) } ?? "–")</td>" }.joined()
                + "</tr>\n"
        }
        let interference = report.policies.map(\.cpuInterference)
        if interference.contains(where: { $0 != nil }) {
            html +=
                "</table><h2>CPU interference</h2><p class=\"muted\">While the VM zapped, each vCPU ran guest work on a thread pinned to one CPU; lost time is time it was runnable but not running (README, \"CPU interference\").</p>"
            html += "<table><tr><th></th>" + report.policies.map { "<th>\(escape($0.policy))</th>" }.joined() + "</tr>\n"
            for row in InterferenceRows.rows(interference) {
                html +=
                    "<tr><td>\(escape(row[0].trimmingCharacters(in: .whitespaces)))</td>"
                    + row.dropFirst().map { "<td>\(escape($0))</td>" }.joined() + "</tr>\n"
            }
        }
        if let fleet = report.fleet, !fleet.wholeVm.isEmpty {
            html +=
                "</table><h2>Whole VM, per event</h2><table><tr><th>policy</th><th>step</th><th>event</th><th>measured</th><th>projected</th></tr>\n"
            for event in fleet.wholeVm {
                html +=
                    "<tr><td>\(escape(event.policy))</td><td>\(event.step)</td><td>\(escape(event.name))</td><td>\(format(ns: Double(event.measuredNs)))</td><td>\(format(ns: Double(event.projectedNs)))</td></tr>\n"
            }
        }
        return html + "</table>\n"
    }

    private static func fleetSection(_ fleet: FleetSection) -> String {
        var html =
            "<h2>Fleet</h2><p>\(fleet.shards.count) shard(s) on \(fleet.workers.count) worker(s); \(fleet.requeues) requeued, \(fleet.duplicatesDropped) duplicate(s) dropped, \(fleet.badFrames) bad frame(s), \(fleet.keysRefused) key(s) refused\(fleet.resumedShards > 0 ? ", \(fleet.resumedShards) resumed from the journal" : "").</p>\n"
        html +=
            "<table><tr><th>worker</th><th>host</th><th>cores</th><th>shards</th><th>duplicates</th><th>bad frames</th><th>state</th></tr>\n"
        for worker in fleet.workers {
            html +=
                "<tr><td>\(escape(worker.name))</td><td>\(escape(worker.host))</td><td>\(worker.cores)</td><td>\(worker.shardsCompleted)</td><td>\(worker.duplicatesDropped)</td><td>\(worker.badFrames)</td><td>\(escape(worker.state))</td></tr>\n"
        }
        html += "</table>\n"
        guard !fleet.shards.isEmpty else { return html }
        // Heat map: one cell per shard in id order, darker for longer; a row per worker.
        let longest = fleet.shards.map(\.wallSeconds).max() ?? 1
        let workers = fleet.workers.map(\.name).filter { name in fleet.shards.contains { $0.worker == name } }
        let perRow = 32, cell = 18
        var svg = ""
        var y = 0
        for worker in workers {
            let shards = fleet.shards.filter { $0.worker == worker }
            svg += "<text x=\"0\" y=\"\(y + 13)\" font-size=\"12\">\(escape(worker))</text>"
            for (index, shard) in shards.enumerated() {
                let x = 110 + (index % perRow) * cell, row = y + (index / perRow) * cell
                let heat = longest > 0 ? shard.wallSeconds / longest : 0
                let shade = Int(235 - heat * 190)
                svg +=
                    "<rect x=\"\(x)\" y=\"\(row)\" width=\"\(cell - 2)\" height=\"\(cell - 2)\" fill=\"rgb(\(shade),\(shade),255)\"><title>shard \(shard.id) (\(shard.slice.description)): \(format(seconds: shard.wallSeconds)), \(shard.attempts) attempt(s)</title></rect>"
            }
            y += max(1, (shards.count + perRow - 1) / perRow) * cell + 6
        }
        html += "<figure><figcaption>Shards by worker (darker: longer, up to \(format(seconds: longest)))</figcaption>"
        html +=
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(110 + perRow * cell)\" height=\"\(max(y, cell))\">\(svg)</svg></figure>\n"
        return html
    }

    // MARK: - Charts

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b"]

    /// A percentile distribution chart: x is log10 of 1/(1-p), from 1 (p = 0) to 10^6 (99.9999%);
    /// y is log10 of the block time.
    static func distributionChart(_ curves: [Curve], columns: [String]) -> String {
        let width = 560.0, height = 300.0, left = 70.0, bottom = 40.0, top = 12.0, right = 34.0
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        var points: [(column: String, values: [(x: Double, y: Double)])] = []
        for curve in curves {
            var values: [(x: Double, y: Double)] = []
            let total = Double(curve.histogram.totalCount)
            for step in 0...60 {
                let x = Double(step) / 10  // log10 of 1/(1-p)
                let percentile = (1 - pow(10, -x)) * 100
                // Beyond what the count can resolve the curve stops, as HdrHistogram's plotter does.
                if step > 0 && pow(10, x) > total * 2 { break }
                values.append((x, log10(Double(max(1, curve.histogram.conventionalValue(atPercentile: percentile))))))
            }
            points.append((curve.column, values))
        }
        let ys = points.flatMap { $0.values.map(\.y) }
        let low = floor(ys.min() ?? 0), high = max(ceil(ys.max() ?? 1), low + 1)
        func px(_ x: Double) -> Double { left + x / 6 * plotWidth }
        func py(_ y: Double) -> Double { top + (1 - (y - low) / (high - low)) * plotHeight }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-size=\"11\">"
        svg += "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(plotWidth)\" height=\"\(plotHeight)\" fill=\"#fafbfd\" stroke=\"#ccd\"/>"
        for (x, label) in [(0.0, "0%"), (1, "90%"), (2, "99%"), (3, "99.9%"), (4, "99.99%"), (5, "99.999%"), (6, "99.9999%")] {
            svg += "<line x1=\"\(px(x))\" y1=\"\(top)\" x2=\"\(px(x))\" y2=\"\(top + plotHeight)\" stroke=\"#e4e6ee\"/>"
            svg += "<text x=\"\(px(x))\" y=\"\(top + plotHeight + 14)\" text-anchor=\"middle\">\(label)</text>"
        }
        for decade in Int(low)...Int(high) {
            let y = py(Double(decade))
            svg += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(left + plotWidth)\" y2=\"\(y)\" stroke=\"#e4e6ee\"/>"
            svg += "<text x=\"\(left - 6)\" y=\"\(y + 4)\" text-anchor=\"end\">\(format(ns: pow(10, Double(decade))))</text>"
        }
        svg += "<text x=\"\(left + plotWidth / 2)\" y=\"\(height - 6)\" text-anchor=\"middle\" fill=\"#556\">percentile</text>"
        for (index, curve) in points.enumerated() {
            let color = palette[(columns.firstIndex(of: curve.column) ?? index) % palette.count]
            let path = curve.values.enumerated().map {
                "\($0.offset == 0 ? "M" : "L")\(round(px($0.element.x) * 10) / 10),\(round(py($0.element.y) * 10) / 10)"
            }.joined(separator: " ")
            svg += "<path d=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>"
            svg += "<rect x=\"\(left + 8)\" y=\"\(top + 8 + Double(index) * 16)\" width=\"10\" height=\"10\" fill=\"\(color)\"/>"
            svg += "<text x=\"\(left + 22)\" y=\"\(top + 17 + Double(index) * 16)\">\(escape(curve.column))</text>"
        }
        return svg + "</svg>\n"
    }

    // MARK: - Text

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func format(ns: Double) -> String { Quantities.formatDuration(ns) }

    static func format(seconds: Double) -> String { Quantities.formatDuration(seconds * 1e9) }

    /// Latency objectives hold nanoseconds; counters hold counts.
    static func format(value: Double, of objective: String) -> String {
        objective.contains(".p") || objective.contains(".max") || objective.contains(".mean")
            ? format(ns: value) : String(format: "%.0f", value)
    }
}
