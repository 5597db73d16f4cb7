import Foundation
import Testing
@testable import ZapCluster
import ZapEngine
import ZapProtocol
import ZapRun
import ZapScenario
import ZapfleetTestSupport

/// Extreme values in every numeric field of a shard result, through the coordinator's whole path:
/// decode, the plausibility check, merge, the report, the journal and its reload for `--resume`.
/// Each value is either refused with a reason or goes all the way through; none may trap (a trap
/// ends the test process, which fails the run).
@Suite("Extreme values")
struct ExtremeValueTests {
    static let scenario = ScenarioFixture.fleet(name: "extreme", memory: "2GiB", memslot: "1GiB")

    /// The scenario, its one shard, and the result an honest worker computes for it.
    static func honestShard() throws -> (Scenario, Shard, Zapfleet_V1_ShardResult) {
        let scenario = try ScenarioParser.parse(Self.scenario, file: "extreme")
        var assignment = Zapfleet_V1_Assignment()
        assignment.runID = "run"
        assignment.scenarioYaml = Self.scenario
        assignment.firstSlot = 0
        assignment.slotCount = 1
        assignment.attempt = 1
        assignment.kernelNsPerSpte = 52
        return (
            scenario, Shard(id: 0, slice: MemorySlice(firstSlot: 0, slotCount: 1), of: scenario),
            try ShardComputation.result(of: assignment)
        )
    }

    static let extremes: [UInt64] = [0, 1, UInt64(UInt32.max), 1 << 40, (1 << 50) - 1, UInt64(Int64.max), .max]

    /// Every numeric field of a result, as a way to set it.
    static func mutations() -> [(String, (inout Zapfleet_V1_ShardResult, UInt64) -> Void)] {
        var list: [(String, (inout Zapfleet_V1_ShardResult, UInt64) -> Void)] = [
            ("wall_ns", { $0.wallNs = $1 }),
            ("attempt", { $0.attempt = UInt32(truncatingIfNeeded: $1) }),
            ("policies[0].wall_ns", { $0.policies[0].wallNs = $1 }),
            ("policies[0].zap_throughput", { $0.policies[0].zapThroughput = Double(bitPattern: $1) }),
            ("policies[0].steps[0].wall_ns", { $0.policies[0].steps[0].wallNs = $1 }),
            ("policies[0].steps[0].longest_block_ns", { $0.policies[0].steps[0].longestBlockNs = $1 }),
            ("policies[0].steps[0].sptes_zapped_inline", { $0.policies[0].steps[0].sptesZappedInline = $1 }),
            (
                "policies[1].steps[1].longest_block_ns (every step)",
                { result, value in
                    for index in result.policies[1].steps.indices { result.policies[1].steps[index].longestBlockNs = value }
                }
            ),
            ("policies[0].violation_counts", { $0.policies[0].violationCounts = ["double-queue": $1] }),
            (
                "policies[0].violations[0].root_id",
                { result, value in
                    var record = Zapfleet_V1_ViolationRecord()
                    record.kind = "double-queue"
                    record.rootID = Int64(bitPattern: value)
                    result.policies[0].violations = [record]
                }
            ),
            (
                "policies[0].histograms[0] bucket count",
                { $0.policies[0].histograms[0].hdrV2 = Data(HistogramFixture.encoded(value: 1000, count: $1)) }
            ),
            ("policies[0].tlb_flushes[root_zap]", { $0.policies[0].tlbFlushes["root_zap"] = $1 }),
            ("policies[1].tlb_flushes[obsolete_roots]", { $0.policies[1].tlbFlushes["obsolete_roots"] = $1 })
        ]
        let counters: [(String, WritableKeyPath<Zapfleet_V1_Counters, UInt64>)] = [
            ("sptes_installed", \.sptesInstalled), ("sptes_zapped", \.sptesZapped), ("accessed_zapped", \.accessedZapped),
            ("dirty_zapped", \.dirtyZapped), ("tables_allocated", \.tablesAllocated), ("tables_freed", \.tablesFreed),
            ("tables_live", \.tablesLive), ("tables_peak", \.tablesPeak), ("faults", \.faults), ("fault_retries", \.faultRetries),
            ("spurious_faults", \.spuriousFaults), ("yields", \.yields), ("zap_steps", \.zapSteps),
            ("largest_step_tables", \.largestStepTables), ("roots_created", \.rootsCreated), ("roots_reused", \.rootsReused),
            ("roots_freed", \.rootsFreed), ("root_zaps", \.rootZaps), ("work_items_queued", \.workItemsQueued),
            ("work_items_rejected", \.workItemsRejected), ("fast_zaps", \.fastZaps), ("full_zaps", \.fullZaps)
        ]
        for (name, path) in counters {
            list.append(("policies[1].counters.\(name)", { $0.policies[1].counters[keyPath: path] = $1 }))
        }
        return list
    }

