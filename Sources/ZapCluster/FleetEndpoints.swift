import Logging
import ZapRun
import ZapScenario
import ZeroMQ

/// A fleet endpoint could not be set up or used: libzmq refused the address, the port or the keys.
/// The CLI reports it as bad input; it never sees libzmq itself.
public struct FleetTransportError: Error, CustomStringConvertible {
    /// libzmq's error, in words.
    public let description: String
}

extension Coordinator {
    /// Runs a coordinator for `scenario` on a ZeroMQ context of its own, until the run ends.
    /// - Throws: ``FleetTransportError`` when the transport fails (e.g. `bind` is taken or invalid).
    public static func run(
        scenario: Scenario, configuration: CoordinatorConfiguration, logger: Logger,
        cancellation: CancellationFlag = CancellationFlag()
    ) throws -> FleetRunOutcome {
        do {
            return try Coordinator(
                scenario: scenario, configuration: configuration, context: try ZeroMQContext(), logger: logger,
                cancellation: cancellation
            ).run()
        } catch let error as ZeroMQError {
            throw FleetTransportError(description: "\(error)")
        }
    }
}

extension Worker {
    /// Runs a worker on a ZeroMQ context of its own, until it is stopped or leaves.
    /// - Throws: ``FleetTransportError`` when the transport fails (e.g. `connect` is invalid).
    public static func run(
        configuration: WorkerConfiguration, logger: Logger, cancellation: CancellationFlag = CancellationFlag()
    ) throws -> WorkerExit {
        do {
            return try Worker(configuration: configuration, context: try ZeroMQContext(), logger: logger, cancellation: cancellation).run()
        } catch let error as ZeroMQError {
            throw FleetTransportError(description: "\(error)")
        }
    }
}

extension KeyFiles {
    /// Whether this libzmq can encrypt and authenticate (CURVE, which Debian's libzmq5 has through libsodium).
    public static var curveAvailable: Bool { ZeroMQ.curveAvailable }
}
