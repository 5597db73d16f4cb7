import CZeroMQ
import Foundation

/// What happened to a monitored socket's connections (`zmq_socket_monitor` events).
public enum SocketEvent: Sendable, Equatable {
    /// The security handshake succeeded.
    case handshakeSucceeded
    /// The server's ZAP handler refused us; the value is its status code (e.g. 400).
    case authenticationRefused(status: UInt32)
    /// The handshake broke off: a protocol error, or a mechanism mismatch (CURVE against NULL).
    case handshakeFailed
    /// The connection went away.
    case disconnected
    /// Any other event, by number.
    case other(UInt16)
}

/// Watches one socket's connection events over an `inproc` PAIR socket. Owned by the thread
/// that owns the monitored socket, and closed (``close()``) before it: libzmq's I/O thread
/// sends the events, and blocks for good on a monitor whose reader is gone.
public final class SocketMonitor {
    /// The monitor's socket, for a poller.
    public let socket: ZeroMQSocket
    private let monitored: ZeroMQSocket
    private var closed = false

    /// Starts monitoring `monitored`'s handshakes and disconnects.
    public init(_ monitored: ZeroMQSocket) throws(ZeroMQError) {
        let endpoint = "inproc://zapfleet-monitor-\(UUID().uuidString)"
        let events =
            ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
            | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_DISCONNECTED
        guard zmq_socket_monitor(monitored.handle, endpoint, events) == 0 else { throw ZeroMQError.last("zmq_socket_monitor") }
        self.monitored = monitored
        socket = try ZeroMQSocket(monitored.context, type: .pair)
        try socket.connect(endpoint)
    }

    /// Stops monitoring, then closes the monitor's socket. Call before closing the monitored socket.
    public func close() {
        guard !closed else { return }
        closed = true
        // Stopping first closes libzmq's sending side, so no event can wait for a reader any more.
        zmq_socket_monitor(monitored.handle, nil, 0)
        socket.close()
    }

    deinit { close() }

    /// The events queued so far.
    public func drain() throws(ZeroMQError) -> [SocketEvent] {
        var events: [SocketEvent] = []
        while let message = try socket.receive(dontWait: true, maximumFrames: 2) {
            // Frame one: a 16-bit event number and a 32-bit value, in host order.
            guard let header = message.frames.first, header.count >= 6 else { continue }
            let number = UInt16(header[0]) | UInt16(header[1]) << 8
            let value = UInt32(header[2]) | UInt32(header[3]) << 8 | UInt32(header[4]) << 16 | UInt32(header[5]) << 24
            switch Int32(number) {
            case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: events.append(.handshakeSucceeded)
            case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: events.append(.authenticationRefused(status: value))
            case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: events.append(.handshakeFailed)
            case ZMQ_EVENT_DISCONNECTED: events.append(.disconnected)
            default: events.append(.other(number))
            }
        }
        return events
    }
}