    @Test("every numeric field at its extremes: refused with a reason, or merged, reported, journaled and resumed; never a trap")
    func extremes() throws {
        let (scenario, shard, honest) = try Self.honestShard()
        let directory = TestPaths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let journalPath = directory + "/journal.zfj"
        let journal = try ResultJournal.create(
            at: journalPath,
            plan: JournalPlan(
                runID: "run", scenarioYAML: Self.scenario, kernelNanosecondsPerSPTE: 52,
                shards: [JournalShard(id: 0, firstSlot: 0, slotCount: 1)]))
        var refused = 0, accepted = 0
        for (field, set) in Self.mutations() {
            for value in Self.extremes {
                var result = honest
                set(&result, value)
                let verdict = Coordinator.check(result, shard: shard, scenario: scenario).verdict
                if case .implausible(let reason) = verdict {
                    #expect(!reason.isEmpty, "\(field) = \(value)")
                    refused += 1
                    continue
                }
                accepted += 1
                // Through the rest of the path: merge (twice, as two shards of a fleet would), report, journal.
                let runs = try result.policies.map { try ResultCoding.decodeValidated($0) }
                var totals = FleetTotals(kernelNanosecondsPerSPTE: 52)
                totals.add(runs, of: result, worker: "w", startSeconds: 0)
                var second = result
                second.shardID = 1
                totals.add(runs, of: second, worker: "w", startSeconds: 0)
                let merged = totals.merged(scenario.policies)
                let report = RunReport(
                    scenario: scenario, runs: merged, slice: .whole(scenario), kernelNanosecondsPerSPTE: 52,
                    startedAt: Date(), wallNanoseconds: result.wallNs, version: "test",
                    fleet: FleetSection(
                        workers: [], shards: [], requeues: 0, duplicatesDropped: 0, badFrames: 0,
                        wholeVm: FleetAggregation.wholeVm(merged, kernelNanosecondsPerSPTE: 52)))
                _ = try ReportFiles.json(report)
                try journal.append(result, worker: "w")
            }
        }
        try journal.sync()
        let reloaded = try ResultJournal.load(journalPath)
        #expect(reloaded.results.count == accepted)
        for entry in reloaded.results {
            #expect(Coordinator.check(entry.result, shard: shard, scenario: scenario).verdict == .plausible)
        }
        #expect(refused > 0 && accepted > 0, "both sides are exercised: \(refused) refused, \(accepted) accepted")
        print(
            "extreme values: \(Self.mutations().count) fields × \(Self.extremes.count) values: \(refused) refused with a reason, \(accepted) merged, reported, journaled and reloaded"
        )
    }

