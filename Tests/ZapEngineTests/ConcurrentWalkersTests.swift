import Testing
import ZapfleetTestSupport
@testable import ZapEngine
import ZapPlatform
import Atomics
#if canImport(Glibc)
import Glibc
#endif

/// The walkers beside faults and zaps that REMOVED_SPTE, the grace period and the get that fails
/// at zero exist for: the lockless fast page fault and dirty logging's read-lock iterators.
@Suite("Lockless walks and dirty logging")
struct ConcurrentWalkersTests {
    private func makeVM(_ policy: ZapPolicy = .async, chaos: ChaosConfiguration? = nil) throws -> VirtualMachine {
        try VirtualMachine(configuration: VMConfiguration(policy: policy, workqueueWidth: 1, pageTableBudgetBytes: 256 << 20, chaos: chaos))
    }

    /// The leaf mapping `gfn` under `root`, read through the tables.
    private func leaf(_ vm: VirtualMachine, _ root: Root, gfn: UInt64) -> SPTE? { vm.mapping(of: gfn, under: root)?.entry }

    @Test("the fast path sets a present leaf's dirty bit without mmu_lock and sends a missing one to the slow path")
    func fastFaultFixesOrFallsBack() throws {
        let vm = try makeVM()
        let vcpu = vm.makeVCPU()
        vcpu.fault(gfn: 5, write: false)
        let root = try #require(vcpu.loadedRoot)
        #expect((leaf(vm, root, gfn: 5)?.rawValue ?? SPTE.dirtyBit) & SPTE.dirtyBit == 0)
        vcpu.fastFault(gfn: 5, write: true)
        #expect(vm.counters.fastFaultsFixed.load(ordering: .relaxed) == 1)
        #expect((leaf(vm, root, gfn: 5)?.rawValue ?? 0) & SPTE.dirtyBit != 0)
        let installed = vcpu.fastFault(gfn: 9, write: true).sptesInstalled
        #expect(installed == 1, "a missing leaf is installed by the slow path")
        #expect(vm.counters.fastFaultsFixed.load(ordering: .relaxed) == 1)
        vm.teardown()
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
    }

    @Test("a table freed while a lockless walk is inside it is a use-after-free, not a crash")
    func tableFreedUnderTheLocklessWalker() throws {
        // Every level of the walk waits a while, so the table goes while the walk is under way.
        let vm = try makeVM(chaos: ChaosConfiguration(seed: 3, probability: 1, maxDelayNanoseconds: 40_000_000, windows: [.locklessWalk]))
        let vcpu = vm.makeVCPU()
        vcpu.populate2MRegion(firstFrame: 0, write: false)
        let root = try #require(vcpu.loadedRoot)
        let levelTwo = vm.pool.table(
            PageIndex(rawValue: UInt32(vm.pool.table(PageIndex(rawValue: UInt32(vm.pool.table(root.table).load(0).frame))).load(0).frame)))
        let leafTable = PageIndex(rawValue: UInt32(levelTwo.load(0).frame))
        let walker = OSThread(name: "walker") { vcpu.fastFault(gfn: 3, write: true) }
        usleep(2_000)
        // What a zap that skips the grace period does to a table a walker may be in.
        #expect(vm.pool.free(leafTable))
        walker.join()
        #expect(vm.checker.saw(.useAfterFree), "\(vm.checker.violations)")
        #expect(vm.checker.violations.contains { $0.detail.contains("lockless walk") })
    }

