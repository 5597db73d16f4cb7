import Foundation
import Testing
import ZapCluster
import ZapEngine
import ZapRun
import ZapProtocol
import ZapScenario
import ZapfleetTestSupport
import ZeroMQ
import ZapPlatform
import SwiftProtobuf

/// CURVE between coordinator and workers: who gets in, who is refused, and how keys are kept.
@Suite("Fleet security", .serialized, .timeLimit(.minutes(3)))
struct FleetSecurityTests {
    @Test("a worker whose key is on the allow-list runs every shard; one whose key is not is refused, counted, and gets no shard")
    func allowList() throws {
        let context = try ZeroMQContext()
        let coordinatorKeys = try CurveKeyPair.generate()
        let allowed = try CurveKeyPair.generate()
        let stranger = try CurveKeyPair.generate()
        let running = try RunningCoordinator(context: context, heartbeatMilliseconds: 200) {
            $0.security = CoordinatorSecurity(keys: coordinatorKeys, allowedWorkers: [allowed.publicKey: "allowed"])
        }
        let endpoint = running.endpoint
        // The stranger first: it must be refused before the allowed worker even joins.
        let strangerWorker = RunningWorker(
            WorkerConfiguration(
                connect: endpoint, name: "stranger", memoryBudgetBytes: 1 << 30,
                security: WorkerSecurity(keys: stranger, coordinatorKey: coordinatorKeys.publicKey)), context: context)
        let strangerExit = strangerWorker.join()
        guard case .refused(let reason)? = strangerExit else {
            Issue.record("the stranger was not refused: \(String(describing: strangerExit))")
            return
        }
        #expect(reason.contains(stranger.publicKey.z85), "the refusal names the key, so the operator can add it")
        let allowedWorker = RunningWorker(
            WorkerConfiguration(
                connect: endpoint, name: "allowed", memoryBudgetBytes: 1 << 30,
                security: WorkerSecurity(keys: allowed, coordinatorKey: coordinatorKeys.publicKey)), context: context)
        let outcome = try running.finish()
        #expect(allowedWorker.join() == .stopped(reason: "run complete"))
        #expect(outcome.complete)
        #expect(outcome.fleet.keysRefused >= 1)
        #expect(outcome.fleet.workers.map(\.name) == ["allowed"], "a refused peer never reaches the coordinator")
        #expect(outcome.fleet.shards.allSatisfy { $0.worker == "allowed" })
        #expect(outcome.runs.allSatisfy { $0.statistics.sptesZapped == 2 << 20 })
    }

    @Test("a plain-text worker, and a worker that trusts another coordinator key, never join a CURVE coordinator")
    func mismatchedSecurity() throws {
        let context = try ZeroMQContext()
        let coordinatorKeys = try CurveKeyPair.generate()
        let worker = try CurveKeyPair.generate()
        let impostor = try CurveKeyPair.generate()
        let running = try RunningCoordinator(context: context, waitSeconds: 3, heartbeatMilliseconds: 200) {
            $0.security = CoordinatorSecurity(keys: coordinatorKeys, allowedWorkers: [worker.publicKey: "worker"])
        }
        let endpoint = running.endpoint
        let cancellation = CancellationFlag()
        let logger = silentLogger
        let plain = OSThread(name: "plain") {
            _ = try? Worker(
                configuration: WorkerConfiguration(connect: endpoint, name: "plain", memoryBudgetBytes: 1 << 30),
                context: context, logger: logger, cancellation: cancellation
            ).run()
        }
        // The right worker key, but the wrong idea of the coordinator's: the handshake cannot finish.
        let misled = OSThread(name: "misled") {
            _ = try? Worker(
                configuration: WorkerConfiguration(
                    connect: endpoint, name: "misled", memoryBudgetBytes: 1 << 30,
                    security: WorkerSecurity(keys: worker, coordinatorKey: impostor.publicKey)),
                context: context, logger: logger, cancellation: cancellation
            ).run()
        }
        let outcome = try running.finish()
        cancellation.cancel()
        plain.join()
        misled.join()
        #expect(outcome.failure?.code == .noWorkerJoined)
        #expect(outcome.fleet.workers.isEmpty)
        #expect(outcome.fleet.shards.isEmpty)
    }

