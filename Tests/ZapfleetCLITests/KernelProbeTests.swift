import Foundation
import Testing
import ZapfleetTestSupport
import ZapRun

/// The real kernel beside the simulation: `zapfleet-kvm-probe` on this host's KVM, its stats
/// against the pages it touched, and its column in a run's report.
///
/// They need a usable `/dev/kvm` (root, here). Where there is none they do not run, and say so;
/// `ZAPFLEET_REQUIRE_KVM=1` (set by `.ci/run`) makes a missing KVM a failure instead.
@Suite("Real KVM", .serialized, .timeLimit(.minutes(10)))
struct KernelProbeTests {
    static let probe = TestPaths.packageRoot.appendingPathComponent("clients/c/build/zapfleet-kvm-probe").path
    static let kvmUsable: Bool = {
        let descriptor = open("/dev/kvm", O_RDWR)
        if descriptor >= 0 { close(descriptor) }
        return descriptor >= 0
    }()
    static let kvmRequired = ProcessInfo.processInfo.environment["ZAPFLEET_REQUIRE_KVM"] == "1"
    static let reason: Comment =
        "no usable /dev/kvm here (it needs the kvm module and root); set ZAPFLEET_REQUIRE_KVM=1 to make that a failure"

    static func requireKVM() throws {
        try #require(FileManager.default.isExecutableFile(atPath: probe), "build it with `make -C clients/c` (./test does)")
        try #require(kvmUsable, "ZAPFLEET_REQUIRE_KVM=1, but /dev/kvm cannot be opened")
    }

