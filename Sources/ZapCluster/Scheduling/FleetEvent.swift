/// Something that happened in a fleet run, said twice: a sentence for people (the log line) and a
/// name with fields for scripts (`--events FILE` writes one JSON object per line; the log line
/// carries the fields as metadata). Scripts and tests read names and fields, never sentences.
public struct FleetEvent: Sendable, Equatable {
    /// What happened. The raw value is the `event` field of a JSON line.
    public enum Name: String, Sendable, CaseIterable {
        // The coordinator's run.
        case listening = "listening"
        case resumed = "resumed"
        case planned = "planned"
        case shardAssigned = "shard_assigned"
        case shardDone = "shard_done"
        case shardRequeued = "shard_requeued"
        case shardGivenBack = "shard_given_back"
        case resultRefused = "result_refused"
        case resultDuplicate = "result_duplicate"
        case journalRecordSkipped = "journal_record_skipped"
        case jobAssigned = "job_assigned"
        case externalResult = "external_result"
        case runFailed = "run_failed"
        case runFinished = "run_finished"
        // Peers, as the coordinator sees them.
        case workerJoined = "worker_joined"
        case workerReconnected = "worker_reconnected"
        case workerHelloAgain = "worker_hello_again"
        case workerBack = "worker_back"
        case workerReplaced = "worker_replaced"
        case workerRefused = "worker_refused"
        case workerLeftOut = "worker_left_out"
        case workerMissing = "worker_missing"
        case workerStalled = "worker_stalled"
        case workerDead = "worker_dead"
        case workerBenched = "worker_benched"
        case workerBanned = "worker_banned"
        case frameDropped = "frame_dropped"
        // Either side's own.
        case heldUp = "held_up"
        // A worker's own.
        case joinedRun = "joined_run"
        case shardStarted = "shard_started"
        case shardRefusedByWorker = "shard_refused_by_worker"
        case shardStopped = "shard_stopped"
        case shardFailed = "shard_failed"
        case shardFinished = "shard_finished"
        case resultAcknowledged = "result_acknowledged"
        case resultDropped = "result_dropped"
        case coordinatorSilent = "coordinator_silent"
        case coordinatorFrameDropped = "coordinator_frame_dropped"
        case connectionLost = "connection_lost"
        case refusedByCoordinator = "refused_by_coordinator"
        case stopped = "stopped"
    }

    /// A field's value: JSON's string, integer or boolean.
    public enum Value: Sendable, Equatable {
        case string(String)
        case integer(Int64)
        case boolean(Bool)

        /// Any whole number (shard ids, attempts, counts, nanoseconds).
        public static func number<T: BinaryInteger>(_ value: T) -> Value { .integer(Int64(truncatingIfNeeded: value)) }
    }

    /// How loud the log line is.
    public enum Level: String, Sendable, Equatable { case debug, info, warning, error }

    public var name: Name
    public var level: Level
    /// The log line.
    public var message: String
    /// The event's facts by key (`worker`, `shard`, `attempt`, `reason`, ...).
    public var fields: [String: Value]

    /// An event named `name`, logged at `level` as `message`, with `fields`.
    public init(_ name: Name, _ level: Level, _ message: String, _ fields: [String: Value] = [:]) {
        self.name = name
        self.level = level
        self.message = message
        self.fields = fields
    }

    /// The event as one line of JSON (no newline): `time` (UTC, ISO 8601), `t` (seconds since
    /// `origin`), `event`, `level`, the fields in key order, and `message` last.
    public func jsonLine(time: String, secondsSinceStart: Double) -> String {
        var parts = [
            "\"time\":\(Self.quoted(time))", "\"t\":\(Self.decimal(secondsSinceStart))",
            "\"event\":\(Self.quoted(name.rawValue))", "\"level\":\(Self.quoted(level.rawValue))"
        ]
        for (key, value) in fields.sorted(by: { $0.key < $1.key }) {
            switch value {
            case .string(let text): parts.append("\(Self.quoted(key)):\(Self.quoted(text))")
            case .integer(let number): parts.append("\(Self.quoted(key)):\(number)")
            case .boolean(let flag): parts.append("\(Self.quoted(key)):\(flag)")
            }
        }
        parts.append("\"message\":\(Self.quoted(message))")
        return "{" + parts.joined(separator: ",") + "}"
    }

    /// `text` as a JSON string: quotes, backslashes and control characters escaped (RFC 8259).
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// Seconds with millisecond precision, never in exponent form.
    static func decimal(_ seconds: Double) -> String {
        let milliseconds = Int64((max(0, seconds) * 1000).rounded())
        let fraction = String(milliseconds % 1000)
        return "\(milliseconds / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }
}
