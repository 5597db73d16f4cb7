/// Receives the engine's per-root events, for measurement. Called on whichever thread did the
/// work (vCPU, workqueue worker, VM thread), so implementations must be thread-safe; the events
/// are rare (one per root zap or free), so a mutex is fine.
public protocol EngineObserver: AnyObject, Sendable {
    /// A whole-root zap finished: `sptes` leaves in `nanoseconds` of wall time.
    func rootZapped(rootID: Int, sptes: Int, nanoseconds: UInt64)
    /// An invalidated root's table went back to the pool, `nanoseconds` after invalidation.
    func rootReclaimed(rootID: Int, nanosecondsSinceInvalidation: UInt64)
}
