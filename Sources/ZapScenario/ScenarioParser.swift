import Yams
import ZapEngine

/// Reads scenarios from YAML with errors that name the file, the line and the key.
///
/// The schema is strict: an unknown key is an error, not ignored, so that a typo cannot silently
/// run a different experiment.
public enum ScenarioParser {
    /// Parses scenario YAML. `file` names the source in errors.
    public static func parse(_ text: String, file: String) throws(ScenarioError) -> Scenario {
        let root: Node
        do {
            guard let composed = try Yams.compose(yaml: text) else {
                throw ScenarioError(
                    .missingKey, file: file, line: 1, "the scenario is empty; see `zapfleet scenarios --show quick` for a complete example")
            }
            root = composed
        } catch let error as ScenarioError {
            throw error
        } catch let error as YamlError {
            throw ScenarioError(.syntax, file: file, line: yamlLine(error), "not valid YAML: \(yamlProblem(error))")
        } catch {
            throw ScenarioError(.syntax, file: file, "not valid YAML: \(error)")
        }
        return try ScenarioReader(file: file).scenario(root)
    }

    private static func yamlLine(_ error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        default:
            return nil
        }
    }

    private static func yamlProblem(_ error: YamlError) -> String {
        switch error {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _):
            return problem
        default:
            return "\(error)"
        }
    }
}

/// Walks the YAML node tree, checking every key against the schema.
struct ScenarioReader {
    let file: String

