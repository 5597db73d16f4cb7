import Foundation
import Logging
import ZapEngine
import ZapRun
import ZapScenario
import ZeroMQ
import ZapPlatform

/// `zapfleet run`'s fleet: a coordinator and in-process workers over `inproc://` sockets of
/// one context, so that a local run takes exactly the path of a fleet run.
public enum LocalFleet {
    /// What each in-process worker may spend on page tables when the process as a whole must
    /// stay within `limit` bytes: the limit less what the process holds already (page-table
    /// memory kept for reuse aside) and each
    /// worker's ``allowanceBytes(vcpus:)``, shared among the `workers`, who run at once. A
    /// scenario that fits in the limit whole (`sharded` false) runs as one shard and gets the
    /// whole limit.
    public static func workerBudget(limit: UInt64, workers: Int, vcpus: Int, sharded: Bool) -> UInt64 {
        // Page-table memory of VMs gone is held, but reused (or unmapped) by the VMs to come.
        let resident = ProcessMemory.residentBytes() ?? 0
        let held = resident - min(resident, PageTablePool.idleResidentBytes())
        return workerBudget(limit: limit, workers: workers, vcpus: vcpus, sharded: sharded, held: held)
    }

    /// The same, for a process that holds `held` bytes besides page tables kept for reuse.
    public static func workerBudget(limit: UInt64, workers: Int, vcpus: Int, sharded: Bool, held: UInt64) -> UInt64 {
        guard sharded else { return limit }
        let workers = UInt64(max(1, workers))
        let overhead = held + workers * allowanceBytes(vcpus: vcpus)
        // Nothing left: a budget of 0, which the planner refuses naming the memory a memslot needs.
        return limit > overhead ? (limit - overhead) / workers : 0
    }

    /// What a worker holds beside its page tables while it runs a shard of a scenario with
    /// `vcpus` vCPUs: a block-time recorder per vCPU and two for the VM, and 64 MiB for the rest
    /// (thread stacks and arenas, the result on its way). Measured: a sharded 64 TiB run of
    /// `seed-64t` (8 vCPUs) on two workers held 232 MB beside its tables at its peak.
    public static func allowanceBytes(vcpus: Int) -> UInt64 {
        (64 << 20) + UInt64(max(0, vcpus) + 2) * UInt64(BlockTimeRecorder.footprintBytes)
    }

    /// Runs `scenario` on `workers` in-process workers, each allowed `memoryBudgetBytes` of
    /// page tables, in shards of at most `shardBytes` (nil: as large as the budget allows), and
    /// returns the coordinator's outcome.
    public static func run(
        scenario: Scenario, workers: Int, memoryBudgetBytes: UInt64, kernelNanosecondsPerSPTE: Double,
        events: FleetEventLog? = nil, logger: Logger, cancellation: CancellationFlag,
        progress: (@Sendable (String, RunProgress) -> Void)? = nil,
        heartbeatIntervalMilliseconds: Int = 1000, shardBytes: UInt64? = nil,
        snapshots: (@Sendable (FleetSnapshot) -> Void)? = nil
    ) throws -> FleetRunOutcome {
        let context = try ZeroMQContext()
        let endpoint = "inproc://zapfleet-local-\(UUID().uuidString)"
        var coordinatorConfiguration = CoordinatorConfiguration(
            bind: endpoint, expectWorkers: workers, waitSeconds: 30, heartbeatIntervalMilliseconds: heartbeatIntervalMilliseconds,
            kernelNanosecondsPerSPTE: kernelNanosecondsPerSPTE, shardBytes: shardBytes)
        coordinatorConfiguration.events = events
        coordinatorConfiguration.equalWorkers = true
        coordinatorConfiguration.snapshots = snapshots
        let coordinator = Coordinator(
            scenario: scenario, configuration: coordinatorConfiguration, context: context, logger: logger, cancellation: cancellation,
            progress: progress)
        let workerCancellation = CancellationFlag()
        var threads: [OSThread] = []
        let failures = WorkerFailures()
        for index in 0..<workers {
            var configuration = WorkerConfiguration(
                connect: endpoint, name: "local-\(index)", memoryBudgetBytes: memoryBudgetBytes,
                cores: 1, progressInterval: 500_000_000)
            configuration.events = events
            threads.append(
                OSThread(name: "worker\(index)") { [configuration] in
                    do {
                        _ = try Worker(configuration: configuration, context: context, logger: logger, cancellation: workerCancellation)
                            .run()
                    } catch {
                        failures.record("worker local-\(index): \(error)")
                    }
                })
        }
        defer {
            workerCancellation.cancel()
            for thread in threads { thread.join() }
        }
        var outcome = try coordinator.run()
        if outcome.failure == nil, let failure = failures.first { outcome.failure = FleetFailure(.localWorker, failure) }
        return outcome
    }
}

private final class WorkerFailures: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private var messages: [String] = []
    func record(_ message: String) { mutex.withLock { messages.append(message) } }
    var first: String? { mutex.withLock { messages.first } }
}
