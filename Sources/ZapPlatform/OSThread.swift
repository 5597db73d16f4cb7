#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A joinable OS thread. vCPUs and workqueue workers are kernel threads in the model, so the
/// engine runs them as plain pthreads rather than as tasks on Swift's cooperative pool.
public final class OSThread: @unchecked Sendable {
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    private var handle: pthread_t
    private var joined = false
    private let done: OneShotEvent
    /// What the thread is for, e.g. `kvm-vm/0`.
    public let name: String

    /// Starts `body` on a new thread; `name` identifies it in diagnostics.
    public init(name: String, _ body: @escaping @Sendable () -> Void) {
        self.name = name
        let done = OneShotEvent()
        self.done = done
        let box = Unmanaged.passRetained(
            Box({
                // Race amplification seeds each thread's delays from its name.
                pthread_setspecific(OSThread.nameKey, Unmanaged.passRetained(NameBox(name)).toOpaque())
                body()
                done.signal()
            })
        ).toOpaque()
        #if canImport(Glibc)
        var thread = pthread_t()
        #else
        var thread: pthread_t? = nil
        #endif
        let result = pthread_create(
            &thread, nil,
            { argument in
                let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
                box.body()
                return nil
            }, box)
        precondition(result == 0, "pthread_create failed with \(result)")
        #if canImport(Glibc)
        handle = thread
        #else
        handle = thread!
        #endif
    }

    private final class NameBox {
        let name: String
        init(_ name: String) { self.name = name }
    }

    private static let nameKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { pointer in
            if let pointer { Unmanaged<NameBox>.fromOpaque(pointer).release() }
        }
        return key
    }()

    /// The name of the ``OSThread`` the caller runs on; nil on other threads.
    public static var currentName: String? {
        pthread_getspecific(nameKey).map { Unmanaged<NameBox>.fromOpaque($0).takeUnretainedValue().name }
    }

    /// Waits for the thread to finish. Joining twice is a no-op. Joined from itself (its body
    /// dropped the last reference to whatever stops it), the thread is detached instead.
    public func join() {
        guard !joined else { return }
        joined = true
        if pthread_equal(pthread_self(), handle) != 0 {
            pthread_detach(handle)
            return
        }
        pthread_join(handle, nil)
    }

    /// Waits for the thread to finish unless `giveUp` turns true first (polled every 50 ms), in
    /// which case the thread is detached and left to run: a thread stuck in the VM must not hang
    /// the run that reports it. Returns whether the thread finished.
    public func join(giveUpWhen giveUp: () -> Bool) -> Bool {
        guard !joined else { return true }
        while !done.wait(timeoutNanoseconds: 50_000_000) {
            if giveUp() {
                joined = true
                pthread_detach(handle)
                return false
            }
        }
        join()
        return true
    }
}

/// Gives up the processor, as `cond_resched()` and `cpu_relax()` loops do in the kernel.
@inlinable
public func yieldProcessor() {
    sched_yield()
}
