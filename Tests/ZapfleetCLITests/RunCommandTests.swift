import Foundation
import Testing
import ZapfleetTestSupport
import ZapEngine
import ZapScenario
@testable import ZapRun

/// `zapfleet` as a user runs it: a subprocess, its exit code, its output and its files.
@Suite("zapfleet command line", .serialized, .timeLimit(.minutes(10)))
struct RunCommandTests {
    @Test("`zapfleet run quick` exits 0, balances its counters, and shows sync's reset blocking far longer than async's")
    func quickEndToEnd() throws {
        let directory = TestPaths.temporaryDirectory()
        let result = try ZapfleetBinary.run(["run", "quick", "--out", directory])
        #expect(result.status == 0, "\(result.out)\n\(result.err)")
        #expect(result.out.contains("verdict: every objective met"))
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/report.json")))
        #expect(report.complete)
        #expect(report.schemaVersion == RunReport.currentSchemaVersion)
        #expect(Set(report.policies.map(\.policy)) == ["sync", "async", "preserve"])
        for policy in report.policies {
            #expect(policy.counters.sptesInstalled == policy.counters.sptesZapped, "\(policy.policy)")
            #expect(policy.counters.tablesLive == 0, "\(policy.policy)")
            #expect(policy.counters.tablesAllocated == policy.counters.tablesFreed, "\(policy.policy)")
        }
        let sync = try #require(report.policies.first { $0.policy == "sync" }?.operations["reset"])
        let async = try #require(report.policies.first { $0.policy == "async" }?.operations["reset"])
        #expect(sync.measured.maxNs >= 5 * async.measured.maxNs, "sync \(sync.measured.maxNs) ns vs async \(async.measured.maxNs) ns")
        #expect(sync.projected.maxNs > 0 && async.projected.maxNs == 0)
        // Every histogram file, and the scenario to re-run it.
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(files.contains("scenario.yaml"))
        #expect(files.contains("async-reset.hgrm"))
        #expect(files.contains("sync-reset.projected.hgrm"))
    }

