import ArgumentParser
import ZapPlatform
import Foundation
import Logging
import ZapCluster
import ZapRun
import ZapScenario

/// `zapfleet worker`: connects to a coordinator and runs the shards it hands out.
struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Connect to a coordinator and run the shards it hands out.",
        discussion: """
            Says hello (protocol and build version, host, cores, memory budget), runs one shard at a time \
            with the engine (its own VM slice, roots and workqueue, every policy of the scenario), reports \
            progress and results, and heartbeats. When the coordinator falls silent it reconnects with \
            backoff; a result is kept until the coordinator acknowledges it. A shard whose page tables \
            would exceed --memory is refused, not run.

            With --key and --coordinator-key the connection is CurveZMQ: encrypted, and both sides \
            authenticated (see `zapfleet keygen`).

            Exit codes: 0 the coordinator ended the run; 3 refused by the coordinator (a protocol \
            version mismatch, or a key not on its allow-list); 64 bad input; 130 interrupted.

            Example:
              zapfleet worker --connect tcp://coordinator.example:5555 --memory 16GiB \\
                --key keys/w1.key --coordinator-key keys/coordinator.pub
            """
    )

    @Option(help: "The coordinator's endpoint, e.g. tcp://10.0.0.1:5555.")
    var connect: String

    @Option(help: "This worker's name, unique in the run (default: host-pid).")
    var name: String?

    @Option(help: "Page-table memory this worker may use, e.g. 16GiB (default: 80% of available memory).")
    var memory: String?

    @Option(help: "The most memslots this worker takes in one shard (default: as --memory allows).")
    var slots: Int?

    @Flag(help: "Stay connected after a run ends, for the next one.")
    var keepRunning = false

    @Option(
        help: ArgumentHelp(
            "This worker's CURVE secret key file (from `zapfleet keygen`); its .pub must be on the coordinator's allow-list.",
            valueName: "file"))
    var key: String?

    @Option(
        help: ArgumentHelp(
            "The coordinator's CURVE public key file: only a coordinator holding the matching secret key is trusted.", valueName: "file"))
    var coordinatorKey: String?

    func validate() throws {
        if let memory {
            guard let bytes = Quantities.parseSize(memory) else { throw ValidationError("--memory '\(memory)' is not a size, e.g. 16GiB") }
            // The coordinator refuses a budget of 2^50 or more (README, "Wire protocol"); below
            // 1 MiB the engine cannot hold one VM's page tables.
            guard bytes >= 1 << 20 && bytes < 1 << 50 else {
                throw ValidationError("--memory must be at least 1MiB and below 1PiB, got \(memory)")
            }
        }
        if let slots, !(1...1_000_000).contains(slots) { throw ValidationError("--slots must be between 1 and 1000000, got \(slots)") }
        if let name, let problem = Self.nameProblem(name) { throw ValidationError("--name \(problem)") }
        try EndpointCheck.validate(connect, option: "--connect")
        guard (key == nil) == (coordinatorKey == nil) else {
            throw ValidationError("--key and --coordinator-key go together: this worker's secret key, and the coordinator's public key")
        }
    }

    @OptionGroup var eventsOption: EventsOption

    func run() throws {
        // A job's log (a file, a pipe) gets each line as it is printed, the verdict included.
        StandardOutput.lineBuffered()
        let logger = Logger(label: "zapfleet.worker")
        let events = try eventsOption.open()
        var security: WorkerSecurity?
        if let key, let coordinatorKey {
            do {
                security = WorkerSecurity(keys: try KeyFiles.readKeyPair(key), coordinatorKey: try KeyFiles.readPublicKey(coordinatorKey))
            } catch let error as FleetSecurityError {
                printError(error.description)
                throw ZapfleetExitCode.badInput
            }
        }
        let cancellation = CancellationFlag()
        let interrupt = InterruptHandler { cancellation.cancel() }
        defer { interrupt.cancel() }
        var configuration = WorkerConfiguration(
            connect: connect, name: name ?? Self.defaultName,
            memoryBudgetBytes: memory.flatMap(Quantities.parseSize) ?? SystemMemory.defaultLimit,
            largestShardSlots: slots ?? 0, buildVersion: ZapfleetVersion.current, exitOnStop: !keepRunning,
            security: security)
        configuration.events = events
        let exit: WorkerExit
        do {
            exit = try Worker.run(configuration: configuration, logger: logger, cancellation: cancellation)
        } catch let error as FleetTransportError {
            printError("cannot connect: \(error); check --connect")
            throw ZapfleetExitCode.badInput
        }
        switch exit {
        case .stopped(let reason):
            logger.info("done: \(reason)")
        case .refused(let reason):
            printError("refused by the coordinator: \(reason)")
            throw ZapfleetExitCode.refused
        case .cancelled:
            throw ZapfleetExitCode.interrupted
        }
    }
}

extension WorkerCommand {
    /// `HOST-PID`, the host name cut so that the name stays within the coordinator's limit.
    static var defaultName: String {
        let suffix = "-\(getpid())"
        let host = ProcessInfo.processInfo.hostName.filter { !$0.isNewline && $0.isASCII && $0 != "\0" }
        return String(host.prefix(PeerIntroduction.maximumNameBytes - suffix.utf8.count)) + suffix
    }

    /// Why the coordinator would refuse `name`, or nil.
    static func nameProblem(_ name: String) -> String? {
        if name.isEmpty { return "must not be empty" }
        if name.utf8.count > PeerIntroduction.maximumNameBytes {
            return "must be at most \(PeerIntroduction.maximumNameBytes) bytes, got \(name.utf8.count)"
        }
        if name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return "must not hold control characters"
        }
        return nil
    }
}
