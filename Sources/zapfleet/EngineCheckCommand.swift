import ArgumentParser
import Foundation
import ZapEngine

extension ZapPolicy: ExpressibleByArgument {}
extension InjectedBug: ExpressibleByArgument {}

/// `zapfleet engine-check`: a randomised concurrent workout of the engine under each policy,
/// reporting invariant violations and the longest blocks.
struct EngineCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine-check",
        abstract: "Run the zap engine's concurrency workout and report invariant violations.",
        discussion: """
            vCPU threads fault (slow and lockless), reset and switch address spaces while another thread \
            deletes memslots (fast zaps), releases the MMU notifier (full zaps), unmaps ranges and runs \
            dirty logging (eager huge-page splits, write protection, clearing dirty bits, zapping \
            collapsible tables), and an NX recovery thread zaps tables of small pages; then the VM is \
            torn down and checked. \
            Exit code 2 if any invariant was violated, 0 otherwise.

            Examples:
              zapfleet engine-check
              zapfleet engine-check --policy async --inject double-put --seeds 3
            """
    )

    @Option(name: .long, help: "Policy to check; repeat for several (default: sync, async and preserve).")
    var policy: [ZapPolicy] = []

    @Option(
        name: .long,
        help: "Bug to re-create on purpose; repeat for several. One of: \(InjectedBug.allCases.map(\.rawValue).joined(separator: ", ")).")
    var inject: [InjectedBug] = []

    @Option(name: .long, help: "vCPU threads.")
    var vcpus: Int = 4

    @Option(name: .long, help: "Operations each vCPU performs per seed.")
    var operations: Int = 2000

    @Option(name: .long, help: "Fast zaps per seed.")
    var fastZaps: Int = 20

    @Option(name: .customLong("memory-gib"), help: "Guest memory the vCPUs fault into, in GiB.")
    var memoryGiB: Int = 4

    @Option(name: .long, help: "Seeds to run, starting at --seed.")
    var seeds: Int = 4

    @Option(name: .long, help: "First seed.")
    var seed: UInt64 = 1

    @Option(name: .long, help: "Zap workqueue width (max_active), async only; the kernel's default is 256 (workers start on demand).")
    var workqueueWidth: Int = 256

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Seconds without progress, while an operation is in flight, before the watchdog reports a livelock.",
            discussion:
                "The stuck threads are named with what they wait for; their retry loops then give up, and threads that stay stuck are left behind so that the check still ends with exit 2."
        ))
    var stallSeconds: Double = 10

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Race amplification: PROBABILITY[,MAX-DELAY] of a seeded delay at each race window, or 'off'.",
            discussion:
                "Windows: \(RaceWindow.allCases.map(\.rawValue).joined(separator: ", ")). Delays are uniform up to MAX-DELAY (e.g. 200us, 1ms; default 100us) and drawn per thread from the seed, so a seed repeats its delays."
        ))
    var chaos: String = "0.05"

    @Option(
        name: .long,
        help: ArgumentHelp(
            "NX huge-page recovery thread: PERIOD[,RATIO], or 'off'.",
            discussion:
                "Every PERIOD (1us to 1000ms) the thread takes mmu_lock for write and zaps one in RATIO (default 8) of the tables of 4 KiB pages that a 2 MiB page could replace, while lockless walkers may be inside them."
        ))
    var nxRecovery: String = "2ms,8"

    func validate() throws {
        _ = try chaosConfiguration(seed: 0)
        _ = try nxRecoveryConfiguration()
        try OptionChecks.count(vcpus, option: "--vcpus", within: 1...1024)
        try OptionChecks.count(operations, option: "--operations", within: 1...100_000_000)
        try OptionChecks.count(seeds, option: "--seeds", within: 1...10_000_000)
        try OptionChecks.count(fastZaps, option: "--fast-zaps", within: 0...1_000_000)
        try OptionChecks.count(memoryGiB, option: "--memory-gib", within: 1...65_536)
        try OptionChecks.count(workqueueWidth, option: "--workqueue-width", within: 1...1024)
        guard seed <= UInt64.max - UInt64(seeds) else {
            throw ValidationError("--seed \(seed) with --seeds \(seeds) runs past the largest seed (2^64 - 1); give a smaller --seed")
        }
        guard stallSeconds.isFinite && stallSeconds >= 0.1 && stallSeconds <= 86_400 else {
            throw ValidationError("--stall-seconds must be between 0.1 and 86400, got \(stallSeconds)")
        }
    }

    func run() throws {
        let policies = policy.isEmpty ? ZapPolicy.allCases : policy
        var anyViolation = false
        print(
            "engine-check: \(vcpus) vCPUs × \(operations) operations, \(fastZaps) fast zaps, \(memoryGiB) GiB, seeds \(seed)..<\(seed + UInt64(seeds))"
                + (inject.isEmpty ? "" : ", injecting \(inject.map(\.rawValue).joined(separator: ", "))"))
        for policy in policies {
            var violations: [Violation.Kind: Int] = [:]
            var examples: [Violation] = []
            var longest = ConcurrencyStress.LongestBlocks()
            var installed = 0, zapped = 0, yields = 0, roots = 0
            for offset in 0..<UInt64(seeds) {
                let stress = ConcurrencyStress(
                    vm: VMConfiguration(
                        policy: policy, workqueueWidth: workqueueWidth,
                        pageTableBudgetBytes: max(1 << 30, memoryGiB << 22),
                        injectedBugs: Set(inject),
                        stallBoundNanoseconds: UInt64(stallSeconds * 1e9),
                        chaos: try chaosConfiguration(seed: seed + offset),
                        nxRecovery: try nxRecoveryConfiguration()),
                    vcpus: vcpus, operationsPerVCPU: operations, fastZaps: fastZaps,
                    fullZaps: max(1, fastZaps / 10), guestFrames: UInt64(memoryGiB) << 18,
                    useSMM: true, seed: seed + offset)
                let report = try stress.run()
                if report.threadsAbandoned > 0 {
                    print(
                        "policy \(policy), seed \(seed + offset): \(report.threadsAbandoned) threads stuck in the VM were left behind; the VM was not torn down"
                    )
                }
                violations.merge(report.violationCounts, uniquingKeysWith: +)
                examples.append(contentsOf: report.violations.prefix(3 - min(3, examples.count)))
                longest.merge(report.longest)
                installed += report.statistics.sptesInstalled
                zapped += report.statistics.sptesZapped
                yields += report.statistics.yields
                roots += report.statistics.rootsCreated
                // Each further seed would sit out the stall bound again: the verdict is in.
                if report.violationCounts[.livelock, default: 0] > 0 {
                    print("policy \(policy): livelock at seed \(seed + offset); its remaining seeds are skipped")
                    break
                }
            }
            let verdict = violations.isEmpty ? "ok" : "VIOLATIONS"
            print("")
            print("policy \(policy) (\(policy.kernels)): \(verdict)")
            print("  SPTEs installed \(installed), zapped \(zapped); roots \(roots); zap yields \(yields)")
            print(
                "  longest block: fault \(format(longest.fault)), reset \(format(longest.reset)), fast zap \(format(longest.fastZap)), full zap \(format(longest.fullZap)), dirty log \(format(longest.dirtyLog)), unmap \(format(longest.unmap)), teardown \(format(longest.teardown))"
            )
            for (kind, count) in violations.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                print("  violation \(kind) (invariant \(kind.invariant)): \(count)")
            }
            for example in examples { print("    e.g. \(example)") }
            anyViolation = anyViolation || !violations.isEmpty
        }
        if anyViolation { throw ZapfleetExitCode.invariantViolated }
    }

    /// `--chaos` as a configuration for one seed; nil for `off`.
    private func chaosConfiguration(seed: UInt64) throws -> ChaosConfiguration? {
        do {
            return try ChaosConfiguration.parse(chaos, seed: seed)
        } catch {
            throw ValidationError("--chaos: \(error)")
        }
    }

    private func nxRecoveryConfiguration() throws -> NXRecoveryConfiguration? {
        do {
            return try NXRecoveryConfiguration.parse(nxRecovery)
        } catch {
            throw ValidationError("--nx-recovery: \(error)")
        }
    }

    private func format(_ nanoseconds: UInt64) -> String {
        switch nanoseconds {
        case ..<10_000: "\(nanoseconds) ns"
        case ..<10_000_000: String(format: "%.1f µs", Double(nanoseconds) / 1e3)
        default: String(format: "%.1f ms", Double(nanoseconds) / 1e6)
        }
    }
}
