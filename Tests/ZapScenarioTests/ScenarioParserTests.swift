import Testing
import ZapEngine
import ZapPlatform
@testable import ZapScenario
import ZapfleetTestSupport

/// Scenario files: every built-in parses, and every kind of bad input names its file, line and key.
@Suite("Scenario parsing")
struct ScenarioParserTests {
    @Test("every built-in scenario parses and ends with teardown", arguments: BuiltinScenarios.all.map(\.name))
    func builtinsParse(name: String) throws {
        let scenario = try ScenarioCatalog.load(name)
        #expect(scenario.name == name)
        #expect(scenario.timeline.last == .teardown)
        #expect(!scenario.policies.isEmpty)
        #expect(scenario.vm.memoryBytes % scenario.vm.memslotBytes == 0)
    }

    @Test("seed-64t is 64 TiB of 4 KiB mappings in 2 GiB memslots")
    func seedShape() throws {
        let scenario = try ScenarioCatalog.load("seed-64t")
        #expect(scenario.vm.memoryBytes == 64 << 40)
        #expect(scenario.memslotCount == 32768)
        #expect(scenario.vm.pageMix.fraction4K == 1)
        #expect(scenario.timeline.contains(.resetVCPUs))
        // 64 TiB / 512 = 128 GiB of leaf tables, as docs/model.md says.
        let estimate = MemoryEstimate.estimate(scenario)
        #expect(estimate.pageTableBytes >= 128 << 30 && estimate.pageTableBytes < 129 << 30)
    }

    @Test("writing a scenario and reading it back gives the same scenario", arguments: BuiltinScenarios.all.map(\.name))
    func roundTrip(name: String) throws {
        let scenario = try ScenarioCatalog.load(name)
        let again = try ScenarioParser.parse(ScenarioWriter.yaml(scenario), file: "round-trip")
        #expect(again == scenario)
    }

    private static let valid = """
        name: t
        vm:
          memory: 8GiB
        workload:
          vcpus: 2
        timeline:
          - populate
          - teardown

        """

    /// Parses `valid` with `line` (1-based) replaced, and returns the error.
    private func failure(replacing line: Int, with text: String) -> ScenarioError? {
        var lines = Self.valid.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        lines[line - 1] = text
        do {
            _ = try ScenarioParser.parse(lines.joined(separator: "\n"), file: "bad.yaml")
            return nil
        } catch {
            return error
        }
    }

    @Test("the minimal scenario is valid and gets the documented defaults")
    func defaults() throws {
        let scenario = try ScenarioParser.parse(Self.valid, file: "ok.yaml")
        #expect(scenario.vm.memslotBytes == 2 << 30)
        #expect(scenario.policies == ZapPolicy.allCases)
        #expect(scenario.workqueueWidth == 256, "the kernel's default max_active")
        #expect(scenario.repeatCount == 1)
        #expect(scenario.workload.touched == 1)
    }

    @Test("a VM smaller than the default SMRAM parses, with SMRAM cut to its memory")
    func smallVM() throws {
        let scenario = try ScenarioParser.parse(
            "name: s\nvm: {memory: 400MiB, memslot: 2MiB}\nworkload: {vcpus: 1}\ntimeline: [populate]\n", file: "s.yaml")
        #expect(scenario.vm.smramBytes == 400 << 20)
    }

    @Test("an unknown key is named with its line")
    func unknownKey() throws {
        let error = try #require(failure(replacing: 3, with: "  memroy: 8GiB"))
        #expect(error.code == .unknownKey)
        #expect(error.line == 3)
        #expect(error.key == "vm.memroy")
        #expect(error.description.hasPrefix("bad.yaml:3: vm.memroy: unknown key"))
        #expect(error.message.contains("memory"), "lists the allowed keys")
    }

    @Test("a wrong unit is refused with the units that work", arguments: ["64TB", "8 gigs", "12"])
    func wrongUnit(text: String) throws {
        let error = try #require(failure(replacing: 3, with: "  memory: \(text)"))
        #expect(error.code == .badValue)
        #expect(error.line == 3)
        #expect(error.key == "vm.memory")
        #expect(error.message.contains("GiB"))
    }

    @Test("a negative size is refused")
    func negativeSize() throws {
        let error = try #require(failure(replacing: 3, with: "  memory: -8GiB"))
        #expect(error.code == .badValue)
        #expect(error.key == "vm.memory")
    }

    @Test("memory that is not a whole number of memslots is refused")
    func partialMemslot() throws {
        let error = try #require(failure(replacing: 3, with: "  memory: 3GiB"))
        #expect(error.code == .badValue)
        #expect(error.message.contains("memslots"))
    }

    @Test("an SLO naming an unknown metric is refused with the known ones")
    func unknownMetric() throws {
        let text = Self.valid + "slos:\n  - \"async.vcpu_blok.p99 < 1ms\"\n"
        #expect(throws: ScenarioError.self) { try ScenarioParser.parse(text, file: "bad.yaml") }
        do {
            _ = try ScenarioParser.parse(text, file: "bad.yaml")
        } catch {
            #expect(error.key == "slos")
            #expect(error.line == 10)
            #expect(error.message.contains("vcpu_block"))
        }
    }

