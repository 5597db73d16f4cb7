import CZeroMQ

/// Named socket options zapfleet sets, with libzmq's numbers.
public enum SocketOption {
    /// A ROUTER fails a send to an unknown identity (`EHOSTUNREACH`) instead of dropping it.
    public static let routerMandatory = ZMQ_ROUTER_MANDATORY
    /// The largest message a peer may send; larger ones disconnect the peer.
    public static let maximumMessageSize = ZMQ_MAXMSGSIZE
    /// The socket's identity (a DEALER's name as its ROUTER sees it).
    public static let identity = ZMQ_ROUTING_ID
    /// Initial reconnect interval, in milliseconds.
    public static let reconnectInterval = ZMQ_RECONNECT_IVL
    /// Reconnect backoff ceiling, in milliseconds.
    public static let reconnectIntervalMaximum = ZMQ_RECONNECT_IVL_MAX
    /// Connections a listening socket's kernel queue holds before accept (`listen`'s backlog;
    /// libzmq's default is 100, the kernel caps it at `net.core.somaxconn`).
    public static let backlog = ZMQ_BACKLOG
    /// Milliseconds unsent messages linger after close.
    public static let linger = ZMQ_LINGER
    /// Outgoing high-water mark (messages queued per peer).
    public static let sendHighWaterMark = ZMQ_SNDHWM
    /// Incoming high-water mark.
    public static let receiveHighWaterMark = ZMQ_RCVHWM
    /// Heartbeat interval of ZMTP pings, in milliseconds (transport-level liveness).
    public static let heartbeatInterval = ZMQ_HEARTBEAT_IVL
    /// Heartbeat timeout, in milliseconds.
    public static let heartbeatTimeout = ZMQ_HEARTBEAT_TIMEOUT
    /// Connect timeout for TCP, in milliseconds.
    public static let connectTimeout = ZMQ_CONNECT_TIMEOUT
    /// The ZAP domain: set, the context's ZAP handler is asked about every peer, NULL ones
    /// included, and ZMTP 1.0/2.0 peers are refused.
    public static let zapDomain = ZMQ_ZAP_DOMAIN
}
