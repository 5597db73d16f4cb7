import ArgumentParser
import Foundation
import Logging
import ZapCluster
import ZapEngine
import ZapProtocol
import ZapRun
import ZapScenario
import ZeroMQ
import ZapPlatform
import SwiftProtobuf

/// Coordinator capacity: many lightweight workers over loopback TCP, heartbeating and
/// streaming results as fast as the coordinator hands out shards.
struct CoordinatorBenchmark: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Coordinator capacity with many lightweight workers streaming real results.",
        discussion: """
            Lightweight workers are DEALER sockets, many per thread, on loopback TCP: each says hello, \
            heartbeats every second, and answers every assignment at once with a real shard result \
            (computed once by the engine: every histogram in V2 compressed encoding). The coordinator \
            runs on its own thread and validates, decodes and merges each result. Reported: results and \
            histograms merged per second, and the coordinator thread's CPU time over the run.
            """
    )

    @Option(help: "Lightweight workers (DEALER sockets).")
    var workers: Int = 1000

    @Option(help: "Shards in the run (results to merge).")
    var shards: Int = 20000

    @Option(help: "Threads hosting the lightweight workers.")
    var threads: Int = 4

    func run() throws {
        try Self.ensureDescriptors(forWorkers: workers)
        let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
        // One 2 MiB memslot per shard.
        let scenario = try ScenarioParser.parse(
            """
            name: capacity
            vm: {memory: \(shards * 2)MiB, memslot: 2MiB}
            workload: {vcpus: 1}
            timeline: [populate, run: {faults: 200}, reset_vcpus]
            policies: [sync, async]
            """, file: "capacity")
        let runner = ScenarioRunner(scenario: scenario, options: RunOptions(slice: MemorySlice(firstSlot: 0, slotCount: 1)))
        var template = Zapfleet_V1_ShardResult()
        template.policies = try scenario.policies.map { ResultCoding.encode(try runner.run(policy: $0)) }
        let histogramsPerResult = template.policies.reduce(0) { $0 + $1.histograms.count }
        let templateBytes = ((try? template.serializedBytes()) as [UInt8]?)?.count ?? 0
        // The coordinator's per-result work, without sockets: decode (validate) and merge.
        var accumulators = scenario.policies.map { FleetAggregation.Accumulator(policy: $0, kernelNanosecondsPerSPTE: 52) }
        var timer = monotonicNanoseconds()
        var decoded: [DecodedPolicyResult] = []
        for _ in 0..<200 {
            decoded = try template.policies.map { try ResultCoding.decodeValidated($0) }
        }
        let decodeTime = Double(monotonicNanoseconds() - timer) / 200
        timer = monotonicNanoseconds()
        for _ in 0..<200 {
            for (index, run) in decoded.enumerated() { accumulators[index].add(run) }
        }
        let mergeTime = Double(monotonicNanoseconds() - timer) / 200
        print("per result without sockets: decode \(Quantities.formatDuration(decodeTime)), merge \(Quantities.formatDuration(mergeTime))")
        let result = template

        let coordinatorContext = try ZeroMQContext()
        try coordinatorContext.setMaximumSockets(Int32(workers + 64))
        let coordinator = Coordinator(
            scenario: scenario,
            configuration: CoordinatorConfiguration(
                bind: "tcp://127.0.0.1:*", expectWorkers: workers, waitSeconds: 120,
                heartbeatIntervalMilliseconds: 1000, shardBytes: 2 << 20),
            context: coordinatorContext, logger: logger)
        final class Box: @unchecked Sendable { var outcome: Result<FleetRunOutcome, Error>? }
        let box = Box()
        let coordinatorThread = OSThread(name: "coordinator") { box.outcome = Result { try coordinator.run() } }
        let endpoint = coordinator.waitForEndpoint()

        let workerContext = try ZeroMQContext()
        try workerContext.setMaximumSockets(Int32(workers + 64))
        let start = monotonicNanoseconds()
        let hosts = (0..<threads).map { index in
            let first = workers * index / threads, last = workers * (index + 1) / threads
            return OSThread(name: "light\(index)") {
                do {
                    try Self.hostWorkers(first..<last, endpoint: endpoint, context: workerContext, template: result)
                } catch {
                    print("lightweight worker thread failed: \(error)")
                }
            }
        }
        coordinatorThread.join()
        for host in hosts { host.join() }
        let wall = Double(monotonicNanoseconds() - start) / 1e9
        let outcome = try box.outcome!.get()
        let results = outcome.fleet.shards.count
        let dispatch = outcome.fleet.dispatchSeconds
        print(
            "coordinator capacity: \(workers) lightweight workers on loopback TCP, \(results) shard results of \(histogramsPerResult) histograms (\(templateBytes) bytes) each"
        )
        print("  joined and ran in \(Quantities.rounded(wall, 2)) s; from plan to last result \(Quantities.rounded(dispatch, 2)) s")
        print(
            "  merged \(Int(Double(results) / dispatch)) results/s = \(Int(Double(results * histogramsPerResult) / dispatch)) histograms/s (target >= 10000)"
        )
        print(
            "  coordinator thread CPU \(Quantities.rounded(outcome.fleet.coordinatorCpuSeconds, 2)) s over \(Quantities.rounded(wall, 2)) s wall = \(Quantities.rounded(outcome.fleet.coordinatorCpuSeconds / wall, 2)) cores (target < 1)"
        )
        print(
            "  merged totals: \(outcome.runs.map { "\($0.policy) \($0.statistics.sptesZapped) SPTEs zapped" }.joined(separator: ", ")); failure: \(outcome.failure?.description ?? "none")"
        )
    }

    /// Runs `range` lightweight workers on this thread: hello, heartbeats, instant results.
    static func hostWorkers(_ range: Range<Int>, endpoint: String, context: ZeroMQContext, template: Zapfleet_V1_ShardResult) throws {
        var sockets: [ZeroMQSocket] = []
        var poller = ZeroMQPoller()
        for index in range {
            let socket = try ZeroMQSocket(context, type: .dealer)
            try socket.setOption(SocketOption.identity, Array("light-\(index)".utf8))
            try socket.connect(endpoint)
            var hello = Zapfleet_V1_Hello()
            hello.workerName = "light-\(index)"
            hello.hostName = "bench"
            hello.cores = 1
            hello.memoryBudgetBytes = 1 << 30
            hello.largestShardBytes = .max
            try socket.send([frame(.hello(hello))])
            sockets.append(socket)
            poller.add(socket)
        }
        var lastHeartbeat = monotonicNanoseconds()
        var stopped = 0
        while stopped < sockets.count {
            let ready = try poller.poll(timeoutMilliseconds: 100)
            for (index, socket) in sockets.enumerated() where ready[index] {
                while let message = try socket.receive(dontWait: true) {
                    guard let envelope = try? Zapfleet_V1_Envelope(serializedBytes: message.frames[0]) else { continue }
                    switch envelope.body {
                    case .assignment(let assignment):
                        var result = template
                        result.shardID = assignment.shardID
                        result.attempt = assignment.attempt
                        try socket.send([frame(.result(result))])
                    case .stop:
                        stopped += 1
                    default:
                        break
                    }
                }
            }
            if monotonicNanoseconds() - lastHeartbeat >= 1_000_000_000 {
                lastHeartbeat = monotonicNanoseconds()
                for socket in sockets { try socket.send([frame(.heartbeat(Zapfleet_V1_Heartbeat()))], dontWait: true) }
            }
        }
    }

    static func frame(_ body: Zapfleet_V1_Envelope.OneOf_Body) -> [UInt8] {
        var envelope = Zapfleet_V1_Envelope()
        envelope.protocolVersion = zapfleetProtocolVersion
        envelope.body = body
        return (try? envelope.serializedBytes()) ?? []
    }
}

extension CoordinatorBenchmark {
    /// File descriptors one lightweight worker costs this process: its DEALER socket's TCP end,
    /// its mailbox, and the coordinator's end of the connection.
    static let descriptorsPerWorker: UInt64 = 3

    /// Raises the soft descriptor limit to the hard one if the workers need it, and refuses to
    /// start, saying why and what to do, if even the hard limit is too low: libzmq meeting EMFILE
    /// retries its accepts silently, and the run would wait for workers that can never connect.
    static func ensureDescriptors(forWorkers workers: Int) throws {
        let needed = rlim_t(UInt64(workers) * descriptorsPerWorker + 256)
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < needed && limit.rlim_max > limit.rlim_cur {
            var raised = limit
            raised.rlim_cur = min(limit.rlim_max, max(needed, limit.rlim_cur))
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        guard limit.rlim_cur >= needed else {
            throw ValidationError(
                "\(workers) lightweight workers need about \(needed) file descriptors in this process (\(descriptorsPerWorker) per worker: its socket, its mailbox and the coordinator's end), but the limit is \(limit.rlim_cur) (hard limit \(limit.rlim_max)). Raise it (ulimit -n, or LimitNOFILE= in a systemd unit) or run fewer --workers."
            )
        }
    }
}
