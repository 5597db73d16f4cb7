/// The version of the wire protocol this build speaks: `Proto/zapfleet.proto`'s
/// `PROTOCOL_VERSION_CURRENT`, through the generated code (the C agent takes it from there too).
/// Coordinator and workers refuse a peer whose `Envelope.protocol_version` differs. Bump it in the
/// .proto on any change that an older peer would misread.
public let zapfleetProtocolVersion = UInt32(Zapfleet_V1_ProtocolVersion.current.rawValue)
