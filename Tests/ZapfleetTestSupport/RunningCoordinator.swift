import Logging
import ZapCluster
import ZapPlatform
import ZapScenario
import ZeroMQ

/// A logger that drops everything: the tests read outcomes and events, not log sentences.
public let silentLogger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// A `Coordinator` running on a thread of its own in the test process.
public final class RunningCoordinator: @unchecked Sendable {
    /// The coordinator.
    public let coordinator: Coordinator
    private let outcome = ThreadResult<Result<FleetRunOutcome, Error>>()
    private var thread: OSThread?

    /// Starts `scenario` under `configuration`.
    public init(scenario: Scenario, configuration: CoordinatorConfiguration, context: ZeroMQContext) {
        coordinator = Coordinator(scenario: scenario, configuration: configuration, context: context, logger: silentLogger)
        thread = OSThread(name: "coordinator") { [coordinator, outcome] in
            outcome.value = Result { try coordinator.run() }
        }
    }

    /// Starts the scenario `text` (``ScenarioFixture/small`` unless told), bound to `bind`,
    /// waiting `waitSeconds` for `expectWorkers` and heartbeating every `heartbeatMilliseconds`;
    /// `configure` sets anything else.
    public convenience init(
        context: ZeroMQContext, scenario text: String = ScenarioFixture.small, bind: String = "tcp://127.0.0.1:*",
        expectWorkers: Int = 1, waitSeconds: Double = 20, heartbeatMilliseconds: Int = 500,
        configure: (inout CoordinatorConfiguration) -> Void = { _ in }
    ) throws {
        var configuration = CoordinatorConfiguration(
            bind: bind, expectWorkers: expectWorkers, waitSeconds: waitSeconds,
            heartbeatIntervalMilliseconds: heartbeatMilliseconds)
        configure(&configuration)
        self.init(scenario: try ScenarioFixture.parse(text), configuration: configuration, context: context)
    }

    /// The endpoint it is bound to, once bound.
    public var endpoint: String { coordinator.waitForEndpoint() }

    /// Waits for the run's end; its outcome, or the error it ended with.
    public func finish() throws -> FleetRunOutcome {
        thread?.join()
        thread = nil
        return try outcome.value!.get()
    }
}

/// A `Worker` running on a thread of its own in the test process.
public final class RunningWorker: @unchecked Sendable {
    private let result = ThreadResult<WorkerExit>()
    private var thread: OSThread?

    /// Starts a worker with `configuration`.
    public init(_ configuration: WorkerConfiguration, context: ZeroMQContext) {
        thread = OSThread(name: "worker") { [result] in
            result.value = try? Worker(configuration: configuration, context: context, logger: silentLogger).run()
        }
    }

    /// Waits for the worker to end; how it ended (nil if it threw).
    @discardableResult
    public func join() -> WorkerExit? {
        thread?.join()
        thread = nil
        return result.value
    }
}
