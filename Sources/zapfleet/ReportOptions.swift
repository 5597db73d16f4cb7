import ArgumentParser

/// What `run` and `coordinator` share about their report: where its files go and the projection's
/// cost per SPTE.
struct ReportOptions: ParsableArguments {
    @Option(
        help:
            "Directory to write report.json, .hgrm files and scenario.yaml into; a fleet run (coordinator, or run --shard) adds shards.hlog, and the coordinator the journal of accepted results (journal.zfj, which --resume reads)."
    )
    var out: String?

    @Option(help: "Also write JUnit XML here: one test case per objective and per invariant, for CI systems.")
    var junit: String?

    @Option(
        help:
            "Kernel cost of zapping one SPTE for the projection column: nanoseconds, or a calibration file from `zapfleet calibrate` (default 52, the seed's 900 s / 2^34; run --kvm uses this host's calibrated figure)."
    )
    var kernelSpteNs: String?

    func validate() throws {
        if let kernelSpteNs { _ = try OptionChecks.kernelCost(kernelSpteNs) }
    }

    /// `--kernel-spte-ns` in nanoseconds, or nil when not given.
    func kernelCost() throws -> Double? { try kernelSpteNs.map(OptionChecks.kernelCost) }
}
