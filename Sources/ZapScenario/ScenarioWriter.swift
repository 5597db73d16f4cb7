import ZapEngine

/// Renders a scenario as YAML that ``ScenarioParser`` reads back to the same scenario: what a
/// run writes next to its report, so that it can be re-run exactly.
public enum ScenarioWriter {
    /// The scenario as YAML.
    public static func yaml(_ scenario: Scenario) -> String {
        var lines: [String] = []
        lines.append("name: \(quoted(scenario.name))")
        if !scenario.summary.isEmpty { lines.append("description: \(quoted(scenario.summary))") }
        let vm = scenario.vm
        lines.append("vm:")
        lines.append("  memory: \(Quantities.formatSize(vm.memoryBytes))")
        lines.append("  memslot: \(Quantities.formatSize(vm.memslotBytes))")
        lines.append("  pages: {4K: \(vm.pageMix.fraction4K), 2M: \(vm.pageMix.fraction2M), 1G: \(vm.pageMix.fraction1G)}")
        lines.append("  dirty_logging: \(vm.dirtyLogging)")
        lines.append("  smm: \(vm.smm)")
        lines.append("  smram: \(Quantities.formatSize(vm.smramBytes))")
        let workload = scenario.workload
        lines.append("workload:")
        lines.append("  vcpus: \(workload.vcpus)")
        lines.append("  coverage: \(workload.coverage.rawValue)")
        lines.append("  touched: \(workload.touched)")
        if workload.guestWork { lines.append("  guest_work: true") }
        switch workload.pacing {
        case .unpaced: lines.append("  pacing: max")
        case .faultsPerSecond(let rate): lines.append("  pacing: \(rate)/s")
        }
        lines.append("timeline:")
        for step in scenario.timeline {
            switch step {
            case .run(let faults): lines.append("  - run: {faults: \(faults)}")
            case .deleteMemslots(let fraction): lines.append("  - delete_memslots: {fraction: \(fraction)}")
            case .unmap(let fraction): lines.append("  - unmap: {fraction: \(fraction)}")
            case .dirtyLog(let action): lines.append("  - dirty_log: \(action.rawValue)")
            case .fastFaults(let faults): lines.append("  - fast_faults: {faults: \(faults)}")
            case .workout(let operations): lines.append("  - workout: {operations: \(operations)}")
            default: lines.append("  - \(step.name)")
            }
        }
        lines.append("repeat: \(scenario.repeatCount)")
        lines.append("policies: [\(scenario.policies.map(\.rawValue).joined(separator: ", "))]")
        lines.append("workqueue_width: \(scenario.workqueueWidth)")
        lines.append("seed: \(scenario.seed)")
        if !scenario.injectedBugs.isEmpty {
            lines.append("inject: [\(scenario.injectedBugs.map(\.rawValue).joined(separator: ", "))]")
        }
        if let chaos = scenario.chaos {
            let windows = RaceWindow.allCases.filter(chaos.windows.contains).map(\.rawValue).joined(separator: ", ")
            lines.append("chaos: {probability: \(chaos.probability), max_delay: \(chaos.maxDelayNanoseconds)ns, windows: [\(windows)]}")
        }
        if let nx = scenario.nxRecovery {
            lines.append("nx_recovery: {period: \(nx.periodNanoseconds)ns, ratio: \(nx.ratio)}")
        }
        if scenario.tlbFlushCostNanoseconds != Scenario.defaultTLBFlushCostNanoseconds {
            lines.append("tlb_flush_cost: \(scenario.tlbFlushCostNanoseconds)ns")
        }
        if !scenario.objectives.isEmpty {
            lines.append("slos:")
            for objective in scenario.objectives { lines.append("  - \(quoted(objective.text))") }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func quoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
