import ZapRun
import ZapScenario

/// Shards: the plan, dispatch, results, give-backs and the agents' jobs.
extension FleetScheduler {
    mutating func makePlan(for ready: [PeerRecord], now: UInt64, into actions: inout [Action]) {
        let smallest = configuration.smallestShard
        // A worker that cannot take even one memslot must not shrink every shard to nothing;
        // it stays connected, and fitness is judged again at every dispatch.
        var able = ready.sorted { $0.joinOrder < $1.joinOrder }.filter { peer in
            guard let introduction = peer.introduction else { return false }
            if let smallest, !introduction.canTake(smallest) {
                actions.append(
                    .log(
                        FleetEvent(
                            .workerLeftOut, .warning,
                            "worker \(peer.name) cannot take one \(Quantities.formatSize(smallest.bytes)) memslot (budget \(Quantities.describeSize(Double(introduction.memoryBudgetBytes))), largest shard \(introduction.shardByteLimit) bytes); it gets no shard",
                            [
                                "worker": .string(peer.name), "memslot_bytes": .number(smallest.bytes),
                                "memory_budget_bytes": .number(introduction.memoryBudgetBytes)
                            ])))
                return false
            }
            return true
        }
        // Beyond the number the run may use, workers stay connected but get no shard.
        if let limit = configuration.useWorkers, able.count > limit {
            for peer in able[limit...] { peers[peer.id]!.benched = "spare: the run uses the first \(limit) worker(s)" }
            able = Array(able.prefix(limit))
        }
        guard !able.isEmpty else {
            let need =
                smallest.map {
                    "one \(Quantities.formatSize($0.bytes)) memslot, which needs \(Quantities.describeSize(Double($0.estimatedTableBytes))) of page tables"
                } ?? "one memslot"
            fail(FleetFailure(.noWorkerCanProgress, "no worker can take \(need); give workers more --memory"), now: now, into: &actions)
            return
        }
        let capacities = able.map { peer in
            WorkerCapacity(
                memoryBudgetBytes: peer.introduction!.memoryBudgetBytes, shardByteLimit: peer.introduction!.shardByteLimit,
                shardSlotLimit: peer.introduction!.shardSlotLimit)
        }
        switch planner(capacities) {
        case .failure(let error):
            fail(FleetFailure(.planning, error.message), now: now, into: &actions)
        case .success(let plan):
            shards = plan.map { ShardRecord(shard: $0) }
            pending = ShardQueue(plan.map(\.id))
            plannedAt = now
            phase = .running
            dispatchNeeded = true
            lastLiveWorker = now
            actions.append(.planned)
            actions.append(
                .log(
                    FleetEvent(
                        .planned, .info,
                        "planned \(plan.count) shard(s) of up to \(Quantities.formatSize(plan.map(\.bytes).max() ?? 0)) for \(able.count) worker(s)",
                        [
                            "shards": .number(plan.count), "workers": .number(able.count),
                            "largest_shard_bytes": .number(plan.map(\.bytes).max() ?? 0)
                        ])))
        }
    }

    /// Offers work to every free peer, in join order; with `only`, to those peers alone (the
    /// ones a result just freed), and no shard's exclusions are forgiven, since not every idle
    /// peer was asked.
    mutating func dispatch(only candidates: [PeerID]? = nil, now: UInt64, into actions: inout [Action]) {
        var idle: [PeerRecord] = []
        for peerID in candidates ?? joinOrder {
            // Nothing left to hand out: the remaining peers are idle, and no exclusion can matter.
            guard pending.count > 0 else { break }
            guard let peer = peers[peerID], peer.state == .ready, peer.benched == nil, !peer.unreachable,
                peer.introduction.map({ !$0.isAgent }) == true
            else { continue }
            // Fitness is judged here, for every peer whenever it joined.
            guard
                let id = pending.takeFirst(where: { id in
                    !shards[Int(id)].excluded.contains(peer.id) && peer.introduction!.canTake(shards[Int(id)].shard)
                })
            else {
                idle.append(peer)
                continue
            }
            let index = Int(id)
            shards[index].lastAttempt &+= 1
            let claim = AttemptClaim(runID: configuration.runID, shard: id, attempt: shards[index].lastAttempt)
            shards[index].handouts[claim.attempt] = peer.id
            shards[index].startedAt = now
            peers[peer.id]!.state = .busy(claim)
            peers[peer.id]!.lastProgress = now
            send(.assign(peer.id, shards[index].shard, claim), to: peer.id, now: now, into: &actions)
            actions.append(
                .log(
                    FleetEvent(
                        .shardAssigned, .info, "shard \(id) attempt \(claim.attempt) (\(shards[index].shard.slice)) -> \(peer.name)",
                        [
                            "shard": .number(id), "attempt": .number(claim.attempt), "worker": .string(peer.name),
                            "bytes": .number(shards[index].shard.bytes),
                            "first_slot": .number(shards[index].shard.slice.firstSlot),
                            "slots": .number(shards[index].shard.slice.slotCount)
                        ])))
        }
        if candidates == nil { forgiveExclusions(idle: idle) }
    }

