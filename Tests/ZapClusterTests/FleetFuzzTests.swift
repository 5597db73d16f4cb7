import Foundation
import Logging
import Testing
import ZapCluster
import ZapEngine
import ZapProtocol
import ZapRun
import ZapScenario
import ZapfleetTestSupport
import ZeroMQ
import ZapPlatform
import Histogram
import SwiftProtobuf

/// Hostile peers against a coordinator in the middle of real runs: random bytes, truncated,
/// mutated and oversized Protobuf, valid messages in the wrong order, and raw TCP garbage as a
/// port scanner sends it. Seeded and bounded in time (`ZAPFLEET_FUZZ_SECONDS`, default 60).
@Suite("Fleet fuzzing", .serialized, .timeLimit(.minutes(5)))
struct FleetFuzzTests {
    static let seconds = Double(ProcessInfo.processInfo.environment["ZAPFLEET_FUZZ_SECONDS"] ?? "") ?? 60
    static let seed = UInt64(ProcessInfo.processInfo.environment["ZAPFLEET_FUZZ_SEED"] ?? "") ?? 0x2a2a_f00d

    /// What the fuzzers sent, by kind.
    final class Tally: @unchecked Sendable {
        private let mutex = PThreadMutex()
        private var counts: [String: Int] = [:]
        func add(_ kind: String) { mutex.withLock { counts[kind, default: 0] += 1 } }
        var snapshot: [String: Int] { mutex.withLock { counts } }
    }

    /// A message a worker or a coordinator could send, with random contents.
    static func randomBody(_ random: inout SplitMix64, sample: Zapfleet_V1_ShardResult) -> Zapfleet_V1_Envelope.OneOf_Body {
        func shardID() -> UInt64 { random.next() % 4 == 0 ? random.next() : random.next() % 16 }
        switch random.next() % 11 {
        case 0:
            var hello = Zapfleet_V1_Hello()
            hello.workerName = "fuzz-\(random.next() % 1000)"
            hello.cores = UInt32(truncatingIfNeeded: random.next() % 3 == 0 ? random.next() : 1)
            hello.memoryBudgetBytes = random.next() % 3 == 0 ? random.next() : 0
            hello.largestShardBytes = random.next()
            hello.largestShardSlots = UInt32(truncatingIfNeeded: random.next())
            if random.next() % 2 == 0 { hello.runningShardID = shardID() }
            return .hello(hello)
        case 1: return .heartbeat(Zapfleet_V1_Heartbeat())
        case 2:
            var progress = Zapfleet_V1_Progress()
            progress.shardID = shardID()
            progress.policy = ["sync", "async", "preserve", "", "\u{0}"][Int(random.next() % 5)]
            progress.steps = UInt32(truncatingIfNeeded: random.next())
            return .progress(progress)
        case 3, 4:
            // A real result, with its ids changed: for a shard this peer was never given.
            var result = sample
            result.shardID = shardID()
            result.attempt = UInt32(random.next() % 4)
            return .result(result)
        case 5:
            var result = Zapfleet_V1_ShardResult()
            result.shardID = shardID()
            result.attempt = 1
            var policy = Zapfleet_V1_PolicyResult()
            policy.policy = "sync"
            var histogram = Zapfleet_V1_EncodedHistogram()
            histogram.hdrV2 = Data((0..<Int(random.next() % 64)).map { _ in UInt8(truncatingIfNeeded: random.next()) })
            policy.histograms = [histogram]
            result.policies = [policy]
            return .result(result)
        case 6:
            var abandoned = Zapfleet_V1_ShardAbandoned()
            abandoned.shardID = shardID()
            abandoned.reason = String(repeating: "x", count: Int(random.next() % 5000))
            return .abandoned(abandoned)
        case 7: return .welcome(Zapfleet_V1_Welcome())
        case 8:
            var assignment = Zapfleet_V1_Assignment()
            assignment.shardID = shardID()
            assignment.scenarioYaml = "name: ["
            return .assignment(assignment)
        case 9: return .stop(Zapfleet_V1_Stop())
        default:
            var ack = Zapfleet_V1_ResultAck()
            ack.shardID = shardID()
            return .resultAck(ack)
        }
    }

