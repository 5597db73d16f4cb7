import ArgumentParser
import Foundation
import ZapRun
import ZapScenario

/// Range checks for command-line values, so that every number a user (or a script) types is
/// either in range or refused before anything runs, with the option named and the range given:
/// never converted later into a trap.
enum OptionChecks {
    /// The longest wait any option takes: a week.
    static let week = 7 * 86_400.0 * 1e9

    /// `text` as a duration in nanoseconds within `range`, or a ``ValidationError`` naming `option`.
    static func duration(_ text: String, option: String, within range: ClosedRange<Double>, example: String) throws -> Double {
        guard let nanoseconds = Quantities.parseDuration(text) else {
            throw ValidationError(
                "\(option) '\(text)' is not a duration; write a number and a unit (ns, us, ms, s, min, h), e.g. \(example)")
        }
        guard range.contains(nanoseconds) else {
            throw ValidationError(
                "\(option) \(text) is out of range: \(Quantities.formatDuration(range.lowerBound)) to \(Quantities.formatDuration(range.upperBound))"
            )
        }
        return nanoseconds
    }

    /// `text` as a size in bytes within `range`, or a ``ValidationError`` naming `option`.
    static func size(_ text: String, option: String, within range: ClosedRange<UInt64>, example: String) throws -> UInt64 {
        guard let bytes = Quantities.parseSize(text) else {
            throw ValidationError("\(option) '\(text)' is not a size; write a number and a binary unit, e.g. \(example)")
        }
        guard range.contains(bytes) else {
            throw ValidationError(
                "\(option) \(text) is out of range: \(Quantities.formatSize(range.lowerBound)) to \(Quantities.formatSize(range.upperBound))"
            )
        }
        return bytes
    }

    /// A whole number within `range`, or a ``ValidationError`` naming `option`.
    static func count(_ value: Int, option: String, within range: ClosedRange<Int>) throws {
        guard range.contains(value) else {
            throw ValidationError("\(option) must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
        }
    }

    /// `--kernel-spte-ns`: positive, finite, at most a millisecond per SPTE (the seed's is 52 ns).
    static func kernelCost(_ value: Double) throws {
        guard value.isFinite, value > 0, value <= 1e6 else {
            throw ValidationError("--kernel-spte-ns must be above 0 and at most 1000000 (1 ms per SPTE), got \(value)")
        }
    }

    /// `--kernel-spte-ns NS` or `--kernel-spte-ns calibration.json` (written by `zapfleet
    /// calibrate`): the nanoseconds per SPTE, checked as above.
    static func kernelCost(_ text: String) throws -> Double {
        if let value = Double(text) {
            try kernelCost(value)
            return value
        }
        guard let data = FileManager.default.contents(atPath: text) else {
            throw ValidationError(
                "--kernel-spte-ns '\(text)' is neither a number of nanoseconds (e.g. 52) nor a readable calibration file (from `zapfleet calibrate --out`)"
            )
        }
        guard let calibration = try? JSONDecoder().decode(KernelCalibration.self, from: data) else {
            throw ValidationError("--kernel-spte-ns \(text): not a calibration file; write one with `zapfleet calibrate --out \(text)`")
        }
        try kernelCost(calibration.nanosecondsPerSPTE)
        return calibration.nanosecondsPerSPTE
    }

    /// Makes sure `path` is (or can become) a directory this process writes into, before a run
    /// spends anything: created if missing, probed with a file that is removed at once.
    static func outputDirectory(_ path: String, option: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw OutputError("\(option) \(path) is a file, not a directory; give a directory for the run's files")
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw OutputError("\(option) \(path): cannot create the directory (\(reason(error))); give a directory you can write")
        }
        if let problem = cannotCreateFiles(in: path) {
            throw OutputError("\(option) \(path): cannot write into it (\(problem)); give a directory you can write")
        }
    }

    /// Why no new file can be made in `directory`, found by making one and removing it; nil if it can.
    private static func cannotCreateFiles(in directory: String) -> String? {
        let probe = (directory as NSString).appendingPathComponent(".zapfleet-write-probe-\(getpid())")
        let descriptor = open(probe, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard descriptor >= 0 else { return String(cString: strerror(errno)) }
        close(descriptor)
        unlink(probe)
        return nil
    }

    /// Makes sure `path` can be written as a file: not a directory, in a directory that exists
    /// and takes new files.
    static func outputFile(_ path: String, option: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw OutputError("\(option) \(path) is a directory; give a file name, e.g. \(path)/junit.xml")
        }
        let parent = (path as NSString).deletingLastPathComponent
        let directory = parent.isEmpty ? "." : parent
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw OutputError("\(option) \(path): the directory \(directory) does not exist; create it first")
        }
        if let problem = cannotCreateFiles(in: directory) {
            throw OutputError("\(option) \(path): cannot write into \(directory) (\(problem)); give a path you can write")
        }
    }

    /// The operating system's words for an I/O error, without Foundation's dump of it.
    static func reason(_ error: Error) -> String {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return String(cString: strerror(Int32(underlying.code)))
        }
        if nsError.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(nsError.code))) }
        switch CocoaError.Code(rawValue: nsError.code) {
        case .fileWriteVolumeReadOnly: return "read-only file system"
        case .fileWriteNoPermission: return "permission denied"
        case .fileWriteOutOfSpace: return "no space left on device"
        case .fileNoSuchFile: return "no such file or directory"
        default: return nsError.localizedDescription
        }
    }
}

/// An output that cannot be written: said before the run, exit 64.
struct OutputError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension OutputError {
    /// Checks `out` (a directory) and `junit` (a file) if given; prints the problem and throws exit 64.
    static func checkOutputs(out: String?, junit: String?) throws {
        do {
            if let out { try OptionChecks.outputDirectory(out, option: "--out") }
            if let junit { try OptionChecks.outputFile(junit, option: "--junit") }
        } catch let error as OutputError {
            printError(error.description)
            throw ZapfleetExitCode.badInput
        }
    }
}
