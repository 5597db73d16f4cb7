/// A scenario that cannot be used, with where and why. Commands exit with 64 on it.
public struct ScenarioError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The kind of problem.
    public enum Code: String, Sendable {
        /// The file could not be read.
        case unreadable
        /// The text is not YAML.
        case syntax
        /// A key the schema does not have.
        case unknownKey
        /// A required key is absent.
        case missingKey
        /// A value of the wrong kind (a list where a mapping belongs, text where a number does).
        case wrongType
        /// A value out of range or in the wrong unit.
        case badValue
        /// A name that is neither a built-in scenario nor a file.
        case unknownScenario
        /// The run would need more memory than allowed.
        case tooLarge
    }

    /// The kind of problem.
    public let code: Code
    /// The file (or `built-in:NAME`).
    public let file: String
    /// The line, when known (1-based).
    public let line: Int?
    /// The key path, e.g. `vm.memory`.
    public let key: String?
    /// What is wrong, and what to do.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, file: String, line: Int? = nil, key: String? = nil, _ message: String) {
        self.code = code
        self.file = file
        self.line = line
        self.key = key
        self.message = message
    }

    /// `FILE:LINE: KEY: MESSAGE`.
    public var description: String {
        var location = file
        if let line { location += ":\(line)" }
        if let key { location += ": \(key)" }
        return "\(location): \(message)"
    }
}
