import Testing
@testable import ZapCluster
import ZapRun

/// The scheduler's rules, one at a time, without a socket: inputs in, actions out, time an input.
@Suite("Fleet scheduler")
struct FleetSchedulerTests {
    static let interval: UInt64 = 1_000_000

    static func plan(_ count: Int, tableBytes: UInt64 = 1 << 22) -> [Shard] {
        (0..<count).map {
            Shard(id: UInt64($0), slice: MemorySlice(firstSlot: $0, slotCount: 1), bytes: 1 << 30, estimatedTableBytes: tableBytes)
        }
    }

    /// A scheduler that plans `shards` one-slot shards as soon as one worker is there.
    static func scheduler(shards: Int = 2, _ adjust: (inout FleetScheduler.Configuration) -> Void = { _ in }) -> FleetScheduler {
        var configuration = FleetScheduler.Configuration(runID: "run1")
        configuration.intervalNanoseconds = interval
        configuration.waitNanoseconds = 50 * interval
        configuration.progressDeadlineIntervals = 10
        configuration.smallestShard = plan(1)[0]
        adjust(&configuration)
        let planned = plan(shards)
        return FleetScheduler(configuration: configuration, now: 0, planner: { _ in .success(planned) })
    }

    static func peer(_ name: String) -> PeerID { Array("\(name)#1".utf8) }

    static func assignments(_ actions: [FleetScheduler.Action]) -> [(PeerID, AttemptClaim)] {
        actions.compactMap { if case .assign(let id, _, let claim) = $0 { (id, claim) } else { nil } }
    }

    /// Joins `name` and returns the claim it was handed.
    static func join(_ scheduler: inout FleetScheduler, _ name: String, memory: UInt64 = 1 << 40, now: UInt64 = 1) -> AttemptClaim? {
        var actions = scheduler.process(.hello(peer(name), PeerIntroduction(name: name, memoryBudgetBytes: memory)), now: now)
        actions += scheduler.process(.tick, now: now + 1)
        return assignments(actions).first { $0.0 == peer(name) }?.1
    }

