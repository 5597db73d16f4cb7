@testable import ZapCluster
import ZapEngine
import ZapPlatform
import ZapRun

/// A deterministic simulation of a fleet around a ``FleetScheduler``: simulated workers (honest,
/// slow, refusing, lying, stuck, forging, too small, switching versions, sharing a name), kills,
/// pauses and restarts of workers, restarts of the coordinator from its journal (with or without
/// the unsynced tail), duplicated and stale results. It checks the scheduler's promises after
/// every step; a schedule is a list of events, so that a failing one can be shrunk.
final class SchedulerSimulation {
    /// What a simulated worker does.
    enum Kind: String, CaseIterable {
        case honest, refuser, liar, stuck, tiny, forger, versionSwitcher, namesake
    }

    /// One step of a schedule.
    enum Event: CustomStringConvertible {
        case advance(UInt64)
        case join(Kind)
        case kill(Int)
        case pause(Int, UInt64)
        case restartWorker(Int)
        case restartCoordinator(loseUnsynced: Bool)
        case duplicateResults(Int)
        case forge(Int, UInt64)
        case holdSync
        case stop
        case journalFails
        /// The coordinator stands still for this long (the machine, its own disk), then says so.
        case holdUp(UInt64)

        var description: String {
            switch self {
            case .advance(let dt): "advance(\(dt / 1000) µs)"
            case .join(let kind): "join(\(kind))"
            case .kill(let index): "kill(\(index))"
            case .pause(let index, let dt): "pause(\(index), \(dt / 1000) µs)"
            case .restartWorker(let index): "restartWorker(\(index))"
            case .restartCoordinator(let lose): "restartCoordinator(loseUnsynced: \(lose))"
            case .duplicateResults(let index): "duplicateResults(\(index))"
            case .forge(let index, let bits): "forge(\(index), \(bits))"
            case .holdSync: "holdSync"
            case .stop: "stop"
            case .journalFails: "journalFails"
            case .holdUp(let dt): "holdUp(\(dt / 1000) µs)"
            }
        }
    }

    /// A broken promise, with the step at which it was seen.
    struct Violation: Error, CustomStringConvertible {
        let step: Int
        let message: String
        var description: String { "step \(step): \(message)" }
    }

    final class Peer {
        let index: Int
        let kind: Kind
        let name: String
        var id: PeerID
        var alive = true
        var pausedUntil: UInt64 = 0
        /// Never killed, paused or restarted: the worker the liveness promise is about.
        var steady = true
        /// Left because the coordinator said stop (the run ended), not because it was killed or refused.
        var leftOnStop = false
        var run: String?
        var running: (claim: AttemptClaim, finishAt: UInt64)?
        var unacknowledged: [AttemptClaim] = []
        var lastSent: UInt64 = 0
        var lastProgress: UInt64 = 0
        var incarnation = 0

        init(index: Int, kind: Kind, name: String) {
            self.index = index
            self.kind = kind
            self.name = name
            id = Array("\(name)#\(index).0".utf8)
        }

        var introduction: PeerIntroduction {
            PeerIntroduction(name: name, memoryBudgetBytes: kind == .tiny ? 1 : 1 << 40, isAgent: false, running: running?.claim)
        }
    }

    let seed: UInt64
    let events: [Event]
    let shardCount: Int
    let maxFailedAttempts: UInt32
    let interval: UInt64 = 1_000_000
    private(set) var now: UInt64 = 1_000_000_000
    private var scheduler: FleetScheduler!
    private var peers: [Peer] = []
    private var step = 0
    private let runID = "simrun"
    private let plan: [Shard]

    // The journal, as a crash leaves it: what was synced, and what was only appended.
    private var durableResults: [UInt64: (attempt: UInt32, worker: String)] = [:]
    private var unsyncedResults: [UInt64: (attempt: UInt32, worker: String)] = [:]
    private var durableHandouts: [JournaledHandout] = []
    private var unsyncedHandouts: [JournaledHandout] = []
    private var heldAcks: [(PeerID, FleetScheduler.Acknowledgement)] = []
    private var holdSync = false
    private var journalBroken = false

