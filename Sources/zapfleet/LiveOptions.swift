import ArgumentParser
import Foundation
import ZapLive
import ZapRun

/// `--http ADDR:PORT` and `--http-token-file`, shared by `run` and `coordinator`: the live view.
struct LiveOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Serve the run live over HTTP at ADDR:PORT: / (live page), /metrics (Prometheus), /report.json (when done). Loopback by default (a bare port means 127.0.0.1); any other address needs --http-token-file.",
            valueName: "addr:port"))
    var http: String?

    @Option(help: "A file holding the token every HTTP request must carry (Authorization: Bearer TOKEN, or ?token=TOKEN).")
    var httpTokenFile: String?

    @Option(
        help:
            "Seconds the HTTP server stays up after the run, so that pages, scrapers and scripts get the verdict, the final /metrics and /report.json."
    )
    var httpLinger: Double = 10

    var endpoint: (host: String, port: Int)? {
        guard let http else { return nil }
        let text = http.hasPrefix(":") ? "127.0.0.1" + http : (http.contains(":") ? http : "127.0.0.1:" + http)
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65_535).contains(port) else {
            return nil
        }
        let host = String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return host.isEmpty ? nil : (host, port)
    }

    func validate() throws {
        guard http != nil else {
            if httpTokenFile != nil { throw ValidationError("--http-token-file goes with --http ADDR:PORT") }
            return
        }
        guard let endpoint else { throw ValidationError("--http '\(http!)' is not ADDR:PORT or PORT, e.g. 127.0.0.1:8080") }
        let loopback = ["127.0.0.1", "localhost", "::1"].contains(endpoint.host)
        if !loopback && httpTokenFile == nil {
            throw ValidationError(
                "--http \(http!) is not a loopback address: give --http-token-file FILE (a secret every request must carry), or serve on 127.0.0.1"
            )
        }
        if let httpTokenFile, token(from: httpTokenFile) == nil {
            throw ValidationError("--http-token-file \(httpTokenFile): cannot read a token from it (an empty or unreadable file)")
        }
        guard httpLinger.isFinite, (0...3600).contains(httpLinger) else {
            throw ValidationError("--http-linger must be between 0 and 3600 seconds, got \(httpLinger)")
        }
    }

    private func token(from path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let token = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return token.isEmpty ? nil : token
    }

    /// The running live view, or nil without --http; exits 64 when the address cannot be served.
    func start() throws -> (view: LiveView, server: LiveServer)? {
        guard let endpoint else { return nil }
        let view = LiveView()
        let server = LiveServer(view: view, host: endpoint.host, port: endpoint.port, token: httpTokenFile.flatMap(token(from:)))
        do {
            let port = try server.start()
            printError(
                "live view: http://\(endpoint.host.contains(":") ? "[\(endpoint.host)]" : endpoint.host):\(port)/ (/metrics, /report.json; up \(String(format: "%g", httpLinger)) s after the run)"
            )
        } catch {
            printError("\(error); choose another --http address or port")
            throw ZapfleetExitCode.badInput
        }
        return (view, server)
    }
}

extension LiveView {
    /// Hands the finished run to the view: its report.json and report.html as the files have
    /// them, and its verdict.
    func finish(_ report: RunReport, rendered: ReportFiles.Rendered) {
        finish(
            report: rendered.json, page: rendered.html, exitCode: Int(report.verdict.exitCode), summary: report.verdict.summary)
    }
}
