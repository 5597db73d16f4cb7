import HistogramCodec
import ZapEngine
import ZapProtocol
import ZapRun
import Foundation
import Histogram

/// Why a message from a peer was not accepted. The message is dropped and counted.
public struct ProtocolViolation: Error, Sendable, CustomStringConvertible {
    /// What was wrong with it.
    public let reason: String
    /// A violation with `reason`.
    public init(_ reason: String) { self.reason = reason }
    /// The reason.
    public var description: String { reason }
}

/// Converting a policy's run of a shard to and from its wire form.
public enum ResultCoding {
    /// The wire form of `run`: every histogram in the V2 compressed encoding.
    public static func encode(_ run: PolicyRun) -> Zapfleet_V1_PolicyResult {
        var result = Zapfleet_V1_PolicyResult()
        result.policy = run.policy.rawValue
        for operation in MeasuredOperation.allCases {
            for projected in [false, true] {
                let histogram = projected ? run.recorder.projection(operation) : run.recorder.histogram(operation)
                guard histogram.totalCount > 0 else { continue }
                var encoded = Zapfleet_V1_EncodedHistogram()
                encoded.operation = operation.name
                encoded.projected = projected
                encoded.hdrV2 = .init(HistogramV2Codec.encodeCompressed(histogram))
                result.histograms.append(encoded)
            }
        }
        result.counters = encode(run.statistics)
        result.violations = run.violations.prefix(10).map { violation in
            var record = Zapfleet_V1_ViolationRecord()
            record.kind = violation.kind.rawValue
            record.rootID = Int64(violation.rootID ?? -1)
            record.detail = violation.detail
            return record
        }
        result.violationCounts = Dictionary(uniqueKeysWithValues: run.violationCounts.map { ($0.key.rawValue, UInt64($0.value)) })
        result.steps = run.steps.map { step in
            var record = Zapfleet_V1_StepRecord()
            record.name = step.name
            record.wallNs = step.nanoseconds
            record.longestBlockNs = step.longestBlockNanoseconds
            record.sptesZappedInline = UInt64(step.sptesZappedInline)
            return record
        }
        result.injectedPathRuns = Dictionary(uniqueKeysWithValues: run.injectedPathRuns.map { ($0.key.rawValue, UInt64($0.value)) })
        result.tlbFlushes = run.tlbFlushes.byCause.mapValues { UInt64($0) }
        if let interference = run.interference { result.cpuInterference = InterferenceCoding.encode(interference) }
        result.complete = run.complete
        result.zapThroughput = run.zapThroughput
        result.wallNs = run.wallNanoseconds
        return result
    }

    /// The run a peer reported, validated: known policy, operations and violation kinds,
    /// decodable histograms with the run's parameters, counts within range.
    public static func decode(_ result: Zapfleet_V1_PolicyResult, kernelNanosecondsPerSPTE: Double) throws(ProtocolViolation) -> PolicyRun {
        try decodeValidated(result).run(kernelNanosecondsPerSPTE: kernelNanosecondsPerSPTE)
    }

