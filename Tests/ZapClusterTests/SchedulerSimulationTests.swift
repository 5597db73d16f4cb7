import Foundation
import Testing
@testable import ZapCluster

/// The scheduler against thousands of random schedules of joins, kills, pauses, restarts of
/// workers and of the coordinator (with `--resume`), duplicates, stale and forged results,
/// refusals, version switches and hostile numbers. After every step: each shard merged at most
/// once and only from an attempt this run handed to the sender; nothing acknowledged that was
/// not journaled. At the end: the run ended, complete or with a named reason, and completed if
/// a healthy worker stayed throughout. A failing schedule is shrunk and printed with its seed.
@Suite("Scheduler simulation")
struct SchedulerSimulationTests {
    static var schedules: Int { Int(ProcessInfo.processInfo.environment["ZAPFLEET_SIMULATION_SCHEDULES"] ?? "") ?? 10_000 }
    static var firstSeed: UInt64 { UInt64(ProcessInfo.processInfo.environment["ZAPFLEET_SIMULATION_SEED"] ?? "") ?? 0x5eed }

    @Test("random schedules keep every promise of the scheduler")
    func randomSchedules() throws {
        let started = Date()
        final class Tally: @unchecked Sendable {
            let lock = NSLock()
            var completed = 0, incomplete = 0, restarts = 0
            var reasons: [String: Int] = [:]
            var failures: [(seed: UInt64, report: String)] = []
        }
        let tally = Tally()
        let count = Self.schedules
        let first = Self.firstSeed
        // The schedules are independent: both cores share them.
        DispatchQueue.concurrentPerform(iterations: 2) { lane in
            for offset in stride(from: lane, to: count, by: 2) {
                let seed = first &+ UInt64(offset)
                let (events, shards, maxFailed) = SchedulerSimulation.schedule(seed: seed, length: 120)
                let simulation = SchedulerSimulation(seed: seed, events: events, shardCount: shards, maxFailedAttempts: maxFailed)
                do {
                    try simulation.play()
                    tally.lock.lock()
                    if simulation.finishedComplete {
                        tally.completed += 1
                    } else {
                        tally.incomplete += 1
                        tally.reasons[simulation.endReason, default: 0] += 1
                    }
                    tally.restarts += simulation.incarnations - 1
                    tally.lock.unlock()
                } catch {
                    let minimal = Self.shrink(events, shards: shards, maxFailed: maxFailed, seed: seed)
                    let report = """
                        seed \(seed) (ZAPFLEET_SIMULATION_SEED=\(seed) ZAPFLEET_SIMULATION_SCHEDULES=1): \(error)
                        shards \(shards), max failed attempts \(maxFailed); minimal schedule (\(minimal.events.count) of \(events.count) events): \(minimal.violation)
                        \(minimal.events.map(\.description).joined(separator: "\n"))
                        """
                    tally.lock.lock()
                    tally.failures.append((seed, report))
                    tally.lock.unlock()
                    return
                }
            }
        }
        if let failure = tally.failures.min(by: { $0.seed < $1.seed }) {
            Issue.record("\(failure.report)")
            return
        }
        print(
            "scheduler simulation: \(count) schedules, 0 violations; \(tally.completed) complete, \(tally.incomplete) ended with a named reason; \(tally.restarts) coordinator restarts; \(String(format: "%.1f", Date().timeIntervalSince(started))) s"
        )
        print(
            "scheduler simulation, how the incomplete runs ended: "
                + tally.reasons.sorted { $0.value > $1.value }.map { "\($0.value) \($0.key)" }.joined(separator: "; "))
        #expect(tally.completed > count / 2, "most schedules keep a healthy worker and complete")
    }

    static func failure(_ events: [SchedulerSimulation.Event], shards: Int, maxFailed: UInt32, seed: UInt64) -> String? {
        let simulation = SchedulerSimulation(seed: seed, events: events, shardCount: shards, maxFailedAttempts: maxFailed)
        do { try simulation.play(); return nil } catch { return "\(error)" }
    }

    /// Removes events while the schedule still fails (delta debugging by halves, then one at a time).
    static func shrink(
        _ events: [SchedulerSimulation.Event], shards: Int, maxFailed: UInt32, seed: UInt64
    )
        -> (events: [SchedulerSimulation.Event], violation: String)
    {
        /// The failure's kind: its message up to the first number, so that shrinking keeps the same bug.
        func kind(_ message: String) -> Substring { message.drop { $0 != ":" }.prefix { !$0.isNumber } }
        let original = Self.failure(events, shards: shards, maxFailed: maxFailed, seed: seed) ?? ""
        func failure(_ candidate: [SchedulerSimulation.Event]) -> String? {
            guard let found = Self.failure(candidate, shards: shards, maxFailed: maxFailed, seed: seed), kind(found) == kind(original)
            else { return nil }
            return found
        }
        var current = events
        var violation = original
        var chunk = max(1, current.count / 2)
        while chunk >= 1 {
            var start = 0
            var removed = false
            while start < current.count {
                var candidate = current
                candidate.removeSubrange(start..<min(start + chunk, candidate.count))
                if let found = failure(candidate) {
                    current = candidate
                    violation = found
                    removed = true
                } else {
                    start += chunk
                }
            }
            if !removed { chunk /= 2 }
        }
        return (current, violation)
    }
}
