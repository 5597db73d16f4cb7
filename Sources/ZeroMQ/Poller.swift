import CZeroMQ

/// Waits on several sockets, and plain file descriptors, at once (`zmq_poll`), for readability.
public struct ZeroMQPoller {
    private var items: [zmq_pollitem_t] = []
    // Kept so that the sockets outlive the poll items that name their handles.
    private var sockets: [ZeroMQSocket] = []

    /// An empty poller.
    public init() {}

    /// Adds a socket to wait on.
    public mutating func add(_ socket: ZeroMQSocket) {
        sockets.append(socket)
        items.append(zmq_pollitem_t(socket: socket.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0))
    }

    /// Adds a file descriptor to wait on (e.g. an `eventfd` another thread raises).
    public mutating func add(fileDescriptor: Int32) {
        items.append(zmq_pollitem_t(socket: nil, fd: fileDescriptor, events: Int16(ZMQ_POLLIN), revents: 0))
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever) and returns, in the order they were added,
    /// which sockets have a message and which descriptors are readable.
    public func poll(timeoutMilliseconds: Int) throws(ZeroMQError) -> [Bool] {
        var items = self.items
        while true {
            let result = zmq_poll(&items, Int32(items.count), timeoutMilliseconds)
            if result >= 0 { break }
            let error = ZeroMQError.last("zmq_poll")
            if !error.isInterrupted { throw error }
        }
        return items.map { $0.revents & Int16(ZMQ_POLLIN) != 0 }
    }
}
