import ZapEngine
import Histogram

/// Block times an external agent measured on a real kernel, by operation: the report's
/// "external" column beside the simulated policies.
public struct ExternalMeasurement: Sendable {
    /// The column's name in reports: `external`, or `external:NAME` when several agents report.
    public var name: String
    /// What was measured, for the report's `kernels` field (e.g. the agent and its host).
    public var source: String
    /// One histogram per operation the agent reported.
    public var histograms: [MeasuredOperation: LatencyHistogram]
    /// How long the agent's command ran.
    public var wallNanoseconds: UInt64
    /// The command's exit status; anything but 0 makes the column incomplete.
    public var exitStatus: Int32

    /// A measurement named `name`.
    public init(name: String, source: String, histograms: [MeasuredOperation: LatencyHistogram], wallNanoseconds: UInt64, exitStatus: Int32)
    {
        self.name = name
        self.source = source
        self.histograms = histograms
        self.wallNanoseconds = wallNanoseconds
        self.exitStatus = exitStatus
    }

    /// The operation a sample line's tag names (`reset`, `fast_zap`, ...), if any.
    public static func operation(named name: String) -> MeasuredOperation? {
        MeasuredOperation.allCases.first { $0.name == name }
    }
}

extension PolicyReport {
    /// The column of an external measurement: its block times as measured, nothing projected,
    /// no engine counters (a real kernel has none to give), no violations to check.
    public init(external: ExternalMeasurement) {
        policy = external.name
        kernels = external.source
        complete = external.exitStatus == 0
        wallSeconds = Double(external.wallNanoseconds) / 1e9
        let empty = LatencySummary(LatencyHistogram.makeLatency())
        var operations: [String: OperationReport] = [:]
        var vcpuBlock = LatencyHistogram.makeLatency()
        for operation in MeasuredOperation.allCases {
            let histogram = external.histograms[operation]
            operations[operation.name] = OperationReport(measured: histogram.map(LatencySummary.init) ?? empty, projected: empty)
            if let histogram, MeasuredOperation.vcpuSide.contains(operation) { vcpuBlock.add(histogram) }
        }
        operations["vcpu_block"] = OperationReport(measured: LatencySummary(vcpuBlock), projected: empty)
        self.operations = operations
        counters = EngineStatistics()
        zapThroughputSptesPerSecond = 0
        violationsByKind = [:]
        violations = 0
        violationExamples = []
        steps = []
        self.external = true
    }
}