    @Test(
        "the probe on 256 MiB: every page touched is one SPTE in KVM's own stats, a zap-all delete removes them all, a delete without the quirk only its slots'; labels say which MMU ran",
        .enabled(if: kvmUsable || kvmRequired, reason))
    func probeAgainstKVMStats() throws {
        try Self.requireKVM()
        let json = TestPaths.temporaryDirectory() + "/probe.json"
        let result = try Subprocess.run(Self.probe, ["--memory", "256MiB", "--memslot", "64MiB", "--vcpus", "2", "--json", json])
        try #require(result.status == 0, "\(result.err)")
        let probe = try KernelProbeResult.decode(Data(contentsOf: URL(fileURLWithPath: json)))
        #expect(probe.pages == 65_536)
        let tdp = (try? String(contentsOfFile: "/sys/module/kvm/parameters/tdp_mmu", encoding: .utf8))?.hasPrefix("Y") == true
        #expect(probe.mmu == (tdp ? "tdp" : "shadow"))
        #expect(probe.nestedUnderPVM == FileManager.default.fileExists(atPath: "/sys/module/kvm_pvm"))

        for quirk in [true, false] {
            let events = probe.events.filter { $0.quirkSlotZapAll == quirk }
            guard !events.isEmpty else { continue }
            let populate = try #require(events.first { $0.event == "populate" })
            let installed = try #require(populate.vmStats?["pages_4k"])
            // One leaf SPTE per 4 KiB page touched, and the few the guest's own code and tables need.
            #expect(installed >= 65_536 && installed <= 65_536 + 16, "quirk \(quirk): pages_4k grew by \(installed)")
            #expect(populate.samplesNs.count == 128 && populate.samplesNs.allSatisfy { $0 > 0 }, "one sample per 2 MiB region")
            let delete = try #require(events.first { $0.event == "delete_memslots" })
            #expect(delete.samplesNs.count == 2, "every other one of 4 memslots")
            let removed = -(delete.vmStats?["pages_4k"] ?? 0)
            if quirk {
                #expect(removed >= 2 * 65_536, "the zap-all quirk removes every SPTE of both roles: \(removed)")
                #expect((delete.nsPerSpte ?? 0) > 0)
            } else {
                #expect(removed >= 2 * 16_384 && removed < 2 * 65_536, "without the quirk only the two deleted slots' SPTEs: \(removed)")
            }
        }
        let calibration = try #require(probe.calibration)
        #expect(
            calibration.nanosecondsPerSPTE > 0 && calibration.lowest <= calibration.nanosecondsPerSPTE
                && calibration.nanosecondsPerSPTE <= calibration.highest)
        // Standard output is the agent's format: one "OPERATION NANOSECONDS" per sample.
        let lines = result.out.split(separator: "\n")
        #expect(
            !lines.isEmpty
                && lines.allSatisfy { line in
                    let fields = line.split(separator: " ")
                    return fields.count == 2 && ["populate", "reset", "fast_zap", "teardown"].contains(String(fields[0]))
                        && UInt64(fields[1]) != nil
                }, "\(lines.prefix(5))")
    }

    @Test("asked for more guest memory than the host has available, the probe refuses before touching KVM and says what to do")
    func refusesMoreThanAvailable() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.probe), "build it with `make -C clients/c` (./test does)")
        let result = try Subprocess.run(Self.probe, ["--memory", "60GiB", "--memslot", "1GiB"])
        #expect(result.status == 64, "\(result.err)")
        #expect(result.err.contains("available") && result.err.contains("smaller --memory"), "\(result.err)")
        let run = try ZapfleetBinary.run(["run", "quick", "--kvm", "60GiB", "--quiet"])
        #expect(run.status == 64, "\(run.err)")
        #expect(run.err.contains("available"), "\(run.err)")
        #expect(!run.out.contains("verdict"), "nothing was simulated")
    }

    @Test(
        "`zapfleet run max-guest-memory --kvm 256MiB`: the real column kvm:HOST beside the simulated policies, labelled, and the projection calibrated by it",
        .enabled(if: kvmUsable || kvmRequired, reason))
    func realColumnInTheReport() throws {
        try Self.requireKVM()
        let directory = TestPaths.temporaryDirectory()
        let run = try ZapfleetBinary.run([
            "run", "max-guest-memory", "--kvm", "256MiB", "--size", "8GiB", "--policy", "sync",
            "--policy", "async", "--quiet", "--out", directory
        ])
        #expect(run.status == 0, "\(run.out)\n\(run.err)")
        #expect(run.out.contains("real kernel: kvm:"), "\(run.out)")
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/report.json")))
        let column = try #require(report.policies.first { $0.policy.hasPrefix("kvm:") }, "\(report.policies.map(\.policy))")
        #expect(report.policies.map(\.policy).prefix(2) == ["sync", "async"])
        #expect(column.kernels.contains("kernel ") && column.kernels.contains("MMU") && column.kernels.contains("calibrated"))
        #expect(column.complete)
        for operation in ["populate", "reset", "fast_zap", "teardown"] {
            #expect((column.operations[operation]?.measured.count ?? 0) > 0, "\(operation)")
        }
        #expect(report.kernelNsPerSpte != 52 && report.kernelNsPerSpte > 0, "the projection uses the host's calibration")
    }

    @Test(
        "`zapfleet calibrate --out FILE` writes this host's ns per SPTE; --kernel-spte-ns FILE projects with it; a file that is not one is refused",
        .enabled(if: kvmUsable || kvmRequired, reason))
    func calibrationFile() throws {
        try Self.requireKVM()
        let directory = TestPaths.temporaryDirectory()
        let file = directory + "/calibration.json"
        let calibrate = try ZapfleetBinary.run(["calibrate", "--kvm", "128MiB", "--out", file])
        #expect(calibrate.status == 0, "\(calibrate.err)")
        #expect(calibrate.out.contains("calibrated") && calibrate.out.contains("MMU"), "\(calibrate.out)")
        let calibration = try JSONDecoder().decode(KernelCalibration.self, from: Data(contentsOf: URL(fileURLWithPath: file)))
        #expect(calibration.nanosecondsPerSPTE > 0 && calibration.sptes > 0)
        let run = try ZapfleetBinary.run([
            "run", "quick", "--policy", "sync", "--kernel-spte-ns", file, "--quiet", "--out", directory + "/run"
        ])
        #expect(run.status == 0, "\(run.err)")
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/run/report.json")))
        #expect(report.kernelNsPerSpte == calibration.nanosecondsPerSPTE)
        try "{}".write(toFile: directory + "/not.json", atomically: true, encoding: .utf8)
        let refused = try ZapfleetBinary.run(["run", "quick", "--kernel-spte-ns", directory + "/not.json"])
        #expect(refused.status == 64 && refused.err.contains("--kernel-spte-ns") && refused.err.contains("calibrate"), "\(refused.err)")
    }

    @Test(
        "`zapfleet-agent-c --kvm 128MiB` joins a coordinator beside a worker: this host's real KVM is the external column of the fleet's report",
        .enabled(if: kvmUsable || kvmRequired, reason))
    func probeAsAnAgentJob() throws {
        try Self.requireKVM()
        let directory = TestPaths.temporaryDirectory()
        let scenario = try ScenarioFixture.write(ScenarioFixture.cluster, in: directory)
        let endpoint = "tcp://127.0.0.1:\(Int.random(in: 20000..<40000))"
        let coordinator = try ZapfleetBinary.start(
            [
                "coordinator", "--scenario", scenario, "--bind", endpoint, "--expect-workers", "1",
                "--expect-agents", "1", "--out", directory + "/run"
            ], log: directory + "/coordinator.log")
        let worker = try ZapfleetBinary.start(["worker", "--connect", endpoint, "--name", "w1"], log: directory + "/w1.log")
        let agent = try Subprocess.start(
            ExternalAgentTests.agent, ["--connect", endpoint, "--name", "kvm-host", "--kvm", "128MiB"],
            log: directory + "/agent.log")
        defer { for process in [coordinator, worker, agent] where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        coordinator.waitUntilExit()
        worker.waitUntilExit()
        agent.waitUntilExit()
        let log = (try? String(contentsOfFile: directory + "/coordinator.log", encoding: .utf8)) ?? ""
        let agentLog = (try? String(contentsOfFile: directory + "/agent.log", encoding: .utf8)) ?? ""
        #expect(coordinator.terminationStatus == 0, "\(log.suffix(1500))\n\(agentLog)")
        #expect(agent.terminationStatus == 0, "\(agentLog)")
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/run/report.json")))
        let column = try #require(report.policies.first { $0.policy == "external" }, "\(report.policies.map(\.policy))")
        // 128 MiB of 2 MiB regions, twice, under each setting of the zap-all quirk.
        #expect(column.operations["populate"]?.measured.count == 4 * 64, "\(agentLog)")
        #expect((column.operations["fast_zap"]?.measured.count ?? 0) == 4)
        #expect((column.operations["teardown"]?.measured.count ?? 0) == 2)
    }
}
