import CZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// A failed libzmq call: the operation, `errno`, and libzmq's text for it.
public struct ZeroMQError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The call that failed, e.g. `bind tcp://0.0.0.0:5555`.
    public let operation: String
    /// `zmq_errno()` after the failure.
    public let code: Int32
    /// `zmq_strerror(code)`.
    public let message: String

    /// The last libzmq error, for `operation`.
    static func last(_ operation: String) -> ZeroMQError {
        let code = zmq_errno()
        return ZeroMQError(operation: operation, code: code, message: String(cString: zmq_strerror(code)))
    }

    /// Was the call interrupted by a signal (and worth retrying)?
    public var isInterrupted: Bool { code == EINTR }
    /// Would the call have blocked (`EAGAIN`), e.g. a non-blocking receive with nothing queued?
    public var wouldBlock: Bool { code == EAGAIN }
    /// Was the peer unreachable (`EHOSTUNREACH`, from a ROUTER with `ROUTER_MANDATORY`)?
    public var isHostUnreachable: Bool { code == EHOSTUNREACH }

    /// `operation: message (errno code)`.
    public var description: String { "\(operation): \(message) (errno \(code))" }
}
