import ZapProtocol
import ZapRun
import ZapScenario

/// Peers: hellos, names, liveness, refusals and bans.
extension FleetScheduler {
    /// Starts tracking a new peer, unless as many are tracked as the configuration allows.
    mutating func register(_ id: PeerID, now: UInt64) -> Bool {
        if peers[id] != nil { return true }
        guard peers.count < configuration.maximumPeers else { return false }
        peers[id] = PeerRecord(id: id, joinOrder: peers.count, lastHeard: now)
        joinOrder.append(id)
        return true
    }

    /// Notes that a welcomed peer was heard from; false (and a bad frame) for anyone else.
    mutating func hear(_ id: PeerID, now: UInt64, into actions: inout [Action], what: String = "a frame") -> Bool {
        guard let peer = peers[id], peer.introduction != nil else {
            rejectFrame(id, "\(what) before hello", now: now, into: &actions)
            return false
        }
        switch peer.state {
        case .refused, .banned, .stranger, .dead:
            // A dead peer must say hello again (it may have been replaced under its name).
            return false
        case .missing(let holding):
            peers[id]!.state = holding.map { .busy($0) } ?? .ready
            dispatchNeeded = true
            actions.append(.log(FleetEvent(.workerBack, .info, "worker \(peer.name) is back", ["worker": .string(peer.name)])))
        case .ready, .busy:
            break
        }
        peers[id]!.lastHeard = now
        peers[id]!.unreachable = false
        return true
    }

    mutating func receiveHello(_ id: PeerID, _ introduction: PeerIntroduction, now: UInt64, into actions: inout [Action]) {
        guard register(id, now: now) else {
            badFrames += 1
            return
        }
        let peer = peers[id]!
        switch peer.state {
        case .refused, .banned: return
        default: break
        }
        if let problem = PeerIntroduction.problem(with: introduction) {
            refuse(id, "its hello is out of range: \(problem)", now: now, into: &actions)
            return
        }
        // A name is one worker's: a second live worker under it is refused, naming it. A holder
        // that went missing, or whose connection is gone, was replaced (a restart).
        let namesakes = (peersByName[introduction.name] ?? []).compactMap { peers[$0] }
        if let holder = namesakes.filter({ $0.id != id && $0.introduction!.isAgent == introduction.isAgent }).min(by: {
            $0.joinOrder < $1.joinOrder
        }) {
            if holder.state.isLive && !holder.unreachable {
                refuse(
                    id,
                    "the name '\(introduction.name)' is in use by a live worker from \(holder.introduction?.host ?? "?"); give every worker its own --name",
                    now: now, into: &actions)
                return
            }
            switch holder.state {
            case .ready, .busy, .missing: replace(holder.id, now: now, into: &actions)
            default: break
            }
        }
        let reconnect = peer.introduction != nil
        let wasLost: Bool =
            switch peer.state {
            case .missing, .dead: true
            default: false
            }
        let previous = peer.state
        if let previousName = peer.introduction?.name, previousName != introduction.name {
            peersByName[previousName]?.removeAll { $0 == id }
        }
        if peer.introduction?.name != introduction.name { peersByName[introduction.name, default: []].append(id) }
        peers[id]!.introduction = introduction
        peers[id]!.lastHeard = now
        peers[id]!.unreachable = false
        peers[id]!.state = .ready
        if case .missing(let holding?) = previous { peers[id]!.state = .busy(holding) }
        if case .busy(let holding) = previous { peers[id]!.state = .busy(holding) }

        // What it says it still runs decides whether it is busy: a claim of this run is kept
        // (its result is judged when it comes); anything else the worker drops on our welcome.
        // A claim of another run keeps it busy too (it drops that shard and says hello again when
        // the shard has stopped): offering it work meanwhile would only be refused.
        if let running = introduction.running, !introduction.isAgent {
            peers[id]!.state = .busy(running)
            peers[id]!.lastProgress = now
        } else if case .busy(let holding) = peers[id]!.state, holding.runID != configuration.runID {
            peers[id]!.state = .ready
        } else if case .busy(let holding) = peers[id]!.state {
            // It runs nothing (restarted, say): its attempt came to nothing unless a result it
            // still holds arrives after the welcome. A hello sent just before the assignment
            // reached it says nothing of it: only a peer that was lost, or whose assignment is
            // older than a heartbeat, counts.
            if wasLost || now &- peers[id]!.lastProgress > configuration.intervalNanoseconds {
                peers[id]!.state = .ready
                requeue(attempt: holding, why: "\(introduction.name) is not running it any more", failed: true, now: now, into: &actions)
            }
        }
        send(.welcome(id), to: id, now: now, into: &actions)
        gatheringCheckNeeded = true
        let capacity =
            "\(introduction.cores) cores, budget \(Quantities.describeSize(Double(introduction.memoryBudgetBytes))), build \(introduction.build.prefix(32))"
        if !reconnect {
            actions.append(
                .log(
                    FleetEvent(
                        .workerJoined, .info, "worker \(introduction.name) joined from \(introduction.host.prefix(64)): \(capacity)",
                        [
                            "worker": .string(introduction.name), "host": .string(String(introduction.host.prefix(64))),
                            "cores": .number(introduction.cores),
                            "memory_budget_bytes": .number(introduction.memoryBudgetBytes), "agent": .boolean(introduction.isAgent)
                        ])))
        } else if wasLost {
            actions.append(
                .log(
                    FleetEvent(
                        .workerReconnected, .info, "worker \(introduction.name) reconnected from \(introduction.host.prefix(64))",
                        ["worker": .string(introduction.name), "host": .string(String(introduction.host.prefix(64)))])))
        } else {
            actions.append(
                .log(
                    FleetEvent(
                        .workerHelloAgain, .debug, "worker \(introduction.name) said hello again", ["worker": .string(introduction.name)])))
        }
        if introduction.isAgent { sendJob(to: id, now: now, into: &actions) }
        dispatchNeeded = true
    }

