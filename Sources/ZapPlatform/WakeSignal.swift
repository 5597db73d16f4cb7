import CLinuxScheduling
#if canImport(Glibc)
import Glibc
#endif

/// A file descriptor that becomes readable when another thread calls ``signal()`` (an
/// `eventfd`): a thread that waits in `poll` on sockets also wakes for work handed to it,
/// instead of finding it at its next timeout.
public final class WakeSignal: @unchecked Sendable {
    /// The descriptor to poll for readability.
    public let fileDescriptor: Int32

    /// A new signal, not raised; fails when the process is out of descriptors.
    public init() throws(PlatformError) {
        let descriptor = zf_make_eventfd()
        guard descriptor >= 0 else { throw PlatformError(call: "eventfd", errno: errno) }
        fileDescriptor = descriptor
    }

    deinit { close(fileDescriptor) }

    /// Raises the signal: the descriptor reads as ready until ``clear()``.
    public func signal() {
        var one: UInt64 = 1
        _ = write(fileDescriptor, &one, MemoryLayout<UInt64>.size)
    }

    /// Lowers the signal, however often it was raised.
    public func clear() {
        var count: UInt64 = 0
        _ = read(fileDescriptor, &count, MemoryLayout<UInt64>.size)
    }
}

/// A system call that failed, with its `errno`.
public struct PlatformError: Error, CustomStringConvertible, Sendable {
    /// The call, e.g. `eventfd`.
    public var call: String
    /// Its `errno`.
    public var errno: Int32

    public init(call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call) failed: \(String(cString: strerror(errno)))" }
}