    @Test("zapping collapsible SPTEs removes the 4 KiB tables of valid roots and keeps huge pages")
    func zapCollapsibleKeepsHugePages() throws {
        for policy in ZapPolicy.allCases {
            let vm = try makeVM(policy)
            let vcpu = vm.makeVCPU()
            vcpu.populate2MRegion(firstFrame: 0)
            vcpu.fault(gfn: 1 << 18, size: .size2M)
            let root = try #require(vcpu.loadedRoot)
            let outcome = vm.zapCollapsibleSPTEs()
            #expect(outcome.sptesZappedInline == 512, "\(policy)")
            #expect(vm.presentLeaves(under: root) == 1, "\(policy): the 2 MiB page stays")
            #expect(vm.pool.livePages == 4, "\(policy): root, level 3 and level 2 tables of the huge page only")
            vcpu.populate2MRegion(firstFrame: 0)  // faults map the region again
            #expect(vm.presentLeaves(under: root) == 513, "\(policy)")
            vm.teardown()
            #expect(vm.checker.total == 0, "\(policy): \(vm.checker.violations)")
        }
    }

    @Test("clearing the dirty log clears the dirty bit of every leaf of valid roots, which a write sets again")
    func clearDirtyLog() throws {
        let vm = try makeVM()
        let vcpu = vm.makeVCPU()
        vcpu.populate2MRegion(firstFrame: 512, write: true)
        let root = try #require(vcpu.loadedRoot)
        vm.clearDirtyLog()
        #expect(vm.counters.dirtyBitsCleared.load(ordering: .relaxed) == 512)
        #expect((leaf(vm, root, gfn: 700)?.rawValue ?? SPTE.dirtyBit) & SPTE.dirtyBit == 0)
        vcpu.fastFault(gfn: 700, write: true)
        #expect((leaf(vm, root, gfn: 700)?.rawValue ?? 0) & SPTE.dirtyBit != 0)
        vm.clearDirtyLog()
        #expect(vm.counters.dirtyBitsCleared.load(ordering: .relaxed) == 513)
        vm.teardown()
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
    }

    @Test("a 4 KiB fault under dirty logging replaces a 2 MiB leaf by a table: the huge leaf is zapped, the small one installed")
    func faultReplacesAHugeLeaf() throws {
        let vm = try makeVM()
        let vcpu = vm.makeVCPU()
        vcpu.fault(gfn: 1024, size: .size2M)
        let root = try #require(vcpu.loadedRoot)
        #expect(leaf(vm, root, gfn: 1030)?.isLeaf(atLevel: 2) == true)
        #expect(vcpu.fault(gfn: 1030).sptesInstalled == 0, "without the split the page is already mapped")
        #expect(vcpu.fault(gfn: 1030, replacingHugePages: true).sptesInstalled == 1)
        #expect(vm.counters.hugePagesSplit.load(ordering: .relaxed) == 1)
        #expect(leaf(vm, root, gfn: 1030)?.isLeaf(atLevel: 1) == true)
        #expect(leaf(vm, root, gfn: 1031) == nil, "the rest of the 2 MiB page faults again")
        #expect(vm.presentLeaves(under: root) == 1)
        vm.teardown()
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
        #expect(vm.statistics.sptesInstalled == 2 && vm.statistics.sptesZapped == 2)
    }

    @Test("a table torn down without freezing its entries loses the leaf a fault inside it installs: sptes-leaked, a verdict")
    func unfrozenTeardownLosesALeaf() throws {
        let vm = try VirtualMachine(configuration: VMConfiguration(policy: .async, pageTableBudgetBytes: 256 << 20))
        let vcpu = vm.makeVCPU()
        vcpu.fault(gfn: 3)
        let root = try #require(vcpu.loadedRoot)
        let levelTwo = vm.pool.table(
            PageIndex(rawValue: UInt32(vm.pool.table(PageIndex(rawValue: UInt32(vm.pool.table(root.table).load(0).frame))).load(0).frame)))
        let leafPage = PageIndex(rawValue: UInt32(levelTwo.load(0).frame))
        let leafTable = vm.pool.table(leafPage)
        // What handle_removed_pt does without REMOVED_SPTE: unlink, read (not freeze) the entries
        // and account them, retire the table...
        vm.mmuLock.withShared {
            #expect(levelTwo.compareExchange(0, expected: levelTwo.load(0), desired: .removed).exchanged)
            let leaves = (0..<512).filter { leafTable.load($0).isPresent }.count
            vm.counters.sptesZapped.wrappingIncrement(by: leaves, ordering: .relaxed)
            // ...while a fault that was already inside the table installs into it: its
            // compare-exchange succeeds, because nothing froze the entry.
            let installed = leafTable.compareExchange(
                9, expected: .nonPresent, desired: .leaf(frame: 9, level: 1, writable: true, dirty: true))
            #expect(installed.exchanged)
            vm.counters.sptesInstalled.wrappingIncrement(ordering: .relaxed)
            vm.gracePeriod.retire(leafPage)
            levelTwo.store(0, .nonPresent)
        }
        vm.teardown()
        #expect(vm.checker.saw(.sptesLeaked), "\(vm.checker.violations)")
    }

