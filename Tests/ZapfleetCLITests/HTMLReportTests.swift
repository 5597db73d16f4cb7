import Foundation
import Testing
import ZapfleetTestSupport
import ZapRun

/// `report.html` in a real headless browser (Debian's chromium).
@Suite("HTML report", .serialized, .timeLimit(.minutes(5)))
struct HTMLReportTests {
    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Runs chromium headless on `page`; returns its status and what it logged.
    static func browse(_ arguments: [String]) throws -> (status: Int32, log: String) {
        let result = try Subprocess.run(
            try #require(chromium, "chromium is missing; ./test installs it"),
            [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr", "--v=0",
                "--user-data-dir=\(TestPaths.temporaryDirectory())"
            ] + arguments)
        return (result.status, result.out + result.err)
    }

    /// Distinct byte values in a PNG's decompressed image data: a blank page has a handful.
    static func distinctPixelBytes(_ png: String) throws -> Int {
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

    @Test(
        "`zapfleet run` writes a self-contained report.html that a headless chromium loads without console errors and renders (the screenshot is kept beside it)"
    )
    func rendersInBrowser() throws {
        let directory = TestPaths.temporaryDirectory()
        let result = try ZapfleetBinary.run(["run", "quick", "--out", directory, "--quiet"])
        #expect(result.status == 0, "\(result.err)")
        let page = directory + "/report.html"
        let html = try String(contentsOfFile: page, encoding: .utf8)
        // Self-contained: nothing is fetched.
        #expect(
            !html.contains("http://")
                || html.components(separatedBy: "http://").dropFirst().allSatisfy { $0.hasPrefix("www.w3.org/2000/svg") })
        #expect(!html.contains("https://") && !html.contains("<script src") && !html.contains("<link"))
        #expect(html.contains("Passed"), "the verdict in words")
        #expect(html.contains("<figcaption>reset</figcaption>"), "a distribution chart of resets")
        for policy in ["sync", "async", "preserve"] { #expect(html.contains("<th>\(policy)</th>")) }

        let screenshot = directory + "/report.png"
        let shot = try Self.browse(["--window-size=1280,2400", "--screenshot=\(screenshot)", "file://\(page)"])
        #expect(shot.status == 0, "\(shot.log)")
        let consoleErrors = shot.log.split(separator: "\n").filter { $0.contains("CONSOLE") || $0.contains("Uncaught") }
        #expect(consoleErrors.isEmpty, "\(consoleErrors)")
        try #require(FileManager.default.fileExists(atPath: screenshot), "\(shot.log)")
        #expect(try Self.distinctPixelBytes(screenshot) > 40, "the screenshot is not blank")

        // The page as the browser built it holds the charts.
        let dom = try Self.browse(["--dump-dom", "file://\(page)"])
        #expect(dom.log.contains("<svg") && dom.log.contains("<path d=\"M"))
    }
}