    /// A holder of a name that a new worker took over: it is dead, and its attempt requeued.
    private mutating func replace(_ id: PeerID, now: UInt64, into actions: inout [Action]) {
        let peer = peers[id]!
        actions.append(
            .log(
                FleetEvent(
                    .workerReplaced, .warning, "worker \(peer.name) was replaced by a new worker of the same name",
                    ["worker": .string(peer.name)])))
        peers[id]!.state = .dead
        switch peer.state {
        case .busy(let claim), .missing(holding: .some(let claim)):
            requeue(attempt: claim, why: "its worker \(peer.name) was replaced", failed: true, now: now, into: &actions)
        default:
            break
        }
    }

    mutating func refuse(_ id: PeerID, _ reason: String, now: UInt64, into actions: inout [Action]) {
        guard let peer = peers[id] else { return }
        actions.append(.refuse(id, reason))
        let name = peer.introduction?.name ?? PeerRecord.printableName(id)
        actions.append(
            .log(FleetEvent(.workerRefused, .error, "refused \(name): \(reason)", ["worker": .string(name), "reason": .string(reason)])))
        peers[id]!.state = .refused(reason)
        releaseAttempt(of: peer, why: "its worker was refused", now: now, into: &actions)
    }

    /// A peer that leaves the run with an attempt: the attempt no longer counts, and its shard goes back.
    mutating func releaseAttempt(of peer: PeerRecord, why: String, now: UInt64, into actions: inout [Action]) {
        switch peer.state {
        case .busy(let claim), .missing(holding: .some(let claim)):
            revoke(claim)
            requeue(attempt: claim, why: why, failed: true, now: now, into: &actions)
        default:
            break
        }
    }

    mutating func refuseVersion(_ id: PeerID, _ version: UInt32, now: UInt64, into actions: inout [Action]) {
        guard register(id, now: now) else { return }
        refuse(
            id,
            "protocol version \(version) is not this coordinator's \(zapfleetProtocolVersion); run the same zapfleet version on coordinator and workers",
            now: now, into: &actions)
    }