    @Test(
        "dirty logging on write-protects every leaf of valid roots; a write through the fast path makes the page writable and dirty again")
    func writeProtectThenFastFault() throws {
        let vm = try makeVM()
        let vcpu = vm.makeVCPU()
        vcpu.populate2MRegion(firstFrame: 0, write: false)
        let root = try #require(vcpu.loadedRoot)
        vm.writeProtectForDirtyLog()
        #expect(vm.counters.pagesWriteProtected.load(ordering: .relaxed) == 512)
        #expect((leaf(vm, root, gfn: 17)?.rawValue ?? SPTE.writableBit) & SPTE.writableBit == 0)
        vcpu.fastFault(gfn: 17, write: true)
        let fixed = try #require(leaf(vm, root, gfn: 17))
        #expect(fixed.rawValue & SPTE.writableBit != 0 && fixed.rawValue & SPTE.dirtyBit != 0)
        #expect((leaf(vm, root, gfn: 18)?.rawValue ?? SPTE.writableBit) & SPTE.writableBit == 0, "only the written page")
        vm.teardown()
        #expect(vm.checker.total == 0, "\(vm.checker.violations)")
    }

    @Test("the workout with race amplification: every walker concurrent, no violation under any policy")
    func amplifiedWorkoutIsClean() throws {
        for policy in ZapPolicy.allCases {
            for seed in UInt64(1)...3 {
                let report = try ConcurrencyStress(
                    vm: VMConfiguration(
                        policy: policy, pageTableBudgetBytes: 1 << 30,
                        chaos: ChaosConfiguration(seed: seed, probability: 0.1, maxDelayNanoseconds: 100_000)),
                    vcpus: 3, operationsPerVCPU: 300, fastZaps: 6, seed: seed
                ).run()
                #expect(report.violationCounts.isEmpty, "\(policy) seed \(seed): \(report.violations.prefix(3))")
            }
        }
    }

    @Test("--chaos values: off, a probability, a probability and a delay; anything else is refused with the form to use")
    func chaosParsing() throws {
        #expect(try ChaosConfiguration.parse("off", seed: 1) == nil)
        #expect(try ChaosConfiguration.parse("0", seed: 1) == nil)
        #expect(try ChaosConfiguration.parse("0.2", seed: 4) == ChaosConfiguration(seed: 4, probability: 0.2, maxDelayNanoseconds: 100_000))
        #expect(try ChaosConfiguration.parse("1,2ms", seed: 1)?.maxDelayNanoseconds == 2_000_000)
        #expect(try ChaosConfiguration.parse("0.5, 300us", seed: 1)?.maxDelayNanoseconds == 300_000)
        for bad in ["", "2", "-0.1", "nan", "0.1,", "0.1,5s", "0.1,1x", "0.1,2000ms", "a,b,c"] {
            #expect(throws: ChaosConfiguration.ParseError.self, "\(bad)") { try ChaosConfiguration.parse(bad, seed: 1) }
        }
    }
}
