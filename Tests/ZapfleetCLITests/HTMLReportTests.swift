import Foundation
import Testing
import ZapfleetTestSupport
import ZapRun

/// `report.html` in a real headless browser (Debian's chromium).
@Suite("HTML report", .serialized, .timeLimit(.minutes(5)))
struct HTMLReportTests {
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
        let shot = try HeadlessBrowser.run(["--window-size=1280,2400", "--screenshot=\(screenshot)", "file://\(page)"])
        #expect(shot.status == 0, "\(shot.log)")
        let consoleErrors = HeadlessBrowser.consoleErrors(shot.log)
        #expect(consoleErrors.isEmpty, "\(consoleErrors)")
        try #require(FileManager.default.fileExists(atPath: screenshot), "\(shot.log)")
        #expect(try HeadlessBrowser.distinctPixelBytes(screenshot) > 40, "the screenshot is not blank")

        // The page as the browser built it holds the charts.
        let dom = try HeadlessBrowser.run(["--dump-dom", "file://\(page)"])
        #expect(dom.log.contains("<svg") && dom.log.contains("<path d=\"M"))
    }
}
