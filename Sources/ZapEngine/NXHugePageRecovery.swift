import ZapPlatform
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How the VM's NX huge-page recovery thread runs (`kvm-nx-lpage-recovery`).
///
/// The kernel's thread wakes once a minute and zaps one in `nx_huge_pages_recovery_ratio` (60) of
/// the tables that stand where a huge page could be; a simulated run lasts seconds, so the period
/// here is milliseconds.
public struct NXRecoveryConfiguration: Sendable, Equatable, Codable {
    /// Time between the thread's passes, in nanoseconds.
    public var periodNanoseconds: UInt64
    /// Each pass zaps one in `ratio` of the candidate tables (`nx_huge_pages_recovery_ratio`).
    public var ratio: Int

    /// A configuration; by default every 2 ms, one table in 8.
    public init(periodNanoseconds: UInt64 = 2_000_000, ratio: Int = 8) {
        self.periodNanoseconds = periodNanoseconds
        self.ratio = ratio
    }
}

extension NXRecoveryConfiguration {
    /// A problem with an `--nx-recovery` value, in words.
    public struct ParseError: Error, CustomStringConvertible {
        /// What is wrong and what to write instead.
        public var description: String
    }

    /// Parses `off`, `PERIOD` or `PERIOD,RATIO` (`2ms`, `500us,4`; a period of 1 µs to 1 s, a
    /// ratio of 1 to 1000; ratio 8 when left out); nil for `off`.
    public static func parse(_ text: String) throws -> NXRecoveryConfiguration? {
        let trimmed = String(text.lowercased().filter { $0 != " " })
        if trimmed == "off" || trimmed == "none" { return nil }
        let parts = trimmed.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard parts.count <= 2, let period = parseShortDuration(parts[0]), period >= 1_000 else {
            throw ParseError(
                description: "'\(text)' is not off, PERIOD or PERIOD,RATIO with a period of 1us to 1000ms (e.g. 2ms or 500us,4)")
        }
        var ratio = NXRecoveryConfiguration().ratio
        if parts.count == 2 {
            guard let parsed = Int(parts[1]), (1...1000).contains(parsed) else {
                throw ParseError(
                    description: "ratio '\(parts[1])' is not a whole number from 1 to 1000 (one in RATIO tables is zapped per pass)")
            }
            ratio = parsed
        }
        return NXRecoveryConfiguration(periodNanoseconds: period, ratio: ratio)
    }
}

extension VirtualMachine {
    /// One pass of NX huge-page recovery (`kvm_recover_nx_lpages` → `kvm_tdp_mmu_zap_sp`, v5.18):
    /// with `mmu_lock` held for write, zaps one in `ratio` of the level-2 entries that point to a
    /// table of 4 KiB leaves, so that the next fault there may map a 2 MiB page again. Each such
    /// zap freezes the table's entries and sends the table to the grace period while lockless
    /// walkers may still be inside it, and yields between zaps.
    ///
    /// The kernel keeps a list of the tables made because NX forbade a huge page, in every root,
    /// valid or not; the engine takes its candidates from every root it can get a reference to,
    /// spread evenly over each root's tables of small pages: a superset of the kernel's list that
    /// makes the same zaps.
    /// - Returns: the block time of the thread and the leaves it zapped.
    @discardableResult
    public func recoverNXHugePages(ratio: Int) -> OperationOutcome {
        precondition(ratio >= 1, "the NX recovery ratio is at least 1")
        let start = BlockClock.nanoseconds()
        let flushMark = ThreadTLBFlushes.count
        let slot = activity.claim(.nxRecovery, actor: "NX recovery thread")
        defer { finishOperation(slot) }
        var zapped = 0
        // `kvm_mmu_remote_flush_or_zap` before each yield and at the end of the pass.
        var flush = PendingTLBFlush(.nxRecovery)
        lockMMU(.exclusive, telling: slot)
        for root in rootsToVisit() where getRoot(root) {
            if rootTableIsIntact(root, "NX recovery reached a root whose table was already freed") {
                let candidates = tablesOfSmallPages(in: root)
                let count = (candidates.count + ratio - 1) / ratio
                var walk = ZapWalk(vm: self, root: root, mode: .exclusive, yieldable: true, flushCause: .nxRecovery, flush: flush)
                walk.checkReferenced()
                for chosen in 0..<count {
                    zapTableOfSmallPages(at: candidates[chosen * candidates.count / count], in: root, &walk)
                }
                zapped += walk.finish()
                flush = walk.flush!
            }
            zapped += putRoot(root, mode: .exclusive)
        }
        flush.flushIfPending(self)
        mmuLock.unlockExclusive()
        return OperationOutcome(
            blockedNanoseconds: BlockClock.elapsed(since: start), sptesZappedInline: zapped,
            tlbFlushes: ThreadTLBFlushes.count &- flushMark)
    }

