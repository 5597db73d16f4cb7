import Testing
import ZapfleetTestSupport
@testable import ZapEngine
import ZapPlatform
import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// Huge pages coming and going in valid roots while vCPUs fault through them: eager splitting
/// when dirty logging is enabled, and NX huge-page recovery zapping tables of small pages.
@Suite("Huge-page splitting and NX recovery")
struct HugePageTests {
    private func makeVM(chaos: ChaosConfiguration? = nil, nxRecovery: NXRecoveryConfiguration? = nil) throws -> VirtualMachine {
        try VirtualMachine(
            configuration: VMConfiguration(
                policy: .async, workqueueWidth: 1, pageTableBudgetBytes: 256 << 20,
                chaos: chaos, nxRecovery: nxRecovery))
    }

    /// The leaf mapping `gfn` under `root` and its level, read through the tables.
    private func leaf(_ vm: VirtualMachine, _ root: Root, gfn: UInt64) -> (entry: SPTE, level: Int)? { vm.mapping(of: gfn, under: root) }

    @Test(
        "enabling dirty logging splits 1 GiB and 2 MiB leaves into 4 KiB leaves that map the same frames with the same bits, then write-protects them"
    )
    func eagerSplitKeepsEveryMapping() throws {
        let vm = try makeVM()
        let vcpu = vm.makeVCPU()
        vcpu.fault(gfn: 0, size: .size1G, write: true)
        let hugeBase: UInt64 = 1 << 18 | 3 << 9
        vcpu.fault(gfn: hugeBase, size: .size2M, write: false)
        let root = try #require(vcpu.loadedRoot)
        #expect(leaf(vm, root, gfn: 12_345)?.level == 3)

        let split = vm.splitHugePages()
        #expect(split.sptesInstalled == 512 + 512 * 512 + 512, "a 1 GiB page gives 512 2 MiB leaves, each 512 4 KiB ones")
        #expect(vm.counters.hugePagesSplit.load(ordering: .relaxed) == 1 + 512 + 1)
        #expect(vm.presentLeaves(under: root) == 512 * 512 + 512, "nothing lost, nothing added")
        for gfn: UInt64 in [0, 511, 512, 12_345, (1 << 18) - 1] {
            let mapped = try #require(leaf(vm, root, gfn: gfn))
            #expect(mapped.level == 1 && mapped.entry.frame == gfn, "gfn \(gfn): \(mapped.entry)")
            #expect(mapped.entry.rawValue & SPTE.dirtyBit != 0 && mapped.entry.rawValue & SPTE.writableBit != 0)
            #expect(mapped.entry.rawValue & SPTE.largeBit == 0)
        }
        let small = try #require(leaf(vm, root, gfn: hugeBase + 7))
        #expect(small.level == 1 && small.entry.frame == hugeBase + 7 && small.entry.rawValue & SPTE.dirtyBit == 0)
        #expect(leaf(vm, root, gfn: hugeBase + 512) == nil, "memory that was not mapped stays unmapped")

        // Enabling dirty logging again finds nothing to split and write-protects every leaf.
        let enabled = vm.enableDirtyLog()
        #expect(enabled.sptesInstalled == 0)
        #expect(vm.counters.pagesWriteProtected.load(ordering: .relaxed) == 512 * 512 + 512)
        vm.teardown()
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
        #expect(vm.statistics.sptesInstalled == vm.statistics.sptesZapped)
    }

    @Test(
        "a split whose compare-exchange loses to a fault replacing the same huge leaf reads the entry again: one table, the fault's leaf, nothing leaked"
    )
    func splitLosesToAFaultReplacingTheLeaf() throws {
        // The split waits up to a second between filling its table and linking it (seeded, so
        // the same wait every run); the leaf count below shows that the fault got in first.
        let vm = try makeVM(
            chaos: ChaosConfiguration(
                seed: 11, probability: 1, maxDelayNanoseconds: 1_000_000_000,
                windows: [.hugePageSplit]))
        let vcpu = vm.makeVCPU()
        vcpu.fault(gfn: 1024, size: .size2M)
        let root = try #require(vcpu.loadedRoot)
        let pagesBefore = vm.pool.livePages
        let splitter = OSThread(name: "splitter") { vm.splitHugePages() }
        // The split has filled its table (a page more) and waits in the window.
        #expect(eventually { vm.pool.livePages > pagesBefore })
        #expect(vcpu.fault(gfn: 1030, replacingHugePages: true).sptesInstalled == 1)
        splitter.join()
        #expect(vm.presentLeaves(under: root) == 1, "the fault won: its leaf alone maps the old huge page's memory")
        #expect(leaf(vm, root, gfn: 1030)?.level == 1)
        vm.teardown()
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
        #expect(vm.statistics.sptesInstalled == vm.statistics.sptesZapped)
    }

