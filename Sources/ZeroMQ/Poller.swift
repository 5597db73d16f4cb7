import CZeroMQ

/// Waits on several sockets at once (`zmq_poll`), for readability.
public struct ZeroMQPoller {
    private var sockets: [ZeroMQSocket] = []

    /// An empty poller.
    public init() {}

    /// Adds a socket to wait on.
    public mutating func add(_ socket: ZeroMQSocket) { sockets.append(socket) }

    /// Waits up to `timeoutMilliseconds` (-1: forever) and returns which sockets have a message.
    public func poll(timeoutMilliseconds: Int) throws(ZeroMQError) -> [Bool] {
        var items = sockets.map { zmq_pollitem_t(socket: $0.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0) }
        while true {
            let result = zmq_poll(&items, Int32(items.count), timeoutMilliseconds)
            if result >= 0 { break }
            let error = ZeroMQError.last("zmq_poll")
            if !error.isInterrupted { throw error }
        }
        return items.map { $0.revents & Int16(ZMQ_POLLIN) != 0 }
    }
}