    @Test("a result counts only from the peer the attempt was handed to, of this run; it is acknowledged only once journaled")
    func provenance() throws {
        var scheduler = Self.scheduler(shards: 1)
        let claim = try #require(Self.join(&scheduler, "a"))
        _ = scheduler.process(.hello(Self.peer("b"), PeerIntroduction(name: "b", memoryBudgetBytes: 1 << 40)), now: 3)
        let forged = scheduler.process(.result(Self.peer("b"), claim, .plausible), now: 4)
        #expect(forged.contains { if case .acknowledge(_, let ack) = $0 { ack.outcome != .accepted } else { false } })
        #expect(!forged.contains { if case .journal = $0 { true } else { false } })
        var otherRun = claim
        otherRun.runID = "run0"
        let stale = scheduler.process(.result(Self.peer("a"), otherRun, .plausible), now: 5)
        #expect(!stale.contains { if case .journal = $0 { true } else { false } })
        let honest = scheduler.process(.result(Self.peer("a"), claim, .plausible), now: 6)
        #expect(honest.contains(.journal(Self.peer("a"), claim)))
        #expect(
            !honest.contains { if case .acknowledge(_, let ack) = $0 { ack.outcome == .accepted } else { false } },
            "not before it is durable")
        let durable = scheduler.process(.journaled(claim), now: 7)
        #expect(durable.contains(.merge(Self.peer("a"), claim)))
        #expect(durable.contains(.acknowledge(Self.peer("a"), .init(claim: claim, outcome: .accepted))))
        #expect(scheduler.phase == .finished && scheduler.complete)
    }

    @Test("an implausible result revokes its attempt and requeues the shard; a late copy of the revoked attempt is refused")
    func implausibleResult() throws {
        var scheduler = Self.scheduler(shards: 1)
        let claim = try #require(Self.join(&scheduler, "a"))
        var actions = scheduler.process(.result(Self.peer("a"), claim, .implausible("counters.sptes_zapped")), now: 3)
        #expect(
            actions.contains { if case .acknowledge(_, let ack) = $0 { ack.outcome == .rejected("counters.sptes_zapped") } else { false } })
        // Excluded from the shard it failed, until no other peer can take it: then offered it again.
        actions += scheduler.process(.tick, now: 3 + Self.interval)
        let retry = try #require(Self.assignments(actions).first)
        #expect(retry.1.attempt == claim.attempt + 1)
        let late = scheduler.process(.result(Self.peer("a"), claim, .plausible), now: 4 + Self.interval)
        #expect(!late.contains { if case .journal = $0 { true } else { false } })
    }

    @Test("a shard without progress past the deadline is revoked and requeued; a peer that lets three lapse in a row gets no more")
    func progressDeadline() throws {
        var scheduler = Self.scheduler(shards: 3)
        var claim = try #require(Self.join(&scheduler, "stuck"))
        var now: UInt64 = 2
        var handed = [claim]
        for _ in 0..<40 {
            now += Self.interval
            let actions = scheduler.process(.heartbeat(Self.peer("stuck")), now: now)
            if let next = Self.assignments(actions).first { handed.append(next.1); claim = next.1 }
        }
        #expect(handed.count == 3, "\(handed)")
        #expect(scheduler.peers[Self.peer("stuck")]?.benched?.contains("in a row") == true)
        #expect(scheduler.revokedAttempts == 3)
    }

    @Test("a peer that refuses the next shard while still ending the one whose result it sent is free, not busy with a done shard")
    func refusedWhileEnding() throws {
        var scheduler = Self.scheduler(shards: 3)
        let first = try #require(Self.join(&scheduler, "a"))
        var actions = scheduler.process(.result(Self.peer("a"), first, .plausible), now: 2)
        actions += scheduler.process(.journaled(first), now: 3)
        let second = try #require(Self.assignments(actions).first { $0.0 == Self.peer("a") }?.1)
        actions = scheduler.process(.gaveBack(Self.peer("a"), second, reason: "busy with shard 0", busyWith: first), now: 4)
        #expect(scheduler.peers[Self.peer("a")]?.state != .busy(first))
        actions += scheduler.process(.tick, now: 5)
        let third = try #require(Self.assignments(actions).first { $0.0 == Self.peer("a") }?.1, "handed work again at once")
        #expect(third.shard == second.shard && third.attempt == second.attempt + 1)
        #expect(scheduler.peers[Self.peer("a")]?.state == .busy(third))
        // Busy with an attempt it has not sent a result for: busy with that one, as before.
        let unfinished = AttemptClaim(runID: "run1", shard: 2, attempt: 9)
        _ = scheduler.process(.gaveBack(Self.peer("a"), third, reason: "busy", busyWith: unfinished), now: 6)
        #expect(scheduler.peers[Self.peer("a")]?.state == .busy(unfinished))
    }

    @Test("fitness is judged at dispatch for every peer, whenever it joined")
    func fitnessAtDispatch() throws {
        var scheduler = Self.scheduler(shards: 2)
        let first = try #require(Self.join(&scheduler, "able"))
        #expect(Self.join(&scheduler, "tiny", memory: 4096, now: 10) == nil, "too small: nothing handed")
        _ = scheduler.process(.result(Self.peer("able"), first, .plausible), now: 20)
        _ = scheduler.process(.journaled(first), now: 21)
        let actions = scheduler.process(.tick, now: 22)
        #expect(Self.assignments(actions).allSatisfy { $0.0 == Self.peer("able") })
    }

    @Test("a second live worker under a name in use is refused, naming it; a holder whose connection is gone is replaced")
    func names() throws {
        var scheduler = Self.scheduler(shards: 1)
        _ = Self.join(&scheduler, "w")
        let clash = scheduler.process(.hello(Array("w#2".utf8), PeerIntroduction(name: "w", memoryBudgetBytes: 1 << 40)), now: 5)
        #expect(clash.contains { if case .refuse(_, let reason) = $0 { reason.contains("'w' is in use") } else { false } })
        _ = scheduler.process(.unreachable(Self.peer("w")), now: 6)
        let restart = scheduler.process(.hello(Array("w#3".utf8), PeerIntroduction(name: "w", memoryBudgetBytes: 1 << 40)), now: 7)
        #expect(restart.contains(.welcome(Array("w#3".utf8))))
        #expect(scheduler.peers[Self.peer("w")]?.state == .dead)
    }

    @Test(
        "a failed send: an assignment never sent goes back at once and is no failed attempt; a worker that got its shard and lost its connection is left to liveness, which counts the loss"
    )
    func unreachable() throws {
        func requeued(_ actions: [FleetScheduler.Action]) -> Bool {
            actions.contains { if case .log(let event) = $0 { event.name == .shardRequeued } else { false } }
        }
        // The assignment's own send failed: the worker never had it.
        var unsent = Self.scheduler(shards: 1)
        let handed = try #require(Self.join(&unsent, "a"))
        let back = unsent.process(.unreachable(Self.peer("a"), unsent: handed), now: 3)
        #expect(requeued(back))
        #expect(unsent.peers[Self.peer("a")]?.state == .ready)
        #expect(unsent.shards[0].failedAttempts == 0)

        // A heartbeat failed after the worker got its shard (it may have died running it).
        var lost = Self.scheduler(shards: 1)
        let claim = try #require(Self.join(&lost, "a"))
        #expect(!requeued(lost.process(.unreachable(Self.peer("a")), now: 3)), "not before liveness says it is missing")
        #expect(lost.peers[Self.peer("a")]?.state == .busy(claim))
        // A stale unsent claim (another attempt) takes nothing back either.
        var other = claim
        other.attempt += 1
        #expect(!requeued(lost.process(.unreachable(Self.peer("a"), unsent: other), now: 4)))
        let missing = lost.process(.tick, now: 4 + lost.configuration.missingAfter + 1)
        #expect(requeued(missing))
        #expect(lost.shards[0].failedAttempts == 1, "a death on the shard counts against it")
    }

    @Test(
        "a hold-up of the coordinator's own (the machine, a slow fsync) is no worker's silence: its shard stays; silence while listening still counts"
    )
    func heldUp() throws {
        func missing(_ actions: [FleetScheduler.Action]) -> Bool {
            actions.contains { if case .log(let event) = $0 { event.name == .workerMissing } else { false } }
        }
        var scheduler = Self.scheduler(shards: 1)
        let claim = try #require(Self.join(&scheduler, "a"))
        let limit = scheduler.configuration.missingAfter
        // Held up for three limits: the first thing the coordinator does after it is the hold-up.
        let back = 2 + 3 * limit
        let excused = scheduler.process(.heldUp(nanoseconds: 3 * limit), now: back)
        #expect(excused.contains { if case .log(let event) = $0 { event.name == .heldUp } else { false } })
        #expect(!missing(excused + scheduler.process(.tick, now: back + 1)))
        #expect(scheduler.peers[Self.peer("a")]?.state == .busy(claim))
        // Its heartbeat, read after the hold-up, keeps it; then silence while listening counts again.
        _ = scheduler.process(.heartbeat(Self.peer("a")), now: back + 2)
        #expect(!missing(scheduler.process(.tick, now: back + 2 + limit)))
        // (The scheduler walks its peers at most every tenth of an interval.)
        let late = scheduler.process(.tick, now: back + 2 + limit + Self.interval / 5)
        #expect(missing(late))
        #expect(scheduler.peers[Self.peer("a")]?.state == .missing(holding: claim))
        // Never more than the hold-up: a peer silent before it stays as silent as it was.
        var quiet = Self.scheduler(shards: 1)
        _ = try #require(Self.join(&quiet, "a"))
        _ = quiet.process(.tick, now: 2 + limit / 2)
        let brief = quiet.process(.heldUp(nanoseconds: limit / 4), now: 2 + limit / 2 + limit / 4)
        #expect(
            !brief.contains { if case .log(let event) = $0 { event.name == .heldUp } else { false } }, "shorter than an interval: no news")
        #expect(!missing(quiet.process(.tick, now: 1 + limit + limit / 4)), "heard at 1, excused a quarter limit")
        #expect(missing(quiet.process(.tick, now: 1 + limit + limit / 4 + Self.interval / 5)))
    }

    @Test("the listening clock: gaps up to the allowance are listening; the excess of a longer one is a hold-up; clocks behind are no gap")
    func listeningClock() {
        var clock = ListeningClock(allowance: 100, now: 1_000)
        #expect(clock.look(now: 1_100) == 0)
        #expect(clock.look(now: 1_150) == 0)
        #expect(clock.look(now: 1_400) == 150)
        #expect(clock.look(now: 1_390) == 0, "a reading from behind is not a wrap")
        #expect(clock.look(now: 1_500) == 0, "measured from the latest look")
        #expect(clock.look(now: 1_601) == 1)
    }

    @Test("after --resume, results for journaled handouts still count, and done shards are never handed out again")
    func resume() throws {
        var configuration = FleetScheduler.Configuration(runID: "run1")
        configuration.intervalNanoseconds = Self.interval
        let plan = Self.plan(2)
        let handout = JournaledHandout(shard: 1, attempt: 1, peer: Self.peer("a"))
        var scheduler = FleetScheduler(
            configuration: configuration, now: 0, resuming: plan, done: [(0, 1, "a")], handouts: [handout],
            planner: { _ in .success(plan) })
        let claim = AttemptClaim(runID: "run1", shard: 1, attempt: 1)
        var actions = scheduler.process(
            .hello(Self.peer("a"), PeerIntroduction(name: "a", memoryBudgetBytes: 1 << 40, running: claim)), now: 1)
        actions += scheduler.process(.tick, now: 2)
        #expect(Self.assignments(actions).isEmpty, "busy with its journaled attempt; shard 0 is done")
        #expect(scheduler.process(.result(Self.peer("a"), claim, .plausible), now: 3).contains(.journal(Self.peer("a"), claim)))
    }
}

