import Foundation
import Testing
import ZapfleetTestSupport

/// `--http`: the live page in a real headless browser and /metrics through a real Prometheus
/// text parser (PyPI's prometheus-client, installed by the test command), during real runs.
@Suite("Live view", .serialized, .timeLimit(.minutes(8)))
struct LiveViewTests {
    /// A run of several shards, one after another on one worker: long enough to watch.
    static func startRun(shards gib: Int, in directory: String) throws -> (process: Process, port: Int, log: String) {
        try """
        name: live
        vm: {memory: \(gib)GiB, memslot: 2GiB}
        workload: {vcpus: 1}
        timeline: [populate, reset_vcpus, delete_memslots: {fraction: 0.5}, teardown]
        policies: [sync, async]
        """.write(toFile: directory + "/live.yaml", atomically: true, encoding: .utf8)
        let log = directory + "/run.log"
        let process = try Subprocess.start(
            ZapfleetBinary.path,
            [
                "run", directory + "/live.yaml", "--quiet", "--out", directory + "/out", "--shard", "--max-memory", "250MiB", "--workers",
                "1", "--http", "127.0.0.1:0", "--http-linger", "60"
            ], log: log)
        let port = Waiting.value(seconds: 60) { () -> Int? in
            guard let text = try? String(contentsOfFile: log, encoding: .utf8),
                let range = text.range(of: #"live view: http://127\.0\.0\.1:(\d+)/"#, options: .regularExpression)
            else { return nil }
            return Int(text[range].split(separator: ":").last!.dropLast())
        }
        return (process, try #require(port, "no live view address in the log"), log)
    }

    /// Fetches a URL with Python and, for /metrics, parses it with prometheus-client: the families
    /// as JSON, {name: {type, samples: [[name, labels, value]]}}; nil while it cannot be fetched.
    static func scrape(_ url: String, in directory: String) throws -> [String: Any]? {
        let script = directory + "/scrape.py"
        if !FileManager.default.fileExists(atPath: script) {
            try """
            import json, sys, urllib.request
            from prometheus_client.parser import text_string_to_metric_families
            try:
                text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
            except Exception as error:
                print(json.dumps({"error": str(error)})); sys.exit(0)
            families = {}
            for family in text_string_to_metric_families(text):
                families[family.name] = {"type": family.type, "samples": [[s.name, s.labels, s.value] for s in family.samples]}
            print(json.dumps(families))
            """.write(toFile: script, atomically: true, encoding: .utf8)
        }
        let python = TestPaths.packageRoot.appendingPathComponent(".build-python/bin/python").path
        let result = try Subprocess.run(python, [script, url])
        #expect(result.status == 0, "the parser failed: \(result.err)")
        let json = try JSONSerialization.jsonObject(with: Data(result.out.utf8)) as? [String: Any]
        return json?["error"] == nil ? json : nil
    }

    /// The body at `url` (fetched with Python: Foundation on Linux reads no http URLs), or nil.
    static func fetch(_ url: String) throws -> String? {
        let python = TestPaths.packageRoot.appendingPathComponent(".build-python/bin/python").path
        let result = try Subprocess.run(
            python,
            ["-c", "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())", url])
        return result.status == 0 ? result.out : nil
    }

    static func value(_ families: [String: Any], _ family: String) -> Double? {
        ((families[family] as? [String: Any])?["samples"] as? [[Any]])?.first?[2] as? Double
    }

    @Test(
        "/metrics scraped during a run parses with prometheus-client: counters grow, histograms are well formed, and the final buckets hold exactly the report's counts"
    )
    func metrics() throws {
        let directory = TestPaths.temporaryDirectory()
        let (process, port, log) = try Self.startRun(shards: 256, in: directory)
        defer { process.terminate() }
        let url = "http://127.0.0.1:\(port)/metrics"
        let first = try #require(try Waiting.value(seconds: 60) { try? Self.scrape(url, in: directory) }, "no /metrics")
        #expect((first["zapfleet_shards_done"] as? [String: Any])?["type"] as? String == "counter")
        #expect((first["zapfleet_workers"] as? [String: Any])?["type"] as? String == "gauge")
        #expect((first["zapfleet_block_time_seconds"] as? [String: Any])?["type"] as? String == "histogram")
        let firstDone = Self.value(first, "zapfleet_shards_done") ?? 0
        // Later scrapes while shards finish: no counter ever goes down.
        var later = first
        let grew = Waiting.until(seconds: 240, interval: 0.5) {
            guard let scrape = try? Self.scrape(url, in: directory) else { return false }
            for name in ["zapfleet_shards_done", "zapfleet_requeues", "zapfleet_bad_frames", "zapfleet_sptes_zapped"] {
                #expect((Self.value(scrape, name) ?? 0) >= (Self.value(later, name) ?? 0), "\(name) went down")
            }
            later = scrape
            return (Self.value(scrape, "zapfleet_shards_done") ?? 0) > firstDone
        }
        #expect(grew, "shards_done never grew past \(firstDone)")
        #expect((Self.value(later, "zapfleet_sptes_zapped") ?? 0) > 0)

        // The run's end: the server stays up for the final /metrics and /report.json.
        #expect(TestPaths.waitFor("verdict:", in: log, seconds: 300), "the run did not finish (stdout is line-buffered)")
        let report = try #require(
            try Waiting.value(seconds: 30) { () -> [String: Any]? in
                guard let body = try? Self.fetch("http://127.0.0.1:\(port)/report.json") else { return nil }
                return try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
            }, "no /report.json after the run")
        #expect(report["schema"] as? String == "zapfleet-report")
        let final = try #require(try Self.scrape(url, in: directory))
        let samples = try #require((final["zapfleet_block_time_seconds"] as? [String: Any])?["samples"] as? [[Any]])
        var checked = 0
        for policy in report["policies"] as? [[String: Any]] ?? [] {
            let name = try #require(policy["policy"] as? String)
            for (operation, entry) in policy["operations"] as? [String: Any] ?? [:] {
                let measured = try #require((entry as? [String: Any])?["measured"] as? [String: Any])
                let count = try #require((measured["count"] as? NSNumber)?.doubleValue)
                let mine = samples.filter { sample in
                    let labels = sample[1] as? [String: String] ?? [:]
                    return labels["policy"] == name && labels["operation"] == operation
                }
                let buckets = mine.filter { $0[0] as? String == "zapfleet_block_time_seconds_bucket" }
                let counts = buckets.compactMap { $0[2] as? Double }
                #expect(counts == counts.sorted(), "\(name) \(operation): buckets are cumulative")
                let infinite = buckets.first { ($0[1] as? [String: String])?["le"] == "+Inf" }?[2] as? Double
                #expect(infinite == count, "\(name) \(operation): +Inf bucket \(String(describing: infinite)) vs report count \(count)")
                let total = mine.first { $0[0] as? String == "zapfleet_block_time_seconds_count" }?[2] as? Double
                #expect(total == count, "\(name) \(operation): _count vs report")
                // The median lies at or below the first bound that holds half the samples.
                if count > 0, let p50 = (measured["p50_ns"] as? NSNumber)?.doubleValue {
                    let half = buckets.first { ($0[2] as? Double ?? 0) >= count / 2 }
                    let bound = Double((half?[1] as? [String: String])?["le"] ?? "") ?? .infinity
                    #expect(
                        p50 / 1e9 <= bound * 1.001 || bound == .infinity, "\(name) \(operation): p50 \(p50) ns above the bucket \(bound) s")
                }
                checked += 1
            }
        }
        #expect(checked >= 10, "every policy's operations were compared")
        process.terminate()
        process.waitUntilExit()
    }

