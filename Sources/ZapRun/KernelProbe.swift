import Foundation
import Histogram
import ZapScenario

/// What `zapfleet-kvm-probe` (clients/c) measured on this host's real KVM: the max-guest-memory
/// timeline's block times, the KVM stats' deltas per event, and labels saying which MMU ran.
/// Decoded from the probe's `--json` file.
public struct KernelProbeResult: Sendable, Decodable {
    /// One event of the timeline under one setting of the zap-all quirk.
    public struct Event: Sendable, Decodable {
        /// Whether deleting a memslot zapped everything (`KVM_X86_QUIRK_SLOT_ZAP_ALL` on).
        public var quirkSlotZapAll: Bool
        /// `populate`, `reset`, `populate_after_reset`, `delete_memslots`, `close`.
        public var event: String
        /// The report operation its samples belong to (`populate`, `reset`, `fast_zap`, `teardown`).
        public var operation: String
        /// One block time per vCPU or per ioctl.
        public var samplesNs: [UInt64]
        /// Leaf SPTEs the event removed (from the stats' `pages_4k`), where it removed any.
        public var sptesZapped: Int64?
        /// The event's time over those SPTEs.
        public var nsPerSpte: Double?
        /// Deltas of the VM's and (summed) vCPUs' binary stats over the event.
        public var vmStats: [String: Int64]?
        public var vcpuStats: [String: Int64]?

        enum CodingKeys: String, CodingKey {
            case quirkSlotZapAll = "quirk_slot_zap_all", event, operation, samplesNs = "samples_ns", sptesZapped = "sptes_zapped"
            case nsPerSpte = "ns_per_spte", vmStats = "vm_stats", vcpuStats = "vcpu_stats"
        }
    }

    public var kernel: String
    public var host: String
    /// `tdp` or `shadow`.
    public var mmu: String
    public var tdpMMUParameter: String
    public var nestedUnderPVM: Bool
    public var guestMemoryBytes: UInt64
    public var memslotBytes: UInt64
    public var vcpus: Int
    /// Guest memory in 4 KiB pages.
    public var pages: UInt64
    public var events: [Event]

    enum CodingKeys: String, CodingKey {
        case kernel, host, mmu, tdpMMUParameter = "tdp_mmu_parameter", nestedUnderPVM = "nested_under_pvm"
        case guestMemoryBytes = "guest_memory_bytes", memslotBytes = "memslot_bytes", vcpus, pages, events
    }

    /// Decodes the probe's JSON.
    public static func decode(_ data: Data) throws -> KernelProbeResult {
        try JSONDecoder().decode(KernelProbeResult.self, from: data)
    }

    /// Is the host's MMU the one zapfleet simulates (the TDP MMU)?
    public var isTDPMMU: Bool { mmu == "tdp" }

    /// The MMU in words, for labels: `shadow MMU nested under PVM (kvm.tdp_mmu=N)`.
    public var mmuDescription: String {
        "\(isTDPMMU ? "TDP" : "shadow") MMU\(nestedUnderPVM ? " nested under PVM" : "") (kvm.tdp_mmu=\(tdpMMUParameter))"
    }

    /// The report column: the probe's samples by operation, named `kvm:HOST`, labelled with the
    /// kernel, the MMU and, where it is not the TDP MMU, that it is not the design simulated.
    public func measurement(wallNanoseconds: UInt64, exitStatus: Int32) -> ExternalMeasurement {
        var histograms: [MeasuredOperation: LatencyHistogram] = [:]
        for event in events {
            guard let operation = ExternalMeasurement.operation(named: event.operation) else { continue }
            for sample in event.samplesNs {
                histograms[operation, default: LatencyHistogram.makeLatency()].recordClamped(sample)
            }
        }
        var source =
            "zapfleet-kvm-probe on \(host): kernel \(kernel), \(mmuDescription), \(Quantities.describeSize(Double(guestMemoryBytes))) in \(Quantities.describeSize(Double(memslotBytes))) memslots, \(vcpus) vCPUs"
        if !isTDPMMU {
            source += "; not the TDP MMU that the simulated policies model: compare shapes, not the zap path"
        }
        if let calibration {
            source += "; \(calibration.description)"
        }
        return ExternalMeasurement(
            name: "kvm:\(host)", source: source, histograms: histograms,
            wallNanoseconds: wallNanoseconds, exitStatus: exitStatus)
    }

    /// The host's cost of zapping one SPTE, fitted from the deletes that zapped everything (the
    /// zap-all quirk) and the closes: total time over total SPTEs, with the spread of the events.
    public var calibration: KernelCalibration? {
        let fitted = events.filter {
            ($0.sptesZapped ?? 0) > 0 && ($0.event == "close" || ($0.event == "delete_memslots" && $0.quirkSlotZapAll))
        }
        guard !fitted.isEmpty else { return nil }
        let nanoseconds = fitted.reduce(0.0) { $0 + Double($1.samplesNs.reduce(0, +)) }
        let sptes = fitted.reduce(0.0) { $0 + Double($1.sptesZapped ?? 0) }
        let each = fitted.compactMap(\.nsPerSpte)
        return KernelCalibration(
            host: host, kernel: kernel, mmu: mmuDescription, nanosecondsPerSPTE: nanoseconds / sptes,
            lowest: each.min() ?? 0, highest: each.max() ?? 0, events: fitted.count, sptes: Int64(sptes))
    }
}

/// A host's fitted cost per SPTE zapped, from real KVM.
public struct KernelCalibration: Sendable, Codable, Equatable, CustomStringConvertible {
    public var host: String
    public var kernel: String
    public var mmu: String
    /// Total time over total SPTEs of the events fitted.
    public var nanosecondsPerSPTE: Double
    /// The lowest and highest of the events' own figures.
    public var lowest: Double
    public var highest: Double
    /// Events fitted, and the SPTEs they zapped.
    public var events: Int
    public var sptes: Int64

    /// `calibrated 143 ns per SPTE (110 to 150 over 3 zaps of 524,292 SPTEs)`.
    public var description: String {
        "calibrated \(Quantities.rounded(nanosecondsPerSPTE, 1)) ns per SPTE (\(Quantities.rounded(lowest, 1)) to \(Quantities.rounded(highest, 1)) over \(events) zaps of \(sptes) SPTEs)"
    }
}

extension Histogram where Count == UInt64 {
    /// Records `value`, clamped to the histogram's range.
    mutating func recordClamped(_ value: UInt64) {
        _ = record(Swift.min(Swift.max(value, 1), highestTrackableValue))
    }
}