    mutating func rejectFrame(_ id: PeerID?, _ reason: String, now: UInt64, into actions: inout [Action]) {
        badFrames += 1
        // Strangers are tracked only up to a bound: a flood of new identities must not grow memory without end.
        guard let id, register(id, now: now), let peer = peers[id] else { return }
        guard peer.state != .banned else { return }
        peers[id]!.badFrames += 1
        let count = peers[id]!.badFrames
        if count <= 3 {
            actions.append(
                .log(
                    FleetEvent(
                        .frameDropped, .warning, "dropped a frame from \(peer.name): \(reason)",
                        ["worker": .string(peer.name), "reason": .string(reason), "count": .number(count)])))
        }
        if count >= configuration.badFrameLimit {
            actions.append(
                .log(
                    FleetEvent(
                        .workerBanned, .error,
                        "banned \(peer.name): \(count) bad frames, the last \(reason); everything it sends is dropped from now on",
                        ["worker": .string(peer.name), "reason": .string(reason), "count": .number(count)])))
            releaseAttempt(of: peer, why: "its worker was ignored for bad frames", now: now, into: &actions)
            peers[id]!.state = .banned
        }
    }

    /// A send to the peer failed. An assignment it never received (`unsent`) is taken back at once
    /// and does not count against the shard; otherwise only its name is freed for a restarted
    /// worker: a worker that got its shard and then lost its connection may have died on it, so
    /// liveness decides, and a death counts as a failed attempt (a shard that kills every worker
    /// it reaches must run out of attempts, not circle forever).
    mutating func markUnreachable(_ id: PeerID, unsent: AttemptClaim?, now: UInt64, into actions: inout [Action]) {
        guard let peer = peers[id] else { return }
        peers[id]!.unreachable = true
        if let unsent, case .busy(let claim) = peer.state, claim == unsent {
            revoke(claim)
            peers[id]!.state = .ready
            requeue(attempt: claim, why: "its assignment could not be sent to \(peer.name)", failed: false, now: now, into: &actions)
        }
    }

    /// The coordinator did not read for `nanoseconds`: what peers sent meanwhile waits unread, so
    /// that time counts against no peer's silence or progress deadline.
    mutating func excuseHoldUp(_ nanoseconds: UInt64, now: UInt64, into actions: inout [Action]) {
        for id in joinOrder where peers[id] != nil {
            peers[id]!.lastHeard = min(now, peers[id]!.lastHeard &+ nanoseconds)
            peers[id]!.lastProgress = min(now, peers[id]!.lastProgress &+ nanoseconds)
        }
        // Short hold-ups are a loaded machine's daily weather; one of a heartbeat interval is news.
        guard nanoseconds >= configuration.intervalNanoseconds else { return }
        actions.append(
            .log(
                FleetEvent(
                    .heldUp, .warning,
                    "the coordinator was held up for \(nanoseconds / 1_000_000) ms without reading (the machine or its own disk); that time is not counted as any worker's silence",
                    ["held_up_ms": .number(nanoseconds / 1_000_000)])))
    }

