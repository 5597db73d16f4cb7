import Foundation
import Testing
import ZapfleetTestSupport
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

    @Test("`zapfleet run races` reaches the double-queue race with its own race amplification: clean it exits 0, with the bug 2")
    func racesReachTheDoubleQueueRace() throws {
        let clean = try ZapfleetBinary.run(["run", "races", "--policy", "async", "--quiet", "--out", TestPaths.temporaryDirectory()])
        #expect(clean.status == 0, "\(clean.out)\n\(clean.err)")
        for step in ["fast_fault", "dirty_log", "unmap", "full_zap"] { #expect(clean.out.contains(step), "\(step)") }
        let directory = TestPaths.temporaryDirectory()
        let broken = try ZapfleetBinary.run(["run", "races", "--policy", "async", "--inject", "double-queue", "--quiet", "--out", directory])
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
        let result = try ZapfleetBinary.run(["run", scenario, "--inject", "double-queue", "--out", directory,
                                        "--junit", directory + "/junit.xml"])
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
        try "name: bad\nvm:\n  memory: 64TB\nworkload: {vcpus: 1}\ntimeline: [populate]\n".write(toFile: path, atomically: true, encoding: .utf8)
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