    // What the checks remember.
    private var everHanded: Set<JournaledHandout> = []
    private var resumedDone: Set<UInt64> = []
    private var mergedThisIncarnation: Set<UInt64> = []
    private var journaledThisIncarnation: Set<AttemptClaim> = []
    private var endedOnPurpose = false
    private(set) var incarnations = 1
    var trace = false
    /// Did the run end complete?
    var finishedComplete: Bool { scheduler.complete }
    /// How an incomplete run ended, in a few words.
    var endReason: String {
        guard let failure = scheduler.failure else { return scheduler.interrupted ? "stopped" : "?" }
        return failure.code.rawValue
    }

    init(seed: UInt64, events: [Event], shardCount: Int, maxFailedAttempts: UInt32) {
        self.seed = seed
        self.events = events
        self.shardCount = shardCount
        self.maxFailedAttempts = maxFailedAttempts
        plan = (0..<shardCount).map { index in
            Shard(id: UInt64(index), slice: MemorySlice(firstSlot: index, slotCount: 1), bytes: 1 << 30, estimatedTableBytes: 1 << 22)
        }
    }

    /// A random schedule of `length` events for `seed`.
    static func schedule(seed: UInt64, length: Int) -> (events: [Event], shards: Int, maxFailedAttempts: UInt32) {
        var random = SplitMix64(seed: seed)
        let shards = Int(random.next() % 12) + 1
        let maxFailed: UInt32 = random.next() % 5 == 0 ? UInt32(random.next() % 3 + 2) : 1_000
        var events: [Event] = [.join(.honest)]
        var joined = 1
        for _ in 0..<length {
            let roll = random.next() % 100
            let target = Int(random.next() % UInt64(max(joined, 1)))
            switch roll {
            case 0..<40: events.append(.advance((random.next() % 2_000 + 50) * 1000))
            case 40..<52:
                let kinds = Kind.allCases
                events.append(.join(kinds[Int(random.next() % UInt64(kinds.count))]))
                joined += 1
            case 52..<56: events.append(.kill(target))
            case 56..<62: events.append(.pause(target, (random.next() % 8_000 + 500) * 1000))
            case 62..<66: events.append(.restartWorker(target))
            case 66..<69: events.append(.restartCoordinator(loseUnsynced: random.next() & 1 == 0))
            case 69..<75: events.append(.duplicateResults(target))
            case 75..<85: events.append(.forge(target, random.next()))
            case 85..<90: events.append(.holdSync)
            case 90: events.append(random.next() % 16 == 0 ? .stop : .advance(100_000))
            case 91: events.append(random.next() % 16 == 0 ? .journalFails : .advance(100_000))
            case 92: events.append(.holdUp((random.next() % 8_000 + 500) * 1000))
            default: events.append(.advance((random.next() % 300 + 10) * 1000))
            }
        }
        return (events, shards, maxFailed)
    }

    private func configuration() -> FleetScheduler.Configuration {
        var configuration = FleetScheduler.Configuration(runID: runID)
        configuration.expectWorkers = 1
        configuration.waitNanoseconds = 30 * interval
        configuration.intervalNanoseconds = interval
        configuration.liveness = 3
        configuration.maxFailedAttempts = maxFailedAttempts
        configuration.progressDeadlineIntervals = 40
        configuration.giveBackLimit = 3
        configuration.badFrameLimit = 20
        configuration.smallestShard = plan.first
        return configuration
    }

    /// Plays the schedule, then a quiet phase with no more faults, and checks every promise.
    func play() throws(Violation) {
        let plan = self.plan
        scheduler = FleetScheduler(configuration: configuration(), now: now, planner: { _ in .success(plan) })
        for event in events {
            try apply(event)
            step += 1
            if scheduler.phase == .finished { break }
        }
        // Quiet: paused workers wake up, nothing more goes wrong; the run must end.
        for peer in peers { peer.pausedUntil = 0 }
        holdSync = false
        let bound = now + 200 * interval + UInt64(shardCount) * 30 * interval
        while scheduler.phase != .finished && now < bound {
            try apply(.advance(interval / 2))
            step += 1
        }
        try checkEnd()
    }

