/// An error the engine reports instead of crashing: bad configuration or exhausted resources.
public struct EngineError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, as a stable code.
    public enum Code: String, Sendable {
        /// The page-table budget could not be reserved.
        case tableMemoryUnavailable
        /// The page-table budget is used up: the run needs a larger budget or a smaller shard.
        case tableMemoryExhausted
        /// A parameter is out of its range.
        case invalidConfiguration
        /// The workqueue was destroyed and refuses new work.
        case workqueueDestroyed
    }

    /// The code.
    public let code: Code
    /// A sentence for a person: what happened and what to do.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `code: message`.
    public var description: String { "\(code.rawValue): \(message)" }
}