    func scenario(_ root: Node) throws(ScenarioError) -> Scenario {
        let top = try mapping(
            root, key: nil,
            allowed: [
                "name", "description", "vm", "workload", "timeline", "repeat", "policies",
                "workqueue_width", "seed", "slos", "inject", "chaos", "nx_recovery", "tlb_flush_cost"
            ])
        let vmNode = try required(top, "vm", in: root, path: nil)
        let workloadNode = try required(top, "workload", in: root, path: nil)
        var timeline = try self.timeline(try required(top, "timeline", in: root, path: nil))
        if timeline.last != .teardown { timeline.append(.teardown) }
        if let early = timeline.dropLast().firstIndex(of: .teardown) {
            throw error(
                .badValue, top["timeline"]!.array()[early], "timeline",
                "teardown must be the last step; remove the steps after it")
        }

        let policies: [ZapPolicy]
        if let node = top["policies"] {
            let names = try list(node, key: "policies")
            policies = try names.map { item throws(ScenarioError) in
                let name = try string(item, key: "policies")
                guard let policy = ZapPolicy(rawValue: name) else {
                    throw error(
                        .badValue, item, "policies",
                        "unknown policy '\(name)'; policies: \(ZapPolicy.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                return policy
            }
            guard !policies.isEmpty else { throw error(.badValue, node, "policies", "name at least one policy") }
        } else {
            policies = ZapPolicy.allCases
        }

        let bugs: [InjectedBug]
        if let node = top["inject"] {
            bugs = try list(node, key: "inject").map { item throws(ScenarioError) in
                let name = try string(item, key: "inject")
                guard let bug = InjectedBug(rawValue: name) else {
                    throw error(
                        .badValue, item, "inject",
                        "unknown bug '\(name)'; bugs: \(InjectedBug.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                return bug
            }
        } else {
            bugs = []
        }

        let objectives: [ServiceLevelObjective]
        if let node = top["slos"] {
            objectives = try list(node, key: "slos").map { item throws(ScenarioError) in
                let text = try string(item, key: "slos")
                switch ServiceLevelObjective.parse(text) {
                case .success(let objective):
                    if let policy = objective.policy, !policies.contains(policy) {
                        throw error(.badValue, item, "slos", "'\(text)' names policy \(policy), which the scenario does not run")
                    }
                    return objective
                case .failure(let problem):
                    throw error(.badValue, item, "slos", "'\(text)': \(problem.message)")
                }
            }
        } else {
            objectives = []
        }

        let vm = try self.vm(vmNode)
        let workload = try self.workload(workloadNode)
        let memslots = vm.memoryBytes / vm.memslotBytes
        if UInt64(workload.vcpus) > memslots * (vm.memslotBytes >> 21) {
            throw error(
                .badValue, workloadNode["vcpus"] ?? workloadNode, "workload.vcpus",
                "\(workload.vcpus) vCPUs cannot each have a 2 MiB region of \(Quantities.formatSize(vm.memoryBytes)); use fewer vCPUs or more memory"
            )
        }
        let seed = UInt64(try integer(top["seed"], key: "seed", default: 1, range: 0...Int.max))
        var scenario = Scenario(
            name: try top["name"].map { node throws(ScenarioError) in try string(node, key: "name") } ?? "unnamed",
            summary: try top["description"].map { node throws(ScenarioError) in try string(node, key: "description") } ?? "",
            vm: vm,
            workload: workload,
            timeline: timeline,
            repeatCount: try integer(top["repeat"], key: "repeat", default: 1, range: 1...1_000_000),
            policies: policies,
            workqueueWidth: try integer(top["workqueue_width"], key: "workqueue_width", default: 256, range: 1...1024),
            seed: seed,
            objectives: objectives,
            injectedBugs: bugs)
        scenario.chaos = try top["chaos"].flatMap { node throws(ScenarioError) in try chaos(node, seed: seed) }
        scenario.nxRecovery = try top["nx_recovery"].map { node throws(ScenarioError) in try nxRecovery(node) }
        if let node = top["tlb_flush_cost"] {
            let text = try string(node, key: "tlb_flush_cost")
            guard let cost = Quantities.parseDuration(text), cost <= 1e9 else {
                throw error(
                    .badValue, node, "tlb_flush_cost",
                    "'\(text)' is not a duration from 0 ns to 1 s (e.g. 72.8us, or 0ns to leave flushes out of the projection)")
            }
            scenario.tlbFlushCostNanoseconds = cost
        }
        return scenario
    }

    /// `nx_recovery: {period: 2ms, ratio: 8}`: the VM's NX huge-page recovery thread.
    private func nxRecovery(_ node: Node) throws(ScenarioError) -> NXRecoveryConfiguration {
        let map = try mapping(node, key: "nx_recovery", allowed: ["period", "ratio"])
        let periodNode = try required(map, "period", in: node, path: "nx_recovery")
        let text = try string(periodNode, key: "nx_recovery.period")
        guard let period = try? NXRecoveryConfiguration.parse(text)?.periodNanoseconds else {
            throw error(
                .badValue, periodNode, "nx_recovery.period", "'\(text)' is not a whole number of ns, us or ms from 1us to 1 s (e.g. 2ms)")
        }
        let ratio = try integer(map["ratio"], key: "nx_recovery.ratio", default: NXRecoveryConfiguration().ratio, range: 1...1000)
        return NXRecoveryConfiguration(periodNanoseconds: period, ratio: ratio)
    }

    /// `chaos: {probability: 0.1, max_delay: 200us, windows: [before-work-item, lock-handoff]}`:
    /// windows default to all; a probability of 0 means none.
    private func chaos(_ node: Node, seed: UInt64) throws(ScenarioError) -> ChaosConfiguration? {
        let map = try mapping(node, key: "chaos", allowed: ["probability", "max_delay", "windows"])
        let probability = try fraction(try required(map, "probability", in: node, path: "chaos"), key: "chaos.probability", default: 0)
        var delay: UInt64 = 100_000
        if let delayNode = map["max_delay"] {
            let text = try string(delayNode, key: "chaos.max_delay")
            do {
                delay = try ChaosConfiguration.parse("1,\(text)", seed: seed)?.maxDelayNanoseconds ?? delay
            } catch {
                throw self.error(
                    .badValue, delayNode, "chaos.max_delay", "'\(text)' is not a whole number of ns, us or ms up to 1 s (e.g. 200us)")
            }
        }
        var windows = Set(RaceWindow.allCases)
        if let windowsNode = map["windows"] {
            windows = Set(
                try list(windowsNode, key: "chaos.windows").map { item throws(ScenarioError) in
                    let name = try string(item, key: "chaos.windows")
                    guard let window = RaceWindow(rawValue: name) else {
                        throw error(
                            .badValue, item, "chaos.windows",
                            "unknown window '\(name)'; windows: \(RaceWindow.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                    return window
                })
            guard !windows.isEmpty else {
                throw error(.badValue, windowsNode, "chaos.windows", "name at least one window, or leave the key out for all")
            }
        }
        guard probability > 0 else { return nil }
        return ChaosConfiguration(seed: seed, probability: probability, maxDelayNanoseconds: delay, windows: windows)
    }

    private func vm(_ node: Node) throws(ScenarioError) -> VMShape {
        let map = try mapping(node, key: "vm", allowed: ["memory", "memslot", "pages", "dirty_logging", "smm", "smram"])
        let memory = try size(try required(map, "memory", in: node, path: "vm"), key: "vm.memory")
        let memslot = try map["memslot"].map { node throws(ScenarioError) in try size(node, key: "vm.memslot") } ?? (2 << 30)
        guard memslot >= 2 << 20, memslot % (2 << 20) == 0 else {
            throw error(
                .badValue, map["memslot"]!, "vm.memslot",
                "a memslot must be a positive multiple of 2MiB, got \(Quantities.formatSize(memslot))")
        }
        guard memory >= memslot, memory % memslot == 0 else {
            throw error(
                .badValue, map["memory"]!, "vm.memory",
                "memory (\(Quantities.formatSize(memory))) must be a positive whole number of memslots (\(Quantities.formatSize(memslot)))")
        }
        guard memory <= 1 << 48 else {
            throw error(.badValue, map["memory"]!, "vm.memory", "a 4-level root maps at most 256TiB; got \(Quantities.formatSize(memory))")
        }
        var mix = PageMix(fraction4K: 1, fraction2M: 0, fraction1G: 0)
        if let pagesNode = map["pages"] {
            let pages = try mapping(pagesNode, key: "vm.pages", allowed: ["4K", "2M", "1G"])
            mix = PageMix(
                fraction4K: try fraction(pages["4K"], key: "vm.pages.4K", default: 0),
                fraction2M: try fraction(pages["2M"], key: "vm.pages.2M", default: 0),
                fraction1G: try fraction(pages["1G"], key: "vm.pages.1G", default: 0))
            let sum = mix.fraction4K + mix.fraction2M + mix.fraction1G
            guard abs(sum - 1) < 1e-9 else {
                throw error(.badValue, pagesNode, "vm.pages", "the fractions must add up to 1, they add up to \(sum)")
            }
        }
        // SMRAM defaults to 1 GiB, or all of a smaller VM.
        let smram = try map["smram"].map { node throws(ScenarioError) in try size(node, key: "vm.smram") } ?? min(1 << 30, memory)
        guard smram >= 2 << 20, smram <= memory else {
            throw error(.badValue, map["smram"] ?? node, "vm.smram", "SMRAM must be between 2MiB and the VM's memory")
        }
        return VMShape(
            memoryBytes: memory, memslotBytes: memslot, pageMix: mix,
            dirtyLogging: try boolean(map["dirty_logging"], key: "vm.dirty_logging", default: false),
            smm: try boolean(map["smm"], key: "vm.smm", default: false),
            smramBytes: smram)
    }

    private func workload(_ node: Node) throws(ScenarioError) -> Workload {
        let map = try mapping(node, key: "workload", allowed: ["vcpus", "coverage", "touched", "pacing", "guest_work"])
        let vcpus = try integer(try required(map, "vcpus", in: node, path: "workload"), key: "workload.vcpus", default: 1, range: 1...4096)
        var coverage = Coverage.sequential
        if let coverageNode = map["coverage"] {
            let name = try string(coverageNode, key: "workload.coverage")
            guard let parsed = Coverage(rawValue: name) else {
                throw error(.badValue, coverageNode, "workload.coverage", "unknown coverage '\(name)'; use sequential or random")
            }
            coverage = parsed
        }
        var pacing = Pacing.unpaced
        if let pacingNode = map["pacing"] {
            let text = try string(pacingNode, key: "workload.pacing")
            if text == "max" {
                pacing = .unpaced
            } else if text.hasSuffix("/s"), let rate = Double(text.dropLast(2).trimmingCharacters(in: " ")), rate > 0 {
                pacing = .faultsPerSecond(rate)
            } else {
                throw error(
                    .badValue, pacingNode, "workload.pacing", "'\(text)' is not a pacing; use max, or a rate per vCPU such as 50000/s")
            }
        }
        let touched = try fraction(map["touched"], key: "workload.touched", default: 1)
        guard touched > 0 else {
            throw error(.badValue, map["touched"]!, "workload.touched", "touch more than nothing: use a fraction above 0")
        }
        var workload = Workload(vcpus: vcpus, coverage: coverage, touched: touched, pacing: pacing)
        workload.guestWork = try boolean(map["guest_work"], key: "workload.guest_work", default: false)
        return workload
    }

    private func timeline(_ node: Node) throws(ScenarioError) -> [TimelineStep] {
        let items = try list(node, key: "timeline")
        guard !items.isEmpty else {
            throw error(.badValue, node, "timeline", "the timeline is empty; list steps such as populate, reset_vcpus, teardown")
        }
        let names = "populate, run, reset_vcpus, delete_memslots, full_zap, unmap, dirty_log, fast_faults, dirty_memory, workout, teardown"
        return try items.map { item throws(ScenarioError) -> TimelineStep in
            if let name = item.scalar?.string {
                switch name {
                case "populate": return .populate
                case "dirty_memory": return .dirtyMemory
                case "reset_vcpus": return .resetVCPUs
                case "full_zap": return .fullZap
                case "teardown": return .teardown
                case "run", "delete_memslots", "unmap", "dirty_log", "fast_faults", "workout":
                    throw error(
                        .missingKey, item, "timeline",
                        "'\(name)' takes parameters, e.g. `- run: {faults: 10000}`, `- delete_memslots: {fraction: 0.5}`, `- unmap: {fraction: 0.25}`, `- dirty_log: clear`, `- fast_faults: {faults: 1000}`, `- workout: {operations: 2000}`"
                    )
                default:
                    throw error(.unknownKey, item, "timeline", "unknown step '\(name)'; steps: \(names)")
                }
            }
            guard let map = item.mapping, map.count == 1, let (keyNode, value) = map.first, let name = keyNode.string else {
                throw error(.wrongType, item, "timeline", "each step is a name or a one-key mapping, e.g. `- run: {faults: 10000}`")
            }
            switch name {
            case "run":
                let parameters = try mapping(value, key: "timeline.run", allowed: ["faults"])
                let faults = try integer(
                    try required(parameters, "faults", in: value, path: "timeline.run"),
                    key: "timeline.run.faults", default: 0, range: 1...1_000_000_000)
                return .run(faults: faults)
            case "delete_memslots":
                let parameters = try mapping(value, key: "timeline.delete_memslots", allowed: ["fraction"])
                let share = try fraction(
                    try required(parameters, "fraction", in: value, path: "timeline.delete_memslots"),
                    key: "timeline.delete_memslots.fraction", default: 0)
                return .deleteMemslots(fraction: share)
            case "unmap":
                let parameters = try mapping(value, key: "timeline.unmap", allowed: ["fraction"])
                let share = try fraction(
                    try required(parameters, "fraction", in: value, path: "timeline.unmap"),
                    key: "timeline.unmap.fraction", default: 0)
                return .unmap(fraction: share)
            case "dirty_log":
                let text = try string(value, key: "timeline.dirty_log")
                guard let action = DirtyLogAction(rawValue: text) else {
                    throw error(.badValue, value, "timeline.dirty_log", "unknown dirty-log action '\(text)'; use enable, clear or disable")
                }
                return .dirtyLog(action)
            case "fast_faults", "workout":
                let key = name == "workout" ? "operations" : "faults"
                let parameters = try mapping(value, key: "timeline.\(name)", allowed: [key])
                let count = try integer(
                    try required(parameters, key, in: value, path: "timeline.\(name)"),
                    key: "timeline.\(name).\(key)", default: 0, range: 1...1_000_000_000)
                return name == "workout" ? .workout(operations: count) : .fastFaults(faults: count)
            default:
                throw error(.unknownKey, keyNode, "timeline", "unknown step '\(name)'; steps: \(names)")
            }
        }
    }

    // MARK: - Typed readers

    private func error(_ code: ScenarioError.Code, _ node: Node, _ key: String?, _ message: String) -> ScenarioError {
        ScenarioError(code, file: file, line: node.mark?.line, key: key, message)
    }

    private func mapping(_ node: Node, key: String?, allowed: Set<String>) throws(ScenarioError) -> [String: Node] {
        guard let map = node.mapping else {
            throw error(.wrongType, node, key, "expected a mapping of keys (\(allowed.sorted().joined(separator: ", ")))")
        }
        var result: [String: Node] = [:]
        for (keyNode, value) in map {
            guard let name = keyNode.string else { throw error(.wrongType, keyNode, key, "keys must be text") }
            let path = key.map { "\($0).\(name)" } ?? name
            guard allowed.contains(name) else {
                throw error(.unknownKey, keyNode, path, "unknown key; allowed here: \(allowed.sorted().joined(separator: ", "))")
            }
            guard result[name] == nil else { throw error(.badValue, keyNode, path, "the key appears twice") }
            result[name] = value
        }
        return result
    }

    private func required(_ map: [String: Node], _ name: String, in parent: Node, path: String?) throws(ScenarioError) -> Node {
        guard let node = map[name] else {
            let full = path.map { "\($0).\(name)" } ?? name
            throw error(.missingKey, parent, full, "required key is missing")
        }
        return node
    }

    private func list(_ node: Node, key: String) throws(ScenarioError) -> [Node] {
        guard let sequence = node.sequence else { throw error(.wrongType, node, key, "expected a list") }
        return Array(sequence)
    }

    private func string(_ node: Node, key: String) throws(ScenarioError) -> String {
        guard let text = node.scalar?.string else { throw error(.wrongType, node, key, "expected a single value, not a list or mapping") }
        return text
    }

    private func size(_ node: Node, key: String) throws(ScenarioError) -> UInt64 {
        let text = try string(node, key: key)
        guard let bytes = Quantities.parseSize(text) else {
            throw error(
                .badValue, node, key,
                "'\(text)' is not a size; write a non-negative number and a binary unit: KiB, MiB, GiB, TiB (e.g. 64TiB)")
        }
        guard bytes > 0 else { throw error(.badValue, node, key, "the size must be above zero") }
        return bytes
    }

    private func integer(_ node: Node?, key: String, default value: Int, range: ClosedRange<Int>) throws(ScenarioError) -> Int {
        guard let node else { return value }
        let text = try string(node, key: key)
        guard let number = Int(text.replacingUnderscores()) else {
            throw error(.badValue, node, key, "'\(text)' is not a whole number")
        }
        guard range.contains(number) else {
            throw error(.badValue, node, key, "\(number) is out of range \(range.lowerBound)...\(range.upperBound)")
        }
        return number
    }

    private func fraction(_ node: Node?, key: String, default value: Double) throws(ScenarioError) -> Double {
        guard let node else { return value }
        let text = try string(node, key: key)
        guard let number = Double(text), number >= 0, number <= 1 else {
            throw error(.badValue, node, key, "'\(text)' is not a fraction between 0 and 1")
        }
        return number
    }

    private func boolean(_ node: Node?, key: String, default value: Bool) throws(ScenarioError) -> Bool {
        guard let node else { return value }
        guard let flag = node.bool else {
            throw error(.badValue, node, key, "'\(node.string ?? "?")' is not true or false")
        }
        return flag
    }
}

extension String {
    fileprivate func replacingUnderscores() -> String { filter { $0 != "_" } }
}
