import Foundation
import Testing
import ZapfleetTestSupport
import ZapRun
import ZapEngine

/// `zapfleet sweep`: a matrix of runs, a CSV and the scaling plots.
@Suite("zapfleet sweep", .serialized, .timeLimit(.minutes(5)))
struct SweepCommandTests {
    static func csvRows(_ path: String) throws -> [[String: String]] {
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        }
        let header = try #require(lines.first)
        return lines.dropFirst().map { Dictionary(uniqueKeysWithValues: zip(header, $0)) }
    }

    @Test(
        "a 2 × 2 sweep writes a report per cell, sweep.csv and sweep.html; sync's projected reset grows with the size, async's stays zero")
    func sweep() throws {
        let directory = TestPaths.temporaryDirectory()
        let result = try ZapfleetBinary.run(["sweep", "--sizes", "4GiB,16GiB", "--vcpus", "1", "--workers", "1,2", "--out", directory])
        #expect(result.status == 0, "\(result.err)")
        let cells = ["4GiB-1vcpu-1w", "4GiB-1vcpu-2w", "16GiB-1vcpu-1w", "16GiB-1vcpu-2w"]
        for cell in cells {
            #expect(FileManager.default.fileExists(atPath: "\(directory)/\(cell)/report.json"))
            #expect(FileManager.default.fileExists(atPath: "\(directory)/\(cell)/report.html"))
        }
        let rows = try Self.csvRows(directory + "/sweep.csv")
        #expect(Set(rows.map { $0["cell"] ?? "" }) == Set(cells))
        #expect(rows.allSatisfy { $0["exit_code"] == "0" && $0.count == 15 })
        func projectedReset(_ cell: String, _ policy: String) -> Double? {
            rows.first { $0["cell"] == cell && $0["policy"] == policy && $0["operation"] == "reset" }.flatMap { $0["projected_max_ns"] }
                .flatMap(Double.init)
        }
        // The projection is SPTEs zapped inline × 52 ns: deterministic, unlike the measured times.
        let small = try #require(projectedReset("4GiB-1vcpu-1w", "sync")), large = try #require(projectedReset("16GiB-1vcpu-1w", "sync"))
        #expect(large / small > 3.5 && large / small < 4.5, "four times the memory, four times the inline zap: \(small) → \(large)")
        #expect(projectedReset("16GiB-1vcpu-1w", "async") == 0)
        // Two workers split the memory: each cell's report shows two shards.
        let split = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: directory + "/16GiB-1vcpu-2w/report.json")))
        #expect(split.fleet?.shards.count == 2)
        let html = try String(contentsOfFile: directory + "/sweep.html", encoding: .utf8)
        #expect(html.contains("reset p99") && html.contains("<path d=\"M") && html.contains("SPTEs zapped per second"))
    }

    @Test("a sweep file with an unknown key is refused with the file and the key, exit 64")
    func badMatrix() throws {
        let directory = TestPaths.temporaryDirectory()
        let file = directory + "/sweep.yaml"
        try "sizes: [4GiB]\nworkrs: [2]\n".write(toFile: file, atomically: true, encoding: .utf8)
        let result = try ZapfleetBinary.run(["sweep", "--matrix", file, "--out", directory + "/out"])
        #expect(result.status == 64)
        #expect(result.err.contains(file) && result.err.contains("workrs"), "\(result.err)")
    }

    @Test("a sweep on a fleet: each cell is a coordinator run that uses as many of the connected workers as the cell asks for")
    func sweepOnFleet() throws {
        let directory = TestPaths.temporaryDirectory()
        let endpoint = "tcp://127.0.0.1:\(Int.random(in: 20000..<40000))"
        let workers = try ["a", "b"].map { name in
            try ZapfleetBinary.start(
                ["worker", "--connect", endpoint, "--name", name, "--keep-running", "--memory", "2GiB"],
                log: "\(directory)/\(name).log")
        }
        defer { for worker in workers where worker.isRunning { kill(worker.processIdentifier, SIGKILL) } }
        let result = try ZapfleetBinary.run([
            "sweep", "--sizes", "4GiB,8GiB", "--vcpus", "1", "--workers", "1,2",
            "--bind", endpoint, "--wait", "30s", "--out", directory + "/out"
        ])
        #expect(result.status == 0, "\(result.err)")
        for cell in ["4GiB-1vcpu-1w", "4GiB-1vcpu-2w", "8GiB-1vcpu-1w", "8GiB-1vcpu-2w"] {
            let report = try ReportFiles.decode(Data(contentsOf: URL(fileURLWithPath: "\(directory)/out/\(cell)/report.json")))
            let fleet = try #require(report.fleet)
            let used = Set(fleet.shards.map(\.worker))
            #expect(used.count == (cell.hasSuffix("-2w") ? 2 : 1), "\(cell): \(used)")
            #expect(used.isSubset(of: ["a", "b"]))
            #expect(report.policies.allSatisfy { $0.counters.sptesZapped > 0 })
        }
        // The workers stayed for every cell.
        let running = workers.map { $0.isRunning }
        #expect(running == [true, true])
    }
}
