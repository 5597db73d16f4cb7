/// How long this side of a connection was held up, not listening.
///
/// A peer is judged by its silence. But when this process itself stops reading (the machine
/// deschedules it, its own journal `fsync` takes a second), the peer's heartbeats wait unread in
/// the socket, or were never sent because the whole machine stood still; that time is this side's,
/// not the peer's. Counted as silence, it declares live peers missing and requeues their shards
/// (seen on a loaded CI machine: every process of a test stood still for 1.5 s at once, and the
/// coordinator and workers each found the others silent).
///
/// Each loop looks at the clock before it judges anyone; a gap between two looks longer than
/// ``allowance`` (the loop's own longest wait, and some) is a hold-up, and its excess is what the
/// caller takes off every peer's silence.
struct ListeningClock {
    /// The longest gap between two looks that is still listening: the loop's poll timeout and
    /// the work of one pass, with room to spare.
    var allowance: UInt64
    private var lastLook: UInt64

    init(allowance: UInt64, now: UInt64) {
        self.allowance = allowance
        self.lastLook = now
    }

    /// The allowance of a loop that waits at most `poll` between looks and heartbeats every
    /// `interval`: its longest wait, and a quarter interval for the work of one pass.
    static func allowance(poll: UInt64, interval: UInt64) -> UInt64 { poll &+ interval / 4 }

    /// Notes a look at `now`; returns how long, since the previous look, this side was held up
    /// beyond its allowance (0 when it was not).
    mutating func look(now: UInt64) -> UInt64 {
        // A clock read on another thread may be a little behind the last look: no gap, not a wrap.
        let gap = now > lastLook ? now - lastLook : 0
        lastLook = max(lastLook, now)
        return gap > allowance ? gap - allowance : 0
    }
}
