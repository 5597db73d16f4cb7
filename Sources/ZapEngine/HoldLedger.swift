#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What one thread did during its current hold of one `mmu_lock`, kept by the lock and the
/// grace period, not by the zap code: so that the checker's judgement of how long a zap kept
/// the lock from a waiting writer does not rest on the zap reporting on itself.
///
/// A hold starts at every acquisition, a yield's re-acquisition included. Thread-local, so
/// recording costs no shared cache line.
final class HoldRecord {
    /// The lock this record is about; a thread that moves to another VM's lock starts afresh.
    var lock: ObjectIdentifier?
    /// How the thread holds the lock now, if it does.
    var mode: MMULockMode = .shared
    /// Batches of page tables retired during this hold while someone waited for the lock.
    var batchesWhileContended = 0
    /// Did the thread remove anything (tables or leaves) since it last acquired the lock?
    var progressSinceAcquisition = false
    /// Has this hold already been reported as starving a waiter? (Once per hold.)
    var reportedStarvation = false
    /// Nesting depth of zaps that, by design, never yield (the `sync` put path).
    var unyieldingDepth = 0

    /// A new hold begins.
    @inline(__always)
    func acquired(_ lock: ObjectIdentifier, mode: MMULockMode) {
        if self.lock != lock {
            self.lock = lock
            unyieldingDepth = 0
        }
        self.mode = mode
        batchesWhileContended = 0
        progressSinceAcquisition = false
        reportedStarvation = false
    }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { pointer in
            guard let pointer else { return }
            Unmanaged<HoldRecord>.fromOpaque(pointer).release()
        }
        return key
    }()

    /// The calling thread's record.
    @inline(__always)
    static var current: HoldRecord {
        if let pointer = pthread_getspecific(key) {
            return Unmanaged<HoldRecord>.fromOpaque(pointer).takeUnretainedValue()
        }
        let record = HoldRecord()
        pthread_setspecific(key, Unmanaged.passRetained(record).toOpaque())
        return record
    }
}
