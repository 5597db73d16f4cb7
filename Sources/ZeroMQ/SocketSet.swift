import CZeroMQ
import Glibc

/// Waits on many sockets at once through their `ZMQ_FD`s and epoll: a wake-up costs what is
/// ready, not what is watched. `zmq_poll` asks every socket for `ZMQ_EVENTS`, a system call per
/// socket per call, which at thousands of sockets is the whole cost of a host loop.
///
/// `ZMQ_FD` signals that a socket's state may have changed, not that a message is there, and a
/// send or receive can take in the signal meant for a message still waiting. So: after a
/// socket is reported, read it until `receive(dontWait:)` gives nil; after sending on a socket,
/// read it the same way.
public final class ZeroMQSocketSet {
    private let epoll: Int32
    private var events = [epoll_event](repeating: epoll_event(), count: 512)
    /// The sockets, by the index `add` returned.
    public private(set) var sockets: [ZeroMQSocket] = []

    /// An empty set.
    public init() throws(ZeroMQError) {
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw ZeroMQError.last("epoll_create1") }
    }

    deinit { close(epoll) }

    /// Watches `socket`; `wait` reports it by the index returned.
    @discardableResult
    public func add(_ socket: ZeroMQSocket) throws(ZeroMQError) -> Int {
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = UInt64(sockets.count)
        guard epoll_ctl(epoll, EPOLL_CTL_ADD, try socket.option(ZMQ_FD), &event) == 0 else {
            throw ZeroMQError.last("epoll_ctl")
        }
        sockets.append(socket)
        return sockets.count - 1
    }

    /// The indexes of the sockets whose state changed, after waiting up to `timeoutMilliseconds`
    /// (-1: until one does); empty on a timeout or a signal.
    public func wait(timeoutMilliseconds: Int) throws(ZeroMQError) -> [Int] {
        let count = epoll_wait(epoll, &events, Int32(events.count), Int32(timeoutMilliseconds))
        if count < 0 {
            guard errno == EINTR else { throw ZeroMQError.last("epoll_wait") }
            return []
        }
        return events.prefix(Int(count)).map { Int($0.data.u64) }
    }
}
