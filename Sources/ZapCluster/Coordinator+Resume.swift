import Foundation
import ZapEngine
import ZapProtocol
import ZapRun
import ZapScenario
import ZapPlatform

extension Coordinator {
    /// Takes up a journaled run: its plan, every result it holds that passes the live checks, and
    /// its handouts; the journal is reopened for appending.
    func resume(from contents: JournalContents) throws {
        let plan = contents.plan.shards.enumerated().map { index, planned in
            Shard(id: UInt64(index), slice: MemorySlice(firstSlot: planned.firstSlot, slotCount: planned.slotCount), of: scenario)
        }
        guard plan.map(\.id) == contents.plan.shards.map(\.id),
            plan.allSatisfy({ $0.slice.slotCount > 0 && $0.slice.firstSlot + $0.slice.slotCount <= scenario.memslotCount })
        else {
            throw PlanError(message: "the journal's plan does not fit its scenario; it cannot be resumed")
        }
        var done: [(shard: UInt64, attempt: UInt32, worker: String)] = []
        for entry in contents.results {
            let id = entry.result.shardID
            // The same checks as a live result: a journal is peer data written down.
            guard id < UInt64(plan.count), !done.contains(where: { $0.shard == id }),
                entry.result.runID == runID || entry.result.runID.isEmpty,
                case let (runs, .plausible) = Self.check(entry.result, shard: plan[Int(id)], scenario: scenario)
            else {
                record(
                    FleetEvent(
                        .journalRecordSkipped, .warning,
                        "journal: skipped a record for shard \(id) (a duplicate, implausible, or not this plan's)",
                        ["shard": .number(id)]))
                continue
            }
            totals.add(runs, of: entry.result, worker: entry.worker, startSeconds: 0)
            done.append((id, entry.result.attempt, entry.worker))
        }
        scheduler = FleetScheduler(
            configuration: scheduler.configuration, now: monotonicNanoseconds(), resuming: plan, done: done,
            handouts: contents.handouts, planner: scheduler.planner)
        if let path = configuration.journalPath { journal = try ResultJournal.reopen(at: path, contents: contents) }
        let torn = contents.tornBytes > 0 ? "; ignored a torn last record of \(contents.tornBytes) bytes" : ""
        record(
            FleetEvent(
                .resumed, .info,
                "resumed run \(runID): \(done.count) of \(plan.count) shard results from the journal\(torn); \(plan.count - done.count) shard(s) to run",
                [
                    "run_id": .string(runID), "done": .number(done.count), "shards": .number(plan.count),
                    "torn_bytes": .number(contents.tornBytes)
                ]))
    }
}