    /// The same validation, keeping the histograms as decoded buckets (cheap to add into a total).
    public static func decodeValidated(_ result: Zapfleet_V1_PolicyResult) throws(ProtocolViolation) -> DecodedPolicyResult {
        guard let policy = ZapPolicy(rawValue: result.policy) else {
            throw ProtocolViolation("unknown policy '\(result.policy.printable(limit: 40))'")
        }
        guard result.histograms.count <= MeasuredOperation.allCases.count * 2 else {
            throw ProtocolViolation("\(result.histograms.count) histograms, more than a run has")
        }
        var histograms: [DecodedPolicyResult.Histogram] = []
        for encoded in result.histograms {
            guard let operation = MeasuredOperation.allCases.first(where: { $0.name == encoded.operation }) else {
                throw ProtocolViolation("unknown operation '\(encoded.operation.printable(limit: 40))'")
            }
            guard !histograms.contains(where: { $0.operation == operation && $0.projected == encoded.projected }) else {
                throw ProtocolViolation("two \(encoded.projected ? "projected" : "measured") histograms of \(operation.name)")
            }
            let decoded: DecodedHistogram
            do {
                decoded = try HistogramV2Codec.decodeBuckets([UInt8](encoded.hdrV2))
            } catch {
                throw ProtocolViolation("histogram \(operation.name): \(error)")
            }
            guard decoded.lowestDiscernibleValue == 1,
                decoded.highestTrackableValue == LatencyHistogram.highestTrackableNanoseconds,
                decoded.significantDigits == .three
            else {
                throw ProtocolViolation("histogram \(operation.name) has parameters other than the run's (1 ns, 1 h, 3 digits)")
            }
            histograms.append(
                DecodedPolicyResult.Histogram(
                    operation: operation, projected: encoded.projected, buckets: decoded,
                    encoded: [UInt8](encoded.hdrV2)))
        }
        var counts: [Violation.Kind: Int] = [:]
        for (name, count) in result.violationCounts {
            guard let kind = Violation.Kind(rawValue: name) else {
                throw ProtocolViolation("unknown violation kind '\(name.printable(limit: 40))'")
            }
            guard count <= UInt64(Int32.max) else { throw ProtocolViolation("violation count \(count) out of range") }
            counts[kind] = Int(count)
        }
        let violations = try result.violations.prefix(10).map { record throws(ProtocolViolation) in
            guard let kind = Violation.Kind(rawValue: record.kind) else {
                throw ProtocolViolation("unknown violation kind '\(record.kind.printable(limit: 40))'")
            }
            return Violation(kind: kind, rootID: record.rootID < 0 ? nil : Int(record.rootID), detail: record.detail.printable(limit: 500))
        }
        var injected: [InjectedBug: Int] = [:]
        for (name, count) in result.injectedPathRuns {
            guard let bug = InjectedBug(rawValue: name) else {
                throw ProtocolViolation("unknown injected bug '\(name.printable(limit: 40))'")
            }
            guard count <= UInt64(Int32.max) else { throw ProtocolViolation("injected_path_runs[\(name)] \(count) out of range") }
            injected[bug] = Int(count)
        }
        var flushes: [TLBFlushCause: Int] = [:]
        for (name, count) in result.tlbFlushes {
            guard let cause = TLBFlushCause(name: name) else {
                throw ProtocolViolation("unknown TLB flush cause '\(name.printable(limit: 40))'")
            }
            guard count <= UInt64(1) << 50 else { throw ProtocolViolation("tlb_flushes[\(name)] \(count) out of range") }
            flushes[cause] = Int(count)
        }
        guard result.steps.count <= 100_000 else { throw ProtocolViolation("\(result.steps.count) steps") }
        let steps = result.steps.map {
            StepTiming(
                name: $0.name.printable(limit: 40), nanoseconds: $0.wallNs, longestBlockNanoseconds: $0.longestBlockNs,
                sptesZappedInline: Int(clamping: $0.sptesZappedInline))
        }
        let outcome = PolicyOutcome(
            policy: policy, statistics: try decode(result.counters), violations: violations,
            violationCounts: counts, steps: steps, wallNanoseconds: result.wallNs, complete: result.complete,
            zapThroughput: result.zapThroughput.isFinite && result.zapThroughput >= 0 ? result.zapThroughput : 0,
            injectedPathRuns: injected, tlbFlushes: TLBFlushCounts(flushes),
            interference: result.hasCpuInterference ? try InterferenceCoding.decode(result.cpuInterference) : nil)
        return DecodedPolicyResult(histograms: histograms, outcome: outcome)
    }

