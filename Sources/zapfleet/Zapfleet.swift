import ArgumentParser

/// The `zapfleet` command: a distributed stress tester for KVM's page-table teardown designs.
@main
struct Zapfleet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "zapfleet",
        abstract: "Stress-test KVM TDP MMU root teardown designs (sync, async, preserve) on real page tables.",
        discussion: """
            zapfleet simulates the lifecycle of KVM's TDP MMU roots on real page tables in memory, with \
            real threads for vCPUs and workqueue workers, and measures how long each design blocks the vCPUs.

            Exit codes:
              0   every objective met and no invariant violated
              1   an objective (SLO) was missed
              2   an invariant was violated
              4   inconclusive: a bug injected with --inject never reached its broken path
              64  bad input (command line or scenario); nothing was run
              70  internal error
              130 interrupted (Ctrl-C); what was measured is still reported
            """,
        version: ZapfleetVersion.current,
        subcommands: [RunCommand.self, ScenariosCommand.self, CoordinatorCommand.self, WorkerCommand.self, KeygenCommand.self, SweepCommand.self, CompareCommand.self, EngineCheckCommand.self, CalibrateCommand.self],
        defaultSubcommand: RunCommand.self
    )
}

/// The version printed by `--version` and sent in reports.
enum ZapfleetVersion {
    static let current = "0.1.0"
}

/// Exit codes shared by every subcommand, for nightly jobs to act on.
enum ZapfleetExitCode {
    /// Every check passed.
    static let success = ExitCode(0)
    /// An SLO was missed.
    static let sloMissed = ExitCode(1)
    /// An invariant was violated.
    static let invariantViolated = ExitCode(2)
    /// The command line or a scenario is malformed.
    static let badInput = ExitCode(64)
    /// zapfleet itself failed.
    static let internalError = ExitCode(70)
}
