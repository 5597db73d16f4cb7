import ZapEngine
import ZapScenario

/// The side-by-side text table `zapfleet run` prints: one column per policy.
public enum ReportTable {
    /// Renders `report`; with `fleetDetail`, also its workers, shards and whole-VM view.
    public static func render(_ report: RunReport, fleetDetail: Bool = false) -> String {
        let columns = report.policies.map(\.policy)
        var rows: [[String]] = []
        func row(_ label: String, _ values: [String]) { rows.append([label] + values) }
        func section(_ title: String) { rows.append([title]) }

        section("block time (measured)")
        for operation in [
            "reset", "fault", "fast_fault", "populate", "fast_zap", "full_zap", "unmap", "dirty_log", "teardown", "root_lifetime"
        ] {
            let summaries = report.policies.map { $0.operations[operation]?.measured }
            guard summaries.contains(where: { ($0?.count ?? 0) > 0 }) else { continue }
            row("  \(operation) n", summaries.map { "\($0?.count ?? 0)" })
            for (label, key) in [("p50", "p50"), ("p99", "p99"), ("p99.9", "p99.9"), ("max", "max")] {
                row(
                    "    \(label)",
                    summaries.map { summary in
                        guard let summary, summary.count > 0, let value = summary.value(of: key) else { return "-" }
                        return Quantities.formatDuration(value)
                    })
            }
        }
        let flushCost = report.kernelNsPerTlbFlush ?? 0
        section(
            "kernel projection (SPTEs zapped while the caller waited × \(Quantities.rounded(report.kernelNsPerSpte, 1)) ns"
                + (flushCost > 0 ? ", + its remote TLB flushes × \(Quantities.formatDuration(flushCost)))" : ")"))
        for operation in ["reset", "fault", "fast_fault", "fast_zap", "full_zap", "unmap", "dirty_log", "teardown"] {
            let summaries = report.policies.map { $0.operations[operation]?.projected }
            guard summaries.contains(where: { ($0?.count ?? 0) > 0 }) else { continue }
            row(
                "  \(operation) max",
                summaries.map { summary in
                    guard let summary, summary.count > 0 else { return "-" }
                    return Quantities.formatDuration(Double(summary.maxNs))
                })
        }
        let flushes = report.policies.map(\.tlbFlushes)
        if flushes.contains(where: { ($0?.total ?? 0) > 0 }) {
            section("remote TLB flushes (as the policy's kernel batches them)")
            for cause in TLBFlushCause.allCases where flushes.contains(where: { ($0?.byCause[cause] ?? 0) > 0 }) {
                row("  \(cause.name)", flushes.map { $0.map { "\($0.byCause[cause])" } ?? "-" })
            }
            row("  total", flushes.map { $0.map { "\($0.total)" } ?? "-" })
            row(
                "  × \(Quantities.formatDuration(flushCost))",
                flushes.map { $0.map { Quantities.formatDuration($0.projectedSeconds * 1e9) } ?? "-" })
        }
        let interference = report.policies.map(\.cpuInterference)
        if interference.contains(where: { $0 != nil }) {
            section("CPU interference (guest work on pinned vCPUs while the VM zapped)")
            for row in InterferenceRows.rows(interference) { rows.append(row) }
        }
        section("counters")
        let counterRows: [(String, (PolicyReport) -> String)] = [
            ("SPTEs installed", { "\($0.counters.sptesInstalled)" }),
            ("SPTEs zapped", { "\($0.counters.sptesZapped)" }),
            ("tables allocated", { "\($0.counters.tablesAllocated)" }),
            ("tables freed", { "\($0.counters.tablesFreed)" }),
            ("tables peak", { "\($0.counters.tablesPeak) (\(Quantities.describeSize(Double($0.counters.tablesPeak) * 4096)))" }),
            ("roots created", { "\($0.counters.rootsCreated)" }),
            ("zap yields", { "\($0.counters.yields)" }),
            ("work items queued", { "\($0.counters.workItemsQueued)" }),
            ("work items rejected", { "\($0.counters.workItemsRejected)" }),
            ("zap throughput", { "\(Quantities.rounded($0.zapThroughputSptesPerSecond / 1e6, 1)) M SPTE/s" }),
            ("wall time", { Quantities.formatDuration($0.wallSeconds * 1e9) })
        ]
        for (label, value) in counterRows { row("  \(label)", report.policies.map(value)) }
        section("verdicts")
        row(
            "  violations",
            report.policies.map { policy in
                policy.violations == 0
                    ? "0" : policy.violationsByKind.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
            })
        row("  complete", report.policies.map { $0.complete ? "yes" : "NO" })

        var lines = [layout(rows, header: ["policy"] + columns)]
        if fleetDetail, let fleet = report.fleet { lines.append(contentsOf: render(fleet)) }
        for verdict in report.objectives {
            let shown =
                verdict.objective.contains("violations") || verdict.objective.contains("count")
                ? Quantities.rounded(verdict.value, 0) : Quantities.formatDuration(verdict.value)
            lines.append("objective \(verdict.objective) [\(verdict.policy)]: \(verdict.met ? "met" : "MISSED") (\(shown))")
        }
        for policy in report.policies where !policy.violationExamples.isEmpty {
            for example in policy.violationExamples.prefix(3) { lines.append("violation [\(policy.policy)] \(example)") }
        }
        lines.append("verdict: \(report.verdict.summary) (exit \(report.verdict.exitCode))")
        return lines.joined(separator: "\n") + "\n"
    }

