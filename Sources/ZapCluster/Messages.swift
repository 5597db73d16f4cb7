import SwiftProtobuf
import ZapProtocol

/// Building and checking envelopes.
enum Messages {
    /// An envelope of this build's protocol version holding `body`.
    static func envelope(_ body: Zapfleet_V1_Envelope.OneOf_Body) -> Zapfleet_V1_Envelope {
        var envelope = Zapfleet_V1_Envelope()
        envelope.protocolVersion = zapfleetProtocolVersion
        envelope.body = body
        return envelope
    }

    /// The serialized frame of `body`.
    static func frame(_ body: Zapfleet_V1_Envelope.OneOf_Body) -> [UInt8] {
        // Serializing a message built here cannot fail: every field is set by this code.
        (try? envelope(body).serializedBytes()) ?? []
    }

    /// Decodes a frame from a peer; nil if it is not an envelope.
    static func decode(_ frame: [UInt8]) -> Zapfleet_V1_Envelope? {
        try? Zapfleet_V1_Envelope(serializedBytes: frame)
    }

    /// The body's name, for logs.
    static func name(_ body: Zapfleet_V1_Envelope.OneOf_Body?) -> String {
        switch body {
        case .hello: "hello"
        case .welcome: "welcome"
        case .refusal: "refusal"
        case .heartbeat: "heartbeat"
        case .assignment: "assignment"
        case .progress: "progress"
        case .result: "result"
        case .resultAck: "result-ack"
        case .stop: "stop"
        case .abandoned: "abandoned"
        case .externalJob: "external-job"
        case .externalResult: "external-result"
        case nil: "empty"
        }
    }
}