    /// One frame (or frames) of hostile input, and its kind for the tally.
    static func hostileFrames(_ random: inout SplitMix64, sample: Zapfleet_V1_ShardResult, oversize: Int) -> (String, [[UInt8]]) {
        func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) } }
        var envelope = Zapfleet_V1_Envelope()
        envelope.protocolVersion = random.next() % 10 == 0 ? UInt32(truncatingIfNeeded: random.next()) : zapfleetProtocolVersion
        envelope.body = randomBody(&random, sample: sample)
        let valid: [UInt8] = (try? envelope.serializedBytes()) ?? []
        switch random.next() % 8 {
        case 0: return ("random bytes", [bytes(Int(random.next() % 2048))])
        case 1: return ("several frames", (0..<(2 + Int(random.next() % 4))).map { _ in bytes(Int(random.next() % 64)) })
        case 2: return ("truncated protobuf", [Array(valid.prefix(Int(random.next() % UInt64(max(1, valid.count)))))])
        case 3:
            var flipped = valid
            for _ in 0..<(1 + random.next() % 8) where !flipped.isEmpty {
                flipped[Int(random.next() % UInt64(flipped.count))] ^= UInt8(truncatingIfNeeded: 1 << (random.next() % 8))
            }
            return ("mutated protobuf", [flipped])
        case 4 where random.next() % 16 == 0: return ("oversized frame", [bytes(oversize)])
        case 5: return ("empty frame", [[]])
        default: return ("valid message out of order", [valid])
        }
    }

    /// A peer that speaks ZeroMQ but sends only hostile frames, under a new identity now and then.
    static func zeroMQFuzzer(
        endpoint: String, seed: UInt64, sample: Zapfleet_V1_ShardResult, oversize: Int,
        stop: CancellationFlag, tally: Tally
    ) -> OSThread {
        OSThread(name: "fuzz-zmq") {
            var random = SplitMix64(seed: seed)
            guard let context = try? ZeroMQContext() else { return }
            var generation = 0
            while !stop.isCancelled {
                generation += 1
                guard let socket = try? ZeroMQSocket(context, type: .dealer) else { return }
                try? socket.setOption(SocketOption.identity, Array("fuzz-\(seed % 100)-\(generation)".utf8))
                try? socket.setOption(SocketOption.sendHighWaterMark, Int32(100))
                try? socket.connect(endpoint)
                for _ in 0..<200 where !stop.isCancelled {
                    let (kind, frames) = hostileFrames(&random, sample: sample, oversize: oversize)
                    if (try? socket.send(frames, dontWait: true)) != nil { tally.add(kind) }
                    // Whatever comes back is read and dropped, as a peer that never listens would not.
                    while (try? socket.receive(dontWait: true)) != nil {}
                    usleep(UInt32(500 + random.next() % 1500))
                }
                socket.close()
            }
        }
    }

    /// A port scanner: plain TCP connections that send garbage, a ZMTP greeting gone wrong, or HTTP.
    static func tcpFuzzer(port: UInt16, seed: UInt64, stop: CancellationFlag, tally: Tally) -> OSThread {
        OSThread(name: "fuzz-tcp") {
            var random = SplitMix64(seed: seed)
            while !stop.isCancelled {
                guard let descriptor = RawTCP.connect(port: port) else {
                    usleep(20_000)  // between runs nobody listens
                    continue
                }
                defer { close(descriptor) }
                let kind: String
                var payload: [UInt8]
                switch random.next() % 4 {
                case 0:
                    kind = "tcp: random bytes"
                    payload = (0..<Int(random.next() % 4096)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                case 1:
                    kind = "tcp: ZMTP greeting, then garbage"
                    payload =
                        [0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0] + Array("NULL".utf8) + [UInt8](repeating: 0, count: 16)
                        + (0..<Int(random.next() % 512)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                case 2:
                    kind = "tcp: HTTP request"
                    payload = Array("GET / HTTP/1.1\r\nHost: zapfleet\r\n\r\n".utf8)
                default:
                    kind = "tcp: connect and close"
                    payload = []
                }
                RawTCP.send(descriptor, payload)
                tally.add(kind)
                usleep(UInt32(2000 + random.next() % 8000))
            }
        }
    }

    @Test("a coordinator under hostile frames and port scans for the whole fuzz time: no crash, every run completes with exact totals")
    func fuzzCoordinator() throws {
        // A port scanner's connection may be closed under it: the test process must not die of SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        let scenario = try ScenarioFixture.parse(ScenarioFixture.small)
        // A real result, to mutate.
        let runner = ScenarioRunner(scenario: scenario, options: RunOptions(slice: MemorySlice(firstSlot: 0, slotCount: 2)))
        var sample = Zapfleet_V1_ShardResult()
        sample.attempt = 1
        sample.policies = try scenario.policies.map { ResultCoding.encode(try runner.run(policy: $0)) }

        let port = UInt16.random(in: 20000..<40000)
        let endpoint = "tcp://127.0.0.1:\(port)"
        let maximumMessage = 1 << 20
        let stop = CancellationFlag()
        let tally = Tally()
        let fuzzers = [
            Self.zeroMQFuzzer(
                endpoint: endpoint, seed: Self.seed, sample: sample, oversize: maximumMessage + 1024, stop: stop, tally: tally),
            Self.zeroMQFuzzer(
                endpoint: endpoint, seed: Self.seed &+ 1, sample: sample, oversize: maximumMessage + 1024, stop: stop, tally: tally),
            Self.tcpFuzzer(port: port, seed: Self.seed &+ 2, stop: stop, tally: tally)
        ]
        defer {
            stop.cancel()
            for thread in fuzzers { thread.join() }
        }

        let start = Date()
        var runs = 0, badFrames = 0, requeues = 0
        // Runs back to back on the same port, so that a real run is going on for the whole fuzz time.
        while Date().timeIntervalSince(start) < Self.seconds {
            let context = try ZeroMQContext()
            let running = try RunningCoordinator(
                context: context, bind: endpoint, expectWorkers: 2, waitSeconds: 30, heartbeatMilliseconds: 200
            ) {
                $0.maxAttempts = 1000; $0.maximumMessageBytes = Int64(maximumMessage)
            }
            _ = running.endpoint
            let workers = (0..<2).map { index in
                RunningWorker(
                    WorkerConfiguration(
                        connect: endpoint, name: "real-\(index)", memoryBudgetBytes: 1 << 30,
                        progressInterval: 50_000_000), context: context)
            }
            let outcome = try running.finish()
            for worker in workers { worker.join() }
            runs += 1
            #expect(outcome.failure == nil, "run \(runs): \(outcome.failure?.description ?? "")")
            #expect(outcome.complete, "run \(runs)")
            let shards = outcome.fleet.shards.count
            for run in outcome.runs {
                #expect(run.statistics.sptesZapped == 2 << 20, "run \(runs) \(run.policy): 8 GiB of 4 KiB pages, counted once")
                #expect(run.statistics.sptesInstalled == 2 << 20)
                #expect(run.recorder.histogram(.reset).totalCount == UInt64(shards * 2), "run \(runs): two resets per shard")
            }
            #expect(Set(outcome.fleet.shards.map(\.worker)).isSubset(of: ["real-0", "real-1"]), "only real workers' results count")
            badFrames += outcome.fleet.badFrames
            requeues += outcome.fleet.requeues
        }
        stop.cancel()
        for thread in fuzzers { thread.join() }
        let sent = tally.snapshot
        let summary = sent.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
        print(
            "fuzz (seed \(Self.seed), \(Int(Self.seconds)) s): \(runs) runs completed with exact totals; sent \(sent.values.reduce(0, +)) [\(summary)]; coordinators rejected \(badFrames) frames; \(requeues) requeues"
        )
        #expect(runs >= 2)
        #expect(badFrames > 0, "the coordinator saw and rejected hostile frames")
        #expect(sent.keys.contains("tcp: random bytes") && sent.keys.contains("truncated protobuf"))
    }
}
