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
/// streaming results, hosted in this process or, past what one process's descriptors hold, in
/// several child processes.
struct CoordinatorBenchmark: SummarisedBenchmark {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Coordinator capacity with many lightweight workers streaming real results.",
        discussion: """
            Lightweight workers are DEALER sockets, many per thread, on loopback TCP: each says hello, \
            heartbeats every second, and answers every assignment (at once, or after --result-seconds) \
            with a real shard result (computed once by the engine: every histogram in V2 compressed \
            encoding). They live in --processes child processes (by default as many as the descriptor \
            limit needs: a worker costs its host two descriptors and the coordinator one). The \
            coordinator runs on its own thread here. With --heartbeat-seconds, it first waits that long \
            for one worker more than there are, so that it only takes hellos and heartbeats; its CPU \
            over the second half of that wait is the heartbeat-only cost. Reported: results and \
            histograms merged per second, and the coordinator thread's CPU over the streaming phase.
            """
    )

    @Option(help: "Lightweight workers (DEALER sockets).")
    var workers: Int = 1000

    @Option(help: "Shards in the run (results to merge).")
    var shards: Int = 20000

    @Option(help: "Threads hosting the lightweight workers, in each hosting process.")
    var threads: Int = 4

    @Option(help: "Processes hosting the lightweight workers (0: this one if its descriptors suffice, else as many as needed).")
    var processes: Int = 0

    @Option(help: "Seconds each worker takes to answer an assignment (0: at once). Workers / this = results per second.")
    var resultSeconds: Double = 0

    @Option(help: "Seconds of a heartbeat-only phase before the run (0: none).")
    var heartbeatSeconds: Double = 0

    @Option(help: "The coordinator's events (JSON lines), as `zapfleet coordinator --events` writes them.")
    var events: String?

    func validate() throws {
        guard workers >= 1 && shards >= 1 && threads >= 1 && processes >= 0 else {
            throw ValidationError("--workers, --shards and --threads must be at least 1, --processes at least 0")
        }
        guard resultSeconds >= 0 && heartbeatSeconds >= 0 else {
            throw ValidationError("--result-seconds and --heartbeat-seconds must not be negative")
        }
    }

    func measure() throws -> [BenchmarkFigure] {
        let processes = self.processes > 0 ? self.processes : Self.hostProcessesNeeded(forWorkers: workers)
        try Self.ensureDescriptors(forWorkers: workers, hostedHere: processes == 0)
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
        let templateBytes: [UInt8] = try template.serializedBytes()
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

        let coordinatorContext = try ZeroMQContext()
        try coordinatorContext.setMaximumSockets(Int32(workers + 64))
        var configuration = CoordinatorConfiguration(
            bind: "tcp://127.0.0.1:*", expectWorkers: heartbeatSeconds > 0 ? workers + 1 : workers,
            waitSeconds: heartbeatSeconds > 0 ? heartbeatSeconds : 300, heartbeatIntervalMilliseconds: 1000, shardBytes: 2 << 20)
        // Hosts of thousands of sockets on two cores answer late at times: a missing worker's
        // shard is requeued (and counted below), which is not what this measures.
        configuration.heartbeatLiveness = 10
        configuration.maxAttempts = 100
        if let events { configuration.events = try FleetEventLog(path: events) }
        let coordinator = Coordinator(scenario: scenario, configuration: configuration, context: coordinatorContext, logger: logger)
        let clock = ThreadCPUClock()
        let outcomeBox = ThreadResult<Result<FleetRunOutcome, Error>>()
        let coordinatorThread = OSThread(name: "coordinator") {
            clock.claimCallingThread()
            outcomeBox.value = Result { try coordinator.run() }
        }
        let endpoint = coordinator.waitForEndpoint()

        let start = monotonicNanoseconds()
        // The result every child's workers send, read by the children as they start.
        let templatePath = NSTemporaryDirectory() + "zapfleet-bench-template-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: templatePath) }
        var children: [Process] = []
        var hosts: [OSThread] = []
        if processes == 0 {
            let workerContext = try ZeroMQContext()
            try workerContext.setMaximumSockets(Int32(workers + 64))
            hosts = Self.startHosts(
                0..<workers, threads: threads, endpoint: endpoint, context: workerContext, template: template, resultSeconds: resultSeconds)
        } else {
            try Data(templateBytes).write(to: URL(fileURLWithPath: templatePath))
            for index in 0..<processes {
                let first = workers * index / processes, last = workers * (index + 1) / processes
                let child = Process()
                child.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
                child.arguments = [
                    "light-workers", "--connect", endpoint, "--first", "\(first)", "--count", "\(last - first)",
                    "--threads", "\(threads)", "--template", templatePath, "--result-seconds", "\(resultSeconds)"
                ]
                try child.run()
                children.append(child)
            }
        }
        // The heartbeat-only phase: every worker joined and heartbeating, nothing to merge yet.
        var heartbeatCost: (cpu: Double, seconds: Double)?
        var cpuBeforePlan = 0.0
        if heartbeatSeconds > 0 {
            Thread.sleep(forTimeInterval: heartbeatSeconds / 2)
            let (cpu0, wall0) = (clock.seconds(), monotonicNanoseconds())
            Thread.sleep(forTimeInterval: max(0.5, heartbeatSeconds / 2 - 1))
            cpuBeforePlan = clock.seconds()
            heartbeatCost = (cpuBeforePlan - cpu0, Double(monotonicNanoseconds() - wall0) / 1e9)
        }
        coordinatorThread.join()
        for host in hosts { host.join() }
        for child in children { child.waitUntilExit() }
        let wall = Double(monotonicNanoseconds() - start) / 1e9
        let outcome = try outcomeBox.value!.get()
        let results = outcome.fleet.shards.count
        let dispatch = max(outcome.fleet.dispatchSeconds, 1e-9)
        guard results > 0 else {
            throw ValidationError("no result was merged: \(outcome.failure?.description ?? "the run ended without results")")
        }
        let streamingCPU = outcome.fleet.coordinatorCpuSeconds - cpuBeforePlan
        print(
            "coordinator capacity: \(workers) lightweight workers on loopback TCP in \(max(1, processes)) process(es), \(results) shard results of \(histogramsPerResult) histograms (\(templateBytes.count) bytes) each"
        )
        if let heartbeatCost {
            let perWorker = heartbeatCost.cpu / heartbeatCost.seconds / Double(workers) * 1e6
            print(
                "  heartbeats only: coordinator CPU \(Quantities.rounded(heartbeatCost.cpu, 3)) s over \(Quantities.rounded(heartbeatCost.seconds, 1)) s = \(Quantities.rounded(heartbeatCost.cpu / heartbeatCost.seconds, 3)) cores, \(Quantities.rounded(perWorker, 2)) µs per worker per 1 s heartbeat"
            )
        }
        print("  joined and ran in \(Quantities.rounded(wall, 2)) s; from plan to last result \(Quantities.rounded(dispatch, 2)) s")
        print(
            "  merged \(Int(Double(results) / dispatch)) results/s = \(Int(Double(results * histogramsPerResult) / dispatch)) histograms/s (target >= 10000)"
        )
        print(
            "  coordinator thread CPU \(Quantities.rounded(streamingCPU, 2)) s over \(Quantities.rounded(dispatch, 2)) s from plan to last result = \(Quantities.rounded(streamingCPU / dispatch, 2)) cores (target < 1)"
        )
        print(
            "  merged totals: \(outcome.runs.map { "\($0.policy) \($0.statistics.sptesZapped) SPTEs zapped" }.joined(separator: ", ")); requeues: \(outcome.fleet.shards.filter { $0.attempts > 1 }.count); failure: \(outcome.failure?.description ?? "none")"
        )
        let fleet = "coordinator, \(workers) workers"
        var figures: [BenchmarkFigure] = []
        if let heartbeatCost {
            figures.append(
                BenchmarkFigure(
                    name: "\(fleet): heartbeats only",
                    measured:
                        "\(Quantities.rounded(heartbeatCost.cpu / heartbeatCost.seconds / Double(workers) * 1e6, 2)) µs per worker per heartbeat"
                ))
        }
        let histogramsPerSecond = Double(results * histogramsPerResult) / dispatch
        figures.append(
            BenchmarkFigure(
                name: "\(fleet): histograms merged while results stream", measured: "\(Int(histogramsPerSecond))/s",
                target: ">= 10000/s", met: histogramsPerSecond >= 10_000))
        figures.append(
            BenchmarkFigure(
                name: "\(fleet): coordinator thread while results stream",
                measured: "\(Quantities.rounded(streamingCPU / dispatch, 2)) cores", target: "< 1 core", met: streamingCPU / dispatch < 1))
        let requeued = outcome.fleet.shards.filter { $0.attempts > 1 }.count
        figures.append(
            BenchmarkFigure(
                name: "\(fleet): shards requeued (workers counted missing)", measured: "\(requeued)", target: "0", met: requeued == 0))
        return figures
    }

    /// Hosts of `range` lightweight workers, `threads` threads of them.
    static func startHosts(
        _ range: Range<Int>, threads: Int, endpoint: String, context: ZeroMQContext, template: Zapfleet_V1_ShardResult,
        resultSeconds: Double
    ) -> [OSThread] {
        let threads = max(1, min(threads, range.count))
        return (0..<threads).map { index in
            let first = range.lowerBound + range.count * index / threads
            let last = range.lowerBound + range.count * (index + 1) / threads
            return OSThread(name: "light\(index)") {
                do {
                    try Self.hostWorkers(
                        first..<last, endpoint: endpoint, context: context, template: template, resultSeconds: resultSeconds)
                } catch {
                    print("lightweight worker thread failed: \(error)")
                }
            }
        }
    }

    /// Runs `range` lightweight workers on this thread: hello, heartbeats, results after
    /// `resultSeconds`, until the coordinator says stop.
    ///
    /// The thread waits with a `ZeroMQSocketSet` (epoll) and reads only the sockets that fired:
    /// with `zmq_poll` (a system call per socket per wake-up) hosts of 5,000 workers spent the
    /// machine's two cores polling, heartbeats went out late, and the coordinator counted
    /// thousands of workers missing.
    static func hostWorkers(
        _ range: Range<Int>, endpoint: String, context: ZeroMQContext, template: Zapfleet_V1_ShardResult, resultSeconds: Double
    ) throws {
        let set = try ZeroMQSocketSet()
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
            try set.add(socket)
        }
        let sockets = set.sockets
        let delay = UInt64(resultSeconds * 1e9)
        var due: [(at: UInt64, socket: Int, frame: [UInt8])] = []
        var lastHeartbeat = monotonicNanoseconds()
        var stopped = 0
        func read(_ index: Int, now: UInt64) throws {
            let socket = sockets[index]
            while let message = try socket.receive(dontWait: true) {
                guard let envelope = try? Zapfleet_V1_Envelope(serializedBytes: message.frames[0]) else { continue }
                switch envelope.body {
                case .assignment(let assignment):
                    var result = template
                    result.runID = assignment.runID
                    result.shardID = assignment.shardID
                    result.attempt = assignment.attempt
                    if delay == 0 {
                        try socket.send([frame(.result(result))])
                    } else {
                        due.append((now + delay, index, frame(.result(result))))
                    }
                case .stop:
                    stopped += 1
                default:
                    break
                }
            }
        }
        for index in sockets.indices { try read(index, now: monotonicNanoseconds()) }
        while stopped < sockets.count {
            let nextDue = due.first.map { Int(($0.at &- min($0.at, monotonicNanoseconds())) / 1_000_000) } ?? 100
            let ready = try set.wait(timeoutMilliseconds: min(100, nextDue))
            let now = monotonicNanoseconds()
            for index in ready { try read(index, now: now) }
            // One delay for every result: `due` is in the order its results fall due.
            let fallen = due.prefix { $0.at <= now }.count
            for item in due.prefix(fallen) {
                try sockets[item.socket].send([item.frame], dontWait: true)
                try read(item.socket, now: now)
            }
            due.removeFirst(fallen)
            if now - lastHeartbeat >= 1_000_000_000 {
                lastHeartbeat = now
                for index in sockets.indices {
                    try sockets[index].send([frame(.heartbeat(Zapfleet_V1_Heartbeat()))], dontWait: true)
                    try read(index, now: now)
                }
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

/// `zapfleet-bench coordinator`'s child: hosts lightweight workers for a coordinator in another process.
struct LightWorkersCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "light-workers", abstract: "Hosts lightweight workers for `zapfleet-bench coordinator` (started by it).",
        shouldDisplay: false)

    @Option var connect: String
    @Option var first: Int
    @Option var count: Int
    @Option var threads: Int = 4
    @Option var template: String
    @Option var resultSeconds: Double = 0

    func run() throws {
        // Hosts outlive nothing: when the benchmark is killed (a timeout, ^C), its children
        // would go on heartbeating into a closed port, holding thousands of sockets.
        let parent = getppid()
        _ = OSThread(name: "parent-watch") {
            while getppid() == parent { sleep(1) }
            Glibc.exit(3)
        }
        try CoordinatorBenchmark.ensureDescriptors(forWorkers: count, hostedHere: true, coordinatorHere: false)
        let result = try Zapfleet_V1_ShardResult(serializedBytes: [UInt8](Data(contentsOf: URL(fileURLWithPath: template))))
        let context = try ZeroMQContext()
        try context.setMaximumSockets(Int32(count + 64))
        let hosts = CoordinatorBenchmark.startHosts(
            first..<(first + count), threads: threads, endpoint: connect, context: context, template: result, resultSeconds: resultSeconds)
        for host in hosts { host.join() }
    }
}

