import Foundation

/// Programs the end-to-end tests run: to their end, or in the background with a log.
enum Subprocess {
    /// Runs `executable` with `arguments` to its end; returns its exit status, standard output and
    /// standard error. Both pipes are drained at once, so a chatty child cannot block on a full one.
    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
        let result = try run(executable, arguments, killAfter: .infinity)
        return (result.status, result.out, result.err)
    }

    /// How a bounded run ended.
    struct BoundedResult {
        /// Exit status, or the signal's number when `signalled`.
        var status: Int32
        /// The process died of a signal it did not get from us.
        var signalled: Bool
        /// Still running at the deadline: stopped by us (SIGKILL), not counted as its own signal.
        var timedOut: Bool
        var out: String
        var err: String
    }

    /// Runs `executable` with `arguments`, killing it if it is still running after `seconds`.
    static func run(_ executable: String, _ arguments: [String], killAfter seconds: Double) throws -> BoundedResult {
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
        DispatchQueue.global().async { output.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { errors.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        let timedOut = process.isRunning
        if timedOut { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        group.wait()
        return BoundedResult(status: process.terminationStatus, signalled: !timedOut && process.terminationReason == .uncaughtSignal,
                             timedOut: timedOut, out: String(decoding: output.data, as: UTF8.self),
                             err: String(decoding: errors.data, as: UTF8.self))
    }

    /// Starts `executable` in the background, its output (both streams) going to the file `log`.
    static func start(_ executable: String, _ arguments: [String], log: String) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }
}