    /// A shard every idle worker able to take it has given back would wait forever: it is
    /// offered again, and the give-back limit bounds how often.
    private mutating func forgiveExclusions(idle: [PeerRecord]) {
        guard !idle.isEmpty, failure == nil else { return }
        for id in pending.ids where !shards[Int(id)].excluded.isEmpty {
            let able = idle.filter { $0.introduction!.canTake(shards[Int(id)].shard) }
            guard !able.isEmpty, able.allSatisfy({ shards[Int(id)].excluded.contains($0.id) }) else { continue }
            shards[Int(id)].excluded.removeAll()
            dispatchNeeded = true
        }
    }

    /// Sends an open shard back to the front of the queue; `failed` when the attempt came to
    /// nothing (it counts against the shard's attempts).
    mutating func requeue(_ id: UInt64, why: String, failed: Bool, now: UInt64, into actions: inout [Action]) {
        guard id < UInt64(shards.count), shards[Int(id)].isOpen else { return }
        let index = Int(id)
        if failed {
            shards[index].failedAttempts += 1
            if shards[index].failedAttempts >= configuration.maxFailedAttempts {
                fail(
                    FleetFailure(
                        .shardOutOfAttempts,
                        "shard \(id) (\(shards[index].shard.slice)) came to nothing in \(shards[index].failedAttempts) attempts (last: \(why)); the run cannot complete (--max-attempts)"
                    ), now: now, into: &actions)
                return
            }
        }
        dispatchNeeded = true
        guard !pending.contains(id) else { return }
        requeues += 1
        pending.pushFront(id)
        dispatchNeeded = true
        actions.append(
            .log(FleetEvent(.shardRequeued, .warning, "shard \(id) requeued (\(why))", ["shard": .number(id), "reason": .string(why)])))
    }

    /// Requeues the shard of `claim`, if the claim is of this run (a peer may still be busy with another run's).
    mutating func requeue(attempt claim: AttemptClaim, why: String, failed: Bool, now: UInt64, into actions: inout [Action]) {
        guard claim.runID == configuration.runID else { return }
        requeue(claim.shard, why: why, failed: failed, now: now, into: &actions)
    }

    /// The attempt no longer counts: a result for it is refused.
    mutating func revoke(_ claim: AttemptClaim) {
        guard claim.runID == configuration.runID, claim.shard < UInt64(shards.count) else { return }
        if shards[Int(claim.shard)].revoked.insert(claim.attempt).inserted { revokedAttempts += 1 }
    }

    /// Was `claim` handed to `id` by this run (by this coordinator, or by the one whose journal it resumed)?
    func wasHanded(_ claim: AttemptClaim, to id: PeerID) -> Bool {
        guard claim.runID == configuration.runID, let shard = shards[safe: claim.shard] else { return false }
        return shard.handouts[claim.attempt] == id
            || journaledHandouts.contains(JournaledHandout(shard: claim.shard, attempt: claim.attempt, peer: id))
    }

    mutating func receiveProgress(_ id: PeerID, _ claim: AttemptClaim, now: UInt64, into actions: inout [Action]) {
        guard hear(id, now: now, into: &actions, what: "progress") else { return }
        guard peers[id]!.state == .busy(claim), wasHanded(claim, to: id) else {
            rejectFrame(id, "progress for \(claim), which it does not run", now: now, into: &actions)
            return
        }
        peers[id]!.lastProgress = now
    }

