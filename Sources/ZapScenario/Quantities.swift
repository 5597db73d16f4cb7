/// Parsing and printing of sizes (`64TiB`) and durations (`1.5ms`) as scenarios write them.
public enum Quantities {
    /// Binary size units, largest first.
    public static let sizeUnits: [(suffix: String, bytes: UInt64)] = [
        ("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)
    ]

    /// Duration units in nanoseconds.
    public static let durationUnits: [(suffix: String, nanoseconds: Double)] = [
        ("ns", 1), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("min", 60e9), ("h", 3600e9)
    ]

    /// Parses `64TiB`, `512 GiB`, `2GiB`, `1.5TiB`. Returns nil for anything else, including
    /// decimal units (`64TB`), which are ambiguous for memory.
    public static func parseSize(_ text: String) -> UInt64? {
        let trimmed = text.trimmingCharacters(in: " ")
        for (suffix, bytes) in sizeUnits where trimmed.hasSuffix(suffix) {
            let number = trimmed.dropLast(suffix.count).trimmingCharacters(in: " ")
            guard let value = Double(number), value >= 0, value.isFinite else { return nil }
            let total = value * Double(bytes)
            guard total < 0x1p63 else { return nil }
            return UInt64(total)
        }
        return nil
    }

    /// Prints a size with the largest unit that divides it exactly (`64TiB`, `1536MiB`).
    public static func formatSize(_ bytes: UInt64) -> String {
        for (suffix, unit) in sizeUnits where bytes >= unit && bytes % unit == 0 {
            return "\(bytes / unit)\(suffix)"
        }
        return "\(bytes)B"
    }

    /// Prints a size for people, rounded (`63.9 TiB`).
    public static func describeSize(_ bytes: Double) -> String {
        for (suffix, unit) in sizeUnits where bytes >= Double(unit) {
            let value = bytes / Double(unit)
            return value >= 100 ? "\(Int(value.rounded())) \(suffix)" : "\(rounded(value, 1)) \(suffix)"
        }
        return "\(Int(bytes)) B"
    }

    /// Parses `250us`, `1ms`, `1.5s`, `900 s` into nanoseconds.
    public static func parseDuration(_ text: String) -> Double? {
        let trimmed = text.trimmingCharacters(in: " ")
        // Longest suffixes first so that `ms` is not read as `s`.
        for (suffix, scale) in durationUnits.sorted(by: { $0.suffix.count > $1.suffix.count }) where trimmed.hasSuffix(suffix) {
            let number = trimmed.dropLast(suffix.count).trimmingCharacters(in: " ")
            guard let value = Double(number), value >= 0, value.isFinite else { return nil }
            return value * scale
        }
        return nil
    }

    /// Prints nanoseconds with a unit that keeps 3 to 4 significant digits (`812 ns`, `4.21 ms`).
    public static func formatDuration(_ nanoseconds: Double) -> String {
        switch nanoseconds {
        case ..<1e3: return "\(Int(nanoseconds.rounded())) ns"
        case ..<1e6: return "\(rounded(nanoseconds / 1e3, 2)) µs"
        case ..<1e9: return "\(rounded(nanoseconds / 1e6, 2)) ms"
        default: return "\(rounded(nanoseconds / 1e9, 2)) s"
        }
    }

    /// `value` with `digits` decimals, as text.
    public static func rounded(_ value: Double, _ digits: Int) -> String {
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (value * scale).rounded() / scale
        var text = "\(scaled)"
        if text.hasSuffix(".0") && digits == 0 { text.removeLast(2) }
        return text
    }
}

extension StringProtocol {
    func trimmingCharacters(in set: Character) -> String {
        var slice = Substring(self)
        while slice.first == set { slice.removeFirst() }
        while slice.last == set { slice.removeLast() }
        return String(slice)
    }
}