    @Test(
        "the live page in headless chromium: no console errors, two screenshots seconds apart differ, and after the run it shows the verdict"
    )
    func page() throws {
        try #require(HeadlessBrowser.path != nil, "\(HeadlessBrowser.Missing())")
        let directory = TestPaths.temporaryDirectory()
        let (process, port, log) = try Self.startRun(shards: 512, in: directory)
        defer { process.terminate() }
        let url = "http://127.0.0.1:\(port)/"
        // Chromium shoots at the page's load event; --timeout only bounds the wait (a short one
        // shot a blank page on a loaded machine). It once exited 0 without writing the file
        // (CI): such a shot is taken again, up to three times, with the last log if none came.
        func shoot(_ name: String) throws -> (png: String, log: String) {
            let png = directory + "/\(name).png"
            var shot: (status: Int32, log: String) = (0, "")
            for _ in 1...3 {
                shot = try HeadlessBrowser.run(["--window-size=1000,700", "--timeout=30000", "--screenshot=\(png)", url])
                if shot.status == 0 && FileManager.default.fileExists(atPath: png) { break }
            }
            #expect(shot.status == 0, "\(shot.log)")
            try #require(FileManager.default.fileExists(atPath: png), "chromium wrote no \(name).png: \(shot.log.suffix(3000))")
            let errors = HeadlessBrowser.consoleErrors(shot.log)
            #expect(errors.isEmpty, "\(errors)")
            return (png, shot.log)
        }
        // Wait for a shard to be merged, so that the page has something to draw.
        let merged = Waiting.until(seconds: 120, interval: 0.5) {
            guard let status = try? Self.fetch(url + "status.json") else { return false }
            return status.contains("\"done\":") && !status.contains("\"done\":0,")
        }
        #expect(merged, "no shard was merged")
        // A busy worker shows the shard it runs and its rate.
        let busy = Waiting.until(seconds: 60, interval: 0.3) {
            guard let status = try? Self.fetch(url + "status.json") else { return false }
            return status.contains("\"shard\":") && status.contains("\"sptes_per_second\":")
        }
        #expect(busy, "no worker showed its shard and rate")
        let first = try shoot("first")
        Thread.sleep(forTimeInterval: 4)
        let second = try shoot("second")
        let one = try Data(contentsOf: URL(fileURLWithPath: first.png)), two = try Data(contentsOf: URL(fileURLWithPath: second.png))
        #expect(one != two, "the page moved between the screenshots")
        #expect(try HeadlessBrowser.distinctPixelBytes(first.png) > 40, "the screenshot is not blank")

        #expect(TestPaths.waitFor("verdict:", in: log, seconds: 300), "the run did not finish")
        let over = Waiting.until(seconds: 10, interval: 0.2) { (try? Self.fetch(url + "status.json"))??.contains("\"verdict\"") == true }
        #expect(over, "the status never carried the verdict")
        let dom = try HeadlessBrowser.run(["--dump-dom", "--timeout=30000", url])
        #expect(dom.log.contains("verdict: every objective met"), "\(dom.log.suffix(2000))")
        // The charts of report.html while it runs, and the final report itself at the end.
        #expect(dom.log.contains("<figcaption>reset</figcaption>") && dom.log.contains("<svg"), "the distribution charts")
        #expect(dom.log.contains("<iframe") && dom.log.contains("/report.html"), "the final report is shown")
        let final = try Self.fetch(url + "report.html")
        #expect(final?.contains("<svg") == true && final?.contains("zapfleet: live") == true, "\(String(describing: final?.prefix(300)))")
        process.terminate()
        process.waitUntilExit()
    }

