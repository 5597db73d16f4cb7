import Foundation
import Histogram
import ZapScenario
import ZapEngine

/// Writes a run's files: `report.json`, `report.html`, one `.hgrm` per histogram, and `scenario.yaml`.
public enum ReportFiles {
    /// `.hgrm` values are in microseconds, as HdrHistogram's plotter expects by default.
    public static let hgrmUnitScalingRatio = 1000.0

    /// The JSON encoding of a report (snake_case keys, sorted, indented).
    public static func json(_ report: RunReport) throws -> Data {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(report)
    }

    /// Decodes a `report.json`.
    public static func decode(_ data: Data) throws -> RunReport {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(RunReport.self, from: data)
    }

    /// The percentile distribution of `histogram` in HdrHistogram's `.hgrm` text layout.
    public static func hgrm(_ histogram: LatencyHistogram) -> String {
        var text = ""
        histogram.outputPercentileDistribution(to: &text, outputValueUnitScalingRatio: hgrmUnitScalingRatio)
        return text
    }

    /// A report as `report.json` and `report.html` hold it, rendered once for every place that
    /// shows it (the files, the live view).
    public struct Rendered: Sendable {
        /// The bytes of `report.json`.
        public var json: Data
        /// The page of `report.html`, its charts drawn from the runs' histograms.
        public var html: String
    }

    /// Renders `report.json` and `report.html` of `report`, the charts from `runs` and `external`.
    public static func render(_ report: RunReport, runs: [PolicyRun], external: [ExternalMeasurement] = []) throws -> Rendered {
        Rendered(json: try json(report), html: HTMLReport.render(report, curves: HTMLReport.curves(runs: runs, external: external)))
    }

    /// Writes every file of `report` and `runs` into `directory`, creating it. Returns the paths.
    @discardableResult
    public static func write(
        _ report: RunReport, runs: [PolicyRun], to directory: String, intervalLog: String? = nil,
        external: [ExternalMeasurement] = []
    ) throws -> [String] {
        try write(report, rendered: render(report, runs: runs, external: external), runs: runs, to: directory, intervalLog: intervalLog)
    }

    /// Writes every file of `report` and `runs` into `directory`, creating it, with report.json
    /// and report.html as already `rendered`. Returns the paths.
    @discardableResult
    public static func write(
        _ report: RunReport, rendered: Rendered, runs: [PolicyRun], to directory: String, intervalLog: String? = nil
    ) throws -> [String] {
        let manager = FileManager.default
        try manager.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var written: [String] = []
        func put(_ name: String, _ data: Data) throws {
            let path = (directory as NSString).appendingPathComponent(name)
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
            written.append(path)
        }
        try put("report.json", rendered.json)
        try put("scenario.yaml", Data(report.scenarioYaml.utf8))
        try put("report.html", Data(rendered.html.utf8))
        if let intervalLog { try put("shards.hlog", Data(intervalLog.utf8)) }
        for run in runs {
            for operation in MeasuredOperation.allCases where run.recorder.histogram(operation).totalCount > 0 {
                try put("\(run.policy.rawValue)-\(operation.name).hgrm", Data(hgrm(run.recorder.histogram(operation)).utf8))
                let projection = run.recorder.projection(operation)
                if projection.max > 0 {
                    try put("\(run.policy.rawValue)-\(operation.name).projected.hgrm", Data(hgrm(projection).utf8))
                }
            }
            if run.recorder.vcpuBlock.totalCount > 0 {
                try put("\(run.policy.rawValue)-vcpu_block.hgrm", Data(hgrm(run.recorder.vcpuBlock).utf8))
            }
        }
        return written
    }
}
