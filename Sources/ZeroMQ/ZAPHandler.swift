import CZeroMQ

/// One authentication request from libzmq's ZAP protocol (RFC 27): a peer finished a security
/// handshake on a socket of this context and libzmq asks whether to let it in.
public struct ZAPRequest: Sendable {
    /// Echoed in the reply.
    public let requestID: [UInt8]
    /// The server socket's `ZMQ_ZAP_DOMAIN`.
    public let domain: String
    /// The peer's IP address, for logs.
    public let address: String
    /// `NULL`, `PLAIN` or `CURVE`.
    public let mechanism: String
    /// For CURVE, the client's long-term public key.
    public let clientKey: CurveKey?
}

/// The ZAP handler of a context: a REP socket bound to `inproc://zeromq.zap.01`, which libzmq
/// asks about every handshake on the context's server sockets. Owned by one thread, which
/// polls ``socket`` beside its others and answers with ``answer(_:)``. A context has at most
/// one; it must be bound before the server socket accepts its first peer.
public final class ZAPHandler {
    /// The handler's socket, for a poller.
    public let socket: ZeroMQSocket

    /// Binds the context's ZAP endpoint.
    public init(_ context: ZeroMQContext) throws(ZeroMQError) {
        socket = try ZeroMQSocket(context, type: .reply)
        try socket.bind("inproc://zeromq.zap.01")
    }

    /// Answers every queued request with what `decide` returns: nil lets the peer in, a text
    /// refuses it with that reason. Malformed requests are refused.
    public func answer(_ decide: (ZAPRequest) -> String?) throws(ZeroMQError) {
        while let message = try socket.receive(dontWait: true, maximumFrames: 8) {
            let frames = message.frames
            guard frames.count >= 6, String(decoding: frames[0], as: UTF8.self) == "1.0" else {
                try reply(requestID: frames.count > 1 ? frames[1] : [], status: "400", text: "malformed ZAP request")
                continue
            }
            let mechanism = String(decoding: frames[5], as: UTF8.self)
            let request = ZAPRequest(
                requestID: frames[1], domain: String(decoding: frames[2], as: UTF8.self),
                address: String(decoding: frames[3], as: UTF8.self), mechanism: mechanism,
                clientKey: mechanism == "CURVE" && frames.count >= 7 ? CurveKey(bytes: frames[6]) : nil)
            if let refusal = decide(request) {
                try reply(requestID: request.requestID, status: "400", text: refusal)
            } else {
                try reply(requestID: request.requestID, status: "200", text: "OK", userID: request.clientKey?.z85 ?? "")
            }
        }
    }

    private func reply(requestID: [UInt8], status: String, text: String, userID: String = "") throws(ZeroMQError) {
        try socket.send([Array("1.0".utf8), requestID, Array(status.utf8), Array(text.utf8), Array(userID.utf8), []])
    }
}