    mutating func receiveResult(_ id: PeerID, _ claim: AttemptClaim, _ verdict: ResultVerdict, now: UInt64, into actions: inout [Action]) {
        guard hear(id, now: now, into: &actions, what: "a result") else { return }
        guard !journalFailed else { return }  // nothing can be made durable: the worker keeps it
        let name = peers[id]!.name
        // Whatever becomes of it, a worker that sends the result of the attempt it runs is free.
        if peers[id]!.state == .busy(claim) {
            peers[id]!.state = .ready
            peers[id]!.lastResult = claim
            freedByResult.append(id)
        }
        func reject(_ reason: String, hostile: Bool) {
            rejectedResults += 1
            peers[id]!.rejectedResults += 1
            actions.append(
                .log(
                    FleetEvent(
                        .resultRefused, .warning, "refused a result from \(name) for \(claim): \(reason)",
                        [
                            "worker": .string(name), "shard": .number(claim.shard), "attempt": .number(claim.attempt),
                            "reason": .string(reason), "hostile": .boolean(hostile)
                        ])))
            send(.acknowledge(id, Acknowledgement(claim: claim, outcome: .rejected(reason))), to: id, now: now, into: &actions)
            if hostile { rejectFrame(id, "result for \(claim): \(reason)", now: now, into: &actions) }
        }
        guard claim.runID == configuration.runID else {
            return reject("it belongs to run \(claim.runID.printable(limit: 40)), not this run \(configuration.runID)", hostile: false)
        }
        guard let shard = shards[safe: claim.shard] else {
            return reject("shard \(claim.shard) does not exist", hostile: true)
        }
        guard wasHanded(claim, to: id) else {
            return reject("that attempt was never handed to \(name)", hostile: true)
        }
        switch shard.phase {
        case .done(let attempt, let worker):
            duplicates += 1
            peers[id]!.duplicates += 1
            actions.append(
                .log(
                    FleetEvent(
                        .resultDuplicate, .info,
                        "dropped a duplicate result for shard \(claim.shard) (attempt \(claim.attempt) from \(name)); attempt \(attempt) from \(worker) was first",
                        [
                            "worker": .string(name), "shard": .number(claim.shard), "attempt": .number(claim.attempt),
                            "first_attempt": .number(attempt), "first_worker": .string(worker)
                        ])))
            send(.acknowledge(id, Acknowledgement(claim: claim, outcome: .duplicate)), to: id, now: now, into: &actions)
            return
        case .journaling:
            duplicates += 1
            peers[id]!.duplicates += 1
            send(.acknowledge(id, Acknowledgement(claim: claim, outcome: .duplicate)), to: id, now: now, into: &actions)
            return
        case .open:
            break
        }
        guard !shard.revoked.contains(claim.attempt) else {
            return reject(
                "attempt \(claim.attempt) was revoked (given back, or past its progress deadline); the shard runs again", hostile: false)
        }
        if case .implausible(let reason) = verdict {
            reject(reason, hostile: false)
            revoke(claim)
            noteGiveBack(id, reason: "sent a result that was refused: \(reason)", into: &actions)
            shards[Int(claim.shard)].excluded.insert(id)  // another worker first
            requeue(
                claim.shard, why: "\(name) sent a result that was refused: \(reason.prefix(120))", failed: true, now: now, into: &actions)
            return
        }
        shards[Int(claim.shard)].phase = .journaling(claim, id)
        actions.append(.journal(id, claim))
    }

    /// The result is durable: it is merged, and only now acknowledged.
    mutating func resultIsDurable(_ claim: AttemptClaim, into actions: inout [Action]) {
        guard let shard = shards[safe: claim.shard], case .journaling(let journaling, let id) = shard.phase, journaling == claim else {
            return
        }
        let name = peers[id]?.name ?? "?"
        shards[Int(claim.shard)].phase = .done(attempt: claim.attempt, worker: name)
        completedShards += 1
        pending.remove(claim.shard)  // a requeued shard whose earlier attempt finished after all
        peers[id]?.completed += 1
        peers[id]?.givenBackInARow = 0
        actions.append(.merge(id, claim))
        actions.append(.acknowledge(id, Acknowledgement(claim: claim, outcome: .accepted)))
        actions.append(
            .log(
                FleetEvent(
                    .shardDone, .info, "shard \(claim.shard) done by \(name) (\(completedShards)/\(shards.count))",
                    [
                        "shard": .number(claim.shard), "attempt": .number(claim.attempt), "worker": .string(name),
                        "done": .number(completedShards), "shards": .number(shards.count)
                    ])))
    }

