import Foundation
import Logging
import ZapPlatform
#if canImport(Glibc)
import Glibc
#endif

/// `--events FILE`: every ``FleetEvent`` of a coordinator or worker as one JSON object per line,
/// written as it happens (one `write(2)` per line, so a reader tailing the file never sees half an
/// event, and a run that dies leaves every event before its death). Shared by a coordinator and
/// its in-process workers; thread-safe.
public final class FleetEventLog: @unchecked Sendable {
    private let descriptor: Int32
    private let mutex = PThreadMutex()
    private let origin = monotonicNanoseconds()
    private let clock = ISO8601DateFormatter()
    private var failed = false
    /// The file's path.
    public let path: String

    /// Creates (or empties) the file at `path`.
    /// - Throws: ``FleetEventLogError`` naming the path and the system's reason.
    public init(path: String) throws(FleetEventLogError) {
        self.path = path
        descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw FleetEventLogError(path: path, reason: String(cString: strerror(errno))) }
        clock.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    }

    deinit { close(descriptor) }

    /// Appends `event` as a line. A failed write (a full disk) is reported once on `logger` and
    /// ends the file, never the run.
    public func record(_ event: FleetEvent, logger: Logger? = nil) {
        mutex.withLock {
            guard !failed else { return }
            let seconds = Double(monotonicNanoseconds() &- origin) / 1e9
            let line = Array((event.jsonLine(time: clock.string(from: Date()), secondsSinceStart: seconds) + "\n").utf8)
            var written = 0
            while written < line.count {
                let count = line[written...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else {
                    failed = true
                    logger?.error(
                        "--events \(path): writing failed (\(String(cString: strerror(errno)))); no more events are written there")
                    return
                }
                written += count
            }
        }
    }
}

/// An events file that cannot be opened.
public struct FleetEventLogError: Error, CustomStringConvertible {
    public var path: String
    public var reason: String
    public var description: String {
        "--events \(path): cannot write there (\(reason)); give a path in a directory that exists and is writable"
    }
}

extension Logger {
    /// Logs `event`'s sentence at its level, with its name as metadata (`event=shard_done`), and
    /// appends it to `events` when there is one.
    func record(_ event: FleetEvent, events: FleetEventLog?) {
        let level: Logger.Level =
            switch event.level {
            case .debug: .debug
            case .info: .info
            case .warning: .warning
            case .error: .error
            }
        log(level: level, "\(event.message)", metadata: ["event": "\(event.name.rawValue)"])
        events?.record(event, logger: self)
    }
}
