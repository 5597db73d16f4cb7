import Foundation
import Hummingbird
import Logging
import NIOCore
import ZapPlatform

/// The HTTP side of a live view (Hummingbird): `/` the live page, `/events` its server-sent
/// events (the status JSON whenever it changes), `/status.json`, `/metrics` (Prometheus text)
/// and `/report.json` once the run is over. With a token, every request must carry it
/// (`Authorization: Bearer TOKEN`, or `?token=TOKEN`, which the page passes on).
public final class LiveServer: @unchecked Sendable {
    private let view: LiveView
    private let host: String
    private let port: Int
    private let token: String?
    private let started = OneShotEvent()
    private let ended = OneShotEvent()
    private let mutex = PThreadMutex()
    private var boundPort = 0
    private var failure: String?
    private var task: Task<Void, Never>?

    /// A server for `view` on `host`:`port` (0: any free port).
    public init(view: LiveView, host: String, port: Int, token: String?) {
        self.view = view
        self.host = host
        self.port = port
        self.token = token
    }

    /// Starts serving; the port it listens on. Throws when it cannot bind.
    public func start() throws -> Int {
        let router = Router(context: BasicRequestContext.self)
        router.get("/") { [self] request, _ in try authorised(request) { Self.html(LivePage.html(status: view.statusJSON())) } }
        router.get("/status.json") { [self] request, _ in try authorised(request) { Self.json(view.statusJSON()) } }
        router.get("/metrics") { [self] request, _ in
            try authorised(request) {
                guard let snapshot = view.latest else { return Response(status: .serviceUnavailable) }
                return Response(
                    status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                    body: .init(byteBuffer: ByteBuffer(string: view.metrics.render(snapshot))))
            }
        }
        router.get("/report.json") { [self] request, _ in
            try authorised(request) {
                guard let report = view.reportJSON else { return Self.notOverYet("/report.json") }
                return Response(
                    status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: report)))
            }
        }
        router.get("/report.html") { [self] request, _ in
            try authorised(request) {
                guard let page = view.reportHTML else { return Self.notOverYet("/report.html") }
                return Self.html(page)
            }
        }
        router.get("/events") { [self] request, _ in
            try authorised(request) {
                Response(
                    status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                    body: .init { [self] writer in
                        var seen = -1
                        while !Task.isCancelled {
                            let changes = view.changes
                            if changes != seen {
                                seen = changes
                                try await writer.write(ByteBuffer(string: "data: \(view.statusJSON())\n\n"))
                            }
                            try await Task.sleep(nanoseconds: 200_000_000)
                        }
                        try await writer.finish(nil)
                    })
            }
        }
        var logger = Logger(label: "zapfleet.http")
        // Shutting down at the run's end makes Hummingbird log the cancelled connections as errors.
        logger.logLevel = .critical
        let configuration = ApplicationConfiguration(address: .hostname(host, port: port), serverName: "zapfleet")
        let onRunning: @Sendable (any Channel) async -> Void = { [self] channel in
            mutex.withLock { boundPort = channel.localAddress?.port ?? 0 }
            started.signal()
        }
        let app = Application(router: router, configuration: configuration, onServerRunning: onRunning, logger: logger)
        task = Task.detached { [self] in
            do {
                try await app.runService()
            } catch {
                mutex.withLock { failure = "\(error)" }
            }
            started.signal()
            ended.signal()
        }
        started.wait()
        let bound: Int = mutex.withLock { boundPort }
        let reason: String = mutex.withLock { failure ?? "not bound" }
        guard bound > 0 else { throw LiveServerError(message: "cannot serve HTTP on \(host):\(port): \(reason)") }
        return bound
    }

    /// Stops serving after `linger` more seconds, in which pages, scrapers and scripts still get
    /// the finished run: its verdict, its final /metrics and /report.json. Sooner when
    /// `interrupted` says so (Ctrl-C, SIGTERM).
    public func stop(linger: Double, interrupted: () -> Bool = { false }) {
        let deadline = Date().addingTimeInterval(linger)
        while Date() < deadline && !interrupted() { Thread.sleep(forTimeInterval: 0.05) }
        task?.cancel()
        ended.wait()
    }

    private func authorised(_ request: Request, _ respond: () throws -> Response) throws -> Response {
        guard let token else { return try respond() }
        let bearer = request.headers[.authorization].map { $0 == "Bearer \(token)" } ?? false
        let query = request.uri.queryParameters.get("token") == token
        guard bearer || query else {
            return Response(
                status: .unauthorized, headers: [.contentType: "text/plain"],
                body: .init(byteBuffer: ByteBuffer(string: "a token is needed: Authorization: Bearer TOKEN, or ?token=TOKEN\n")))
        }
        return try respond()
    }

    /// 404 for what comes with the verdict, asked for before it.
    private static func notOverYet(_ path: String) -> Response {
        Response(
            status: .notFound, headers: [.contentType: "text/plain"],
            body: .init(byteBuffer: ByteBuffer(string: "the run is not over yet: \(path) comes with its verdict\n")))
    }

    private static func html(_ text: String) -> Response {
        Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    private static func json(_ text: String) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}

/// The server could not start.
public struct LiveServerError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
