import ArgumentParser
import ZapHistory

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

    @Option(help: "Add the run's report to this history database (SQLite; see `zapfleet history`). Needs --out.")
    var history: String?

    @Option(name: .customLong("label"), help: "With --history: a label KEY=VALUE for the run (repeatable), e.g. --label kernel=6.6.8.")
    var labels: [String] = []

    func validate() throws {
        if let kernelSpteNs { _ = try OptionChecks.kernelCost(kernelSpteNs) }
        if history != nil && out == nil {
            throw ValidationError("--history keeps the report.json of --out: give --out DIR too")
        }
        if !labels.isEmpty && history == nil { throw ValidationError("--label labels a run in --history: give --history DB too") }
        do { _ = try HistoryDatabase.labels(labels) } catch { throw ValidationError("--label: \(error.message)") }
    }

    /// Where to add the report, with its labels, if anywhere.
    var historyEntry: (database: String, labels: [String])? { history.map { ($0, labels) } }

    /// `--kernel-spte-ns` in nanoseconds, or nil when not given.
    func kernelCost() throws -> Double? { try kernelSpteNs.map(OptionChecks.kernelCost) }
}
