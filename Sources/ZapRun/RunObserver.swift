import ZapEngine
import ZapPlatform

/// Collects the engine's per-root events during one policy's run: root lifetimes and zap
/// throughput. Called from any thread; events are rare.
final class RunObserver: EngineObserver, @unchecked Sendable {
    private let mutex = PThreadMutex()
    private var recorder: BlockTimeRecorder
    private var zappedSPTEs = 0
    private var zapNanoseconds: UInt64 = 0

    init(kernelNanosecondsPerSPTE: Double, enabled: Bool) {
        recorder = BlockTimeRecorder(kernelNanosecondsPerSPTE: kernelNanosecondsPerSPTE, enabled: enabled)
    }

    func rootZapped(rootID: Int, sptes: Int, nanoseconds: UInt64) {
        mutex.withLock {
            zappedSPTEs += sptes
            zapNanoseconds += nanoseconds
        }
    }

    func rootReclaimed(rootID: Int, nanosecondsSinceInvalidation: UInt64) {
        mutex.withLock { recorder.record(.rootLifetime, nanoseconds: nanosecondsSinceInvalidation) }
    }

    /// Root lifetimes recorded so far.
    var lifetimes: BlockTimeRecorder { mutex.withLock { recorder } }

    /// SPTEs zapped per second of zap wall time, over every root zap.
    var zapThroughput: (sptes: Int, nanoseconds: UInt64) { mutex.withLock { (zappedSPTEs, zapNanoseconds) } }
}

/// A flag a signal handler (or a test) sets to stop a run early; the run tears down and reports
/// what it measured, marked incomplete.
public final class CancellationFlag: @unchecked Sendable {
    private let flag = ManagedAtomicBool()

    /// A flag not yet set.
    public init() {}

    /// Asks the run to stop.
    public func cancel() { flag.set() }

    /// Has a stop been asked for?
    public var isCancelled: Bool { flag.value }
}

import Atomics

/// A tiny wrapper so that the public API does not expose swift-atomics types.
final class ManagedAtomicBool: @unchecked Sendable {
    private let storage = ManagedAtomic<Bool>(false)
    func set() { storage.store(true, ordering: .releasing) }
    var value: Bool { storage.load(ordering: .acquiring) }
}