    @Test("a missing required key is named")
    func missingKey() throws {
        let error = try #require(failure(replacing: 5, with: "  coverage: random"))
        #expect(error.code == .missingKey)
        #expect(error.key == "workload.vcpus")
    }

    @Test("an unknown timeline step and a step after teardown are refused")
    func badTimeline() throws {
        let unknown = try #require(failure(replacing: 7, with: "  - popluate"))
        #expect(unknown.code == .unknownKey)
        #expect(unknown.line == 7)
        let late = try #require(failure(replacing: 7, with: "  - teardown"))
        #expect(late.code == .badValue)
        #expect(late.message.contains("last"))
    }

    @Test("YAML that does not parse reports its line")
    func syntax() throws {
        let error = try #require(failure(replacing: 4, with: "workload: [vcpus: 2"))
        #expect(error.code == .syntax)
        #expect(error.line != nil)
    }

    @Test("a name that is neither built in nor a file lists the built-ins")
    func unknownScenario() {
        #expect(throws: ScenarioError.self) { try ScenarioCatalog.load("no-such-scenario") }
    }
}

@Suite("Objectives and quantities")
struct ObjectiveTests {
    @Test("latency objectives carry policy, operation, statistic and a threshold in ns")
    func latency() throws {
        let objective = try ServiceLevelObjective.parse("async.vcpu_block.p99.9 < 1ms").get()
        #expect(objective.policy == .async)
        #expect(objective.metric == .latency(operation: "vcpu_block", statistic: "p99.9", projected: false))
        #expect(objective.comparison == .lessThan)
        #expect(objective.threshold == 1e6)
        let projected = try ServiceLevelObjective.parse("sync.reset.projected.max >= 800s").get()
        #expect(projected.metric == .latency(operation: "reset", statistic: "max", projected: true))
        #expect(projected.comparison == .greaterOrEqual)
        #expect(projected.threshold == 800e9)
    }

    @Test("counter objectives apply to every policy unless one is named")
    func counters() throws {
        let all = try ServiceLevelObjective.parse("violations == 0").get()
        #expect(all.policy == nil)
        #expect(all.metric == .counter("violations"))
        let one = try ServiceLevelObjective.parse("preserve.violations == 0").get()
        #expect(one.policy == .preserve)
    }

    @Test(
        "malformed objectives say what is wrong",
        arguments: [
            "async.fault.p99 1ms", "async.fault.p42 < 1ms", "async.fault.p99 < 1 parsec", "nonsense.fault.p99 < 1ms", "bogus == 0"
        ])
    func malformed(text: String) {
        guard case .failure(let error) = ServiceLevelObjective.parse(text) else {
            Issue.record("'\(text)' parsed")
            return
        }
        #expect(!error.message.isEmpty)
    }

    @Test("sizes and durations parse with binary and time units")
    func quantities() {
        #expect(Quantities.parseSize("64TiB") == 64 << 40)
        #expect(Quantities.parseSize("1.5 GiB") == 3 << 29)
        #expect(Quantities.parseSize("64TB") == nil)
        #expect(Quantities.parseSize("-1GiB") == nil)
        #expect(Quantities.formatSize(64 << 40) == "64TiB")
        #expect(Quantities.formatSize(1536 << 20) == "1536MiB")
        #expect(Quantities.parseDuration("250us") == 250_000)
        #expect(Quantities.parseDuration("1ms") == 1_000_000)
        #expect(Quantities.parseDuration("900 s") == 900e9)
        #expect(Quantities.parseDuration("fast") == nil)
    }

    @Test("fuzz: 5,000 mutated built-in scenarios each parse or fail with a located error, never a crash")
    func fuzzParser() {
        var fuzz = FuzzInput(seed: 0xfeed)
        let tokens = [
            ":", "-", "[", "]", "{", "}", "\n", "  ", "#", "&a", "*a", "!!binary", "~", "0", "-1", "1e309", "99999999999999999999TiB",
            "nan", "\"", "'", "policies", "timeline", "fraction", "populate", "\u{0}", "é", "\t", "<<", "|", ">"
        ].map { Array($0.unicodeScalars) }
        let builtins = BuiltinScenarios.all.map { Array($0.yaml.unicodeScalars) }
        var outcomes = (parsed: 0, rejected: 0)
        for _ in 0..<5000 {
            let text = fuzz.mutated(builtins[fuzz.below(builtins.count)], tokens: tokens, most: 6) {
                (random: inout SplitMix64) -> Unicode.Scalar in
                Unicode.Scalar(UInt8(truncatingIfNeeded: random.next() & 0x7f))
            }
            var mutated = String.UnicodeScalarView()
            mutated.append(contentsOf: text)
            do {
                _ = try ScenarioParser.parse(String(mutated), file: "fuzz.yaml")
                outcomes.parsed += 1
            } catch {
                outcomes.rejected += 1
                #expect(error.description.hasPrefix("fuzz.yaml"), "errors name the file: \(error)")
            }
        }
        #expect(outcomes.rejected > 1000)
        print("scenario parser fuzz: \(outcomes.parsed) parsed, \(outcomes.rejected) rejected with located errors")
    }

}

