import Foundation

/// Where the machine's memory limit comes from.
enum SystemMemory {
    /// 80% of `MemAvailable` from /proc/meminfo, or 8 GiB if it cannot be read.
    static var defaultLimit: UInt64 {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
            let kib = UInt64(line.split(separator: " ").dropFirst().first ?? "")
        else { return 8 << 30 }
        return kib * 1024 / 5 * 4
    }
}