    /// The first guest frame of every level-2 entry of `root` that points to a table.
    private func tablesOfSmallPages(in root: Root) -> [UInt64] {
        var found: [UInt64] = []
        let rootTable = pool.table(root.table)
        for top in 0..<PagingGeometry.entriesPerTable {
            guard let levelThree = liveChild(of: rootTable.load(top), level: 4) else { continue }
            for middle in 0..<PagingGeometry.entriesPerTable {
                guard let levelTwo = liveChild(of: levelThree.load(middle), level: 3) else { continue }
                for bottom in 0..<PagingGeometry.entriesPerTable where liveChild(of: levelTwo.load(bottom), level: 2) != nil {
                    found.append(UInt64(top) << 27 | UInt64(middle) << 18 | UInt64(bottom) << 9)
                }
            }
        }
        return found
    }

    /// `kvm_tdp_mmu_zap_sp`: zaps the level-2 entry covering `gfn` as one step if it still points
    /// to a table (an earlier zap's yield may have let it change).
    private func zapTableOfSmallPages(at gfn: UInt64, in root: Root, _ walk: inout ZapWalk) {
        var table = pool.table(root.table)
        for level in stride(from: PagingGeometry.rootLevel, to: 2, by: -1) {
            let entry = table.load(PagingGeometry.index(of: gfn, atLevel: level))
            guard entry.isPresent, !entry.isLeaf(atLevel: level) else { return }
            guard let child = liveChild(of: entry, level: level) else {
                checker.record(
                    .useAfterFree, root: root, "NX recovery followed a level-\(level) entry to page \(entry.frame), which is not allocated")
                return
            }
            table = child
        }
        let index = PagingGeometry.index(of: gfn, atLevel: 2)
        guard liveChild(of: table.load(index), level: 2) != nil else { return }
        walk.zapEntry(table, index, level: 2)
        _ = walk.finishStep()
    }

    /// The allocated table a present non-leaf `entry` at `level` points to.
    private func liveChild(of entry: SPTE, level: Int) -> PageTable? {
        guard entry.isPresent, !entry.isLeaf(atLevel: level) else { return nil }
        let page = PageIndex(rawValue: UInt32(truncatingIfNeeded: entry.frame))
        return pool.isLive(page) ? pool.table(page) : nil
    }
}

/// The VM's `kvm-nx-lpage-recovery` thread: a pass of ``VirtualMachine/recoverNXHugePages(ratio:)``
/// every period until stopped. Teardown stops it first, as `kvm_arch_pre_destroy_vm` does.
final class NXRecoveryThread: @unchecked Sendable {
    private let stopped = OneShotEvent()
    private var thread: OSThread?

    init(_ configuration: NXRecoveryConfiguration, vm: VirtualMachine) {
        let stopped = self.stopped
        thread = OSThread(name: "kvm-nx-lpage-recovery") { [weak vm] in
            while !stopped.wait(timeoutNanoseconds: configuration.periodNanoseconds) {
                guard let vm, !vm.isStalled else { return }
                vm.recoverNXHugePages(ratio: configuration.ratio)
            }
        }
    }

    /// Stops the thread and waits for it; a pass under way finishes first.
    func stop() {
        stopped.signal()
        thread?.join()
        thread = nil
    }
}