    private func apply(_ event: Event) throws(Violation) {
        switch event {
        case .advance(let dt):
            let end = now + dt
            while now < end {
                now = min(end, now + interval / 4)
                try feed(.tick)
                try driveWorkers()
            }
        case .join(let kind):
            let index = peers.count
            let name = kind == .namesake ? (peers.first?.name ?? "w0") : "w\(index)"
            let peer = Peer(index: index, kind: kind, name: name)
            peers.append(peer)
            try hello(peer)
        case .kill(let index):
            guard let peer = peers[safe: UInt64(index)] else { return }
            peer.alive = false
            peer.steady = false
        case .pause(let index, let dt):
            guard let peer = peers[safe: UInt64(index)], peer.alive else { return }
            peer.pausedUntil = now + dt
            peer.steady = false
        case .restartWorker(let index):
            guard let peer = peers[safe: UInt64(index)] else { return }
            peer.incarnation += 1
            peer.id = Array("\(peer.name)#\(peer.index).\(peer.incarnation)".utf8)
            peer.alive = true
            peer.pausedUntil = 0
            peer.running = nil
            peer.unacknowledged = []
            peer.run = nil
            peer.steady = false
            try hello(peer)
        case .restartCoordinator(let loseUnsynced):
            try restartCoordinator(loseUnsynced: loseUnsynced)
        case .duplicateResults(let index):
            guard let peer = peers[safe: UInt64(index)], peer.alive else { return }
            for claim in peer.unacknowledged { try send(peer, .result(peer.id, claim, verdict(for: peer))) }
        case .forge(let index, let bits):
            guard let peer = peers[safe: UInt64(index)], peer.alive else { return }
            let claim = AttemptClaim(
                runID: bits & 1 == 0 ? runID : "otherrun", shard: (bits >> 1) % UInt64(shardCount + 2),
                attempt: UInt32((bits >> 8) % 6))
            switch (bits >> 16) % 5 {
            case 0: try send(peer, .result(peer.id, claim, .plausible))
            case 1: try send(peer, .gaveBack(peer.id, claim, reason: "forged", busyWith: (bits >> 20) & 1 == 0 ? nil : claim))
            case 2: try send(peer, .progress(peer.id, claim))
            case 3: try send(peer, .badFrame(peer.id, "garbage"))
            default: try send(peer, .result(peer.id, claim, .implausible("counters.sptes_zapped 2^50")))
            }
        case .holdSync:
            holdSync = true
        case .stop:
            endedOnPurpose = true
            try feed(.stop("interrupted"))
        case .journalFails:
            journalBroken = true
        case .holdUp(let dt):
            // Nothing is read meanwhile; the first input after it is the hold-up (as `Coordinator` does).
            now += dt
            try feed(.heldUp(nanoseconds: dt))
        }
    }

    private func verdict(for peer: Peer) -> ResultVerdict {
        peer.kind == .liar ? .implausible("histogram fault holds 2^40 samples") : .plausible
    }

    private func hello(_ peer: Peer) throws(Violation) {
        // The socket loop's probe: a holder of the name whose connection is gone is unreachable.
        if let holder = scheduler.peers.values.first(where: { $0.id != peer.id && $0.introduction?.name == peer.name && $0.state.isLive }),
            let simulated = peers.first(where: { $0.id == holder.id }), !simulated.alive
        {
            try feed(.unreachable(holder.id))
        }
        try send(peer, .hello(peer.id, peer.introduction))
    }

    private func send(_ peer: Peer, _ input: FleetScheduler.Input) throws(Violation) {
        peer.lastSent = now
        try feed(input)
    }

    /// Feeds one input and carries out what comes back, checking each action.
    private func feed(_ input: FleetScheduler.Input) throws(Violation) {
        var queue = [input]
        while !queue.isEmpty {
            let next = queue.removeFirst()
            let actions = scheduler.process(next, now: now)
            if trace { for action in actions { if case .heartbeat = action {} else { print("\(now / interval): \(action)") } } }
            for action in actions { try carryOut(action, followUps: &queue) }
        }
        if !holdSync { try sync() }
    }

