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

    /// Writes every file of `report` and `runs` into `directory`, creating it. Returns the paths.
    @discardableResult
    public static func write(
        _ report: RunReport, runs: [PolicyRun], to directory: String, intervalLog: String? = nil,
        external: [ExternalMeasurement] = []
    ) throws -> [String] {
        let manager = FileManager.default
        try manager.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var written: [String] = []
        func put(_ name: String, _ data: Data) throws {
            let path = (directory as NSString).appendingPathComponent(name)
            try data.write(to: URL(fileURLWithPath: path), options: .atomic)
            written.append(path)
        }
        try put("report.json", json(report))
        try put("scenario.yaml", Data(report.scenarioYaml.utf8))
        try put("report.html", Data(HTMLReport.render(report, curves: HTMLReport.curves(runs: runs, external: external)).utf8))
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
