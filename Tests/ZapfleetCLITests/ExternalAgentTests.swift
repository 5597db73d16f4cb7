import Foundation
import Histogram
import Testing
import ZapfleetTestSupport
import ZapRun
import ZapEngine

/// The C agent (`clients/c`, libzmq + protobuf-c) beside simulated workers, over CURVE, under valgrind.
@Suite("External C agent", .serialized, .timeLimit(.minutes(5)))
struct ExternalAgentTests {
    static let agent = TestPaths.packageRoot.appendingPathComponent("clients/c/build/zapfleet-agent-c").path

    /// The known samples the agent's command prints: 1,000 reset values, 10 tagged fast zaps, and 4 lines that are no sample.
    static let resetSamples = (1...1000).map { UInt64($0) * 1_013 }
    static let fastZapSamples = (1...10).map { UInt64($0) * 2_000_000 }

    static func writeCommand(to path: String) throws {
        // The last line is longer than the agent's line buffer: it is rejected whole, its tail included.
        let noSamples = ["not a sample", "reset -5", "teleport 100", String(repeating: " ", count: 70_000) + "7"]
        let lines = resetSamples.map(String.init) + fastZapSamples.map { "fast_zap \($0)" } + noSamples
        let script =
            "#!/bin/sh\n[ -n \"$ZAPFLEET_SCENARIO_FILE\" ] && [ -s \"$ZAPFLEET_SCENARIO_FILE\" ] || exit 9\ncat <<'SAMPLES'\n"
            + lines.joined(separator: "\n") + "\nSAMPLES\n"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
    }

    /// Runs the agent to its end; returns its exit status and what it wrote to standard error.
    static func runAgent(_ arguments: [String]) throws -> (status: Int32, errors: String) {
        let result = try Subprocess.run(Self.agent, arguments)
        return (result.status, result.err)
    }

    static func keygen(_ name: String, in directory: String) throws {
        let result = try ZapfleetBinary.run(["keygen", name, "--dir", directory])
        try #require(result.status == 0, "\(result.err)")
    }