    private func carryOut(_ action: FleetScheduler.Action, followUps: inout [FleetScheduler.Input]) throws(Violation) {
        switch action {
        case .assign(let id, let shard, let claim):
            guard claim.runID == runID, claim.shard == shard.id else { throw fail("assigned \(claim) with the wrong run or shard") }
            let handout = JournaledHandout(shard: claim.shard, attempt: claim.attempt, peer: id)
            guard everHanded.insert(handout).inserted else { throw fail("\(claim) handed out twice") }
            guard !resumedDone.contains(claim.shard) else {
                throw fail("shard \(claim.shard), done before the restart, was handed out again")
            }
            // The socket loop syncs handouts before it sends them: a crash cannot lose one that went out.
            durableHandouts.append(handout)
            deliver(to: id, action)
        case .journal(let id, let claim):
            guard !journalBroken else {
                followUps.append(.journalFailed("disk full"))
                return
            }
            unsyncedResults[claim.shard] = (claim.attempt, scheduler.peers[id]?.name ?? "?")
            journaledThisIncarnation.insert(claim)
            followUps.append(.journaled(claim))
        case .merge(let id, let claim):
            guard claim.runID == runID else { throw fail("merged \(claim) of another run") }
            guard everHanded.contains(JournaledHandout(shard: claim.shard, attempt: claim.attempt, peer: id)) else {
                throw fail("merged \(claim) from \(String(decoding: id, as: UTF8.self)), which was never handed it")
            }
            guard !resumedDone.contains(claim.shard), mergedThisIncarnation.insert(claim.shard).inserted else {
                throw fail("shard \(claim.shard) merged twice")
            }
            guard journaledThisIncarnation.contains(claim) else { throw fail("merged \(claim) before it was journaled") }
        case .acknowledge(let id, let acknowledgement):
            if acknowledgement.outcome == .accepted {
                guard journaledThisIncarnation.contains(acknowledgement.claim) else {
                    throw fail("acknowledged \(acknowledgement.claim) as accepted without journaling it")
                }
            }
            heldAcks.append((id, acknowledgement))
        case .welcome, .refuse, .stop, .heartbeat, .sendJob:
            if case .welcome(let id) = action { deliver(to: id, action) }
            if case .refuse(let id, _) = action { deliver(to: id, action) }
            if case .stop(let id, _) = action { deliver(to: id, action) }
        case .planned, .mergeExternal, .log:
            break
        }
    }

    private func sync() throws(Violation) {
        for (shard, entry) in unsyncedResults { durableResults[shard] = entry }
        unsyncedResults.removeAll()
        durableHandouts += unsyncedHandouts
        unsyncedHandouts.removeAll()
        let acks = heldAcks
        heldAcks.removeAll()
        for (id, ack) in acks {
            if ack.outcome == .accepted, durableResults[ack.claim.shard]?.attempt != ack.claim.attempt {
                throw fail("acknowledged \(ack.claim), which the journal does not hold")
            }
            deliver(to: id, .acknowledge(id, ack))
        }
    }

    /// A coordinator's message reaches the worker at once, if it listens.
    private func deliver(to id: PeerID, _ action: FleetScheduler.Action) {
        guard let peer = peers.first(where: { $0.id == id }), peer.alive, peer.pausedUntil <= now else { return }
        switch action {
        case .welcome:
            peer.run = runID
            // A worker drops what belongs to another run; what it still holds of this one goes out again.
            peer.unacknowledged.removeAll { $0.runID != runID }
            pendingResends.append(peer.index)
        case .refuse:
            peer.alive = false
        case .stop:
            peer.alive = false
            peer.leftOnStop = true
            if let running = peer.running { pendingGiveBacks.append((peer.index, running.claim)) }
            peer.running = nil
        case .acknowledge(_, let ack):
            peer.unacknowledged.removeAll { $0 == ack.claim }
        case .assign(_, _, let claim):
            switch peer.kind {
            case .refuser:
                pendingGiveBacks.append((peer.index, claim))
            case _ where peer.running != nil:
                pendingBusy.append((peer.index, claim, peer.running!.claim))
            default:
                let duration = interval * (2 + (claim.shard &* 7 &+ UInt64(claim.attempt) &* 3) % 9)
                peer.running = (claim, peer.kind == .stuck ? .max : now + duration)
                peer.lastProgress = now
            }
        default:
            break
        }
    }

    // Replies the workers owe, sent on their next turn (a worker answers from its own loop).
    private var pendingResends: [Int] = []
    private var pendingGiveBacks: [(Int, AttemptClaim)] = []
    private var pendingBusy: [(Int, AttemptClaim, AttemptClaim)] = []

