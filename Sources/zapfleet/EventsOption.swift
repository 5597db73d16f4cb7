import ArgumentParser
import ZapCluster

/// `--events FILE`, shared by `run`, `coordinator` and `worker`: what happened, as JSON lines
/// that scripts and tests read instead of log sentences.
struct EventsOption: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Also write every event (worker joined, shard assigned, done, requeued, result refused, worker lost, run finished, ...) to this file, one JSON object per line, as it happens (README, \"Events\").",
            valueName: "file"))
    var events: String?

    /// The opened file, or nil without `--events`; a path that cannot be written ends the command
    /// (exit 64) before anything runs.
    func open() throws -> FleetEventLog? {
        guard let events else { return nil }
        do {
            return try FleetEventLog(path: events)
        } catch {
            printError(error.description)
            throw ZapfleetExitCode.badInput
        }
    }
}
