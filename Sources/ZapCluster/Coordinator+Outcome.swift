import Foundation
import ZapEngine
import ZapProtocol
import ZapRun
import ZapScenario

extension Coordinator {
    // MARK: - Outcome

    /// Hands the run as it stands to `configuration.snapshots` (without the interval log).
    func publishSnapshot() {
        configuration.snapshots?(snapshot(of: outcome(withIntervalLog: false)))
    }

    func snapshot(of outcome: FleetRunOutcome) -> FleetSnapshot {
        let phase: FleetSnapshot.Phase =
            switch scheduler.phase {
            case .gathering: .gathering
            case .running: .running
            case .stopping: .stopping
            case .finished: .finished
            }
        let pending = Set(scheduler.pending.ids)
        let shards = scheduler.shards.map { record -> FleetSnapshot.ShardState in
            if case .done = record.phase { return .done }
            return pending.contains(record.shard.id) ? .queued : .running
        }
        var snapshot = FleetSnapshot(phase: phase, scenario: scenario.name, outcome: outcome, shards: shards)
        for peer in scheduler.peers.values {
            if case .busy(let claim) = peer.state, claim.runID == runID { snapshot.workerShards[peer.name] = claim.shard }
        }
        snapshot.workerRates = workerRates
        return snapshot
    }

    func outcome(withIntervalLog: Bool = true) -> FleetRunOutcome {
        let merged = totals.merged(scenario.policies)
        // Strangers that never said hello show only in the bad-frame total: a port scan must not fill the report.
        let workers = scheduler.peers.values.filter { peer in
            if case .refused = peer.state { return true }
            return peer.introduction != nil
        }
        .sorted { $0.joinOrder < $1.joinOrder }.map { peer in
            var note = peer.benched
            if case .refused(let reason) = peer.state { note = reason }
            return FleetSection.WorkerSummary(
                name: peer.name, host: peer.introduction?.host ?? "?", cores: peer.introduction?.cores ?? 0,
                memoryBudgetBytes: peer.introduction?.memoryBudgetBytes ?? 0, shardsCompleted: peer.completed,
                duplicatesDropped: peer.duplicates, badFrames: peer.badFrames, state: peer.state.name, note: note,
                resultsRefused: peer.rejectedResults)
        }
        let shardSummaries = scheduler.shards.compactMap { record -> FleetSection.ShardSummary? in
            guard let result = totals.shards[record.shard.id] else { return nil }
            return FleetSection.ShardSummary(
                id: record.shard.id, slice: record.shard.slice, worker: result.worker,
                attempts: Int(record.lastAttempt), wallSeconds: Double(result.wall) / 1e9,
                sptesZapped: result.sptesZapped, violations: result.violations)
        }
        let plannedAt = scheduler.plannedAt
        let fleet = FleetSection(
            workers: workers, shards: shardSummaries, requeues: scheduler.requeues, duplicatesDropped: scheduler.duplicates,
            badFrames: scheduler.badFrames,
            wholeVm: FleetAggregation.wholeVm(merged, kernelNanosecondsPerSPTE: configuration.kernelNanosecondsPerSPTE),
            dispatchSeconds: finishedAt > plannedAt && plannedAt > 0 ? Double(finishedAt - plannedAt) / 1e9 : 0,
            coordinatorCpuSeconds: threadCPUSeconds(), keysRefused: keysRefused, resumedShards: scheduler.resumedShards,
            resultsRefused: scheduler.rejectedResults, attemptsRevoked: scheduler.revokedAttempts)
        let log =
            withIntervalLog
            ? (FleetAggregation.intervalLogHeader(started: startedAt)
                + scheduler.shards.compactMap { totals.shards[$0.shard.id] }.flatMap(\.intervalLog)).joined(separator: "\n") + "\n"
            : ""
        var failure = scheduler.failure
        if failure == nil && !scheduler.interrupted && !scheduler.complete {
            failure = FleetFailure(
                .shardsWithoutResult,
                "the run ended with \(scheduler.shards.count - scheduler.completedShards) of \(scheduler.shards.count) shard(s) without a result"
            )
        }
        let complete = scheduler.complete && merged.allSatisfy(\.complete)
        var outcome = FleetRunOutcome(
            runs: merged, fleet: fleet, intervalLog: log, failure: failure, complete: complete,
            external: totals.externalMeasurements)
        outcome.runID = runID
        return outcome
    }
}
