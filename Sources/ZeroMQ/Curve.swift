import CZeroMQ

/// A CurveZMQ key (Curve25519, 32 bytes), held as libzmq's 40-character Z85 text.
public struct CurveKey: Sendable, Hashable, CustomStringConvertible {
    /// The key in Z85 (40 characters), as `zmq_curve_keypair` writes it.
    public let z85: String

    /// A key from its Z85 text; nil unless it is 40 Z85 characters that decode to 32 bytes.
    public init?(z85 text: String) {
        guard text.utf8.count == 40, CurveKey.decode(text) != nil else { return nil }
        z85 = text
    }

    /// The 32 raw bytes, for `ZMQ_CURVE_*KEY` options and ZAP credentials.
    public var bytes: [UInt8] { CurveKey.decode(z85)! }

    /// A key from 32 raw bytes (e.g. a ZAP request's credentials).
    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        var text = [CChar](repeating: 0, count: 41)
        guard bytes.withUnsafeBufferPointer({ zmq_z85_encode(&text, $0.baseAddress, 32) }) != nil else { return nil }
        z85 = String(decoding: text.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The Z85 text. Only ever printed for public keys; see ``CurveKeyPair``.
    public var description: String { z85 }

    private static func decode(_ text: String) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: 32)
        let decoded = text.withCString { zmq_z85_decode(&bytes, $0) }
        return decoded == nil ? nil : bytes
    }
}

/// A CurveZMQ key pair. Its description never shows the secret key, so that logging a pair
/// cannot leak it.
public struct CurveKeyPair: Sendable, CustomStringConvertible {
    /// The public key, safe to share.
    public let publicKey: CurveKey
    /// The secret key: never log it, never pass it on a command line.
    public let secretKey: CurveKey

    /// A new random key pair (`zmq_curve_keypair`, libsodium's generator).
    public static func generate() throws(ZeroMQError) -> CurveKeyPair {
        var publicText = [CChar](repeating: 0, count: 41)
        var secretText = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&publicText, &secretText) == 0 else { throw ZeroMQError.last("zmq_curve_keypair") }
        func key(_ text: [CChar]) -> CurveKey {
            CurveKey(z85: String(decoding: text.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self))!
        }
        return CurveKeyPair(publicKey: key(publicText), secretKey: key(secretText))
    }

    /// The pair of `secretKey`, its public key derived from it (`zmq_curve_public`).
    public init(secretKey: CurveKey) throws(ZeroMQError) {
        var publicText = [CChar](repeating: 0, count: 41)
        guard secretKey.z85.withCString({ zmq_curve_public(&publicText, $0) }) == 0 else { throw ZeroMQError.last("zmq_curve_public") }
        self.init(
            publicKey: CurveKey(z85: String(decoding: publicText.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self))!,
            secretKey: secretKey)
    }

    private init(publicKey: CurveKey, secretKey: CurveKey) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// `public <key>`: the secret key is never shown.
    public var description: String { "public \(publicKey.z85)" }
}

extension ZeroMQSocket {
    /// Makes this socket a CURVE server with `keys`: every connection must complete a CurveZMQ
    /// handshake, which the context's ZAP handler (if any) then accepts or refuses. Set before
    /// `bind`.
    public func makeCurveServer(_ keys: CurveKeyPair, zapDomain: String) throws(ZeroMQError) {
        try setOption(ZMQ_CURVE_SERVER, Int32(1))
        try setOption(ZMQ_CURVE_SECRETKEY, keys.secretKey.bytes)
        try setOption(ZMQ_ZAP_DOMAIN, Array(zapDomain.utf8))
    }

    /// Makes this socket a CURVE client of the server whose public key is `server`,
    /// authenticating with `keys`. Set before `connect`.
    public func makeCurveClient(_ keys: CurveKeyPair, server: CurveKey) throws(ZeroMQError) {
        try setOption(ZMQ_CURVE_SERVERKEY, server.bytes)
        try setOption(ZMQ_CURVE_PUBLICKEY, keys.publicKey.bytes)
        try setOption(ZMQ_CURVE_SECRETKEY, keys.secretKey.bytes)
    }
}

/// Does the linked libzmq support CURVE (built with libsodium)?
public var curveAvailable: Bool { ZeroMQContext.has("curve") }