    @Test(
        "a result's remote TLB flushes travel by cause and are summed over shards; an unknown cause, or more obsolete-roots requests than fast zaps, refuses the result"
    )
    func tlbFlushesOnTheWire() throws {
        let (scenario, shard, honest) = try Self.honestShard()
        #expect(Coordinator.check(honest, shard: shard, scenario: scenario).verdict == .plausible)
        // The scenario's timeline reaches a fast zap and a reset: something to flush for.
        let sync = try ResultCoding.decodeValidated(honest.policies[0])
        let async = try ResultCoding.decodeValidated(honest.policies[1])
        // One fast zap each; v5.17 flushes for the tables its zaps removed, v5.18 for none of them.
        #expect(sync.tlbFlushes[.obsoleteRoots] == 1 && async.tlbFlushes[.obsoleteRoots] == 1)
        #expect(sync.tlbFlushes[.rootZap] > 0 && async.tlbFlushes[.rootZap] == 0)

        var totals = FleetTotals(kernelNanosecondsPerSPTE: 52)
        totals.add([sync, async], of: honest, worker: "w", startSeconds: 0)
        var second = honest
        second.shardID = 1
        totals.add([sync, async], of: second, worker: "w", startSeconds: 0)
        let merged = totals.merged(scenario.policies)
        #expect(merged[0].tlbFlushes[.rootZap] == 2 * sync.tlbFlushes[.rootZap])

        var unknown = honest
        unknown.policies[0].tlbFlushes["tlb_shootdown"] = 3
        #expect(Coordinator.check(unknown, shard: shard, scenario: scenario).verdict != .plausible)
        var tooMany = honest
        tooMany.policies[1].tlbFlushes["obsolete_roots"] = 2
        guard case .implausible(let reason) = Coordinator.check(tooMany, shard: shard, scenario: scenario).verdict else {
            Issue.record("two obsolete-roots requests for one fast zap were accepted")
            return
        }
        #expect(reason.contains("obsolete_roots"), "\(reason)")
    }

    @Test(
        "CPU interference travels whole, and figures that cannot be (lost time beyond guest time, a vCPU twice, a vCPU the scenario lacks, interference without guest work) refuse the result"
    )
    func interferenceOnTheWire() throws {
        var interference = CPUInterference()
        interference.vcpus = [
            .init(vcpu: 0, cpu: 1, guestNs: 5_000, lostNs: 1_000, units: 9), .init(vcpu: 1, cpu: -1, guestNs: 4_000, lostNs: 0, units: 3)
        ]
        interference.quietGuestNs = 100
        interference.quietLostNs = 1
        interference.zapCpuNs = ["0": 12, "3": 4]
        interference.memslotDeletions = 1
        interference.deletionZapCpuNs = 16
        interference.deletionZapCpuNsMax = 16
        interference.deletionCpusMax = 2
        let wire = InterferenceCoding.encode(interference)
        #expect(try InterferenceCoding.decode(wire) == interference)

        var lostTooMuch = wire
        lostTooMuch.vcpus[0].lostNs = lostTooMuch.vcpus[0].guestNs + 1
        #expect(throws: ProtocolViolation.self) { try InterferenceCoding.decode(lostTooMuch) }
        var twice = wire
        twice.vcpus[1].vcpu = 0
        #expect(throws: ProtocolViolation.self) { try InterferenceCoding.decode(twice) }

        // Through the coordinator's check: the extreme scenario has 2 vCPUs and no guest work.
        let (scenario, shard, honest) = try Self.honestShard()
        var result = honest
        result.policies[0].cpuInterference = wire
        guard case .implausible(let reason) = Coordinator.check(result, shard: shard, scenario: scenario).verdict else {
            Issue.record("interference from a scenario without guest work was accepted")
            return
        }
        #expect(reason.contains("guest_work"), "\(reason)")
        let guestScenarioYAML = Self.scenario.replacingOccurrences(
            of: "workload: {vcpus: 2}", with: "workload: {vcpus: 2, guest_work: true}")
        let guestScenario = try ScenarioParser.parse(guestScenarioYAML, file: "guest")
        var unknownVCPU = result
        unknownVCPU.policies[0].cpuInterference.vcpus[1].vcpu = 2
        guard case .implausible(let vcpuReason) = Coordinator.check(unknownVCPU, shard: shard, scenario: guestScenario).verdict else {
            Issue.record("a share of vCPU 2 in a 2-vCPU scenario was accepted")
            return
        }
        #expect(vcpuReason.contains("vcpu 2"), "\(vcpuReason)")
    }
}
