/// A value one thread sets and another reads, e.g. after joining it.
public final class ThreadResult<Value>: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private var stored: Value?

    /// Nothing yet.
    public init() {}

    /// The value, once set.
    public var value: Value? {
        get { mutex.withLock { stored } }
        set { mutex.withLock { stored = newValue } }
    }
}