    static func encode(_ statistics: EngineStatistics) -> Zapfleet_V1_Counters {
        var counters = Zapfleet_V1_Counters()
        counters.sptesInstalled = UInt64(statistics.sptesInstalled)
        counters.sptesZapped = UInt64(statistics.sptesZapped)
        counters.accessedZapped = UInt64(statistics.accessedZapped)
        counters.dirtyZapped = UInt64(statistics.dirtyZapped)
        counters.tablesAllocated = UInt64(statistics.tablesAllocated)
        counters.tablesFreed = UInt64(statistics.tablesFreed)
        counters.tablesLive = UInt64(statistics.tablesLive)
        counters.tablesPeak = UInt64(statistics.tablesPeak)
        counters.faults = UInt64(statistics.faults)
        counters.faultRetries = UInt64(statistics.faultRetries)
        counters.spuriousFaults = UInt64(statistics.spuriousFaults)
        counters.yields = UInt64(statistics.yields)
        counters.zapSteps = UInt64(statistics.zapSteps)
        counters.largestStepTables = UInt64(statistics.largestStepTables)
        counters.rootsCreated = UInt64(statistics.rootsCreated)
        counters.rootsReused = UInt64(statistics.rootsReused)
        counters.rootsFreed = UInt64(statistics.rootsFreed)
        counters.rootZaps = UInt64(statistics.rootZaps)
        counters.workItemsQueued = UInt64(statistics.workItemsQueued)
        counters.workItemsRejected = UInt64(statistics.workItemsRejected)
        counters.fastZaps = UInt64(statistics.fastZaps)
        counters.fullZaps = UInt64(statistics.fullZaps)
        return counters
    }

    static func decode(_ counters: Zapfleet_V1_Counters) throws(ProtocolViolation) -> EngineStatistics {
        let values = [
            counters.sptesInstalled, counters.sptesZapped, counters.accessedZapped, counters.dirtyZapped,
            counters.tablesAllocated, counters.tablesFreed, counters.tablesLive, counters.tablesPeak,
            counters.faults, counters.faultRetries, counters.spuriousFaults, counters.yields, counters.zapSteps,
            counters.largestStepTables, counters.rootsCreated, counters.rootsReused, counters.rootsFreed,
            counters.rootZaps, counters.workItemsQueued, counters.workItemsRejected, counters.fastZaps, counters.fullZaps
        ]
        // 2^50 leaves is 4096 TiB of 4 KiB pages: more than any root maps.
        guard values.allSatisfy({ $0 < 1 << 50 }) else { throw ProtocolViolation("a counter is out of range") }
        let v = values.map { Int($0) }
        return EngineStatistics(
            sptesInstalled: v[0], sptesZapped: v[1], accessedZapped: v[2], dirtyZapped: v[3], tablesAllocated: v[4],
            tablesFreed: v[5], tablesLive: v[6], tablesPeak: v[7], faults: v[8], faultRetries: v[9], spuriousFaults: v[10],
            yields: v[11], zapSteps: v[12], largestStepTables: v[13], rootsCreated: v[14], rootsReused: v[15],
            rootsFreed: v[16], rootZaps: v[17], workItemsQueued: v[18], workItemsRejected: v[19], fastZaps: v[20], fullZaps: v[21])
    }
}

/// A policy's run as a worker reported it, validated, with its histograms still as buckets.
@dynamicMemberLookup
public struct DecodedPolicyResult: Sendable {
    /// One histogram of the run.
    public struct Histogram: Sendable {
        /// The operation.
        public var operation: MeasuredOperation
        /// Projected (true) or measured.
        public var projected: Bool
        /// Its buckets.
        public var buckets: DecodedHistogram
        /// The V2 compressed bytes as received (for the interval log).
        public var encoded: [UInt8]
    }

    /// Its histograms.
    public var histograms: [Histogram]
    /// Everything else the worker reported.
    public var outcome: PolicyOutcome

    /// The outcome's fields.
    public subscript<Value>(dynamicMember field: WritableKeyPath<PolicyOutcome, Value>) -> Value {
        get { outcome[keyPath: field] }
        set { outcome[keyPath: field] = newValue }
    }

    /// The run with full histograms.
    public func run(kernelNanosecondsPerSPTE: Double) -> PolicyRun {
        var recorder = BlockTimeRecorder(kernelNanosecondsPerSPTE: kernelNanosecondsPerSPTE)
        for histogram in histograms {
            recorder.modify(histogram.operation, projected: histogram.projected) { histogram.buckets.add(into: &$0) }
        }
        return PolicyRun(outcome, recorder: recorder)
    }
}
