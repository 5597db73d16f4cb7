import Foundation
import Logging
import Testing
import ZapCluster
import ZapProtocol
import ZapRun
import ZapScenario
import ZapfleetTestSupport
import ZeroMQ

/// The rules of the README's protocol contract that a hand-written peer can break, each met by
/// the coordinator as the contract says: a refusal or a rejection that names the field.
@Suite("Protocol contract", .serialized, .timeLimit(.minutes(3)))
struct ProtocolContractTests {

    static func hello(_ name: String, cores: UInt32 = 1, memory: UInt64 = 1 << 30) -> Zapfleet_V1_Envelope.OneOf_Body {
        var hello = Zapfleet_V1_Hello()
        hello.workerName = name
        hello.hostName = "test"
        hello.cores = cores
        hello.memoryBudgetBytes = memory
        hello.role = .simulator
        return .hello(hello)
    }

    @Test("a hello out of range gets a Refusal whose reason names the field; a good hello beside it is welcomed")
    func outOfRangeHellos() throws {
        let context = try ZeroMQContext()
        let running = try RunningCoordinator(context: context, waitSeconds: 3, heartbeatMilliseconds: 200)
        let cases: [(String, Zapfleet_V1_Envelope.OneOf_Body, String)] = [
            ("zero-memory", Self.hello("zero-memory", memory: 0), "memory_budget_bytes"),
            ("huge-memory", Self.hello("huge-memory", memory: 1 << 50), "memory_budget_bytes"),
            ("no-cores", Self.hello("no-cores", cores: 0), "cores"),
            ("many-cores", Self.hello("many-cores", cores: 70_000), "cores"),
            ("empty-name", Self.hello(""), "worker_name"),
            ("long-name", Self.hello(String(repeating: "n", count: 129)), "worker_name"),
            ("control-name", Self.hello("evil\u{1}\u{7f}name"), "worker_name")
        ]
        for (routing, body, field) in cases {
            let peer = try ProtocolPeer(context: context, endpoint: running.endpoint, routingID: "\(routing)#1")
            try peer.send(body)
            let refusal = try peer.waitFor { if case .refusal(let value) = $0 { value } else { nil } }
            #expect(refusal?.reason.contains(field) == true, "\(routing): \(refusal?.reason ?? "no refusal")")
            #expect(refusal?.coordinatorProtocolVersion == zapfleetProtocolVersion)
        }
        let good = try ProtocolPeer(context: context, endpoint: running.endpoint, routingID: "good#1")
        try good.send(Self.hello("good"))
        #expect(try good.waitFor { if case .welcome = $0 { true } else { nil } } == true)
        try good.send(.heartbeat(Zapfleet_V1_Heartbeat()))
        _ = try? running.finish()
    }

    @Test(
        "a result whose step records leave the timeline's order, or that sends one operation's histogram twice, is rejected naming it; the shard runs again"
    )
    func resultRulesBeyondDecoding() throws {
        let context = try ZeroMQContext()
        let running = try RunningCoordinator(context: context, ) { $0.maxAttempts = 5 }
        let peer = try ProtocolPeer(context: context, endpoint: running.endpoint, routingID: "bender#1")
        try peer.sayHello(as: "bender")
        var assignment = try #require(try peer.nextAssignment())
        let honest = try peer.compute(assignment)
        #expect(honest.policies[0].steps.count >= 2)

        var swapped = honest
        swapped.policies[0].steps.swapAt(0, 1)
        var doubled = honest
        doubled.policies[1].histograms.append(doubled.policies[1].histograms[0])
        for (bent, words) in [(swapped, "steps[0]"), (doubled, "histograms of")] {
            var sent = bent
            sent.attempt = assignment.attempt
            try peer.send(.result(sent))
            let ack = try peer.acknowledgement(of: assignment.shardID, attempt: assignment.attempt)
            #expect(ack?.rejected == true)
            #expect(ack?.reason.contains(words) == true, "\(ack?.reason ?? "no ack")")
            assignment = try #require(try peer.nextAssignment(), "the shard comes back as a new attempt")
        }
        var good = honest
        good.attempt = assignment.attempt
        try peer.send(.result(good))
        let accepted = try peer.acknowledgement(of: assignment.shardID, attempt: assignment.attempt)
        #expect(accepted?.rejected == false && accepted?.duplicate == false)
        // Any shard left is answered honestly.
        while let next = try peer.nextAssignment(timeoutSeconds: 2) { try peer.send(.result(try peer.compute(next))) }
        let outcome = try running.finish()
        #expect(outcome.complete)
        #expect(outcome.fleet.resultsRefused == 2)
    }
}
