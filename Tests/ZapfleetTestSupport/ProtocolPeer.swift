import Foundation
import CZlib
import HistogramCodec
import ZapCluster
import ZapEngine
import ZapProtocol
import ZapRun
import ZapScenario
import ZeroMQ
import ZapPlatform
import Histogram
import SwiftProtobuf

/// A peer that speaks zapfleet's protocol by hand over a real DEALER socket, to send what a real
/// worker never would: forged, stale, implausible or out-of-order messages, another protocol
/// version, another worker's name. Tests of the coordinator (in process or as a subprocess) share it.
public final class ProtocolPeer {
    /// The DEALER socket.
    public let socket: ZeroMQSocket
    /// Held so that the context outlives the socket: terminating a context waits for its sockets.
    private let context: ZeroMQContext
    private var stashed: [Zapfleet_V1_Envelope.OneOf_Body] = []

    /// Connects to `endpoint` with routing id `routingID`.
    public init(context: ZeroMQContext, endpoint: String, routingID: String) throws {
        self.context = context
        socket = try ZeroMQSocket(context, type: .dealer)
        try socket.setOption(SocketOption.identity, Array(routingID.utf8))
        try socket.setOption(SocketOption.linger, Int32(0))
        try socket.connect(endpoint)
    }

    deinit { socket.close() }

    /// Sends one envelope holding `body`, claiming protocol `version`.
    public func send(_ body: Zapfleet_V1_Envelope.OneOf_Body, version: UInt32 = zapfleetProtocolVersion) throws {
        var envelope = Zapfleet_V1_Envelope()
        envelope.protocolVersion = version
        envelope.body = body
        // Never blocks: with the coordinator gone, a full queue drops the message instead of hanging the test.
        do {
            try socket.send([try envelope.serializedBytes()], dontWait: true)
        } catch let error as ZeroMQError where error.code == EAGAIN {
            return
        }
    }

    /// Sends frames as they are.
    public func sendRaw(_ frames: [[UInt8]]) throws { try socket.send(frames) }

    /// Says hello as a simulator worker named `name`.
    public func sayHello(as name: String, memory: UInt64 = 1 << 30, running: (runID: String, shard: UInt64, attempt: UInt32)? = nil) throws
    {
        var hello = Zapfleet_V1_Hello()
        hello.workerName = name
        hello.hostName = "test"
        hello.cores = 1
        hello.memoryBudgetBytes = memory
        hello.role = .simulator
        if let running {
            hello.runningRunID = running.runID
            hello.runningShardID = running.shard
            hello.runningAttempt = running.attempt
        }
        try send(.hello(hello))
    }

    /// Keeps a message for a later ``next(timeoutSeconds:)``.
    public func stash(_ body: Zapfleet_V1_Envelope.OneOf_Body) { stashed.append(body) }

    /// The next message that is not a heartbeat, or nil after `timeoutSeconds`.
    public func next(timeoutSeconds: Double = 20) throws -> Zapfleet_V1_Envelope.OneOf_Body? {
        if !stashed.isEmpty { return stashed.removeFirst() }
        return try receive(timeoutSeconds: timeoutSeconds)
    }

    /// The next message from the socket itself (not the stash) that is not a heartbeat.
    private func receive(timeoutSeconds: Double) throws -> Zapfleet_V1_Envelope.OneOf_Body? {
        var poller = ZeroMQPoller()
        poller.add(socket)
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            guard try poller.poll(timeoutMilliseconds: 50)[0], let message = try socket.receive(dontWait: true) else { continue }
            let envelope = try Zapfleet_V1_Envelope(serializedBytes: message.frames[0])
            if case .heartbeat = envelope.body { continue }
            return envelope.body
        }
        return nil
    }

    /// The first message `match` accepts within `timeoutSeconds`; others are kept for later.
    public func waitFor<T>(timeoutSeconds: Double = 20, _ match: (Zapfleet_V1_Envelope.OneOf_Body) -> T?) throws -> T? {
        var skipped: [Zapfleet_V1_Envelope.OneOf_Body] = []
        defer { stashed.insert(contentsOf: skipped, at: 0) }
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline, let body = try next(timeoutSeconds: deadline.timeIntervalSinceNow) {
            if let found = match(body) { return found }
            skipped.append(body)
        }
        return nil
    }

    /// The next assignment.
    public func nextAssignment(timeoutSeconds: Double = 20) throws -> Zapfleet_V1_Assignment? {
        try waitFor(timeoutSeconds: timeoutSeconds) { if case .assignment(let value) = $0 { value } else { nil } }
    }

    /// The acknowledgement of `shard`'s `attempt`.
    public func acknowledgement(of shard: UInt64, attempt: UInt32, timeoutSeconds: Double = 20) throws -> Zapfleet_V1_ResultAck? {
        try waitFor(timeoutSeconds: timeoutSeconds) { body in
            if case .resultAck(let ack) = body, ack.shardID == shard, ack.attempt == attempt { ack } else { nil }
        }
    }

    /// Heartbeats for `seconds`, answering nothing else (messages are kept for later).
    public func heartbeat(for seconds: Double, every interval: Double = 0.1) throws {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            try send(.heartbeat(Zapfleet_V1_Heartbeat()))
            // From the socket: a stashed message must not turn this into a loop that floods the coordinator.
            if let body = try receive(timeoutSeconds: interval) { stash(body) } else { continue }
            usleep(useconds_t(interval * 1e6))
        }
    }
}

extension ProtocolPeer {
    /// Runs `assignment` honestly on a thread while heartbeating, as a worker does: a peer
    /// silent while it computes would be taken for missing.
    public func compute(_ assignment: Zapfleet_V1_Assignment) throws -> Zapfleet_V1_ShardResult {
        final class Box: @unchecked Sendable { var result: Result<Zapfleet_V1_ShardResult, Error>? }
        let box = Box()
        let lock = NSLock()
        let thread = OSThread(name: "compute") {
            let result = Result { try ShardComputation.result(of: assignment) }
            lock.withLock { box.result = result }
        }
        while lock.withLock({ box.result == nil }) { try heartbeat(for: 0.1, every: 0.05) }
        thread.join()
        return try box.result!.get()
    }
}

/// Runs an assignment the way a worker does, for a test that then sends (or bends) the result.
public enum ShardComputation {
    /// The honest result of `assignment`.
    public static func result(of assignment: Zapfleet_V1_Assignment) throws -> Zapfleet_V1_ShardResult {
        let scenario = try ScenarioParser.parse(assignment.scenarioYaml, file: "assignment")
        let runner = ScenarioRunner(
            scenario: scenario,
            options: RunOptions(
                kernelNanosecondsPerSPTE: assignment.kernelNsPerSpte,
                slice: MemorySlice(firstSlot: Int(assignment.firstSlot), slotCount: Int(assignment.slotCount))))
        var result = Zapfleet_V1_ShardResult()
        result.runID = assignment.runID
        result.shardID = assignment.shardID
        result.attempt = assignment.attempt
        let start = monotonicNanoseconds()
        result.policies = try scenario.policies.map { ResultCoding.encode(try runner.run(policy: $0)) }
        result.wallNs = monotonicNanoseconds() - start
        return result
    }
}
