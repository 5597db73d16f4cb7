import Foundation
import Testing
import ZapfleetTestSupport

/// Options that were taken and failed late, or failed unclearly: each is now refused before
/// anything runs, exit 64, with the option named and what to do.
@Suite("Hostile options", .serialized, .timeLimit(.minutes(5)))
struct HostileOptionsTests {
    static func zapfleet(_ arguments: [String], killAfter seconds: Double = 30) throws -> Subprocess.BoundedResult {
        try ZapfleetBinary.run(arguments, killAfter: seconds)
    }

    /// A run that was refused before it measured anything: exit 64, no table, the words given.
    static func expectRefusedBeforeRunning(_ result: Subprocess.BoundedResult, _ words: [String], _ line: String) {
        #expect(!result.timedOut && !result.signalled, "\(line): did not end by itself")
        #expect(result.status == 64, "\(line): exit \(result.status)\n\(result.err)")
        for word in words { #expect(result.err.contains(word), "\(line): '\(word)' not in: \(result.err)") }
        #expect(!result.out.contains("verdict"), "\(line): it ran before refusing")
        #expect(!result.err.contains("NSCocoaErrorDomain") && !result.err.contains("Error Domain"), "\(line): a raw Foundation error")
    }

    @Test(
        "outputs that cannot be written are refused before the run: --junit a directory, --out a file or on a read-only file system, --junit in a missing directory"
    )
    func outputsCheckedFirst() throws {
        let scratch = TestPaths.temporaryDirectory()
        let file = scratch + "/a-file"
        try "x".write(toFile: file, atomically: true, encoding: .utf8)
        let cases: [([String], [String])] = [
            (["run", "quick", "--junit", scratch], ["--junit", "is a directory"]),
            (["run", "quick", "--out", file], ["--out", "is a file"]),
            (["run", "quick", "--out", "/proc/zapfleet-run"], ["--out", "/proc/zapfleet-run"]),
            (["run", "quick", "--junit", scratch + "/missing/junit.xml"], ["--junit", "does not exist"]),
            (["coordinator", "--out", file, "--bind", "tcp://127.0.0.1:\(Int.random(in: 20_000..<40_000))"], ["--out", "is a file"]),
            (["coordinator", "--junit", "/proc/zapfleet.xml", "--bind", "tcp://127.0.0.1:\(Int.random(in: 20_000..<40_000))"], ["--junit"]),
            (["sweep", "--sizes", "2GiB", "--out", file], ["--out", "is a file"])
        ]
        for (arguments, words) in cases {
            Self.expectRefusedBeforeRunning(try Self.zapfleet(arguments), words, arguments.joined(separator: " "))
        }
    }

    @Test("endpoints libzmq would misread are refused: a port past 65535, no port, no host, another scheme")
    func endpoints() throws {
        for endpoint in [
            "tcp://127.0.0.1:99999", "tcp://127.0.0.1:-1", "tcp://127.0.0.1", "tcp://:5555", "udp://127.0.0.1:5555", "127.0.0.1:5555"
        ] {
            Self.expectRefusedBeforeRunning(
                try Self.zapfleet(["coordinator", "--bind", endpoint]), ["--bind", "PORT"], "--bind \(endpoint)")
            Self.expectRefusedBeforeRunning(try Self.zapfleet(["worker", "--connect", endpoint]), ["--connect"], "--connect \(endpoint)")
        }
        // A worker cannot connect to "any port".
        Self.expectRefusedBeforeRunning(try Self.zapfleet(["worker", "--connect", "tcp://127.0.0.1:0"]), ["--connect"], "--connect port 0")
    }

    @Test("worker names and budgets the coordinator would refuse are refused by the worker first")
    func workerNamesAndBudgets() throws {
        let connect = ["worker", "--connect", "tcp://127.0.0.1:9"]
        for (arguments, words) in [
            (connect + ["--name", ""], ["--name", "empty"]),
            (connect + ["--name", String(repeating: "w", count: 300)], ["--name", "at most 128 bytes"]),
            (connect + ["--name", "tab\there"], ["--name", "control"]),
            (connect + ["--memory", "0B"], ["--memory"]),
            (connect + ["--memory", "2PiB"], ["--memory"]),
            (connect + ["--slots", "5000000000"], ["--slots"])
        ] {
            Self.expectRefusedBeforeRunning(try Self.zapfleet(arguments), words, arguments.joined(separator: " "))
        }
    }

    @Test(
        "key files: a .pub given as the secret key, a secret key given as the public key, and a binary file are each named for what they are"
    )
    func keyFiles() throws {
        let scratch = TestPaths.temporaryDirectory()
        let made = try ZapfleetBinary.run(["keygen", "w1", "--dir", scratch])
        try #require(made.status == 0, "\(made.err)")
        _ = try ZapfleetBinary.run(["keygen", "coordinator", "--dir", scratch])
        let publicCopy = scratch + "/copy.pub"
        try FileManager.default.copyItem(atPath: scratch + "/w1.pub", toPath: publicCopy)
        chmod(publicCopy, 0o600)
        let binary = scratch + "/binary.key"
        _ = FileManager.default.createFile(
            atPath: binary, contents: Data((0..<200).map { UInt8($0) }), attributes: [.posixPermissions: 0o600])
        let connect = ["worker", "--connect", "tcp://127.0.0.1:9"]
        for (arguments, words) in [
            (connect + ["--key", publicCopy, "--coordinator-key", scratch + "/coordinator.pub"], ["public key file", "secret key"]),
            (
                connect + ["--key", scratch + "/w1.key", "--coordinator-key", scratch + "/coordinator.key"],
                ["secret key file", "public key"]
            ),
            (connect + ["--key", binary, "--coordinator-key", scratch + "/coordinator.pub"], ["not a secret key file", "keygen"])
        ] {
            let result = try Self.zapfleet(arguments, killAfter: 10)
            #expect(result.status == 64, "\(arguments): exit \(result.status), \(result.err)")
            for word in words { #expect(result.err.contains(word), "\(arguments): '\(word)' not in \(result.err)") }
            #expect(!result.err.contains("check the path and its permissions"), "a readable file is not a permissions problem")
        }
    }

    @Test("flag names a person would type: --memory-gib, not a generated --memory-gi-b")
    func flagNames() throws {
        let help = try ZapfleetBinary.run(["engine-check", "--help"])
        #expect(help.out.contains("--memory-gib"))
        #expect(!help.out.contains("gi-b"))
        let dump = try ZapfleetBinary.run(["--experimental-dump-help"])
        #expect(!dump.out.contains("gi-b"), "no generated flag name anywhere")
    }
}
