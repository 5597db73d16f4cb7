import Foundation
import Testing
import ZapfleetTestSupport

/// Every numeric option of every command, given values a script or a typo produces: each is
/// refused with exit 64 and a message that names the option, or taken and run; never a trap.
///
/// The options come from the binary's own `--experimental-dump-help`, so a new option is fuzzed
/// without anyone adding it here; only options that take names, paths or endpoints are skipped.
@Suite("Extreme option values", .serialized, .timeLimit(.minutes(20)))
struct OptionFuzzTests {

    /// Options whose values are not numbers: names, paths, endpoints, lists of names.
    static let notNumeric: Set<String> = [
        "policy", "inject", "out", "junit", "show", "scenario", "resume", "bind", "key", "allow-keys",
        "connect", "name", "coordinator-key", "dir", "matrix",
        // Paths: fuzzed values would be files written into the working tree.
        "events", "history", "http-token-file",
        // An address: a fuzzed port would serve HTTP for the linger.
        "http",
        // The history's labels and metric names.
        "label", "where", "metric", "by"
    ]

    static let extremes = [
        "0", "-1", "-0", "2147483648", "4294967296", "5000000000", "9223372036854775808", "18446744073709551616",
        "1e308", "-1e308", "1e-300", "nan", "inf", "0x10", "1e12s", "1e300s", "10000000h", "5000000s", "-5ms",
        "nanms", "0B", "1e308TiB", "16EiB", ""
    ]

    /// (command path, option) for every option that takes a value, read from the binary.
    static func numericOptions() throws -> [(command: [String], option: String)] {
        let dump = try ZapfleetBinary.run(["--experimental-dump-help"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(dump.out.utf8)) as? [String: Any])
        var found: [(command: [String], option: String)] = []
        func walk(_ command: [String: Any], path: [String]) {
            for argument in command["arguments"] as? [[String: Any]] ?? [] where argument["kind"] as? String == "option" {
                let names = (argument["names"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
                if let long = names.first(where: { $0.count > 1 }), !notNumeric.contains(long), long != "help" {
                    found.append((path, long))
                }
            }
            for sub in command["subcommands"] as? [[String: Any]] ?? [] {
                walk(sub, path: path + [sub["commandName"] as? String ?? "?"])
            }
        }
        walk(json["command"] as? [String: Any] ?? [:], path: [])
        return found
    }

    /// Arguments that make a command cheap and self-contained when the fuzzed value is accepted.
    static func baseArguments(_ command: String, scratch: String, report: String) -> [String] {
        let tiny = scratch + "/tiny.yaml"
        switch command {
        case "run": return [tiny, "--quiet", "--out", scratch + "/run"]
        case "sweep": return ["--scenario", tiny, "--sizes", "2GiB", "--out", scratch + "/sweep", "--wait", "2s"]
        case "coordinator":
            return [
                "--scenario", tiny, "--bind", "tcp://127.0.0.1:\(Int.random(in: 20_000..<40_000))", "--wait", "1s",
                "--out", scratch + "/fleet"
            ]
        case "worker": return ["--connect", "tcp://127.0.0.1:9"]
        case "engine-check": return ["--seeds", "1", "--operations", "10", "--fast-zaps", "1", "--memory-gib", "1"]
        case "compare": return [report, report]
        case "history": return [scratch + "/history.db"]
        default: return []
        }
    }

    /// `base` without the pair (or the positional) that sets `option` itself.
    static func replacing(_ option: String, in base: [String]) -> [String] {
        var result: [String] = []
        var index = 0
        while index < base.count {
            if base[index] == "--" + option { index += 2; continue }
            result.append(base[index])
            index += 1
        }
        return result
    }

    @Test(
        "every numeric option, given 0, negatives, 2^31…2^64, 1e308, nan, inf, huge durations and sizes: exit 64 naming the option, or a run; never a signal"
    )
    func extremeValuesNeverTrap() throws {
        let scratch = TestPaths.temporaryDirectory()
        try """
        name: tiny
        vm:
          memory: 2GiB
          memslot: 2GiB
        workload:
          vcpus: 1
        timeline:
          - populate
          - teardown
        policies: [async]
        """.write(toFile: scratch + "/tiny.yaml", atomically: true, encoding: .utf8)
        let seedRun = try ZapfleetBinary.run(["run", scratch + "/tiny.yaml", "--quiet", "--out", scratch + "/seed"])
        #expect(seedRun.status == 0, "\(seedRun.err)")
        let report = scratch + "/seed/report.json"

        let options = try Self.numericOptions()
        #expect(options.count >= 30, "the dump lists the options: \(options.map(\.option))")
        var problems: [String] = []
        var refused = 0, accepted = 0
        for (command, option) in options {
            for value in Self.extremes {
                let base = Self.replacing(option, in: Self.baseArguments(command.first ?? "", scratch: scratch, report: report))
                let arguments = command + base + ["--\(option)", value]
                let result = try ZapfleetBinary.run(arguments, killAfter: 10)
                let line = "zapfleet \(command.joined(separator: " ")) --\(option) '\(value)'"
                if result.signalled {
                    problems.append("\(line): killed by signal \(result.status)\n\(result.err.suffix(300))")
                } else if result.timedOut {
                    accepted += 1
                } else if result.status == 64 {
                    refused += 1
                    if !result.err.contains("--\(option)") {
                        problems.append("\(line): exit 64 without naming --\(option): \(result.err.prefix(300))")
                    }
                } else if [0, 1, 2, 3, 4].contains(result.status) {
                    accepted += 1
                } else if result.status == 70, ["coordinator", "sweep"].contains(command.first ?? ""),
                    (result.out + result.err).contains("no worker")
                {
                    accepted += 1  // taken, and the fleet run failed as it should with no worker: exit 70
                } else {
                    problems.append("\(line): exit \(result.status)\n\(result.err.suffix(300))")
                }
            }
        }
        #expect(problems.isEmpty, Comment(rawValue: "\(problems.count) problems:\n" + problems.joined(separator: "\n")))
        #expect(refused > accepted, "most extreme values are refused (\(refused) refused, \(accepted) taken)")
    }
}
