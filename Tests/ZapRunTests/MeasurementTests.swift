import Foundation
import Histogram
import HistogramCodec
import Testing
import ZapEngine
@testable import ZapRun
import ZapScenario
import ZapPlatform
import ZapfleetTestSupport

/// Recording, projection, report files and objective verdicts.
@Suite("Measurement")
struct MeasurementTests {
    @Test("the projection is SPTEs zapped in the caller's context times the per-SPTE cost")
    func projection() {
        var recorder = BlockTimeRecorder(kernelNanosecondsPerSPTE: 52)
        recorder.record(.reset, OperationOutcome(blockedNanoseconds: 1_000, sptesZappedInline: 1 << 34))
        recorder.record(.reset, OperationOutcome(blockedNanoseconds: 2_000, sptesZappedInline: 0))
        let projected = recorder.projection(.reset)
        // 2^34 SPTEs at 52 ns: the seed's ~893 s, within the histogram's 3 significant digits.
        let expected = Double(1 << 34) * 52
        #expect(abs(Double(projected.max) - expected) / expected < 0.001)
        #expect(projected.min == 0)
        #expect(recorder.histogram(.reset).totalCount == 2)
        #expect(recorder.histogram(.reset).max >= 2_000 && recorder.histogram(.reset).max < 2_002)
    }

