import Foundation
import Testing
import ZapCluster
import ZapProtocol

/// The coordinator's journal: what was appended and synced is what a resume reads back; a torn
/// tail is detected and ignored, never misread.
@Suite("Result journal")
struct ResultJournalTests {
    static let plan = JournalPlan(
        runID: "abcd1234", scenarioYAML: "name: x\n", kernelNanosecondsPerSPTE: 52,
        shards: (0..<4).map { JournalShard(id: UInt64($0), firstSlot: $0 * 2, slotCount: 2) })

    static func result(_ id: UInt64, attempt: UInt32 = 1) -> Zapfleet_V1_ShardResult {
        var result = Zapfleet_V1_ShardResult()
        result.shardID = id
        result.attempt = attempt
        result.wallNs = 1000 + id
        return result
    }

    static func path() -> String { NSTemporaryDirectory() + "zapfleet-journal-\(UUID().uuidString).zfj" }

    @Test("the plan and every appended result come back in order, with their workers")
    func roundTrip() throws {
        let path = Self.path()
        let journal = try ResultJournal.create(at: path, plan: Self.plan)
        try journal.append(Self.result(2), worker: "w1")
        try journal.append(Self.result(0, attempt: 2), worker: "wörker-2")
        try journal.sync()
        let contents = try ResultJournal.load(path)
        #expect(contents.plan == Self.plan)
        #expect(contents.results.map(\.result) == [Self.result(2), Self.result(0, attempt: 2)])
        #expect(contents.results.map(\.worker) == ["w1", "wörker-2"])
        #expect(contents.tornBytes == 0)
    }

    @Test("a last record cut short at any byte is ignored and cut off on reopen; appending then goes on cleanly")
    func tornTail() throws {
        let path = Self.path()
        let journal = try ResultJournal.create(at: path, plan: Self.plan)
        try journal.append(Self.result(1), worker: "w1")
        try journal.sync()
        let intact = try Data(contentsOf: URL(fileURLWithPath: path))
        try journal.append(Self.result(3), worker: "w2")
        try journal.sync()
        let whole = try Data(contentsOf: URL(fileURLWithPath: path))
        // Every length between the two: a crash at any point of the second write.
        for length in intact.count..<whole.count {
            try whole.prefix(length).write(to: URL(fileURLWithPath: path))
            let contents = try ResultJournal.load(path)
            #expect(contents.results.map(\.result.shardID) == [1], "cut at \(length)")
            #expect(contents.tornBytes == length - intact.count)
            #expect(contents.validLength == intact.count)
        }
        let contents = try ResultJournal.load(path)
        let reopened = try ResultJournal.reopen(at: path, contents: contents)
        try reopened.append(Self.result(2), worker: "w3")
        try reopened.sync()
        let after = try ResultJournal.load(path)
        #expect(after.results.map(\.result.shardID) == [1, 2])
        #expect(after.tornBytes == 0)
    }

    @Test("a flipped bit in the last record fails its checksum: the record is ignored, not misread")
    func corruptRecord() throws {
        let path = Self.path()
        let journal = try ResultJournal.create(at: path, plan: Self.plan)
        try journal.append(Self.result(1), worker: "w1")
        try journal.append(Self.result(2), worker: "w1")
        try journal.sync()
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count - 2] ^= 0x10
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let contents = try ResultJournal.load(path)
        #expect(contents.results.map(\.result.shardID) == [1])
        #expect(contents.tornBytes > 0)
    }

    @Test("a file that is not a journal, or has no intact plan, is refused with what to do")
    func notAJournal() throws {
        let path = Self.path()
        try Data("hello".utf8).write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: JournalError.self) { try ResultJournal.load(path) }
        #expect(error?.description.contains("not a zapfleet journal") == true)
        try Data("ZFJOURN1\u{1}\u{0}".utf8).write(to: URL(fileURLWithPath: path))
        let noPlan = #expect(throws: JournalError.self) { try ResultJournal.load(path) }
        #expect(noPlan?.description.contains("no intact plan") == true)
        let missing = #expect(throws: JournalError.self) { try ResultJournal.load(path + ".missing") }
        #expect(missing?.description.contains("--resume takes the --out directory") == true)
    }
}
