import Foundation
import Testing
@testable import ZapCluster
import ZapRun

/// Events as scripts read them: the scheduler names what happened with the fields a script
/// needs, and every event is one line of valid JSON whatever its text holds.
@Suite("Fleet events")
struct FleetEventTests {
    static func events(_ actions: [FleetScheduler.Action]) -> [FleetEvent] {
        actions.compactMap { if case .log(let event) = $0 { event } else { nil } }
    }

    @Test("a shard's life as events: planned, assigned to a, a goes missing holding it, requeued, assigned to b, done by b")
    func shardLife() throws {
        let interval = FleetSchedulerTests.interval
        var scheduler = FleetSchedulerTests.scheduler(shards: 1)
        var events = Self.events(
            scheduler.process(
                .hello(FleetSchedulerTests.peer("a"), PeerIntroduction(name: "a", host: "h1", memoryBudgetBytes: 1 << 40)), now: 1))
        events += Self.events(scheduler.process(.tick, now: 2))
        events += Self.events(
            scheduler.process(.hello(FleetSchedulerTests.peer("b"), PeerIntroduction(name: "b", memoryBudgetBytes: 1 << 40)), now: 3))
        // b keeps talking; a falls silent past the liveness (3 intervals).
        for step in 1...5 {
            events += Self.events(scheduler.process(.heartbeat(FleetSchedulerTests.peer("b")), now: 3 + UInt64(step) * interval))
        }
        let claim = AttemptClaim(runID: "run1", shard: 0, attempt: 2)
        events += Self.events(scheduler.process(.result(FleetSchedulerTests.peer("b"), claim, .plausible), now: 6 * interval))
        events += Self.events(scheduler.process(.journaled(claim), now: 6 * interval + 1))
        let names = events.map(\.name.rawValue).filter { $0 != "worker_hello_again" }
        #expect(
            names == [
                "worker_joined", "planned", "shard_assigned", "worker_joined", "worker_missing", "shard_requeued",
                "shard_assigned", "shard_done"
            ], "\(names)")
        let joined = try #require(events.first { $0.name == .workerJoined })
        #expect(joined.fields["worker"] == .string("a") && joined.fields["host"] == .string("h1"))
        let missing = try #require(events.first { $0.name == .workerMissing })
        #expect(missing.fields["shard"] == .integer(0) && missing.fields["attempt"] == .integer(1) && missing.level == .warning)
        let assigned = events.filter { $0.name == .shardAssigned }.map { [$0.fields["worker"], $0.fields["attempt"]] }
        #expect(assigned == [[.string("a"), .integer(1)], [.string("b"), .integer(2)]])
        let done = try #require(events.last)
        #expect(
            done.fields == [
                "shard": .integer(0), "attempt": .integer(2), "worker": .string("b"), "done": .integer(1), "shards": .integer(1)
            ])
    }

    @Test("every event is one line of JSON that decodes to its fields, whatever characters its text holds")
    func jsonLines() throws {
        var generator = SystemRandomNumberGenerator()
        let awkward: [Unicode.Scalar] = ["\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1b}", "\u{7f}", "\u{2028}", "é", "🦀", "/", "{", "}"]
        for _ in 0..<500 {
            let text = String(
                String.UnicodeScalarView(
                    (0..<Int.random(in: 0...24, using: &generator)).map { _ in
                        Bool.random(using: &generator)
                            ? awkward.randomElement(using: &generator)! : Unicode.Scalar(UInt8.random(in: 0x20...0x7e, using: &generator))
                    }))
            let number = Int64.random(in: Int64.min...Int64.max, using: &generator)
            let event = FleetEvent(
                .resultRefused, .warning, text, [text + "k": .string(text), "n": .integer(number), "hostile": .boolean(true)])
            let seconds = Double.random(in: 0...1e7, using: &generator)
            let line = event.jsonLine(time: "2026-12-03T08:00:00.000Z", secondsSinceStart: seconds)
            #expect(!line.contains("\n"))
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
            #expect(object["event"] as? String == "result_refused" && object["level"] as? String == "warning")
            #expect(object["message"] as? String == text && object[text + "k"] as? String == text, "\(line)")
            #expect((object["n"] as? NSNumber)?.int64Value == number && object["hostile"] as? Bool == true)
            #expect(abs(((object["t"] as? NSNumber)?.doubleValue ?? -1) - seconds) <= 0.0005 + 1e-9)
        }
    }

    @Test("--events: a file that cannot be created is an error naming the path")
    func unwritable() {
        do {
            _ = try FleetEventLog(path: "/nonexistent-dir/events")
            Issue.record("opened a file in a directory that does not exist")
        } catch {
            #expect(error.description.contains("/nonexistent-dir/events") && error.description.contains("No such file"), "\(error)")
        }
    }
}
