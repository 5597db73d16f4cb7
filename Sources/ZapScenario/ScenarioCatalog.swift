import Foundation

/// Finds a scenario by built-in name or file path.
public enum ScenarioCatalog {
    /// Loads `nameOrPath`: a built-in name (see ``BuiltinScenarios``) or a YAML file.
    public static func load(_ nameOrPath: String) throws(ScenarioError) -> Scenario {
        if let yaml = BuiltinScenarios.yaml(named: nameOrPath) {
            return try ScenarioParser.parse(yaml, file: "built-in:\(nameOrPath)")
        }
        guard FileManager.default.fileExists(atPath: nameOrPath) else {
            throw ScenarioError(
                .unknownScenario, file: nameOrPath,
                "no built-in scenario and no file by that name; built-ins: \(BuiltinScenarios.all.map(\.name).joined(separator: ", "))")
        }
        let text: String
        do {
            text = try String(contentsOfFile: nameOrPath, encoding: .utf8)
        } catch {
            throw ScenarioError(.unreadable, file: nameOrPath, "cannot read the file: \(error.localizedDescription)")
        }
        return try ScenarioParser.parse(text, file: nameOrPath)
    }
}
