import CZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// The socket types zapfleet uses.
public enum SocketType: Sendable {
    /// Addresses peers by identity; the coordinator's side.
    case router
    /// Talks to whoever it is connected to, asynchronously; the worker's side.
    case dealer
    /// One-to-one, for signalling between threads over `inproc://`.
    case pair
    /// Answers requests in turn; a ZAP handler's side.
    case reply

    var raw: Int32 {
        switch self {
        case .router: ZMQ_ROUTER
        case .dealer: ZMQ_DEALER
        case .pair: ZMQ_PAIR
        case .reply: ZMQ_REP
        }
    }
}

/// One libzmq socket. Like every libzmq socket it must be used by one thread at a time: the
/// thread that owns it. Closing happens on `close()` or deinit, with linger set to zero unless
/// changed, so that a dead peer never keeps a process from exiting.
public final class ZeroMQSocket: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    /// The context the socket belongs to (kept alive while the socket is).
    public let context: ZeroMQContext
    private var closed = false

    /// Creates a socket of `type` in `context`.
    public init(_ context: ZeroMQContext, type: SocketType) throws(ZeroMQError) {
        guard let handle = zmq_socket(context.handle, type.raw) else { throw ZeroMQError.last("zmq_socket") }
        self.handle = handle
        self.context = context
        try setOption(ZMQ_LINGER, Int32(0))
    }

    deinit { close() }

    /// Closes the socket; later calls fail.
    public func close() {
        guard !closed else { return }
        closed = true
        zmq_close(handle)
    }

    // MARK: - Options

    /// Sets an integer option (`zmq_setsockopt`).
    public func setOption(_ option: Int32, _ value: Int32) throws(ZeroMQError) {
        var value = value
        guard zmq_setsockopt(handle, option, &value, MemoryLayout<Int32>.size) == 0 else {
            throw ZeroMQError.last("setsockopt \(option)")
        }
    }

    /// Sets a 64-bit integer option (`ZMQ_MAXMSGSIZE`).
    public func setOption(_ option: Int32, _ value: Int64) throws(ZeroMQError) {
        var value = value
        guard zmq_setsockopt(handle, option, &value, MemoryLayout<Int64>.size) == 0 else {
            throw ZeroMQError.last("setsockopt \(option)")
        }
    }

    /// Sets a binary option (identity, CURVE keys, ZAP domain).
    public func setOption(_ option: Int32, _ bytes: [UInt8]) throws(ZeroMQError) {
        let result = bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
        guard result == 0 else { throw ZeroMQError.last("setsockopt \(option)") }
    }

    /// Reads an integer option.
    public func option(_ option: Int32) throws(ZeroMQError) -> Int32 {
        var value: Int32 = 0
        var size = MemoryLayout<Int32>.size
        guard zmq_getsockopt(handle, option, &value, &size) == 0 else { throw ZeroMQError.last("getsockopt \(option)") }
        return value
    }

    /// The endpoint the socket last bound to (resolves `tcp://127.0.0.1:*` to the real port).
    public func lastEndpoint() throws(ZeroMQError) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        var size = buffer.count
        guard zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size) == 0 else { throw ZeroMQError.last("getsockopt ZMQ_LAST_ENDPOINT") }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: - Connections

    /// `zmq_bind`.
    public func bind(_ endpoint: String) throws(ZeroMQError) {
        guard zmq_bind(handle, endpoint) == 0 else { throw ZeroMQError.last("bind \(endpoint)") }
    }

    /// `zmq_connect`.
    public func connect(_ endpoint: String) throws(ZeroMQError) {
        guard zmq_connect(handle, endpoint) == 0 else { throw ZeroMQError.last("connect \(endpoint)") }
    }

    // MARK: - Messages

    /// Sends `frames` as one multipart message. With `dontWait`, fails with `EAGAIN` instead of
    /// blocking when the peer's queue is full.
    public func send(_ frames: [[UInt8]], dontWait: Bool = false) throws(ZeroMQError) {
        for (index, frame) in frames.enumerated() {
            var flags: Int32 = index < frames.count - 1 ? ZMQ_SNDMORE : 0
            if dontWait { flags |= ZMQ_DONTWAIT }
            while true {
                let result = frame.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
                if result >= 0 { break }
                let error = ZeroMQError.last("send")
                if !error.isInterrupted { throw error }
            }
        }
    }

    /// Receives one multipart message. With `dontWait`, returns nil when nothing is queued.
    /// Frames beyond `maximumFrames` are read and dropped (the caller sees the count it got,
    /// `truncated` tells whether any were dropped), so a hostile peer cannot make it allocate
    /// without bound; the size of each frame is bounded by the socket's `ZMQ_MAXMSGSIZE`.
    public func receive(dontWait: Bool = false, maximumFrames: Int = 16) throws(ZeroMQError) -> ReceivedMessage? {
        var frames: [[UInt8]] = []
        var truncated = false
        var more = true
        while more {
            var message = zmq_msg_t()
            zmq_msg_init(&message)
            defer { zmq_msg_close(&message) }
            while true {
                let flags: Int32 = dontWait && frames.isEmpty && !truncated ? ZMQ_DONTWAIT : 0
                if zmq_msg_recv(&message, handle, flags) >= 0 { break }
                let error = ZeroMQError.last("receive")
                if error.wouldBlock && frames.isEmpty && !truncated { return nil }
                if !error.isInterrupted { throw error }
            }
            if frames.count < maximumFrames {
                let size = zmq_msg_size(&message)
                let data = zmq_msg_data(&message)!
                frames.append([UInt8](UnsafeRawBufferPointer(start: data, count: size)))
            } else {
                truncated = true
            }
            more = zmq_msg_more(&message) == 1
        }
        return ReceivedMessage(frames: frames, truncated: truncated)
    }
}

/// A multipart message as received.
public struct ReceivedMessage: Sendable {
    /// The frames kept.
    public var frames: [[UInt8]]
    /// Were frames beyond the limit dropped?
    public var truncated: Bool
}
