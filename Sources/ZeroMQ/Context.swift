import CZeroMQ

/// A libzmq context: owns the I/O threads; sockets are made from it. Thread-safe.
public final class ZeroMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    /// Creates a context.
    public init() throws(ZeroMQError) {
        guard let handle = zmq_ctx_new() else { throw ZeroMQError.last("zmq_ctx_new") }
        self.handle = handle
    }

    deinit {
        // Blocks until every socket of the context is closed, as libzmq requires.
        while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {}
    }

    /// Raises the number of sockets the context may hold (`ZMQ_MAX_SOCKETS`, 1023 by default).
    public func setMaximumSockets(_ count: Int32) throws(ZeroMQError) {
        guard zmq_ctx_set(handle, ZMQ_MAX_SOCKETS, count) == 0 else { throw ZeroMQError.last("zmq_ctx_set ZMQ_MAX_SOCKETS") }
    }

    /// Does the linked libzmq support `capability` (e.g. `curve`)?
    public static func has(_ capability: String) -> Bool { zmq_has(capability) == 1 }

    /// The libzmq version, e.g. `4.3.4`.
    public static var version: String {
        var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
        zmq_version(&major, &minor, &patch)
        return "\(major).\(minor).\(patch)"
    }
}