    @Test(
        "one convention for percentiles, min and max (HdrHistogram's): the same figures before and after a V2 round trip, and no percentile above the max"
    )
    func summaryConvention() throws {
        var generator = SplitMix64(seed: 12)
        for _ in 0..<50 {
            var histogram = HistogramFixture.empty()
            // Values inside one top bucket and below: the case where the exact max and its bucket differ.
            let top = 1_000_000 + generator.next() % 1_000_000_000
            for _ in 0..<(1 + generator.next() % 200) { histogram.record(1 + generator.next() % top) }
            histogram.record(top)
            let summary = LatencySummary(histogram)
            let decoded = try HistogramV2Codec.decode(HistogramV2Codec.encodeCompressed(histogram))
            #expect(LatencySummary(decoded) == summary, "top \(top)")
            #expect(summary.maxNs == histogram.highestEquivalentForValue(top))
            #expect(summary.minNs == histogram.lowestEquivalentForValue(histogram.min))
            for percentile in [summary.p50Ns, summary.p90Ns, summary.p99Ns, summary.p999Ns, summary.p9999Ns] {
                #expect(percentile <= summary.maxNs)
                #expect(histogram.highestEquivalentForValue(percentile) == percentile, "a percentile is the top of its bucket")
            }
            #expect(histogram.conventionalValue(atPercentile: 100) == summary.maxNs)
        }
        // One value: every percentile is that value's bucket top, as the max is.
        var one = HistogramFixture.empty()
        one.record(1_237_500)
        let single = LatencySummary(one)
        #expect(single.p99Ns == single.maxNs && single.p50Ns == single.maxNs && single.maxNs == 1_238_015)
        #expect(single.minNs == 1_236_992)
        #expect(
            LatencySummary(
                HistogramFixture.empty()
            ).maxNs == 0)
    }

    @Test("merging recorders adds every sample, bucket by bucket")
    func mergeIsExact() {
        var generator = SplitMix64(seed: 3)
        var all = BlockTimeRecorder(kernelNanosecondsPerSPTE: 52)
        var parts = [BlockTimeRecorder](repeating: BlockTimeRecorder(kernelNanosecondsPerSPTE: 52), count: 4)
        for index in 0..<10_000 {
            let outcome = OperationOutcome(
                blockedNanoseconds: generator.next() % 10_000_000, sptesZappedInline: Int(generator.next() % 1000))
            all.record(.fault, outcome)
            parts[index % 4].record(.fault, outcome)
        }
        var merged = BlockTimeRecorder(kernelNanosecondsPerSPTE: 52)
        for part in parts { merged.merge(part) }
        #expect(merged.histogram(.fault) == all.histogram(.fault))
        #expect(merged.projection(.fault) == all.projection(.fault))
    }

    @Test("coordinated-omission correction adds the samples a stall prevented")
    func coordinatedOmission() {
        var recorder = BlockTimeRecorder(kernelNanosecondsPerSPTE: 52)
        recorder.record(.fault, OperationOutcome(blockedNanoseconds: 10_000_000), expectedInterval: 1_000_000)
        // 10 ms at a 1 ms interval stands for 10 ms, 9 ms, ..., 1 ms.
        #expect(recorder.histogram(.fault).totalCount == 10)
    }

    @Test("the .hgrm file lists the histogram's own percentiles, in microseconds")
    func hgrmMatchesHistogram() throws {
        var histogram = LatencyHistogram.makeLatency()
        var generator = SplitMix64(seed: 9)
        for _ in 0..<50_000 { _ = histogram.record(1_000 + generator.next() % 5_000_000) }
        let text = ReportFiles.hgrm(histogram)
        var checked = 0
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3, let value = Double(fields[0]), let percentile = Double(fields[1]) else { continue }
            let exact = histogram.valueAtPercentile(percentile * 100)
            // Equal within the histogram's resolution (3 significant digits) and the file's 3 decimals.
            let tolerance = Double(histogram.sizeOfEquivalentRangeForValue(exact)) / 1000 + 0.0005
            #expect(abs(value - Double(exact) / 1000) <= tolerance, "at \(percentile): \(value) vs \(exact) ns")
            checked += 1
        }
        #expect(checked > 20)
        #expect(text.contains("#[Max     ="))
        #expect(text.contains("Total count    =        50000"))
    }

    @Test("objectives are evaluated per policy and drive the exit code")
    func verdicts() throws {
        let scenario = try ScenarioFixture.parse(
            """
            name: t
            vm: {memory: 2GiB}
            workload: {vcpus: 1}
            timeline: [populate, reset_vcpus]
            policies: [sync, async]
            slos: ["violations == 0", "async.reset.max < 1ms", "sync.reset.projected.max > 1ms"]
            """)
        let runner = ScenarioRunner(scenario: scenario)
        let runs = try scenario.policies.map { try runner.run(policy: $0) }
        let report = RunReport(
            scenario: scenario, runs: runs, slice: .whole(scenario), kernelNanosecondsPerSPTE: 52,
            startedAt: Date(), wallNanoseconds: 1, version: "test")
        // 2 GiB of 4 KiB SPTEs zapped by sync's reset: 524288 × 52 ns ≈ 27 ms, plus v5.17's flush
        // for each of the 1,027 tables its put removed (1,024 + 2 + 1) × 72.8 µs ≈ 75 ms.
        let sync = try #require(report.policies.first { $0.policy == "sync" })
        #expect(sync.tlbFlushes?.byCause[.rootZap] == 1027)
        let projected = Double(try #require(sync.operations["reset"]?.projected.maxNs))
        let expected = 524_288 * 52 + 1027 * Scenario.defaultTLBFlushCostNanoseconds
        #expect(abs(projected - expected) < expected * 0.002, "\(projected) ns projected, \(expected) ns expected")
        #expect(report.objectives.count == 4)
        #expect(report.objectives.first { $0.objective == "sync.reset.projected.max > 1ms" }?.met == true)
        let asyncReset = try #require(report.objectives.first { $0.objective == "async.reset.max < 1ms" })
        #expect(report.verdict.exitCode == (asyncReset.met ? 0 : 1))

        // The same report, decoded from its JSON, is the same report.
        let decoded = try ReportFiles.decode(ReportFiles.json(report))
        #expect(decoded == report)
    }

    @Test(
        "a real kernel's column faces only the objectives it measured: no counter (it has no checker), no projection, no operation without samples"
    )
    func externalColumnObjectives() throws {
        let scenario = try ScenarioFixture.parse(
            """
            name: t
            vm: {memory: 2GiB}
            workload: {vcpus: 1}
            timeline: [populate, reset_vcpus]
            policies: [async]
            slos: ["violations == 0", "full_zap.max < 1ms", "reset.p99 < 1s", "reset.projected.max < 1s"]
            """)
        let run = try ScenarioRunner(scenario: scenario).run(policy: .async)
        var resets = LatencyHistogram.makeLatency()
        for value: UInt64 in [1_000, 2_000, 3_000] { _ = resets.record(value) }
        let kernel = ExternalMeasurement(
            name: "kvm:host", source: "a real kernel", histograms: [.reset: resets],
            wallNanoseconds: 1, exitStatus: 0)
        let report = RunReport(
            scenario: scenario, runs: [run], slice: .whole(scenario), kernelNanosecondsPerSPTE: 52,
            startedAt: Date(), wallNanoseconds: 1, version: "test", external: [kernel])
        let onKernel = report.objectives.filter { $0.policy == "kvm:host" }
        #expect(onKernel.map(\.objective) == ["reset.p99 < 1s"], "\(onKernel)")
        #expect(onKernel.first?.met == true)
        #expect(report.objectives.filter { $0.policy == "async" }.count == 4, "the simulated policy faces every one")
        #expect(report.policies.last?.external == true && report.policies.first?.external == nil)
        #expect(try ReportFiles.decode(ReportFiles.json(report)) == report)
    }

    @Test(
        "a run's counters balance: everything installed is zapped and every table comes back",
        arguments: ["quick-mini", "smm-mini"])
    func countersBalance(name: String) throws {
        let smm = name == "smm-mini"
        let scenario = try ScenarioFixture.parse(
            """
            name: \(name)
            vm: {memory: 4GiB, pages: {4K: 0.5, 2M: 0.25, 1G: 0.25}, smm: \(smm), smram: 64MiB}
            workload: {vcpus: 3, coverage: random, touched: 0.75}
            timeline: [populate, {run: {faults: 500}}, reset_vcpus, populate, {delete_memslots: {fraction: 0.5}}, full_zap]
            repeat: 2
            """, file: "\(name).yaml")
        let runner = ScenarioRunner(scenario: scenario)
        for policy in ZapPolicy.allCases {
            let run = try runner.run(policy: policy)
            #expect(run.complete)
            #expect(run.violations.isEmpty, "\(policy): \(run.violations.prefix(3))")
            #expect(run.statistics.sptesInstalled > 0)
            #expect(run.statistics.sptesInstalled == run.statistics.sptesZapped, "\(policy)")
            #expect(run.statistics.tablesLive == 0, "\(policy)")
            #expect(run.recorder.histogram(.fastZap).totalCount > 0)
            #expect(run.recorder.histogram(.teardown).totalCount == 1)
            #expect(run.steps.count == runner.expandedTimeline.count)
        }
    }

    @Test("a cancelled run still tears down, balances, and says it is incomplete")
    func cancellation() throws {
        let scenario = try ScenarioCatalog.load("quick")
        let flag = CancellationFlag()
        flag.cancel()
        let run = try ScenarioRunner(scenario: scenario, options: RunOptions(cancellation: flag)).run(policy: .async)
        #expect(!run.complete)
        #expect(run.recorder.histogram(.teardown).totalCount == 1)
        #expect(run.statistics.sptesInstalled == run.statistics.sptesZapped)
        #expect(run.violations.isEmpty)
    }
}

@Suite("Guest layout")
struct GuestLayoutTests {
    @Test("the seeded permutation visits every index once", arguments: [1, 2, 7, 512, 1000, 4096])
    func permutation(count: Int) {
        let order = Permutation(count: count, seed: 11, shuffled: true)
        var seen = Set<Int>()
        for index in 0..<count { seen.insert(order[index]) }
        #expect(seen.count == count)
        #expect(seen.allSatisfy { $0 >= 0 && $0 < count })
    }

    @Test("the vCPUs' parts tile the slice exactly")
    func partsTile() throws {
        let scenario = try ScenarioFixture.parse(
            """
            name: t
            vm: {memory: 64GiB}
            workload: {vcpus: 7}
            timeline: [populate]
            """)
        let slice = MemorySlice(firstSlot: 4, slotCount: 10)
        let layout = GuestLayout(scenario: scenario, slice: slice)
        var next = 4 * 1024
        for vcpu in 0..<7 {
            let part = layout.part(of: vcpu)
            #expect(part.lowerBound == next)
            next = part.upperBound
        }
        #expect(next == 14 * 1024)
    }
}
