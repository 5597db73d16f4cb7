import CZlib
import Foundation
import ZapProtocol
import SwiftProtobuf

/// A journal error: the file cannot be written, or is not a zapfleet journal.
public struct JournalError: Error, CustomStringConvertible, Sendable {
    /// What went wrong.
    public enum Code: String, Sendable {
        /// The file cannot be created, written or synced.
        case unwritable
        /// The file is missing, or not a journal, or has no plan.
        case unreadable
    }

    /// The kind of error.
    public let code: Code
    /// What happened, where, and what to do.
    public let message: String

    /// `message`.
    public var description: String { message }
}

/// The plan of a run, as the journal keeps it: enough to resume with the same shards.
public struct JournalPlan: Codable, Sendable, Equatable {
    /// The coordinator's run identifier.
    public var runID: String
    /// The scenario, as sent to workers.
    public var scenarioYAML: String
    /// Kernel cost per SPTE for projections.
    public var kernelNanosecondsPerSPTE: Double
    /// The shards: id, first memslot, memslot count.
    public var shards: [JournalShard]

    /// A plan record.
    public init(runID: String, scenarioYAML: String, kernelNanosecondsPerSPTE: Double, shards: [JournalShard]) {
        self.runID = runID
        self.scenarioYAML = scenarioYAML
        self.kernelNanosecondsPerSPTE = kernelNanosecondsPerSPTE
        self.shards = shards
    }
}

/// One planned shard.
public struct JournalShard: Codable, Sendable, Equatable {
    /// The shard id (its index in the plan).
    public var id: UInt64
    /// First memslot.
    public var firstSlot: Int
    /// Memslots.
    public var slotCount: Int

    /// A planned shard.
    public init(id: UInt64, firstSlot: Int, slotCount: Int) {
        self.id = id
        self.firstSlot = firstSlot
        self.slotCount = slotCount
    }
}

/// One accepted shard result, as journaled.
public struct JournalResult: Sendable {
    /// The worker that sent it.
    public var worker: String
    /// The result, as received.
    public var result: Zapfleet_V1_ShardResult
}

/// What a journal held when it was loaded.
public struct JournalContents: Sendable {
    /// The run's plan.
    public var plan: JournalPlan
    /// Accepted results, in the order they were accepted.
    public var results: [JournalResult]
    /// Attempts handed out, and to which peer: after a resume only these peers' results count.
    public var handouts: [JournaledHandout] = []
    /// Bytes at the end that did not form a whole, intact record (a write torn by a crash), ignored.
    public var tornBytes: Int
    /// Where the intact records end: appending resumes here.
    public var validLength: Int
}

/// The coordinator's journal: every accepted shard result, appended and synced to disk before
/// the worker hears it was accepted, so that a coordinator killed at any moment loses nothing
/// it acknowledged. `zapfleet coordinator --resume` reloads it.
///
/// Layout: the 8-byte magic `ZFJOURN1`, then records of `length: UInt32 LE`, `crc32: UInt32 LE`
/// (zlib's, over kind and payload), `kind: UInt8`, `payload[length - 1]`. Kind 1 is the plan
/// (JSON), kind 2 a result (`UInt16 LE` worker-name length, the name, the `ShardResult`
/// Protobuf), kind 3 a handout (`UInt64 LE` shard, `UInt32 LE` attempt, the peer's routing id),
/// appended before the assignment is sent and synced with the next result. A record whose length runs past the end or whose checksum fails ends the
/// journal: it is a torn last write, and is ignored.
public final class ResultJournal {
    static let magic = Array("ZFJOURN1".utf8)
    private static let planKind: UInt8 = 1
    private static let resultKind: UInt8 = 2
    private static let handoutKind: UInt8 = 3
    /// The largest record accepted on load (a result is far smaller; a plan of a million shards fits).
    static let maximumRecordBytes = 256 << 20

    /// The journal's path.
    public let path: String

    /// Where the journal of the run whose `--out` directory is `directory` lives.
    public static func path(inRunDirectory directory: String) -> String {
        (directory as NSString).appendingPathComponent("journal.zfj")
    }
    private let descriptor: Int32
    private var unsynced = false

