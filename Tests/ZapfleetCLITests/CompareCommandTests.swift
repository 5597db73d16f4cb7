import Foundation
import Testing
import ZapfleetTestSupport

/// `zapfleet compare` as a nightly job uses it.
@Suite("zapfleet compare", .serialized, .timeLimit(.minutes(5)))
struct CompareCommandTests {
    /// A real report of a small run, and a path to write altered copies next to it.
    static func baselineReport() throws -> (path: String, json: [String: Any], directory: String) {
        let directory = TestPaths.temporaryDirectory()
        try """
        name: compare
        vm: {memory: 4GiB}
        workload: {vcpus: 2}
        timeline: [populate, reset_vcpus, {delete_memslots: {fraction: 0.5}}]
        policies: [sync, async]
        """.write(toFile: directory + "/compare.yaml", atomically: true, encoding: .utf8)
        let run = try ZapfleetBinary.run(["run", directory + "/compare.yaml", "--quiet", "--out", directory])
        #expect(run.status == 0, "\(run.err)")
        let path = directory + "/report.json"
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        return (path, json, directory)
    }

    static func write(_ json: [String: Any], to path: String) throws {
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
    }

    @Test("a report compared with itself has no regression; a tripled p99 is flagged and exits 1; other schemas are refused")
    func compare() throws {
        let (path, json, directory) = try Self.baselineReport()
        let same = try ZapfleetBinary.run(["compare", path, path])
        #expect(same.status == 0, "\(same.out)\(same.err)")
        #expect(same.out.contains("0 regression(s)"))

        // Triple async's reset p99 (and everything above it, to stay a valid distribution).
        var slower = json
        var policies = slower["policies"] as! [[String: Any]]
        let index = policies.firstIndex { $0["policy"] as? String == "async" }!
        var operations = policies[index]["operations"] as! [String: Any]
        var reset = operations["reset"] as! [String: Any]
        var measured = reset["measured"] as! [String: Any]
        for key in ["p99_ns", "p999_ns", "p9999_ns", "max_ns"] {
            measured[key] = ((measured[key] as! NSNumber).uint64Value + 5_000_000) * 3
        }
        reset["measured"] = measured
        operations["reset"] = reset
        policies[index]["operations"] = operations
        slower["policies"] = policies
        try Self.write(slower, to: directory + "/slower.json")
        let regressed = try ZapfleetBinary.run(["compare", path, directory + "/slower.json", "--tolerance", "10%"])
        #expect(regressed.status == 1, "\(regressed.out)\(regressed.err)")
        #expect(regressed.out.contains("async.reset.p99 "))
        #expect(regressed.out.contains("REGRESSION"))
        // Within a generous tolerance it passes.
        let tolerated = try ZapfleetBinary.run(["compare", path, directory + "/slower.json", "--tolerance", "100000%"])
        #expect(tolerated.status == 0)

        var future = json
        future["schema_version"] = 99
        try Self.write(future, to: directory + "/future.json")
        let refused = try ZapfleetBinary.run(["compare", path, directory + "/future.json"])
        #expect(refused.status == 64)
        #expect(refused.err.contains("schema"))

        let garbage = try ZapfleetBinary.run(["compare", path, directory + "/compare.yaml"])
        #expect(garbage.status == 64)
    }
}
