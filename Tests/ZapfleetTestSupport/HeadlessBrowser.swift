import Foundation

/// Debian's chromium, headless, for the tests that look at a page as a browser draws it
/// (report.html, the live view). The test command installs it.
public enum HeadlessBrowser {
    /// Chromium was not found where Debian installs it.
    public struct Missing: Error, CustomStringConvertible {
        public init() {}
        public var description: String { "chromium is missing; ./test installs it (scripts/ensure-dependencies --for-tests)" }
    }

    /// The chromium binary, if installed.
    public static let path = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Runs chromium headless with `arguments` (a page, and e.g. `--screenshot=FILE` or
    /// `--dump-dom`) in a profile of its own; returns its status and everything it printed.
    public static func run(_ arguments: [String]) throws -> (status: Int32, log: String) {
        guard let path else { throw Missing() }
        let result = try Subprocess.run(
            path,
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr", "--v=0",
                "--user-data-dir=\(TestPaths.temporaryDirectory())"
            ] + arguments)
        return (result.status, result.out + result.err)
    }

    /// The lines of a chromium log that report a console message or an uncaught exception.
    public static func consoleErrors(_ log: String) -> [Substring] {
        log.split(separator: "\n").filter { $0.contains("CONSOLE") || $0.contains("Uncaught") }
    }

    /// Distinct byte values in a PNG's decompressed image data: a blank page has a handful.
    public static func distinctPixelBytes(_ png: String) throws -> Int {
        let script = """
            import sys, zlib, struct
            data = open(sys.argv[1], 'rb').read()
            assert data[:8] == b'\\x89PNG\\r\\n\\x1a\\n'
            pos, idat = 8, b''
            while pos < len(data):
                length, kind = struct.unpack('>I4s', data[pos:pos + 8])
                if kind == b'IDAT': idat += data[pos + 8:pos + 8 + length]
                pos += 12 + length
            print(len(set(zlib.decompress(idat))))
            """
        let result = try Subprocess.run("/usr/bin/env", ["python3", "-c", script, png])
        return Int(result.out.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }
}