    @Test(
        "an NX recovery pass zaps one in RATIO of the tables of 4 KiB pages under the write lock, and a later fault maps a 2 MiB page there"
    )
    func nxRecoveryZapsTablesOfSmallPages() throws {
        let vm = try makeVM()
        let vcpu = vm.makeVCPU()
        for region: UInt64 in 0..<8 { vcpu.populate2MRegion(firstFrame: region << 9) }
        vcpu.fault(gfn: 1 << 18, size: .size2M)  // a huge page is no candidate
        let root = try #require(vcpu.loadedRoot)
        #expect(vm.recoverNXHugePages(ratio: 4).sptesZappedInline == 2 * 512)
        #expect(vm.presentLeaves(under: root) == 6 * 512 + 1)
        #expect(vm.recoverNXHugePages(ratio: 1).sptesZappedInline == 6 * 512)
        #expect(vm.presentLeaves(under: root) == 1)
        #expect(vcpu.fault(gfn: 5, size: .size2M).sptesInstalled == 1)
        #expect(leaf(vm, root, gfn: 5)?.level == 2)
        vm.teardown()
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
        #expect(vm.statistics.sptesInstalled == vm.statistics.sptesZapped)
    }

    @Test("the NX recovery thread zaps on its own while vCPUs fault, and teardown stops it first")
    func nxRecoveryThreadRunsUntilTeardown() throws {
        let vm = try makeVM(nxRecovery: NXRecoveryConfiguration(periodNanoseconds: 1_000_000, ratio: 2))
        let vcpu = vm.makeVCPU()
        var rounds = 0
        // Keep repopulating until the thread has zapped something behind our back.
        let zappedByThread = eventually {
            rounds += 1
            for region: UInt64 in 0..<16 { vcpu.populate2MRegion(firstFrame: region << 9) }
            return vm.statistics.sptesZapped > 0
        }
        #expect(zappedByThread, "after \(rounds) rounds")
        vm.teardown()
        let zapped = vm.statistics.sptesZapped
        usleep(20_000)
        #expect(vm.statistics.sptesZapped == zapped, "the thread stopped with teardown")
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
        #expect(vm.statistics.sptesInstalled == zapped)
    }

    @Test("--nx-recovery values: off, a period, a period and a ratio; anything else is refused with the form to use")
    func nxRecoveryParsing() throws {
        #expect(try NXRecoveryConfiguration.parse("off") == nil)
        #expect(try NXRecoveryConfiguration.parse("2ms") == NXRecoveryConfiguration(periodNanoseconds: 2_000_000, ratio: 8))
        #expect(try NXRecoveryConfiguration.parse("500us,4") == NXRecoveryConfiguration(periodNanoseconds: 500_000, ratio: 4))
        for bad in ["", "2", "0ms", "999ns", "2s", "2ms,0", "2ms,1001", "2ms,x", "2ms,4,5", "-1ms", "nan"] {
            #expect(throws: NXRecoveryConfiguration.ParseError.self, "'\(bad)'") { try NXRecoveryConfiguration.parse(bad) }
        }
        #expect(throws: EngineError.self) {
            try VirtualMachine(
                configuration: VMConfiguration(policy: .sync, nxRecovery: NXRecoveryConfiguration(periodNanoseconds: 1, ratio: 0)))
        }
    }

    @Test("the workout with eager splits and NX recovery beside every other walker: no violation under any policy")
    func workoutWithSplitsAndRecoveryIsClean() throws {
        for policy in ZapPolicy.allCases {
            let report = try ConcurrencyStress(
                vm: VMConfiguration(
                    policy: policy, pageTableBudgetBytes: 1 << 30,
                    chaos: ChaosConfiguration(seed: 7, probability: 0.1, maxDelayNanoseconds: 100_000),
                    nxRecovery: NXRecoveryConfiguration(periodNanoseconds: 1_000_000, ratio: 4)),
                vcpus: 3, operationsPerVCPU: 300, fastZaps: 8, seed: 7
            ).run()
            #expect(report.violationCounts.isEmpty, "\(policy): \(report.violations.prefix(3))")
            #expect(report.operationsCompleted > 0)
        }
    }
}