/// The CPU time of one thread, read from any other (`pthread_getcpuclockid`).
final class ThreadCPUClock: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private var clock: clockid_t?

    /// Makes the calling thread the one measured.
    func claimCallingThread() {
        var id = clockid_t()
        guard pthread_getcpuclockid(pthread_self(), &id) == 0 else { return }
        mutex.withLock { clock = id }
    }

    /// The thread's CPU seconds so far (0 before it claimed the clock).
    func seconds() -> Double {
        guard let clock = mutex.withLock({ clock }) else { return 0 }
        var now = timespec()
        clock_gettime(clock, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}

extension CoordinatorBenchmark {
    /// File descriptors one lightweight worker costs the process hosting it (its DEALER socket's
    /// TCP end and its mailbox) and the coordinator's (its end of the connection).
    static let descriptorsPerHostedWorker: UInt64 = 2
    static let descriptorsPerCoordinatedWorker: UInt64 = 1

    /// Hosting processes needed: none when this process can hold every worker's descriptors
    /// beside the coordinator's, else enough that each holds at most what its limit allows.
    static func hostProcessesNeeded(forWorkers workers: Int) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        let hard = UInt64(min(limit.rlim_max, 1 << 30))
        let perWorkerHere = descriptorsPerHostedWorker + descriptorsPerCoordinatedWorker
        if UInt64(workers) * perWorkerHere + 256 <= hard { return 0 }
        let perProcess = max(1, (hard - 256) / descriptorsPerHostedWorker)
        return Int((UInt64(workers) + perProcess - 1) / perProcess)
    }

    /// Raises the soft descriptor limit to the hard one if the workers need it, and refuses to
    /// start, saying why and what to do, if even the hard limit is too low: libzmq meeting EMFILE
    /// retries its accepts silently, and the run would wait for workers that can never connect.
    static func ensureDescriptors(forWorkers workers: Int, hostedHere: Bool, coordinatorHere: Bool = true) throws {
        let perWorker = (hostedHere ? descriptorsPerHostedWorker : 0) + (coordinatorHere ? descriptorsPerCoordinatedWorker : 0)
        let needed = rlim_t(UInt64(workers) * perWorker + 256)
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < needed && limit.rlim_max > limit.rlim_cur {
            var raised = limit
            raised.rlim_cur = min(limit.rlim_max, max(needed, limit.rlim_cur))
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        guard limit.rlim_cur >= needed else {
            throw ValidationError(
                "\(workers) lightweight workers need about \(needed) file descriptors in this process (\(perWorker) per worker: \(hostedHere ? "its socket and its mailbox" : "")\(hostedHere && coordinatorHere ? ", and " : "")\(coordinatorHere ? "the coordinator's end" : "")), but the limit is \(limit.rlim_cur) (hard limit \(limit.rlim_max)). Raise it (ulimit -n, or LimitNOFILE= in a systemd unit), or host the workers in more --processes."
            )
        }
    }
}