    mutating func checkLiveness(now: UInt64, into actions: inout [Action]) {
        let missingAfter = configuration.missingAfter
        for id in joinOrder {
            guard let peer = peers[id], peer.introduction != nil else { continue }
            let silence = now &- peer.lastHeard
            switch peer.state {
            case .ready where silence > missingAfter:
                peers[peer.id]!.state = .missing(holding: nil)
                actions.append(.log(missingEvent(peer, silence: silence)))
            case .busy(let claim) where silence > missingAfter:
                peers[peer.id]!.state = .missing(holding: claim)
                actions.append(.log(missingEvent(peer, silence: silence)))
                if !peer.introduction!.isAgent {
                    requeue(attempt: claim, why: "\(peer.name) went missing", failed: true, now: now, into: &actions)
                }
            case .busy(let claim) where now &- peer.lastProgress > configuration.progressDeadline && claim.runID != configuration.runID:
                // Still winding down another run's shard after all this time: it is free as far as this run goes.
                peers[peer.id]!.state = .ready
                dispatchNeeded = true
            case .busy(let claim) where now &- peer.lastProgress > configuration.progressDeadline:
                // Heartbeats say it lives, but its attempt stopped moving: the attempt no longer
                // counts (a late result of it is dropped), and the shard goes to another.
                let stalled = (now &- peer.lastProgress) / 1_000_000_000
                actions.append(
                    .log(
                        FleetEvent(
                            .workerStalled, .warning,
                            "worker \(peer.name) made no progress on shard \(claim.shard) for \(stalled) s (the deadline is \(configuration.progressDeadlineIntervals) heartbeat intervals); the attempt is revoked",
                            [
                                "worker": .string(peer.name), "shard": .number(claim.shard), "attempt": .number(claim.attempt),
                                "stalled_seconds": .number(stalled)
                            ])))
                revoke(claim)
                peers[peer.id]!.state = .ready
                dispatchNeeded = true
                shards[Int(claim.shard)].excluded.insert(peer.id)  // another worker first
                noteGiveBack(peer.id, reason: "missed the progress deadline on shard \(claim.shard)", into: &actions)
                requeue(attempt: claim, why: "\(peer.name) missed the progress deadline", failed: true, now: now, into: &actions)
            case .missing where silence > configuration.deadAfter:
                peers[peer.id]!.state = .dead
                actions.append(
                    .log(
                        FleetEvent(
                            .workerDead, .warning, "worker \(peer.name) dead: silent for \(silence / 1_000_000_000) s",
                            ["worker": .string(peer.name), "silent_ms": .number(silence / 1_000_000)])))
            default:
                break
            }
        }
    }

    mutating func sendHeartbeats(now: UInt64, into actions: inout [Action]) {
        for id in joinOrder {
            guard let peer = peers[id], peer.introduction != nil, peer.state.isLive,
                now &- peer.lastSent >= configuration.intervalNanoseconds
            else { continue }
            send(.heartbeat(id), to: id, now: now, into: &actions)
        }
    }

    /// Appends a send, and notes the time (a heartbeat is due only after an interval of silence).
    mutating func send(_ action: Action, to id: PeerID, now: UInt64, into actions: inout [Action]) {
        actions.append(action)
        peers[id]?.lastSent = now
    }

    /// A peer that gave an assignment back (or let it lapse): after several in a row it gets no more.
    mutating func noteGiveBack(_ id: PeerID, reason: String, into actions: inout [Action]) {
        guard peers[id] != nil else { return }
        peers[id]!.givenBackInARow += 1
        let count = peers[id]!.givenBackInARow
        if count >= configuration.giveBackLimit && peers[id]!.benched == nil {
            peers[id]!.benched = "gave back \(count) assignments in a row (last: \(reason.prefix(160)))"
            actions.append(
                .log(
                    FleetEvent(
                        .workerBenched, .warning, "worker \(peers[id]!.name) gets no more shards: \(peers[id]!.benched!)",
                        ["worker": .string(peers[id]!.name), "reason": .string(peers[id]!.benched!)])))
        }
    }

    /// A peer fell silent for longer than the liveness allows.
    private func missingEvent(_ peer: PeerRecord, silence: UInt64) -> FleetEvent {
        var fields: [String: FleetEvent.Value] = ["worker": .string(peer.name), "silent_ms": .number(silence / 1_000_000)]
        if case .busy(let claim) = peer.state {
            fields["shard"] = .number(claim.shard)
            fields["attempt"] = .number(claim.attempt)
        }
        return FleetEvent(.workerMissing, .warning, "worker \(peer.name) missing: silent for \(silence / 1_000_000) ms", fields)
    }
}

extension Array {
    subscript(safe index: UInt64) -> Element? { index < UInt64(count) ? self[Int(index)] : nil }
}