extension FleetSchedulerTests {
    static func logs(_ actions: [FleetScheduler.Action]) -> [String] {
        actions.compactMap { if case .log(let event) = $0 { event.message } else { nil } }
    }

    @Test("a routing id that is not printable is logged as hex, never as raw bytes; a ban is logged with its last reason")
    func unprintablePeersAndBans() {
        var scheduler = Self.scheduler { $0.badFrameLimit = 4 }
        let id: PeerID = [0x00, 0xff, 0x41, 0x0a, 0x1b]
        var messages: [String] = []
        for index in 0..<4 {
            messages += Self.logs(scheduler.process(.badFrame(id, "garbage \(index)"), now: UInt64(index + 1)))
        }
        #expect(!messages.isEmpty)
        for message in messages {
            #expect(message.utf8.allSatisfy { $0 >= 0x20 && $0 != 0x7f }, "a log line holds only printable text: \(Array(message.utf8))")
        }
        #expect(messages.contains { $0.contains("0x00ff410a1b") }, "\(messages)")
        let ban = messages.last { $0.contains("banned") }
        #expect(ban?.contains("4 bad frames") == true && ban?.contains("garbage 3") == true, "\(messages)")
        #expect(scheduler.peers[id]?.state == .banned)
    }

    @Test("a hello out of range is refused with the field named, and the refused peer's name stays printable")
    func helloRanges() {
        var scheduler = Self.scheduler()
        let cases: [(PeerIntroduction, String)] = [
            (PeerIntroduction(name: "zero", memoryBudgetBytes: 0), "memory_budget_bytes"),
            (PeerIntroduction(name: "vast", memoryBudgetBytes: 1 << 50), "memory_budget_bytes"),
            (PeerIntroduction(name: "idle", cores: 0, memoryBudgetBytes: 1 << 30), "cores"),
            (PeerIntroduction(name: "", memoryBudgetBytes: 1 << 30), "worker_name"),
            (PeerIntroduction(name: "bell\u{7}", memoryBudgetBytes: 1 << 30), "worker_name"),
            (PeerIntroduction(name: String(repeating: "x", count: 129), memoryBudgetBytes: 1 << 30), "worker_name")
        ]
        for (index, (introduction, field)) in cases.enumerated() {
            let id: PeerID = [0x01, UInt8(index)]
            let actions = scheduler.process(.hello(id, introduction), now: UInt64(index + 1))
            let refusal = actions.compactMap { if case .refuse(let to, let reason) = $0, to == id { reason } else { nil } }.first
            #expect(refusal?.contains(field) == true, "\(introduction.name.debugDescription): \(refusal ?? "welcomed")")
            #expect(Self.logs(actions).allSatisfy { $0.utf8.allSatisfy { $0 >= 0x20 && $0 != 0x7f } })
        }
        // An agent's budget is not read.
        let agent = scheduler.process(.hello([0x02], PeerIntroduction(name: "agent", memoryBudgetBytes: 1, isAgent: true)), now: 20)
        #expect(agent.contains(.welcome([0x02])))
    }
}
