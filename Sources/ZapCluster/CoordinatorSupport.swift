import Foundation
import ZapEngine
import ZapProtocol
import ZapPlatform

extension PeerIntroduction {
    /// What a hello says, with proto3's unset values read as the protocol defines them.
    init(_ hello: Zapfleet_V1_Hello) {
        // The name is judged as sent (a hello with control characters in it is refused); host and
        // build only reach logs and the report, so they are made printable instead.
        self.init(
            name: String(hello.workerName.prefix(255)), host: hello.hostName.printable(limit: 255),
            build: hello.buildVersion.printable(limit: 64),
            cores: Int(hello.cores), memoryBudgetBytes: hello.memoryBudgetBytes, shardByteLimit: hello.shardByteLimit,
            shardSlotLimit: Int(hello.largestShardSlots), isAgent: hello.role == .externalAgent,
            running: hello.runningAttempt > 0
                ? AttemptClaim(runID: hello.runningRunID, shard: hello.runningShardID, attempt: hello.runningAttempt) : nil)
    }
}

/// CPU time of the calling thread, in seconds.
func threadCPUSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// `ZMQ_ROUTER_HANDOVER`: a reconnecting worker with the same identity takes over its old
/// connection instead of being refused. Workers pick an unguessable routing id per process, so
/// only the same process can take a connection over.
let ZMQ_ROUTER_HANDOVER_OPTION: Int32 = 56

/// The bound endpoint, published from the coordinator's thread to whoever waits for it.
final class BoundEndpoint: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private let condition = PThreadCondition()
    private var value: String?

    func set(_ endpoint: String) {
        mutex.withLock { value = endpoint }
        condition.broadcast()
    }

    func wait() -> String {
        mutex.lock()
        while value == nil { condition.wait(mutex) }
        let endpoint = value!
        mutex.unlock()
        return endpoint
    }
}

extension Zapfleet_V1_Hello {
    /// The largest shard the worker takes, in bytes; proto3's unset 0 means no limit.
    var shardByteLimit: UInt64 { largestShardBytes == 0 ? .max : largestShardBytes }
}

extension String {
    /// At most `limit` characters of the text with every control character (a NUL, an escape, a
    /// newline) written as `\u{…}`: what a peer sent, fit for a log line or a report.
    func printable(limit: Int) -> String {
        var result = ""
        for scalar in unicodeScalars.prefix(limit) {
            if scalar.properties.generalCategory == .control || scalar.properties.generalCategory == .format {
                result += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }
}
