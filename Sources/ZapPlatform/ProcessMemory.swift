import CLinuxScheduling
#if canImport(Glibc)
import Glibc
#endif

/// The memory this process holds.
public enum ProcessMemory {
    /// Resident bytes now (`/proc/self/statm`'s second field times the page size), or nil
    /// where that file cannot be read.
    public static func residentBytes() -> UInt64? {
        let descriptor = open("/proc/self/statm", O_RDONLY)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        let fields = buffer[0..<count].split(separator: UInt8(ascii: " "))
        guard fields.count > 1, let pages = UInt64(String(decoding: fields[1], as: UTF8.self)) else { return nil }
        return pages * UInt64(sysconf(Int32(_SC_PAGESIZE)))
    }
}

extension ProcessMemory {
    /// Gives the system back the free memory of every malloc arena (`malloc_trim`). Each
    /// thread that allocates gets an arena of its own, and a VM's threads leave theirs full of
    /// freed histograms and lists: over a fleet run's shards that grew to a quarter of a GiB
    /// beside the page tables.
    public static func returnFreeMemory() {
        _ = zf_return_free_memory()
    }
}

/// This process's standard output.
public enum StandardOutput {
    /// Writes each line as it ends, also into a file or a pipe: progress in a job's log as it
    /// happens, not at exit.
    public static func lineBuffered() {
        zf_line_buffer_standard_output()
    }
}