    @Test("a non-loopback --http needs --http-token-file; with a token, requests without it get 401 and with it the page")
    func token() throws {
        let directory = TestPaths.temporaryDirectory()
        let open = try ZapfleetBinary.run(["run", "quick", "--quiet", "--http", "0.0.0.0:0"])
        #expect(open.status == 64 && open.err.contains("--http-token-file"), "\(open.err)")
        let tokenFile = directory + "/token"
        try "s3cret-\(UUID().uuidString)\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let token = try String(contentsOfFile: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let log = directory + "/run.log"
        let process = try Subprocess.start(
            ZapfleetBinary.path,
            ["run", "quick", "--quiet", "--http", "0.0.0.0:0", "--http-token-file", tokenFile, "--http-linger", "30"], log: log)
        defer { process.terminate() }
        let port = try #require(
            Waiting.value(seconds: 60) { () -> Int? in
                guard let text = try? String(contentsOfFile: log, encoding: .utf8),
                    let range = text.range(of: #"live view: http://0\.0\.0\.0:(\d+)/"#, options: .regularExpression)
                else { return nil }
                return Int(text[range].split(separator: ":").last!.dropLast())
            })
        #expect(try Self.fetch("http://127.0.0.1:\(port)/status.json") == nil, "no token: refused")
        #expect(try Self.fetch("http://127.0.0.1:\(port)/status.json?token=wrong") == nil, "a wrong token: refused")
        let page = try Self.fetch("http://127.0.0.1:\(port)/status.json?token=\(token)")
        #expect(page?.contains("\"phase\"") == true, "\(String(describing: page))")
        process.terminate()
        process.waitUntilExit()
    }
}
