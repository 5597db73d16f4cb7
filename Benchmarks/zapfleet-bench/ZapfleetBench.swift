import ArgumentParser

/// Release-mode benchmarks of zapfleet's hot paths. Run with
/// `swift run -c release zapfleet-bench <benchmark>`.
@main
struct ZapfleetBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "zapfleet-bench",
        abstract: "Benchmarks of zapfleet's hot paths, next to the raw memory operations they are bounded by.",
        subcommands: [
            AllBenchmarks.self, EngineBenchmark.self, MeasurementBenchmark.self, FleetBenchmark.self, CoordinatorBenchmark.self,
            JournalBenchmark.self, DispatchBenchmark.self,
            LightWorkersCommand.self
        ],
        defaultSubcommand: EngineBenchmark.self
    )
}
