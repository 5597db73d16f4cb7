import ZapEngine

/// JUnit XML for CI systems: one test case per objective and policy, and one per invariant and
/// policy, so that a nightly job shows what held and what broke.
public enum JUnitReport {
    /// What each invariant of the checker guards, for test-case names.
    static let invariantNames: [Int: String] = [
        1: "teardown leaves no root, page or SPTE behind",
        2: "fast zap returns only when every invalid root is zapped",
        3: "no reference-count underflow, nothing touched after free",
        4: "no yielding zap on an unreferenced root",
        5: "each root queued at most once",
        6: "invalidation reaches every address space",
        7: "zaps yield mmu_lock to waiters",
        8: "page-table memory suffices",
        9: "every operation finishes (no livelock)"
    ]

    /// The JUnit XML of `report`.
    public static func render(_ report: RunReport) -> String {
        var cases: [String] = []
        var failures = 0
        for verdict in report.objectives {
            let name = "\(verdict.policy): \(verdict.objective)"
            if verdict.met {
                cases.append(testCase(name, className: "objectives"))
            } else {
                failures += 1
                cases.append(
                    testCase(
                        name, className: "objectives",
                        failure: "measured \(verdict.value), threshold \(verdict.threshold)"))
            }
        }
        for policy in report.policies {
            for invariant in invariantNames.keys.sorted() {
                let kinds = Violation.Kind.allCases.filter { $0.invariant == invariant }
                let broken = kinds.compactMap { kind in policy.violationsByKind[kind.rawValue].map { "\(kind.rawValue) × \($0)" } }
                let name = "\(policy.policy): invariant \(invariant): \(invariantNames[invariant]!)"
                if broken.isEmpty {
                    cases.append(testCase(name, className: "invariants"))
                } else {
                    failures += 1
                    let examples = policy.violationExamples.filter { example in kinds.contains { example.hasPrefix($0.rawValue) } }
                    cases.append(
                        testCase(
                            name, className: "invariants",
                            failure: broken.joined(separator: ", ") + (examples.isEmpty ? "" : "\n" + examples.joined(separator: "\n"))))
                }
            }
        }
        if !report.complete {
            failures += 1
            cases.append(testCase("run complete", className: "run", failure: report.verdict.summary))
        }
        return """
            <?xml version="1.0" encoding="UTF-8"?>
            <testsuites name="zapfleet" tests="\(cases.count)" failures="\(failures)" time="\(report.wallSeconds)">
            <testsuite name="zapfleet.\(escape(report.scenario))" tests="\(cases.count)" failures="\(failures)" time="\(report.wallSeconds)" timestamp="\(escape(report.startedAt))">
            \(cases.joined(separator: "\n"))
            </testsuite>
            </testsuites>

            """
    }

    private static func testCase(_ name: String, className: String, failure: String? = nil) -> String {
        let head = "  <testcase classname=\"zapfleet.\(className)\" name=\"\(escape(name))\""
        guard let failure else { return head + "/>" }
        return head
            + ">\n    <failure message=\"\(escape(failure.split(separator: "\n").first.map(String.init) ?? failure))\">\(escape(failure))</failure>\n  </testcase>"
    }

    static func escape(_ text: String) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&apos;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