    private init(path: String, descriptor: Int32) {
        self.path = path
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    /// Starts a new journal at `path` (replacing any there) for `plan`, synced before it returns.
    public static func create(at path: String, plan: JournalPlan) throws -> ResultJournal {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw JournalError(
                code: .unwritable, message: "\(path): cannot create the journal (\(String(cString: strerror(errno)))); check --out")
        }
        let journal = ResultJournal(path: path, descriptor: descriptor)
        try journal.write(magic)
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        try journal.append(kind: planKind, payload: Array(try encoder.encode(plan)))
        try journal.sync()
        // The directory entry too, so that the journal itself survives a crash.
        let directory = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_CLOEXEC)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
        return journal
    }

    /// Reopens a loaded journal for appending, cutting off a torn tail first.
    public static func reopen(at path: String, contents: JournalContents) throws -> ResultJournal {
        let descriptor = open(path, O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0, ftruncate(descriptor, off_t(contents.validLength)) == 0,
            lseek(descriptor, off_t(contents.validLength), SEEK_SET) >= 0
        else {
            throw JournalError(
                code: .unwritable, message: "\(path): cannot reopen the journal for appending (\(String(cString: strerror(errno))))")
        }
        return ResultJournal(path: path, descriptor: descriptor)
    }

    /// Appends an accepted result. Not durable until ``sync()``.
    public func append(_ result: Zapfleet_V1_ShardResult, worker: String) throws {
        let name = Array(worker.utf8.prefix(Int(UInt16.max)))
        var payload = withUnsafeBytes(of: UInt16(name.count).littleEndian) { Array($0) } + name
        payload += try result.serializedBytes() as [UInt8]
        try append(kind: Self.resultKind, payload: payload)
    }

    /// Appends a handout: `attempt` of `shard` went to `peer`. Not durable until ``sync()``; one
    /// lost in a crash only costs a re-run (the result of that attempt is refused after a resume).
    public func appendHandout(_ handout: JournaledHandout) throws {
        var payload = withUnsafeBytes(of: handout.shard.littleEndian) { Array($0) }
        payload += withUnsafeBytes(of: handout.attempt.littleEndian) { Array($0) }
        payload += handout.peer.prefix(255)
        try append(kind: Self.handoutKind, payload: payload)
    }

    /// Makes everything appended so far durable (`fsync`). Cheap when nothing was appended.
    public func sync() throws {
        guard unsynced else { return }
        guard fsync(descriptor) == 0 else {
            throw JournalError(
                code: .unwritable, message: "\(path): fsync failed (\(String(cString: strerror(errno)))); results cannot be made durable")
        }
        unsynced = false
    }

    /// Reads a journal: its plan, its intact results, and how many torn bytes end it.
    public static func load(_ path: String) throws -> JournalContents {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw JournalError(
                code: .unreadable, message: "\(path): no journal there; --resume takes the --out directory of a coordinator run")
        }
        let bytes = [UInt8](data)
        guard bytes.count >= magic.count, Array(bytes[0..<magic.count]) == magic else {
            throw JournalError(code: .unreadable, message: "\(path): not a zapfleet journal (no ZFJOURN1 header)")
        }
        var offset = magic.count
        var plan: JournalPlan?
        var results: [JournalResult] = []
        var handouts: [JournaledHandout] = []
        while offset + 9 <= bytes.count {
            let length = Int(readUInt32(bytes, offset))
            let checksum = readUInt32(bytes, offset + 4)
            guard length >= 1, length <= maximumRecordBytes, offset + 8 + length <= bytes.count else { break }
            let body = bytes[(offset + 8)..<(offset + 8 + length)]
            guard crc(body) == checksum else { break }
            let kind = body.first!
            let payload = Array(body.dropFirst())
            if kind == planKind, plan == nil {
                guard let decoded = try? JSONDecoder().decode(JournalPlan.self, from: Data(payload)) else { break }
                plan = decoded
            } else if kind == resultKind, plan != nil, payload.count >= 2 {
                let nameLength = Int(payload[0]) | Int(payload[1]) << 8
                guard payload.count >= 2 + nameLength,
                    let result = try? Zapfleet_V1_ShardResult(serializedBytes: Array(payload[(2 + nameLength)...]))
                else { break }
                results.append(JournalResult(worker: String(decoding: payload[2..<(2 + nameLength)], as: UTF8.self), result: result))
            } else if kind == handoutKind, plan != nil, payload.count >= 12 {
                let shard = UInt64(readUInt32(payload, 0)) | UInt64(readUInt32(payload, 4)) << 32
                handouts.append(JournaledHandout(shard: shard, attempt: readUInt32(payload, 8), peer: Array(payload[12...])))
            } else {
                break
            }
            offset += 8 + length
        }
        guard let plan else {
            throw JournalError(
                code: .unreadable, message: "\(path): the journal holds no intact plan; the run cannot be resumed, start it again")
        }
        return JournalContents(plan: plan, results: results, handouts: handouts, tornBytes: bytes.count - offset, validLength: offset)
    }

    // MARK: - Records

    private func append(kind: UInt8, payload: [UInt8]) throws {
        let body = [kind] + payload
        var record = withUnsafeBytes(of: UInt32(body.count).littleEndian) { Array($0) }
        record += withUnsafeBytes(of: Self.crc(body[...]).littleEndian) { Array($0) }
        record += body
        try write(record)
        unsynced = true
    }

    private func write(_ bytes: [UInt8]) throws {
        var written = 0
        while written < bytes.count {
            let result = bytes[written...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if result < 0 && errno == EINTR { continue }
            guard result > 0 else {
                throw JournalError(
                    code: .unwritable, message: "\(path): write failed (\(String(cString: strerror(errno)))); is the disk full?")
            }
            written += result
        }
    }

    static func crc(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        UInt32(bytes.withUnsafeBufferPointer { CZlib.crc32(0, $0.baseAddress, uInt($0.count)) })
    }

    private static func readUInt32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
    }
}
