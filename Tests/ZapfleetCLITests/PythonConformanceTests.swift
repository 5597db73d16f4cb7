import Foundation
import Histogram
import Testing
import ZapfleetTestSupport
import ZapRun

/// A second implementation of the worker side, written from the protocol contract alone (the
/// README's "Wire protocol" and `Proto/`), in Python with pyzmq and code that `protoc` generates
/// from `Proto/` at test time; and HdrHistogram's own Python log reader on `shards.hlog`.
@Suite("Protocol contract: a Python worker and HdrHistogram's log reader", .serialized, .timeLimit(.minutes(5)))
struct PythonConformanceTests {
    static let root = TestPaths.packageRoot.path
    static let python = root + "/.build-python/bin/python"

    /// `zapfleet_pb2.py`, generated from `Proto/` into a fresh directory.
    static func generatePythonProtocol() throws -> String {
        let directory = TestPaths.temporaryDirectory()
        let protoc = try Subprocess.run("/usr/bin/protoc", ["--python_out=\(directory)", "-I\(root)/Proto", "\(root)/Proto/zapfleet.proto"])
        try #require(protoc.status == 0, "protoc: \(protoc.err)")
        return directory
    }

    static func runPython(_ script: String, _ arguments: [String], path: String) throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["PYTHONPATH=\(path)", python, script] + arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self), String(decoding: errors, as: UTF8.self))
    }

    struct LogRead: Decodable {
        struct Interval: Decodable {
            var tag: String?
            var start: Double
            var count: UInt64
            var buckets: [[UInt64]]
        }
        var start_time: Double
        var intervals: [Interval]
    }

    @Test(
        "a Python worker joins a real coordinator beside a Swift worker: its known samples reach report.json and shards.hlog exactly, and HdrHistogram's Python reader reads every interval of shards.hlog"
    )
    func pythonWorkerBesideSwiftWorker() throws {
        try #require(
            FileManager.default.isExecutableFile(atPath: Self.python),
            "\(Self.python) is missing: scripts/ensure-dependencies --for-tests installs it (./test does)")
        let generated = try Self.generatePythonProtocol()
        let directory = TestPaths.temporaryDirectory()
        let scenario = directory + "/small.yaml"
        try """
        name: conformance
        vm: {memory: 16GiB, memslot: 2GiB}
        workload: {vcpus: 1}
        timeline: [populate, reset_vcpus]
        policies: [sync, async]

        """.write(toFile: scenario, atomically: true, encoding: .utf8)
        let endpoint = "tcp://127.0.0.1:\(Int.random(in: 20000..<40000))"
        let coordinator = try ZapfleetBinary.start(
            [
                "coordinator", "--scenario", scenario, "--bind", endpoint, "--expect-workers", "2", "--shard-size", "2GiB",
                "--heartbeat-interval", "300ms", "--liveness", "20", "--out", directory + "/run"
            ],
            log: directory + "/coordinator.log")
        let swiftWorker = try ZapfleetBinary.start(["worker", "--connect", endpoint, "--name", "swift1"], log: directory + "/swift1.log")
        let recorded = directory + "/python-samples.json"
        let pythonWorker = Process()
        pythonWorker.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        pythonWorker.arguments = [
            "PYTHONPATH=\(generated)", Self.python, Self.root + "/clients/python/conformance_worker.py",
            "--connect", endpoint, "--name", "py1", "--record", recorded
        ]
        let pythonLog = directory + "/py1.log"
        _ = FileManager.default.createFile(atPath: pythonLog, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: pythonLog))
        pythonWorker.standardOutput = handle
        pythonWorker.standardError = handle
        try pythonWorker.run()
        defer {
            for process in [coordinator, swiftWorker, pythonWorker] where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        coordinator.waitUntilExit()
        swiftWorker.waitUntilExit()
        pythonWorker.waitUntilExit()
        let coordinatorLog = (try? String(contentsOfFile: directory + "/coordinator.log", encoding: .utf8)) ?? ""
        let pythonOutput = (try? String(contentsOfFile: pythonLog, encoding: .utf8)) ?? ""
        try #require(coordinator.terminationStatus == 0, "\(coordinatorLog.suffix(2000))")
        #expect(pythonWorker.terminationStatus == 0, "\(pythonOutput)")

        // The report names the Python worker for the shards it answered, and each answer's samples
        // are exactly what it recorded, as the interval log carries them.
        let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/run/report.json")))
        let fleet = try #require(report.fleet)
        let pythonShards = fleet.shards.filter { $0.worker == "py1" }.map(\.id)
        #expect(!pythonShards.isEmpty, "the Python worker answered no shard: \(coordinatorLog.suffix(1500))")
        #expect(fleet.shards.count == 8)
        let sent = try JSONDecoder().decode([String: [String: [UInt64]]].self, from: Data(contentsOf: URL(fileURLWithPath: recorded)))

        let read = try Self.runPython(Self.root + "/clients/python/read_hlog.py", [directory + "/run/shards.hlog"], path: generated)
        try #require(read.status == 0, "read_hlog: \(read.err)")
        let log = try JSONDecoder().decode(LogRead.self, from: Data(read.out.utf8))
        let hlog = try String(contentsOfFile: directory + "/run/shards.hlog", encoding: .utf8)
        let dataLines = hlog.split(separator: "\n").filter { $0.hasPrefix("Tag=") }
        #expect(log.intervals.count == dataLines.count, "HdrHistogram's reader read \(log.intervals.count) of \(dataLines.count) intervals")
        #expect(log.intervals.allSatisfy { $0.start >= 0 && $0.start < 600 }, "intervals start within the run, after StartTime")
        let started = try #require(ISO8601DateFormatter().date(from: report.startedAt))
        #expect(abs(log.start_time - started.timeIntervalSince1970) < 5, "StartTime is the run's start")

        for policy in ["sync", "async"] {
            // Every interval of an operation adds up to the report's total for it: the merge is exact.
            let operations = Set(
                log.intervals.compactMap { $0.tag }.filter { $0.hasPrefix(policy + ".") }.map { String($0.dropFirst(policy.count + 1)) })
            #expect(operations.isSuperset(of: ["reset", "populate"]), "\(operations)")
            for operation in operations {
                let total = log.intervals.filter { $0.tag == "\(policy).\(operation)" }.reduce(0) { $0 + $1.count }
                let reported = report.policies.first { $0.policy == policy }?.operations[operation]?.measured.count ?? 0
                #expect(total == reported, "\(policy).\(operation): intervals hold \(total), the report \(reported)")
            }
            // Each Python shard's interval for this policy is exactly the samples it sent.
            let intervals = log.intervals.filter { $0.tag == "\(policy).reset" }
            for shard in pythonShards {
                let values = try #require(sent[String(shard)]?[policy], "shard \(shard) \(policy)")
                var histogram = LatencyHistogram.makeLatency()
                for value in values { _ = histogram.record(value) }
                let expected = histogram.recordedValues().map { [UInt64($0.value), UInt64($0.count)] }
                #expect(
                    intervals.contains { $0.buckets == expected },
                    "shard \(shard) \(policy): \(expected) not among \(intervals.map(\.buckets))")
            }
        }
    }
}
