import Histogram

/// The histogram type every block time goes into: nanoseconds, 3 significant digits, up to an hour.
public typealias LatencyHistogram = Histogram<UInt64>

extension LatencyHistogram {
    /// The longest value tracked: one hour in nanoseconds (the seed's sync zap is 900 s).
    public static let highestTrackableNanoseconds: UInt64 = 3_600_000_000_000

    /// An empty histogram with the run's parameters. Copies of one empty histogram share its
    /// counts until they first record (the array is copied on write), so that the many
    /// histograms a run makes and never fills (every operation's, for every vCPU) cost neither
    /// the time to zero 270 KB nor the memory.
    public static func makeLatency() -> LatencyHistogram { emptyLatency }

    private static let emptyLatency = LatencyHistogram(
        lowestDiscernibleValue: 1, highestTrackableValue: highestTrackableNanoseconds,
        numberOfSignificantValueDigits: .three)
}

/// The operations whose block times a run records, each into its own histogram.
public enum MeasuredOperation: Int, CaseIterable, Sendable, Codable, CustomStringConvertible {
    /// A single-page fault.
    case fault
    /// A 2 MiB batch of 4 KiB faults while populating.
    case populate
    /// A vCPU reset (root unload).
    case reset
    /// A fast zap (memslot deletion) as its caller saw it.
    case fastZap
    /// A full zap (notifier release).
    case fullZap
    /// VM teardown.
    case teardown
    /// Per root: invalidation to reclamation.
    case rootLifetime
    /// An MMU-notifier unmap of one memslot.
    case unmap
    /// A dirty-logging operation (clearing dirty bits, zapping collapsible tables).
    case dirtyLog
    /// A fault through the lockless fast path (slow path included when it falls back).
    case fastFault

    /// The name used in objectives, reports and file names.
    public var name: String {
        switch self {
        case .fault: "fault"
        case .populate: "populate"
        case .reset: "reset"
        case .fastZap: "fast_zap"
        case .fullZap: "full_zap"
        case .teardown: "teardown"
        case .rootLifetime: "root_lifetime"
        case .unmap: "unmap"
        case .dirtyLog: "dirty_log"
        case .fastFault: "fast_fault"
        }
    }

    /// Operations a vCPU blocks in; together they make the `vcpu_block` histogram.
    public static let vcpuSide: [MeasuredOperation] = [.fault, .populate, .reset, .fastFault]

    /// The name.
    public var description: String { name }
}
