import CLinuxScheduling
#if canImport(Glibc)
import Glibc
#endif

/// The calling thread's CPU, CPU time and affinity.
public enum CPUAccounting {
    /// CPUs the system has (`_SC_NPROCESSORS_CONF`), at least 1 and at most 4096.
    public static let configuredCPUs: Int = min(4096, max(1, sysconf(Int32(_SC_NPROCESSORS_CONF))))

    /// CPUs this process may run on now.
    public static var onlineCPUs: Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// The CPU the calling thread runs on (`sched_getcpu`), or -1.
    public static func currentCPU() -> Int { Int(zf_current_cpu()) }

    /// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`), in nanoseconds.
    public static func threadCPUNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }

    /// CPU time the whole process has used (`CLOCK_PROCESS_CPUTIME_ID`), in nanoseconds.
    public static func processCPUNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now)
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }

    /// Pins the calling thread to `cpu` (`sched_setaffinity`). Returns false when the system
    /// refuses (the CPU is not in the process's set, e.g. under a container's cpuset).
    @discardableResult
    public static func pinCallingThread(to cpu: Int) -> Bool {
        guard let cpu = Int32(exactly: cpu) else { return false }
        return zf_pin_calling_thread(cpu) == 0
    }

    /// How many CPUs the calling thread may run on now (`sched_getaffinity`), or -1.
    public static func allowedCPUCount() -> Int { Int(zf_allowed_cpu_count()) }

    /// Lets the calling thread run on every CPU the process started with. A thread inherits its
    /// creator's affinity; a worker that models an unbound kernel worker calls this first.
    @discardableResult
    public static func unpinCallingThread() -> Bool {
        zf_unpin_calling_thread() == 0
    }
}
