import ArgumentParser
import ZapScenario
import ZapEngine

/// `zapfleet scenarios`: lists the built-in scenarios, or prints one as YAML to start from.
struct ScenariosCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scenarios",
        abstract: "List the built-in scenarios, or print one as YAML.",
        discussion: """
            Examples:
              zapfleet scenarios
              zapfleet scenarios --show quick > my.yaml   # edit, then: zapfleet run my.yaml
            """
    )

    @Option(help: "Print this built-in scenario as YAML instead of listing them all.")
    var show: String?

    func run() throws {
        if let show {
            guard let yaml = BuiltinScenarios.yaml(named: show) else {
                throw ValidationError(
                    "no built-in scenario '\(show)'; built-ins: \(BuiltinScenarios.all.map(\.name).joined(separator: ", "))")
            }
            print(yaml, terminator: "")
            return
        }
        for entry in BuiltinScenarios.all {
            let scenario = try ScenarioCatalog.load(entry.name)
            let estimate = MemoryEstimate.estimate(scenario)
            print("\(entry.name)")
            print("  \(entry.purpose)")
            print(
                "  \(Quantities.formatSize(scenario.vm.memoryBytes)) in \(scenario.memslotCount) memslots, \(scenario.workload.vcpus) vCPUs, "
                    + "policies \(scenario.policies.map(\.rawValue).joined(separator: ", ")); page tables ≈ \(Quantities.describeSize(Double(estimate.peakBytes)))"
            )
        }
    }
}