    private static func render(_ fleet: FleetSection) -> [String] {
        var lines = ["", "whole VM, per event (slices composed; projected = every slice's inline SPTEs × cost)"]
        for event in fleet.wholeVm where event.name != "populate" && event.name != "run" {
            lines.append(
                "  \(event.policy.padding(to: 9)) step \(event.step) \(event.name.padding(to: 16)) measured \(Quantities.formatDuration(Double(event.measuredNs)).padding(to: 11)) projected \(Quantities.formatDuration(Double(event.projectedNs)))"
            )
        }
        lines.append("workers")
        for worker in fleet.workers {
            lines.append(
                "  \(worker.name.padding(to: 16)) \(worker.host.padding(to: 16)) \(worker.cores) cores, budget \(Quantities.describeSize(Double(worker.memoryBudgetBytes))), shards \(worker.shardsCompleted), duplicates \(worker.duplicatesDropped), bad frames \(worker.badFrames), \(worker.state)"
                    + (worker.note.map { " (\($0))" } ?? ""))
        }
        let slowest = fleet.shards.map(\.wallSeconds).max() ?? 0
        if fleet.dispatchSeconds > 0 && slowest > 0 {
            // Against the slowest shard only when every worker ran at most one shard; otherwise
            // shards ran one after another and the ratio says nothing about dispatch.
            let oneEach = fleet.shards.count <= fleet.workers.count
            let comparison =
                oneEach
                ? "\(Quantities.rounded(fleet.dispatchSeconds / slowest, 2))× the slowest shard (\(Quantities.formatDuration(slowest * 1e9)))"
                : "\(fleet.shards.count) shards on \(fleet.workers.count) workers"
            lines.append(
                "dispatch: \(Quantities.formatDuration(fleet.dispatchSeconds * 1e9)) from plan to last result, \(comparison); coordinator CPU \(Quantities.formatDuration(fleet.coordinatorCpuSeconds * 1e9))"
            )
        }
        lines.append(
            "shards: \(fleet.shards.count), requeued \(fleet.requeues), duplicates dropped \(fleet.duplicatesDropped), bad frames \(fleet.badFrames)"
        )
        for shard in fleet.shards {
            let zapped = shard.sptesZapped.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            lines.append(
                "  shard \(shard.id) \(shard.slice) on \(shard.worker), attempts \(shard.attempts), \(Quantities.formatDuration(shard.wallSeconds * 1e9)); SPTEs zapped: \(zapped)"
            )
        }
        return lines
    }

    private static func layout(_ rows: [[String]], header: [String]) -> String {
        let all = [header] + rows
        let columnCount = header.count
        var widths = [Int](repeating: 0, count: columnCount)
        for row in all where row.count == columnCount {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        return all.map { row in
            guard row.count == columnCount else { return row.joined() }
            return row.enumerated().map { index, cell in
                index == 0 ? cell.padding(to: widths[0]) : String(repeating: " ", count: widths[index] - cell.count) + cell
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

extension String {
    fileprivate func padding(to width: Int) -> String { self + String(repeating: " ", count: max(0, width - count)) }
}

/// The rows of the CPU-interference section, shared by the table and `report.html`.
enum InterferenceRows {
    /// One label and one cell per column (`-` where a column has no figures).
    static func rows(_ columns: [CPUInterference?]) -> [[String]] {
        func cells(_ value: (CPUInterference) -> String) -> [String] { columns.map { $0.map(value) ?? "-" } }
        func duration(_ nanoseconds: UInt64) -> String { Quantities.formatDuration(Double(nanoseconds)) }
        var rows: [[String]] = []
        rows.append(
            ["  guest time lost"]
                + cells { i in
                    "\(duration(i.vcpus.reduce(0) { $0 &+ $1.lostNs })) of \(duration(i.vcpus.reduce(0) { $0 &+ $1.guestNs })) (\(Quantities.rounded(i.lostPercent, 1))%)"
                })
        rows.append(["  quiet baseline"] + cells { "\(Quantities.rounded($0.quietLostPercent, 1))% lost" })
        let vcpuCount = columns.compactMap { $0?.vcpus.count }.max() ?? 0
        for vcpu in 0..<vcpuCount {
            rows.append(
                ["    vCPU \(vcpu)"]
                    + cells { i in
                        guard let share = i.vcpus.first(where: { $0.vcpu == vcpu }) else { return "-" }
                        return "cpu \(share.cpu < 0 ? "?" : String(share.cpu)): \(duration(share.lostNs)) lost"
                    })
        }
        rows.append(
            ["  zap CPU time by CPU"]
                + cells { i in
                    i.zapCpuNs.isEmpty
                        ? "none"
                        : i.zapCpuNs.sorted { (Int($0.key) ?? 0) < (Int($1.key) ?? 0) }.map { "cpu\($0.key) \(duration($0.value))" }.joined(
                            separator: ", ")
                })
        if columns.contains(where: { ($0?.memslotDeletions ?? 0) > 0 }) {
            rows.append(
                ["  memslot deletion"]
                    + cells { i in
                        i.memslotDeletions == 0
                            ? "-"
                            : "\(i.memslotDeletions)×: zap CPU ≤ \(duration(i.deletionZapCpuNsMax)), ≤ \(i.deletionParallelZapsMax) zap(s) at once on ≤ \(i.deletionCpusMax) CPU(s)"
                    })
        }
        return rows
    }
}
