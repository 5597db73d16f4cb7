import Histogram
import ZapEngine

/// Block-time histograms of one thread (or, merged, of a whole run): for each operation the
/// measured time, and the kernel projection of the SPTEs the call zapped itself and the remote
/// TLB flushes it issued.
///
/// Each vCPU thread records into its own recorder, without locks; recorders are merged exactly
/// (bucket by bucket) when the threads are joined.
public struct BlockTimeRecorder: Sendable {
    // The stored properties `record` touches are visible to inlined code (`@usableFromInline`):
    // every engine operation records a sample, and a call per sample would cost more than the
    // record itself. Other modules read them through the public accessors below.

    /// Measured block times, indexed by ``MeasuredOperation/rawValue``.
    @usableFromInline var measuredStorage: [LatencyHistogram]
    /// Projected kernel block times above zero: SPTEs zapped while the caller waited × the
    /// per-SPTE cost, plus remote TLB flushes issued meanwhile × the per-flush cost. Most
    /// operations do neither; their zeros are counted in `zeroProjections` and added when the
    /// histogram is read, so that the common sample costs one record.
    @usableFromInline var projected: [LatencyHistogram]
    @usableFromInline var zeroProjections: [UInt64]
    /// The per-SPTE kernel cost used for projections, in nanoseconds.
    public let kernelNanosecondsPerSPTE: Double
    /// The per-flush kernel cost used for projections, in nanoseconds.
    public let kernelNanosecondsPerFlush: Double
    /// Whether samples are recorded at all (off only to measure the measurement's overhead).
    public let enabled: Bool
    @usableFromInline var longestBlockStorage: UInt64 = 0
    @usableFromInline var sptesZappedInlineStorage = 0

    /// Measured block times, indexed by ``MeasuredOperation/rawValue``.
    public var measured: [LatencyHistogram] { measuredStorage }
    /// The longest block recorded (any operation but root lifetimes).
    public var longestBlock: UInt64 { longestBlockStorage }
    /// Leaf SPTEs zapped while the recorded callers waited, in total.
    public var sptesZappedInline: Int { sptesZappedInlineStorage }

    /// The memory one recorder's histograms hold (every operation, measured and projected).
    public static let footprintBytes = MeasuredOperation.allCases.count * 2 * LatencyHistogram.makeLatency().estimatedFootprintInBytes

    /// Empty histograms.
    public init(kernelNanosecondsPerSPTE: Double, kernelNanosecondsPerFlush: Double = 0, enabled: Bool = true) {
        self.kernelNanosecondsPerSPTE = kernelNanosecondsPerSPTE
        self.kernelNanosecondsPerFlush = kernelNanosecondsPerFlush
        self.enabled = enabled
        let count = MeasuredOperation.allCases.count
        measuredStorage = (0..<count).map { _ in .makeLatency() }
        projected = (0..<count).map { _ in .makeLatency() }
        zeroProjections = [UInt64](repeating: 0, count: count)
    }

    /// Records one operation's outcome. With `expectedInterval` (a paced workload), the value is
    /// recorded with coordinated-omission correction: a stall also stands for the samples it
    /// prevented. The common sample (no correction, nothing zapped or flushed inline) is a
    /// histogram record and a counter increment, inlined into the caller; the rest is out of line.
    @inlinable @inline(__always)
    public mutating func record(_ operation: MeasuredOperation, _ outcome: OperationOutcome, expectedInterval: UInt64? = nil) {
        guard enabled else { return }
        let value = min(outcome.blockedNanoseconds, LatencyHistogram.highestTrackableNanoseconds)
        longestBlockStorage = max(longestBlockStorage, value)
        if let expectedInterval {
            recordCorrected(operation, value, expectedInterval: expectedInterval)
        } else {
            _ = measuredStorage[operation.rawValue].record(value)
        }
        if outcome.sptesZappedInline == 0 && outcome.tlbFlushes == 0 {
            zeroProjections[operation.rawValue] &+= 1
        } else {
            recordProjection(operation, outcome)
        }
    }

    @usableFromInline @inline(never)
    mutating func recordCorrected(_ operation: MeasuredOperation, _ value: UInt64, expectedInterval: UInt64) {
        _ = measuredStorage[operation.rawValue].recordCorrectedValue(value, expectedInterval: expectedInterval)
    }

    /// The kernel's time for what the caller zapped and flushed while it waited.
    @usableFromInline @inline(never)
    mutating func recordProjection(_ operation: MeasuredOperation, _ outcome: OperationOutcome) {
        sptesZappedInlineStorage &+= outcome.sptesZappedInline
        let kernel = min(
            Double(outcome.sptesZappedInline) * kernelNanosecondsPerSPTE + Double(outcome.tlbFlushes) * kernelNanosecondsPerFlush,
            Double(LatencyHistogram.highestTrackableNanoseconds))
        _ = projected[operation.rawValue].record(UInt64(kernel))
    }

    /// Records a raw duration (no projection), e.g. a root's lifetime.
    public mutating func record(_ operation: MeasuredOperation, nanoseconds: UInt64) {
        guard enabled else { return }
        _ = measuredStorage[operation.rawValue].record(min(nanoseconds, LatencyHistogram.highestTrackableNanoseconds))
    }

    /// Gives `body` the measured (or projected) histogram of `operation` to change in place,
    /// e.g. to add decoded buckets without building a histogram first.
    public mutating func modify(_ operation: MeasuredOperation, projected isProjected: Bool, _ body: (inout LatencyHistogram) -> Void) {
        if isProjected { body(&projected[operation.rawValue]) } else { body(&measuredStorage[operation.rawValue]) }
    }

    /// Adds every sample of `other`.
    public mutating func merge(_ other: BlockTimeRecorder) {
        longestBlockStorage = max(longestBlockStorage, other.longestBlockStorage)
        sptesZappedInlineStorage &+= other.sptesZappedInlineStorage
        // Most operations have no samples in a given step: skip their ~30,000 empty buckets.
        for index in measuredStorage.indices {
            if other.measuredStorage[index].totalCount > 0 { measuredStorage[index].add(other.measuredStorage[index]) }
            if other.projected[index].totalCount > 0 { projected[index].add(other.projected[index]) }
            zeroProjections[index] &+= other.zeroProjections[index]
        }
    }

    /// The measured histogram of `operation`.
    public func histogram(_ operation: MeasuredOperation) -> LatencyHistogram { measuredStorage[operation.rawValue] }

    /// The projected histogram of `operation`.
    public func projection(_ operation: MeasuredOperation) -> LatencyHistogram {
        var histogram = projected[operation.rawValue]
        let zeros = zeroProjections[operation.rawValue]
        if zeros > 0 { _ = histogram.record(0, count: zeros) }
        return histogram
    }

    /// Every operation's measured histogram under its report name, `vcpu_block` last: the
    /// measured histograms report.json, the live page and /metrics show.
    public var measuredByName: [(name: String, histogram: LatencyHistogram)] {
        MeasuredOperation.allCases.map { ($0.name, histogram($0)) } + [("vcpu_block", vcpuBlock)]
    }

    /// Every vCPU-side block, measured (`vcpu_block`).
    public var vcpuBlock: LatencyHistogram {
        var merged = LatencyHistogram.makeLatency()
        for operation in MeasuredOperation.vcpuSide { merged.add(measuredStorage[operation.rawValue]) }
        return merged
    }

    /// Every vCPU-side block, projected.
    public var vcpuBlockProjected: LatencyHistogram {
        var merged = LatencyHistogram.makeLatency()
        for operation in MeasuredOperation.vcpuSide { merged.add(projection(operation)) }
        return merged
    }
}