    @Test(
        "`zapfleet run dirty-log` counts each policy's remote TLB flushes as its kernel batches them, and the table, report.json and report.html show them"
    )
    func dirtyLogFlushes() throws {
        let directory = TestPaths.temporaryDirectory()
        let result = try ZapfleetBinary.run(["run", "dirty-log", "--size", "1GiB", "--vcpus", "2", "--out", directory])
        #expect(result.status == 0, "\(result.out)\n\(result.err)")
        #expect(result.out.contains("remote TLB flushes"))
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/report.json")))
        let hugePages = 512  // 1 GiB of 2 MiB pages
        func flushes(_ policy: String) throws -> TLBFlushReport { try #require(report.policies.first { $0.policy == policy }?.tlbFlushes) }
        let sync = try flushes("sync"), async = try flushes("async"), preserve = try flushes("preserve")
        // v5.17: no eager split, so every huge page is replaced by the guest's first write to it, with a flush.
        #expect(sync.byCause[.largeSPTEReplace] == hugePages)
        #expect(async.byCause[.largeSPTEReplace] == 0 && preserve.byCause[.largeSPTEReplace] == 0)
        for policy in [sync, async, preserve] {
            #expect(policy.byCause[.writeProtect] == 1 && policy.byCause[.clearDirty] == 1)
            #expect(abs(policy.projectedSeconds - Double(policy.total) * Scenario.defaultTLBFlushCostNanoseconds / 1e9) < 1e-6)
        }
        // Disabling dirty logging: a flush per 4 KiB leaf up to v5.18, per table from v5.19.
        #expect(sync.byCause[.collapsibleZap] == hugePages * 512 && async.byCause[.collapsibleZap] == hugePages * 512)
        #expect(preserve.byCause[.collapsibleZap] == hugePages)
        #expect(report.kernelNsPerTlbFlush == Scenario.defaultTLBFlushCostNanoseconds)
        let html = try String(contentsOfFile: directory + "/report.html", encoding: .utf8)
        #expect(html.contains("Remote TLB flushes") && html.contains("collapsible_zap"))
    }

    @Test(
        "`zapfleet run memslot-delete` measures, per policy, the guest time pinned vCPUs lost while memslots were deleted and the CPUs the zap work ran on: preserve on the deleting thread's one CPU"
    )
    func memslotDeleteInterference() throws {
        let directory = TestPaths.temporaryDirectory()
        let result = try ZapfleetBinary.run(["run", "memslot-delete", "--size", "8GiB", "--out", directory])
        #expect(result.status == 0, "\(result.out)\n\(result.err)")
        #expect(result.out.contains("CPU interference") && result.out.contains("guest time lost"))
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/report.json")))
        #expect(report.policies.map(\.policy) == ["async", "preserve"])
        for policy in report.policies {
            let interference = try #require(policy.cpuInterference, "\(policy.policy)")
            #expect(interference.memslotDeletions == 4, "\(policy.policy): one deletion per repeat")
            #expect(interference.vcpus.map(\.vcpu) == [0, 1] && interference.vcpus.allSatisfy { $0.guestNs > 0 && $0.lostNs <= $0.guestNs })
            #expect(interference.quietGuestNs > 0)
            #expect(interference.deletionZapCpuNs > 0 && interference.zapCpuNs.values.reduce(0, +) >= interference.deletionZapCpuNs)
        }
        let preserve = try #require(report.policies.last?.cpuInterference)
        #expect(preserve.deletionParallelZapsMax == 1, "preserve zaps in the deleting thread, one root at a time")
        // The deleting thread is the VMM task, pinned to the last CPU: preserve's zaps stay there.
        let vmmCPU = String(ProcessInfo.processInfo.activeProcessorCount - 1)
        #expect(preserve.deletionCpusMax == 1 && preserve.zapCpuNs.keys.allSatisfy { $0 == vmmCPU }, "\(preserve.zapCpuNs)")
        #expect(report.policies.first?.cpuInterference?.deletionParallelZapsMax ?? 0 >= 1)
        let html = try String(contentsOfFile: directory + "/report.html", encoding: .utf8)
        #expect(html.contains("CPU interference"))
    }

    @Test("`zapfleet run races` reaches the double-queue race with its own race amplification: clean it exits 0, with the bug 2")
    func racesReachTheDoubleQueueRace() throws {
        let clean = try ZapfleetBinary.run(["run", "races", "--policy", "async", "--quiet", "--out", TestPaths.temporaryDirectory()])
        #expect(clean.status == 0, "\(clean.out)\n\(clean.err)")
        for step in ["fast_fault", "dirty_log", "unmap", "full_zap"] { #expect(clean.out.contains(step), "\(step)") }
        let directory = TestPaths.temporaryDirectory()
        let broken = try ZapfleetBinary.run(["run", "races", "--policy", "async", "--inject", "double-queue", "--quiet", "--out", directory]
        )
        #expect(broken.status == 2, "\(broken.out)\n\(broken.err)")
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/report.json")))
        #expect(report.policies.first?.violationsByKind["double-queue", default: 0] ?? 0 > 0)
    }

    @Test("an injected double queue exits 2 and names the violation in the report")
    func injectedDoubleQueue() throws {
        let directory = TestPaths.temporaryDirectory()
        // Two defunct roots (normal, 16 GiB; SMM, 8 GiB) behind one worker. Whichever runs first
        // takes at least three 1 GiB steps; the other is queued at the first step boundary and
        // the memslot deletion right after the reset gets mmu_lock at the next one, so it finds
        // the other root still pending and, with the bug, queues it again.
        let scenario = directory + "/double-queue.yaml"
        try """
        name: double-queue
        vm: {memory: 16GiB, smm: true, smram: 8GiB}
        workload: {vcpus: 2}
        timeline: [populate, reset_vcpus, {delete_memslots: {fraction: 0.25}}]
        policies: [async]
        workqueue_width: 1
        """.write(toFile: scenario, atomically: true, encoding: .utf8)
        let result = try ZapfleetBinary.run([
            "run", scenario, "--inject", "double-queue", "--out", directory,
            "--junit", directory + "/junit.xml"
        ])
        #expect(result.status == 2, "\(result.out)\n\(result.err)")
        // CI systems see the broken invariants as failed test cases.
        let junit = try String(contentsOfFile: directory + "/junit.xml", encoding: .utf8)
        #expect(junit.contains("name=\"async: invariant 5: each root queued at most once\">"))
        #expect(junit.contains("<failure message=\"double-queue"))
        #expect(junit.contains("name=\"async: invariant 2: fast zap returns only when every invalid root is zapped\"/>"))
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/report.json")))
        let async = try #require(report.policies.first)
        #expect(async.violationsByKind["double-queue", default: 0] > 0, "\(async.violationsByKind)")
        #expect(async.violationsByKind["root-leaked", default: 0] > 0)
        #expect(report.verdict.exitCode == 2)
        #expect(result.out.contains("double-queue"))
    }

    @Test("bad input exits 64 with the file, line and key, and runs nothing")
    func badScenario() throws {
        let directory = TestPaths.temporaryDirectory()
        let path = directory + "/bad.yaml"
        try "name: bad\nvm:\n  memory: 64TB\nworkload: {vcpus: 1}\ntimeline: [populate]\n".write(
            toFile: path, atomically: true, encoding: .utf8)
        let result = try ZapfleetBinary.run(["run", path, "--out", directory + "/out"])
        #expect(result.status == 64)
        #expect(result.err.contains("bad.yaml:3: vm.memory"))
        #expect(!FileManager.default.fileExists(atPath: directory + "/out/report.json"))

        let unknownPolicy = try ZapfleetBinary.run(["run", "--policy", "lazy"])
        #expect(unknownPolicy.status == 64)
    }

    @Test("a run that needs more memory than allowed is refused with the estimate and what to do")
    func tooLarge() throws {
        let result = try ZapfleetBinary.run(["run", "seed-64t", "--max-memory", "16GiB"])
        #expect(result.status == 64)
        #expect(result.err.contains("128 GiB") || result.err.contains("256 GiB"), "\(result.err)")
        #expect(result.err.contains("coordinator"))
    }

    @Test("Ctrl-C stops the run cleanly: exit 130, and the report is written, marked incomplete")
    func interrupt() throws {
        let directory = TestPaths.temporaryDirectory()
        let binary = URL(fileURLWithPath: ZapfleetBinary.path)
        let process = Process()
        process.executableURL = binary
        process.arguments = ["run", "max-guest-memory", "--size", "256GiB", "--out", directory]
        process.standardOutput = FileHandle.nullDevice
        let err = Pipe()
        process.standardError = err
        try process.run()
        // Interrupt once the run is under way (its first progress line), not before.
        var seen = Data()
        while !String(decoding: seen, as: UTF8.self).contains("running max-guest-memory") {
            let chunk = err.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            seen.append(chunk)
        }
        Thread.sleep(forTimeInterval: 1.0)
        process.interrupt()
        let rest = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let stderr = String(decoding: seen + rest, as: UTF8.self)
        #expect(process.terminationStatus == 130, "\(stderr)")
        #expect(stderr.contains("stopping"))
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/report.json")))
        #expect(!report.complete)
        #expect(report.verdict.exitCode == 130)
        // Whatever ran was torn down and balanced.
        for policy in report.policies {
            #expect(policy.counters.sptesInstalled == policy.counters.sptesZapped)
            #expect(policy.counters.tablesLive == 0)
        }
    }

    @Test("`zapfleet scenarios` lists every built-in and --show prints parseable YAML")
    func scenarios() throws {
        let list = try ZapfleetBinary.run(["scenarios"])
        #expect(list.status == 0)
        for name in ["quick", "seed-64t", "max-guest-memory", "smm"] { #expect(list.out.contains(name)) }
        let shown = try ZapfleetBinary.run(["scenarios", "--show", "smm"])
        #expect(shown.status == 0)
        #expect(shown.out.contains("smm: true"))
    }
}