    mutating func receiveGiveBack(
        _ id: PeerID, _ claim: AttemptClaim, reason: String, busyWith: AttemptClaim?, now: UInt64,
        into actions: inout [Action]
    ) {
        guard hear(id, now: now, into: &actions, what: "a give-back") else { return }
        guard peers[id]!.state == .busy(claim), wasHanded(claim, to: id) else {
            rejectFrame(id, "gave back \(claim), which it was not running", now: now, into: &actions)
            return
        }
        let name = peers[id]!.name
        revoke(claim)
        if let busyWith, busyWith != claim, busyWith == peers[id]!.lastResult {
            // Busy with the attempt whose result it already sent: it was still winding that one
            // down when the next assignment came. It is free; the shard goes to whoever the next
            // dispatch finds.
            actions.append(
                .log(
                    FleetEvent(
                        .shardGivenBack, .info,
                        "worker \(name) was still ending shard \(busyWith.shard), whose result it sent; shard \(claim.shard) goes back to the queue",
                        [
                            "worker": .string(name), "shard": .number(claim.shard), "attempt": .number(claim.attempt),
                            "busy_with_shard": .number(busyWith.shard), "reason": .string("ending")
                        ])))
            peers[id]!.state = .ready
            // Counted as a give-back: an honest worker says it once at most, a peer that keeps
            // saying it is benched as one that gives back every assignment.
            noteGiveBack(id, reason: "refused a shard while ending the one it had sent the result of", into: &actions)
            requeue(claim.shard, why: "\(name) was ending its last shard", failed: false, now: now, into: &actions)
            return
        }
        if let busyWith, busyWith != claim {
            // Refused only because it still runs another attempt (handed out before a reconnect or
            // a restart): it is busy with that one, and this shard lost nothing.
            actions.append(
                .log(
                    FleetEvent(
                        .shardGivenBack, .info,
                        "worker \(name) is still running shard \(busyWith.shard); shard \(claim.shard) goes back to the queue",
                        [
                            "worker": .string(name), "shard": .number(claim.shard), "attempt": .number(claim.attempt),
                            "busy_with_shard": .number(busyWith.shard),
                            "reason": .string("busy")
                        ])))
            // Busy only with an attempt of this run: another run's shard is the worker's to drop.
            peers[id]!.state = .busy(busyWith)
            peers[id]!.lastProgress = now
            requeue(claim.shard, why: "\(name) is busy", failed: false, now: now, into: &actions)
            return
        }
        actions.append(
            .log(
                FleetEvent(
                    .shardGivenBack, .warning, "worker \(name) gave up shard \(claim.shard): \(reason.prefix(200))",
                    [
                        "worker": .string(name), "shard": .number(claim.shard), "attempt": .number(claim.attempt),
                        "reason": .string(String(reason.prefix(200)))
                    ])))
        peers[id]!.state = .ready
        if claim.shard < UInt64(shards.count) { shards[Int(claim.shard)].excluded.insert(id) }
        dispatchNeeded = true
        noteGiveBack(id, reason: reason, into: &actions)
        requeue(claim.shard, why: "\(name) gave it back", failed: false, now: now, into: &actions)
    }

    // MARK: - External agents

    /// Have the agents said what they will? Every agent that joined and is still heard from has
    /// reported, and as many as expected have; or the wait for them is over, which fails the run.
    mutating func agentsSettled(now: UInt64, into actions: inout [Action]) -> Bool {
        let waiting = peers.values.contains { $0.introduction?.isAgent == true && !$0.agentDelivered && $0.state.isLive }
        if waiting { return false }
        if externalDelivered >= configuration.expectAgents { return true }
        guard now &- start > configuration.waitNanoseconds else { return false }
        fail(
            FleetFailure(
                .agentsMissing,
                "\(configuration.expectAgents) external agent(s) expected, \(externalDelivered) reported; check the agents' --connect and their command"
            ), now: now, into: &actions)
        return false
    }

    mutating func sendJob(to id: PeerID, now: UInt64, into actions: inout [Action]) {
        guard let peer = peers[id], !peer.agentDelivered else { return }
        let job = peer.agentJob ?? nextAgentJob
        if peer.agentJob == nil { nextAgentJob &+= 1 }
        peers[id]!.agentJob = job
        send(.sendJob(id, job), to: id, now: now, into: &actions)
        actions.append(
            .log(
                FleetEvent(
                    .jobAssigned, .info, "external job \(job) -> agent \(peer.name)", ["job": .number(job), "agent": .string(peer.name)])))
    }

    mutating func receiveExternalResult(_ id: PeerID, job: UInt32, _ verdict: ResultVerdict, now: UInt64, into actions: inout [Action]) {
        guard hear(id, now: now, into: &actions, what: "an external result") else { return }
        let peer = peers[id]!
        guard peer.introduction?.isAgent == true, peer.agentJob == job else {
            rejectFrame(id, "external result for job \(job), which it was not given", now: now, into: &actions)
            return
        }
        let claim = AttemptClaim(runID: configuration.runID, shard: UInt64(job), attempt: 0)
        if peer.agentDelivered {
            duplicates += 1
            peers[id]!.duplicates += 1
            send(.acknowledge(id, Acknowledgement(claim: claim, outcome: .duplicate)), to: id, now: now, into: &actions)
            return
        }
        if case .implausible(let reason) = verdict {
            rejectFrame(id, "external result: \(reason)", now: now, into: &actions)
            return
        }
        peers[id]!.agentDelivered = true
        peers[id]!.completed += 1
        externalDelivered += 1
        actions.append(.mergeExternal(id))
        send(.acknowledge(id, Acknowledgement(claim: claim, outcome: .accepted)), to: id, now: now, into: &actions)
    }
}