    private func driveWorkers() throws(Violation) {
        let resends = pendingResends, giveBacks = pendingGiveBacks, busy = pendingBusy
        pendingResends = []
        pendingGiveBacks = []
        pendingBusy = []
        for index in resends {
            let peer = peers[index]
            for claim in peer.unacknowledged where peer.alive { try send(peer, .result(peer.id, claim, verdict(for: peer))) }
        }
        for (index, claim) in giveBacks {
            try send(peers[index], .gaveBack(peers[index].id, claim, reason: "refused", busyWith: nil))
        }
        for (index, claim, running) in busy where peers[index].alive {
            try send(peers[index], .gaveBack(peers[index].id, claim, reason: "busy", busyWith: running))
        }
        for peer in peers where peer.alive && peer.pausedUntil <= now {
            if let running = peer.running {
                if now >= running.finishAt {
                    peer.running = nil
                    peer.unacknowledged.append(running.claim)
                    try send(peer, .result(peer.id, running.claim, verdict(for: peer)))
                    continue
                }
                if peer.kind != .stuck && now - peer.lastProgress >= interval {
                    peer.lastProgress = now
                    try send(peer, .progress(peer.id, running.claim))
                    continue
                }
                if peer.kind == .versionSwitcher && now - peer.lastProgress >= interval / 2 {
                    try send(peer, .versionMismatch(peer.id, version: 99))
                    continue
                }
            }
            if now - peer.lastSent >= interval { try send(peer, .heartbeat(peer.id)) }
        }
    }

    private func restartCoordinator(loseUnsynced: Bool) throws(Violation) {
        if !loseUnsynced { try sync() }
        unsyncedResults.removeAll()
        unsyncedHandouts.removeAll()
        heldAcks.removeAll()
        guard scheduler.phase != .finished, !scheduler.shards.isEmpty else { return }
        incarnations += 1
        let done = durableResults.map { (shard: $0.key, attempt: $0.value.attempt, worker: $0.value.worker) }
        resumedDone = Set(durableResults.keys)
        mergedThisIncarnation = []
        journaledThisIncarnation = []
        journalBroken = false
        endedOnPurpose = false
        let plan = self.plan
        scheduler = FleetScheduler(
            configuration: configuration(), now: now, resuming: plan, done: done, handouts: durableHandouts,
            planner: { _ in .success(plan) })
        // Every worker that listens notices the silence, reconnects and says hello, naming what it runs.
        pendingResends.removeAll()
        pendingGiveBacks.removeAll()
        pendingBusy.removeAll()
        for peer in peers where peer.alive {
            peer.run = nil
            try hello(peer)
        }
    }

    private func checkEnd() throws(Violation) {
        guard scheduler.phase == .finished else {
            throw fail(
                "the run did not end (phase \(scheduler.phase), \(scheduler.completedShards)/\(shardCount) shards, peers \(scheduler.peers.values.map { "\($0.name):\($0.state.name)" }))"
            )
        }
        let merged = resumedDone.union(mergedThisIncarnation)
        guard resumedDone.isDisjoint(with: mergedThisIncarnation) else { throw fail("a resumed shard was merged again") }
        if scheduler.complete {
            guard merged.count == shardCount else { throw fail("complete with \(merged.count) of \(shardCount) shards merged") }
            return
        }
        guard scheduler.failure != nil || scheduler.interrupted else { throw fail("ended incomplete without a reason") }
        // A worker that stayed healthy throughout must have carried the run home, unless the
        // run was ended on purpose or a shard ran out of its attempts.
        let steady = peers.contains { peer in
            peer.kind == .honest && peer.steady && (peer.alive || peer.leftOnStop)
                && scheduler.peers[peer.id].map { $0.benched == nil && $0.introduction != nil } == true
        }
        let outOfAttempts = scheduler.failure?.code == .shardOutOfAttempts
        let journalFailed = scheduler.failure?.code == .journal
        if steady && !endedOnPurpose && !outOfAttempts && !journalFailed {
            throw fail("a healthy worker stayed, yet the run failed: \(scheduler.failure?.description ?? "interrupted")")
        }
    }

    private func fail(_ message: String) -> Violation { Violation(step: step, message: message) }
}
