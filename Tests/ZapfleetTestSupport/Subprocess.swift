import Foundation

/// Programs the end-to-end tests run: to their end, or in the background with a log.
public enum Subprocess {
    /// Runs `executable` with `arguments` to its end; returns its exit status, standard output and
    /// standard error. Both pipes are drained at once, so a chatty child cannot block on a full one.
    public static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        let result = try run(executable, arguments, killAfter: .infinity)
        return (result.status, result.out, result.err)
    }

    /// How a bounded run ended.
    public struct BoundedResult {
        /// Exit status, or the signal's number when `signalled`.
        public var status: Int32
        /// The process died of a signal it did not get from us.
        public var signalled: Bool
        /// Still running at the deadline: stopped by us (SIGKILL), not counted as its own signal.
        public var timedOut: Bool
        public var out: String
        public var err: String
    }

    /// Runs `executable` with `arguments`, killing it if it is still running after `seconds`.
    public static func run(_ executable: String, _ arguments: [String], killAfter seconds: Double) throws -> BoundedResult {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        final class Box: @unchecked Sendable { var data = Data() }
        let output = Box(), errors = Box()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            output.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave()
        }
        group.enter()
        DispatchQueue.global().async {
            errors.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave()
        }
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        let timedOut = process.isRunning
        if timedOut { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        group.wait()
        return BoundedResult(
            status: process.terminationStatus, signalled: !timedOut && process.terminationReason == .uncaughtSignal,
            timedOut: timedOut, out: String(decoding: output.data, as: UTF8.self),
            err: String(decoding: errors.data, as: UTF8.self))
    }

    /// Starts `executable` in the background, its output (both streams) going to the file `log`.
    public static func start(_ executable: String, _ arguments: [String], log: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }
}

/// The package's files and the built `zapfleet`, resolved once for every test target.
public enum TestPaths {
    /// The package's root directory.
    public static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// A new, empty directory under the system's temporary directory.
    public static func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "zapfleet-test-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Polls the file at `path` until it contains `text` or `seconds` pass; returns whether it did.
    public static func waitFor(_ text: String, in path: String, seconds: Double = 120) -> Bool {
        Waiting.until(seconds: seconds, interval: 0.05) {
            (try? String(contentsOfFile: path, encoding: .utf8))?.contains(text) == true
        }
    }
}

/// The built `zapfleet` (the debug build `./test` makes), run as a user runs it.
public enum ZapfleetBinary {
    /// Its path.
    public static let path = TestPaths.packageRoot.appendingPathComponent(".build/debug/zapfleet").path

    /// Runs it with `arguments` to its end; exit status, standard output and standard error.
    public static func run(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        guard FileManager.default.isExecutableFile(atPath: path) else { throw MissingBinary(path: path) }
        return try Subprocess.run(path, arguments)
    }

    /// Runs it, killing it if it is still running after `seconds`.
    public static func run(_ arguments: [String], killAfter seconds: Double) throws -> Subprocess.BoundedResult {
        guard FileManager.default.isExecutableFile(atPath: path) else { throw MissingBinary(path: path) }
        return try Subprocess.run(path, arguments, killAfter: seconds)
    }

    /// Starts it in the background, its output going to the file `log`.
    public static func start(_ arguments: [String], log: String) throws -> Process {
        guard FileManager.default.isExecutableFile(atPath: path) else { throw MissingBinary(path: path) }
        return try Subprocess.start(path, arguments, log: log)
    }

    /// The binary is not built.
    public struct MissingBinary: Error, CustomStringConvertible {
        public let path: String
        public var description: String { "\(path) is missing: build with `swift build --build-tests` (./test does)" }
    }
}
