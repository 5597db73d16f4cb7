import Foundation
import ZapScenario
import ZapEngine

/// The results of a sweep: one row per cell, policy and operation, as CSV (for plotting
/// anywhere) and as `sweep.html` with the scaling plots.
public enum SweepReport {
    /// One finished cell.
    public struct CellResult: Sendable {
        /// The cell's name (its directory under the sweep's --out).
        public var name: String
        /// Guest memory.
        public var sizeBytes: UInt64
        /// vCPUs.
        public var vcpus: Int
        /// In-process workers.
        public var workers: Int
        /// The cell's report.
        public var report: RunReport

        /// A finished cell.
        public init(name: String, sizeBytes: UInt64, vcpus: Int, workers: Int, report: RunReport) {
            self.name = name
            self.sizeBytes = sizeBytes
            self.vcpus = vcpus
            self.workers = workers
            self.report = report
        }
    }

    /// The CSV header.
    public static let csvHeader =
        "cell,size_bytes,vcpus,workers,policy,operation,count,p50_ns,p99_ns,max_ns,projected_max_ns,sptes_zapped,wall_seconds,sptes_per_second,exit_code"

    /// One row per cell, policy and measured operation (operations with no sample are left out).
    public static func csv(_ cells: [CellResult]) -> String {
        var lines = [csvHeader]
        for cell in cells {
            for policy in cell.report.policies {
                // Per policy: its own run's wall time (a cell runs its policies one after another).
                let throughput = policy.wallSeconds > 0 ? Double(policy.counters.sptesZapped) / policy.wallSeconds : 0
                for operation in MeasuredOperation.allCases.map(\.name) + ["vcpu_block"] {
                    guard let summary = policy.operations[operation], summary.measured.count > 0 else { continue }
                    let m = summary.measured
                    lines.append(
                        [
                            cell.name, "\(cell.sizeBytes)", "\(cell.vcpus)", "\(cell.workers)", policy.policy, operation,
                            "\(m.count)", "\(m.p50Ns)", "\(m.p99Ns)", "\(m.maxNs)", "\(summary.projected.maxNs)",
                            "\(policy.counters.sptesZapped)", String(format: "%.6f", policy.wallSeconds),
                            String(format: "%.0f", throughput), "\(cell.report.verdict.exitCode)"
                        ].joined(separator: ","))
                }
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// `sweep.html`: reset block time (p50, p99, max) against size per policy, and zap throughput
    /// against worker count per policy, each on log axes, plus a table of the cells.
    public static func html(_ cells: [CellResult], title: String) -> String {
        // In run order (sync, async, preserve, then any external column), so colours match report.html's.
        var policies: [String] = []
        for cell in cells { for policy in cell.report.policies.map(\.policy) where !policies.contains(policy) { policies.append(policy) } }
        var page = """
            <!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>zapfleet sweep \(HTMLReport.escape(title))</title>
            <style>body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d2430} h2{font-size:17px;border-bottom:1px solid #dde}
            table{border-collapse:collapse} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
            .charts{display:flex;flex-wrap:wrap;gap:16px} figcaption{font-weight:600}</style></head><body>
            <h1>zapfleet sweep: \(HTMLReport.escape(title))</h1>
            <p>\(cells.count) cell(s). Under <code>sync</code> a reset's block time should grow with the memory its root maps; under <code>async</code> it should stay flat.</p>
            <h2>Reset block time against guest memory</h2><div class="charts">

            """
        // One series per policy and statistic, at the smallest vCPU and worker counts of the sweep.
        let baseVcpus = cells.map(\.vcpus).min() ?? 1, baseWorkers = cells.map(\.workers).min() ?? 1
        for (statistic, pick) in [("p50", { (s: LatencySummary) in s.p50Ns }), ("p99", { $0.p99Ns }), ("max", { $0.maxNs })] {
            let series = policies.map { policy in
                (
                    policy,
                    cells.filter { $0.vcpus == baseVcpus && $0.workers == baseWorkers }.compactMap { cell -> (Double, Double)? in
                        guard let summary = cell.report.policies.first(where: { $0.policy == policy })?.operations["reset"]?.measured,
                            summary.count > 0
                        else { return nil }
                        return (Double(cell.sizeBytes), Double(max(1, pick(summary))))
                    }
                )
            }
            page +=
                "<figure><figcaption>reset \(statistic)</figcaption>"
                + scalingChart(series, x: "guest memory", xFormat: { Quantities.formatSize(UInt64($0)) }, yFormat: HTMLReport.format(ns:))
                + "</figure>\n"
        }
        page += "</div><h2>Zap throughput against workers</h2><div class=\"charts\">\n"
        let largest = cells.map(\.sizeBytes).max() ?? 0
        let series = policies.map { policy in
            (
                policy,
                cells.filter { $0.sizeBytes == largest && $0.vcpus == baseVcpus }.compactMap { cell -> (Double, Double)? in
                    guard let report = cell.report.policies.first(where: { $0.policy == policy }), report.wallSeconds > 0 else {
                        return nil
                    }
                    return (Double(cell.workers), max(1, Double(report.counters.sptesZapped) / report.wallSeconds))
                }
            )
        }
        page +=
            "<figure><figcaption>SPTEs zapped per second of run, \(Quantities.formatSize(largest))</figcaption>"
            + scalingChart(series, x: "workers", xFormat: { String(Int($0)) }, yFormat: { String(format: "%.3g/s", $0) })
            + "</figure></div>\n"
        page += "<h2>Cells</h2><table><tr><th>cell</th><th>verdict</th><th>wall</th></tr>\n"
        for cell in cells {
            page +=
                "<tr><td><a href=\"\(HTMLReport.escape(cell.name))/report.html\">\(HTMLReport.escape(cell.name))</a></td><td>\(HTMLReport.escape(cell.report.verdict.summary))</td><td>\(HTMLReport.format(seconds: cell.report.wallSeconds))</td></tr>\n"
        }
        return page + "</table></body></html>\n"
    }

    /// A log-log line chart of `series` (name, points).
    static func scalingChart(
        _ series: [(String, [(Double, Double)])], x xLabel: String, xFormat: (Double) -> String,
        yFormat: (Double) -> String
    ) -> String {
        let width = 460.0, height = 280.0, left = 78.0, right = 20.0, top = 12.0, bottom = 40.0
        let points = series.flatMap(\.1)
        guard !points.isEmpty else { return "<p>no data</p>" }
        let xs = points.map { log10($0.0) }, ys = points.map { log10($0.1) }
        let xLow = xs.min()!, xHigh = max(xs.max()!, xLow + 0.01)
        let yLow = floor(ys.min()!), yHigh = max(ceil(ys.max()!), yLow + 1)
        func px(_ v: Double) -> Double { left + (v - xLow) / (xHigh - xLow) * (width - left - right) }
        func py(_ v: Double) -> Double { top + (1 - (v - yLow) / (yHigh - yLow)) * (height - top - bottom) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-size=\"11\">"
        svg +=
            "<rect x=\"\(left)\" y=\"\(top)\" width=\"\(width - left - right)\" height=\"\(height - top - bottom)\" fill=\"#fafbfd\" stroke=\"#ccd\"/>"
        for value in Set(points.map(\.0)).sorted() {
            svg +=
                "<text x=\"\(px(log10(value)))\" y=\"\(height - bottom + 14)\" text-anchor=\"middle\">\(HTMLReport.escape(xFormat(value)))</text>"
        }
        for decade in Int(yLow)...Int(yHigh) {
            svg +=
                "<line x1=\"\(left)\" y1=\"\(py(Double(decade)))\" x2=\"\(width - right)\" y2=\"\(py(Double(decade)))\" stroke=\"#e4e6ee\"/>"
            svg +=
                "<text x=\"\(left - 6)\" y=\"\(py(Double(decade)) + 4)\" text-anchor=\"end\">\(HTMLReport.escape(yFormat(pow(10, Double(decade)))))</text>"
        }
        svg += "<text x=\"\((left + width - right) / 2)\" y=\"\(height - 6)\" text-anchor=\"middle\" fill=\"#556\">\(xLabel)</text>"
        for (index, (name, values)) in series.enumerated() where !values.isEmpty {
            let color = HTMLReport.palette[index % HTMLReport.palette.count]
            let sorted = values.sorted { $0.0 < $1.0 }
            svg +=
                "<path d=\""
                + sorted.enumerated().map { "\($0.offset == 0 ? "M" : "L")\(px(log10($0.element.0))),\(py(log10($0.element.1)))" }.joined(
                    separator: " ")
                + "\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>"
            for point in sorted { svg += "<circle cx=\"\(px(log10(point.0)))\" cy=\"\(py(log10(point.1)))\" r=\"3\" fill=\"\(color)\"/>" }
            svg +=
                "<rect x=\"\(left + 8)\" y=\"\(top + 8 + Double(index) * 16)\" width=\"10\" height=\"10\" fill=\"\(color)\"/><text x=\"\(left + 22)\" y=\"\(top + 17 + Double(index) * 16)\">\(HTMLReport.escape(name))</text>"
        }
        return svg + "</svg>\n"
    }
}
