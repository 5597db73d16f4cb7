import Testing
import ZapEngine

/// vCPU threads fault, reset and switch address spaces while another thread deletes memslots
/// and releases the notifier: the correct designs never break an invariant.
@Suite("Concurrency stress", .serialized, .timeLimit(.minutes(5)))
struct ConcurrencyStressTests {
    @Test("no violations over many seeds", arguments: ZapPolicy.allCases)
    func noViolations(policy: ZapPolicy) throws {
        for seed in UInt64(1)...6 {
            let stress = ConcurrencyStress(
                vm: VMConfiguration(policy: policy, workqueueWidth: 2, pageTableBudgetBytes: 512 << 20),
                vcpus: 3, operationsPerVCPU: 300, fastZaps: 10, fullZaps: 2, seed: seed)
            let report = try stress.run()
            #expect(report.violations.isEmpty, "seed \(seed): \(report.violations.prefix(5))")
            let stats = report.statistics
            #expect(stats.sptesInstalled > 0)
            #expect(stats.sptesInstalled == stats.sptesZapped, "seed \(seed)")
            #expect(stats.tablesLive == 0, "seed \(seed)")
            #expect(stats.fastZaps > 0, "seed \(seed): the zapper thread must have run")
            #expect(stats.rootsCreated == stats.rootsFreed, "seed \(seed)")
        }
    }
}
