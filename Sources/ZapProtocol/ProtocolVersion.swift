/// The version of the wire protocol this build speaks. Coordinator and workers refuse a peer
/// whose `Envelope.protocol_version` differs. Bump it on any change to `Proto/zapfleet.proto`
/// that an older peer would misread.
public let zapfleetProtocolVersion: UInt32 = 2
