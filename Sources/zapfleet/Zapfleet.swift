import ArgumentParser
import ZapRun

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
              3   (worker) refused by the coordinator
              4   inconclusive: a bug injected with --inject never reached its broken path
              64  bad input (command line or scenario); nothing was run
              70  internal error, or a fleet run that failed (a shard out of attempts, no worker joined)
              130 interrupted (Ctrl-C); what was measured is still reported
            """,
        version: ZapfleetVersion.current,
        subcommands: [
            RunCommand.self, ScenariosCommand.self, CoordinatorCommand.self, WorkerCommand.self, KeygenCommand.self, SweepCommand.self,
            CompareCommand.self, HistoryCommand.self, EngineCheckCommand.self, CalibrateCommand.self
        ],
        defaultSubcommand: RunCommand.self
    )
}

/// The version printed by `--version` and sent in reports.
enum ZapfleetVersion {
    static let current = "0.1.0"
}

/// Exit codes shared by every subcommand, for nightly jobs to act on: ``RunExitCode``'s, as
/// ArgumentParser throws them.
enum ZapfleetExitCode {
    /// Every check passed.
    static let success = ExitCode(RunExitCode.met.rawValue)
    /// An SLO was missed.
    static let sloMissed = ExitCode(RunExitCode.objectiveMissed.rawValue)
    /// An invariant was violated.
    static let invariantViolated = ExitCode(RunExitCode.invariantViolated.rawValue)
    /// A worker was refused by its coordinator.
    static let refused = ExitCode(RunExitCode.refused.rawValue)
    /// The command line or a scenario is malformed.
    static let badInput = ExitCode(RunExitCode.badInput.rawValue)
    /// zapfleet itself failed.
    static let internalError = ExitCode(RunExitCode.internalError.rawValue)
    /// Interrupted; what was measured is reported.
    static let interrupted = ExitCode(RunExitCode.interrupted.rawValue)
}
