import ZapPlatform

/// A one-shot gate that test threads block on until the test opens it: the engine's own event.
public typealias Gate = OneShotEvent

extension OneShotEvent {
    /// Lets every waiter through.
    public func open() { signal() }
}

/// An ordered log that several threads append to.
public final class Log<Element: Sendable>: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private var items: [Element] = []

    /// An empty log.
    public init() {}

    /// Appends `item`.
    public func append(_ item: Element) { mutex.withLock { items.append(item) } }
    /// Appends `item` unless it is already there; returns whether it was appended.
    public func appendOnce(_ item: Element) -> Bool where Element: Equatable {
        mutex.withLock {
            if items.contains(item) { return false }
            items.append(item)
            return true
        }
    }
    /// Everything appended so far, in order.
    public var all: [Element] { mutex.withLock { items } }
    /// How many items were appended.
    public var count: Int { mutex.withLock { items.count } }
}