    @Test("keygen writes a secret key only its owner can read, and the public key derived from it")
    func keyFiles() throws {
        let directory = TestPaths.temporaryDirectory()
        let paths = try KeyFiles.generate(name: "w1", directory: directory)
        let mode = try #require(try FileManager.default.attributesOfItem(atPath: paths.secret)[.posixPermissions] as? NSNumber)
        #expect(mode.intValue & 0o777 == 0o600)
        let pair = try KeyFiles.readKeyPair(paths.secret)
        #expect(try KeyFiles.readPublicKey(paths.public) == pair.publicKey)
        #expect(!"\(pair)".contains(pair.secretKey.z85), "a key pair never prints its secret")
        #expect(throws: FleetSecurityError.self) { try KeyFiles.generate(name: "w1", directory: directory) }
        #expect(try KeyFiles.readAllowList(directory) == [pair.publicKey: "w1"])

        // Through a symlink, as a Kubernetes secret volume presents it: the target's mode counts.
        chmod(paths.secret, 0o400)
        let link = directory + "/linked.key"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: paths.secret)
        #expect(try KeyFiles.readKeyPair(link).publicKey == pair.publicKey)
        chmod(paths.secret, 0o644)
        #expect(throws: FleetSecurityError.self) { try KeyFiles.readKeyPair(link) }
        let exposed = #expect(throws: FleetSecurityError.self) { try KeyFiles.readKeyPair(paths.secret) }
        #expect(exposed?.code == .exposedSecretKey)
        #expect(exposed?.description.contains("chmod 600") == true)
    }

    @Test("an allow-list file names the line of a bad key")
    func malformedAllowList() throws {
        let directory = TestPaths.temporaryDirectory()
        let good = try CurveKeyPair.generate().publicKey
        let path = directory + "/allowed"
        try "# workers\n\(good.z85) w1\nnot-a-key w2\n".write(toFile: path, atomically: true, encoding: .utf8)
        let error = #expect(throws: FleetSecurityError.self) { try KeyFiles.readAllowList(path) }
        #expect(error?.description.hasPrefix("\(path):3:") == true, "\(String(describing: error))")
        try "# workers\n\(good.z85) first worker\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try KeyFiles.readAllowList(path) == [good: "first worker"])
    }

    @Test("without keys only loopback, inproc and ipc may be bound, unless --insecure says otherwise")
    func bindPolicy() throws {
        for local in ["tcp://127.0.0.1:5555", "tcp://localhost:5555", "tcp://[::1]:5555", "inproc://x", "ipc:///tmp/x"] {
            #expect(throws: Never.self) { try BindPolicy.check(local, secured: false, insecure: false) }
        }
        for open in ["tcp://0.0.0.0:5555", "tcp://10.77.0.1:5555", "tcp://*:5555", "tcp://eth0:5555"] {
            let error = #expect(throws: FleetSecurityError.self) { try BindPolicy.check(open, secured: false, insecure: false) }
            #expect(error?.description.contains("zapfleet keygen") == true)
            #expect(throws: Never.self) { try BindPolicy.check(open, secured: true, insecure: false) }
            #expect(throws: Never.self) { try BindPolicy.check(open, secured: false, insecure: true) }
        }
    }
}

extension FleetSecurityTests {
    @Test("a peer speaking the pre-ZMTP 3 framing is refused at the handshake, keys or not (libzmq 4.3.4 can abort on that path)")
    func legacyPeerRefused() throws {
        let context = try ZeroMQContext()
        // One attempt: were the legacy peer let in, its shard would fail at once instead of waiting forever.
        let running = try RunningCoordinator(context: context, waitSeconds: 2, heartbeatMilliseconds: 200) { $0.maxAttempts = 1 }
        let endpoint = running.endpoint
        let port = UInt16(endpoint.split(separator: ":").last!)!
        // ZMTP 1.0: frames of a one-byte length (flags included), a flags byte, the body; first the identity, then a hello.
        var hello = Zapfleet_V1_Hello()
        hello.workerName = "legacy"
        hello.cores = 1
        hello.memoryBudgetBytes = 1 << 30
        var envelope = Zapfleet_V1_Envelope()
        envelope.protocolVersion = zapfleetProtocolVersion
        envelope.body = .hello(hello)
        let body: [UInt8] = try envelope.serializedBytes()
        let identity = Array("legacy".utf8)
        let bytes = [UInt8(identity.count + 1), 0] + identity + [UInt8(body.count + 1), 0] + body
        let descriptor = try #require(RawTCP.connect(port: port))
        defer { close(descriptor) }
        RawTCP.send(descriptor, bytes)
        let outcome = try running.finish()
        #expect(outcome.fleet.workers.isEmpty, "the legacy peer never reached the coordinator: \(outcome.fleet.workers.map(\.name))")
        #expect(outcome.failure?.code == .noWorkerJoined)
    }
}