    @Test(
        "two simulated workers and one C agent under valgrind, all over CURVE: the report's external column has exactly the agent's samples, and valgrind finds no error or leak"
    )
    func agentBesideWorkers() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.agent), "build it with `make -C clients/c` (./test does)")
        let directory = TestPaths.temporaryDirectory()
        let keys = directory + "/keys", allowed = directory + "/allowed"
        try FileManager.default.createDirectory(atPath: allowed, withIntermediateDirectories: true)
        for name in ["coordinator", "w1", "w2", "agent"] {
            try Self.keygen(name, in: keys)
            if name != "coordinator" { try FileManager.default.copyItem(atPath: "\(keys)/\(name).pub", toPath: "\(allowed)/\(name).pub") }
        }
        let command = directory + "/samples.sh"
        try Self.writeCommand(to: command)
        let scenario = try ScenarioFixture.write(ScenarioFixture.cluster, in: directory)
        let endpoint = "tcp://127.0.0.1:\(Int.random(in: 20000..<40000))"
        let coordinator = try ZapfleetBinary.start(
            [
                "coordinator", "--scenario", scenario, "--bind", endpoint, "--expect-workers", "2", "--expect-agents", "1",
                "--key", keys + "/coordinator.key", "--allow-keys", allowed, "--heartbeat-interval", "300ms", "--out", directory + "/run"
            ],
            log: directory + "/coordinator.log")
        let workers = try ["w1", "w2"].map { name in
            try ZapfleetBinary.start(
                [
                    "worker", "--connect", endpoint, "--name", name, "--key", "\(keys)/\(name).key",
                    "--coordinator-key", keys + "/coordinator.pub"
                ], log: "\(directory)/\(name).log")
        }
        let valgrind = Process()
        valgrind.executableURL = URL(fileURLWithPath: "/usr/bin/valgrind")
        valgrind.arguments = [
            "--leak-check=full", "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
            Self.agent, "--connect", endpoint, "--name", "agent", "--key", keys + "/agent.key",
            "--coordinator-key", keys + "/coordinator.pub", "--", command
        ]
        let errors = Pipe()
        valgrind.standardError = errors
        valgrind.standardOutput = FileHandle.nullDevice
        try valgrind.run()
        defer { for process in workers + [coordinator, valgrind] where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let agentOutput = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        valgrind.waitUntilExit()
        coordinator.waitUntilExit()
        for worker in workers { worker.waitUntilExit() }

        #expect(valgrind.terminationStatus == 0, "agent or valgrind: \(agentOutput)")
        #expect(agentOutput.contains("ERROR SUMMARY: 0 errors"), "\(agentOutput)")
        #expect(agentOutput.contains("1010 sample(s) sent, 4 line(s) rejected"), "\(agentOutput.suffix(600))")
        let coordinatorLog = (try? String(contentsOfFile: directory + "/coordinator.log", encoding: .utf8)) ?? ""
        #expect(coordinator.terminationStatus == 0, "\(coordinatorLog)")

        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/run/report.json")))
        #expect(report.policies.map(\.policy) == ["sync", "async", "external"])
        let external = try #require(report.policies.first { $0.policy == "external" })
        #expect(external.kernels.contains("agent agent"))
        #expect(external.complete)
        for (operation, samples) in [("reset", Self.resetSamples), ("fast_zap", Self.fastZapSamples)] {
            var histogram = LatencyHistogram.makeLatency()
            for value in samples { _ = histogram.record(value) }
            #expect(external.operations[operation]?.measured == LatencySummary(histogram), "\(operation): exactly the agent's samples")
        }
        #expect(external.operations["fault"]?.measured.count == 0)
        // The simulated policies are untouched by the agent.
        #expect(report.policies.filter { $0.policy != "external" }.allSatisfy { $0.counters.sptesZapped == 8 << 20 })
        #expect(report.fleet?.keysRefused == 0)
    }

    @Test("an agent with another protocol version is refused and says why, exit 3")
    func versionMismatch() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.agent))
        let directory = TestPaths.temporaryDirectory()
        let endpoint = "tcp://127.0.0.1:\(Int.random(in: 20000..<40000))"
        let coordinator = try ZapfleetBinary.start(
            ["coordinator", "--bind", endpoint, "--wait", "5s", "--expect-agents", "1"],
            log: directory + "/coordinator.log")
        defer { if coordinator.isRunning { kill(coordinator.processIdentifier, SIGKILL) } }
        let (status, output) = try Self.runAgent(["--connect", endpoint, "--name", "old", "--protocol-version", "99", "--", "/bin/true"])
        #expect(status == 3)
        #expect(output.contains("protocol version 99 is not this coordinator's 2"), "\(output)")
        coordinator.waitUntilExit()
        #expect(coordinator.terminationStatus == 70, "no worker joined")
    }

    @Test("--max-samples and --protocol-version take whole numbers in range, or exit 64 naming the option and the range")
    func strictNumbers() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.agent))
        for (option, value) in [
            ("--max-samples", "-1"), ("--max-samples", "0"), ("--max-samples", "7x"), ("--max-samples", " 7"),
            ("--max-samples", "1e3"), ("--max-samples", "18446744073709551616"), ("--protocol-version", "4294967296"),
            ("--protocol-version", "-2"), ("--protocol-version", ""), ("--protocol-version", "0x2")
        ] {
            let (status, output) = try Self.runAgent(["--connect", "tcp://127.0.0.1:1", option, value, "--", "/bin/true"])
            #expect(status == 64, "\(option) '\(value)': \(output)")
            #expect(output.contains("\(option) '\(value)' must be a whole number from"), "\(option) '\(value)': \(output)")
        }
    }

    @Test(
        "SIGTERM to an agent whose command ignores SIGTERM: the command is killed after the grace period and the agent exits 130, not waiting for it"
    )
    func commandIgnoringTerm() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.agent))
        let directory = TestPaths.temporaryDirectory()
        let endpoint = "tcp://127.0.0.1:\(Int.random(in: 20000..<40000))"
        let scenario = try ScenarioFixture.write(ScenarioFixture.cluster, in: directory)
        let coordinator = try ZapfleetBinary.start(
            [
                "coordinator", "--scenario", scenario, "--bind", endpoint, "--expect-workers", "1",
                "--expect-agents", "1", "--wait", "20s", "--events", directory + "/events"
            ],
            log: directory + "/coordinator.log")
        let worker = try ZapfleetBinary.start(["worker", "--connect", endpoint, "--name", "w"], log: directory + "/w.log")
        defer { for process in [coordinator, worker] where process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        // The command prints one sample, then ignores SIGTERM for a minute; it writes its pid first.
        let command = directory + "/stubborn.sh"
        try "#!/bin/sh\necho $$ > \(directory)/command.pid\necho 1000\ntrap '' TERM\nexec sleep 60\n"
            .write(toFile: command, atomically: true, encoding: .utf8)
        chmod(command, 0o755)
        let agent = try Subprocess.start(
            Self.agent, ["--connect", endpoint, "--name", "stubborn", "--", command], log: directory + "/agent.log")
        defer { if agent.isRunning { kill(agent.processIdentifier, SIGKILL) } }
        try #require(TestPaths.waitFor("running", in: directory + "/agent.log", seconds: 60), "the agent got its job")
        try #require(TestPaths.waitFor("\n", in: directory + "/command.pid", seconds: 30))
        let commandPid = try #require(
            Int32(
                String(contentsOfFile: directory + "/command.pid", encoding: .utf8)
                    .trimmingCharacters(in: .whitespacesAndNewlines)))
        kill(agent.processIdentifier, SIGTERM)
        // Not a timing assertion: the command would hold the agent for 60 s; 30 s tells the two apart on any machine.
        let deadline = Date().addingTimeInterval(30)
        while agent.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.1) }
        #expect(!agent.isRunning, "the agent waited for a command that ignores SIGTERM")
        agent.waitUntilExit()
        #expect(agent.terminationStatus == 130)
        #expect(kill(commandPid, 0) != 0, "the command was killed")
        let log = try String(contentsOfFile: directory + "/agent.log", encoding: .utf8)
        #expect(log.contains("ignored SIGTERM"), "\(log)")
    }

    @Test("bad usage exits 64 and says how to call it; an unknown --operation is refused listing Proto/'s enum Operation")
    func usage() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.agent))
        let (status, output) = try Self.runAgent(["--connect", "tcp://127.0.0.1:1", "--operation", "nonsense", "--", "/bin/true"])
        #expect(status == 64)
        #expect(output.contains("--operation nonsense is not a report operation"))
        #expect(output.contains("(" + MeasuredOperation.allCases.map(\.name).joined(separator: ", ") + ")"), "\(output)")
        #expect(output.contains("usage: zapfleet-agent-c"))
    }
}