extension ScenarioParserTests {
    @Test("the steps of every walker parse, and a chaos section becomes the run's race amplification")
    func walkerStepsAndChaos() throws {
        let text = Self.valid.replacingOccurrences(
            of: "  - populate\n  - teardown",
            with: """
                  - populate
                  - fast_faults: {faults: 10}
                  - dirty_log: enable
                  - dirty_log: clear
                  - dirty_log: disable
                  - unmap: {fraction: 0.5}
                  - workout: {operations: 20}
                  - teardown
                seed: 9
                chaos: {probability: 0.25, max_delay: 300us, windows: [lock-handoff, before-work-item]}
                nx_recovery: {period: 500us, ratio: 3}
                """)
        let scenario = try ScenarioParser.parse(text, file: "walkers.yaml")
        #expect(
            scenario.timeline == [
                .populate, .fastFaults(faults: 10), .dirtyLog(.enable), .dirtyLog(.clear), .dirtyLog(.disable),
                .unmap(fraction: 0.5), .workout(operations: 20), .teardown
            ])
        #expect(
            scenario.chaos
                == ChaosConfiguration(
                    seed: 9, probability: 0.25, maxDelayNanoseconds: 300_000,
                    windows: [.lockHandoff, .beforeWorkItem]))
        #expect(scenario.nxRecovery == NXRecoveryConfiguration(periodNanoseconds: 500_000, ratio: 3))
        #expect(try ScenarioParser.parse(ScenarioWriter.yaml(scenario), file: "again") == scenario)
    }

    @Test(
        "a bad chaos or nx_recovery section is refused with its key and what to write",
        arguments: [
            ("chaos: {probability: 2}", "chaos.probability"),
            ("chaos: {probability: 0.1, max_delay: 5s}", "chaos.max_delay"),
            ("chaos: {probability: 0.1, windows: [tlb-flush]}", "chaos.windows"),
            ("chaos: {probability: 0.1, windows: []}", "chaos.windows"),
            ("chaos: {max_delay: 1ms}", "chaos.probability"),
            ("chaos: {probability: 0.1, seed: 3}", "chaos.seed"),
            ("nx_recovery: {period: 0ms}", "nx_recovery.period"),
            ("nx_recovery: {period: 2s}", "nx_recovery.period"),
            ("nx_recovery: {ratio: 4}", "nx_recovery.period"),
            ("nx_recovery: {period: 2ms, ratio: 0}", "nx_recovery.ratio"),
            ("nx_recovery: {period: 2ms, ratio: 1e9}", "nx_recovery.ratio"),
            ("nx_recovery: 2ms", "nx_recovery"),
            ("tlb_flush_cost: 5", "tlb_flush_cost"),
            ("tlb_flush_cost: 2s", "tlb_flush_cost"),
            ("tlb_flush_cost: -1us", "tlb_flush_cost"),
            ("tlb_flush_cost: [1us]", "tlb_flush_cost")
        ])
    func badChaos(line: String, key: String) throws {
        let error = try #require(failure(replacing: 6, with: "\(line)\ntimeline:"))
        #expect(error.key == key, "\(error)")
    }

    @Test("`tlb_flush_cost` sets the projection's cost per remote TLB flush, and a `dirty_memory` step parses; both survive a rewrite")
    func flushCostAndDirtyMemory() throws {
        let text =
            Self.valid.replacingOccurrences(
                of: "  - populate\n  - teardown", with: "  - populate\n  - dirty_log: enable\n  - dirty_memory\n  - teardown")
            + "tlb_flush_cost: 12.5us\n"
        let scenario = try ScenarioParser.parse(text, file: "flush.yaml")
        #expect(scenario.tlbFlushCostNanoseconds == 12_500)
        #expect(scenario.timeline == [.populate, .dirtyLog(.enable), .dirtyMemory, .teardown])
        #expect(try ScenarioParser.parse(ScenarioWriter.yaml(scenario), file: "again") == scenario)
        let plain = try ScenarioParser.parse(Self.valid, file: "plain.yaml")
        #expect(plain.tlbFlushCostNanoseconds == Scenario.defaultTLBFlushCostNanoseconds)
        #expect(abs(Scenario.defaultTLBFlushCostNanoseconds - 72_827) < 1, "(14.33 − 4.79) s / (131,072 − 76) flushes")
    }

    @Test("a dirty-log step names its three actions when given another")
    func badDirtyLog() throws {
        let error = try #require(failure(replacing: 7, with: "  - dirty_log: pause"))
        #expect(error.key == "timeline.dirty_log")
        #expect(error.message.contains("enable, clear or disable"))
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
