import Foundation
import ZapEngine
import ZapRun
import ZapScenario
import ZapPlatform

/// Finds and runs `zapfleet-kvm-probe` (clients/c) for `run --kvm`: the scenario's shape scaled to
/// the host's allowance, its JSON decoded into the report's `kvm:HOST` column.
enum KernelProbeRunner {
    /// The probe: `$ZAPFLEET_KVM_PROBE`, beside this executable, in the source tree's
    /// `clients/c/build/` (from `.build/debug/`), or on `PATH`.
    static func locate() -> String? {
        if let path = ProcessInfo.processInfo.environment["ZAPFLEET_KVM_PROBE"] { return path }
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        var candidates = [executable.appendingPathComponent("zapfleet-kvm-probe").path]
        // A build in a source tree (.build/debug, .build/x86_64-unknown-linux-gnu/release, …):
        // the probe is in the tree's clients/c/build/.
        var directory = executable
        for _ in 0..<4 {
            directory = directory.deletingLastPathComponent()
            candidates.append(directory.appendingPathComponent("clients/c/build/zapfleet-kvm-probe").path)
        }
        candidates += (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map { "\($0)/zapfleet-kvm-probe" }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// The probe's arguments for `scenario` scaled to `bytes` of guest memory: as many memslots
    /// as the scenario has (at most 512, each a multiple of 2 MiB), as many vCPUs (at most 64).
    static func arguments(for scenario: Scenario, bytes: UInt64, json: String) -> [String] {
        let twoMiB: UInt64 = 2 << 20
        let slots = max(1, min(UInt64(scenario.memslotCount), 512, bytes / twoMiB))
        let memslot = max(twoMiB, (bytes / slots) / twoMiB * twoMiB)
        let memory = memslot * slots
        let vcpus = max(1, min(UInt64(scenario.workload.vcpus), 64, memory / twoMiB))
        return ["--memory", "\(memory)B", "--memslot", "\(memslot)B", "--vcpus", "\(vcpus)", "--json", json]
    }

    /// A probe that could not run, in words, and whether it was the host's doing (no KVM, not
    /// enough memory: exit 64) or the probe's (exit 70).
    struct Failure: Error, CustomStringConvertible {
        var description: String
        var badInput: Bool
    }

    /// Runs the probe and returns its column and result.
    static func run(scenario: Scenario, bytes: UInt64) throws(Failure) -> (column: ExternalMeasurement, result: KernelProbeResult) {
        guard let probe = locate() else {
            throw Failure(
                description: "--kvm needs zapfleet-kvm-probe: build it with `make -C clients/c`, or name it in $ZAPFLEET_KVM_PROBE",
                badInput: true)
        }
        let json = NSTemporaryDirectory() + "zapfleet-kvm-probe-\(getpid()).json"
        defer { try? FileManager.default.removeItem(atPath: json) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: probe)
        process.arguments = arguments(for: scenario, bytes: bytes, json: json)
        let errors = Pipe()
        process.standardOutput = FileHandle.nullDevice  // the samples are in the JSON too
        process.standardError = errors
        let start = monotonicNanoseconds()
        do { try process.run() } catch {
            throw Failure(description: "cannot start \(probe): \(error)", badInput: true)
        }
        let said = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let wall = monotonicNanoseconds() - start
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            let status = process.terminationStatus
            throw Failure(
                description: "the KVM probe failed (exit \(status)): \(said.trimmingCharacters(in: .whitespacesAndNewlines))",
                badInput: [64, 69].contains(status))
        }
        do {
            let result = try KernelProbeResult.decode(Data(contentsOf: URL(fileURLWithPath: json)))
            return (result.measurement(wallNanoseconds: wall, exitStatus: 0), result)
        } catch {
            throw Failure(description: "the KVM probe's JSON does not decode: \(error)", badInput: false)
        }
    }
}
