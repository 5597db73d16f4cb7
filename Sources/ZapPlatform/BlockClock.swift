import CCycleCounter

#if canImport(Glibc)
import Glibc
#endif

/// The clock block times are read from: the CPU's time-stamp counter scaled to nanoseconds where
/// the CPU says it ticks at a constant rate through every power state (`constant_tsc` and
/// `nonstop_tsc` in /proc/cpuinfo), calibrated once against `CLOCK_MONOTONIC`; `CLOCK_MONOTONIC`
/// itself elsewhere. A TSC read costs about a third of a vDSO `clock_gettime` on this machine
/// kind, and every engine operation pays two. Only durations are taken from it (an operation's
/// end minus its start, both read here); deadlines and timeouts use ``monotonicNanoseconds()``.
public enum BlockClock {
    /// How the clock was set up, for reports and logs.
    public struct Calibration: Sendable, Equatable, CustomStringConvertible {
        /// `tsc` or `clock_monotonic`.
        public var source: String
        /// Counter ticks per second (0 for `clock_monotonic`).
        public var ticksPerSecond: Double
        /// The bound on the rate's relative error, in parts per million: the two `CLOCK_MONOTONIC`
        /// reads that bracket each calibration point, over the calibration window.
        public var errorPartsPerMillion: Double
        /// Why the TSC is not used, when it is not.
        public var reason: String

        public var description: String {
            source == "tsc"
                ? "TSC at \((ticksPerSecond / 1e6).rounded() / 1e3) GHz, calibrated against CLOCK_MONOTONIC within \((errorPartsPerMillion * 10).rounded() / 10) ppm"
                : "CLOCK_MONOTONIC (\(reason))"
        }
    }

    @usableFromInline
    struct Scale: Sendable {
        @usableFromInline let enabled: Bool
        @usableFromInline let originTicks: UInt64
        @usableFromInline let originNanoseconds: UInt64
        /// Nanoseconds per tick, times 2^32.
        @usableFromInline let multiplier: UInt64
        let calibration: Calibration
    }

    /// The window the rate is measured over: long enough that the bracketing reads' tens of
    /// nanoseconds are a few parts per million of it, short enough to go unnoticed at start-up.
    static let calibrationWindowNanoseconds: UInt64 = 10_000_000
    /// A calibration less certain than this falls back to `CLOCK_MONOTONIC`.
    static let largestErrorPartsPerMillion = 1_000.0

    @usableFromInline
    static let scale: Scale = calibrate()

    /// How the clock was set up (calibrating it if that has not happened yet).
    public static var calibration: Calibration { scale.calibration }

    /// The nanoseconds since `start` (a value of ``nanoseconds()``), never negative: a thread
    /// that moved to another CPU may read a counter a few cycles behind.
    @inlinable
    public static func elapsed(since start: UInt64) -> UInt64 {
        let now = nanoseconds()
        return now > start ? now &- start : 0
    }

    /// Now, in nanoseconds since an arbitrary origin; only differences mean anything.
    @inlinable
    public static func nanoseconds() -> UInt64 {
        let scale = self.scale
        guard scale.enabled else { return monotonicNanoseconds() }
        let ticks = zf_read_cycle_counter() &- scale.originTicks
        let product = ticks.multipliedFullWidth(by: scale.multiplier)
        return scale.originNanoseconds &+ (product.high << 32 | product.low >> 32)
    }

    /// Sets the clock up: the TSC if the CPU vouches for it and the calibration is tight enough.
    static func calibrate() -> Scale {
        func fallback(_ reason: String) -> Scale {
            Scale(
                enabled: false, originTicks: 0, originNanoseconds: 0, multiplier: 0,
                calibration: Calibration(source: "clock_monotonic", ticksPerSecond: 0, errorPartsPerMillion: 0, reason: reason))
        }
        guard zf_cycle_counter_built() != 0 else { return fallback("no time-stamp counter on this architecture") }
        let flags = cpuFlags()
        guard flags.contains("constant_tsc"), flags.contains("nonstop_tsc") else {
            return fallback("the CPU does not report constant_tsc and nonstop_tsc")
        }
        // The kernel checks at boot that the CPUs' counters agree, and drops the TSC as its
        // clocksource when they do not: an operation that starts on one CPU and ends on another
        // needs that.
        let source = kernelClocksource()
        guard source == "tsc" else {
            return fallback(
                "the kernel's clocksource is \(source.isEmpty ? "unknown" : source), not tsc: it does not vouch for the counters agreeing across CPUs"
            )
        }
        let first = bracketedPoint()
        while monotonicNanoseconds() &- first.nanoseconds < calibrationWindowNanoseconds {
            var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
            nanosleep(&pause, nil)
        }
        let second = bracketedPoint()
        let elapsed = Double(second.nanoseconds &- first.nanoseconds)
        let ticks = Double(second.ticks &- first.ticks)
        guard elapsed > 0, ticks > 0 else { return fallback("the counter did not advance during calibration") }
        let error = Double(first.width + second.width) / 2 / elapsed * 1e6
        guard error <= largestErrorPartsPerMillion else {
            return fallback("calibration uncertain by \(Int(error)) ppm (a busy machine?)")
        }
        let multiplier = UInt64((elapsed / ticks * 4_294_967_296).rounded())
        return Scale(
            enabled: true, originTicks: second.ticks, originNanoseconds: second.nanoseconds, multiplier: multiplier,
            calibration: Calibration(source: "tsc", ticksPerSecond: ticks / elapsed * 1e9, errorPartsPerMillion: error, reason: ""))
    }

    /// A TSC read between two `CLOCK_MONOTONIC` reads, the tightest of a few: the TSC value, the
    /// midpoint of the two reads, and their distance (how far the midpoint may be off).
    static func bracketedPoint() -> (ticks: UInt64, nanoseconds: UInt64, width: UInt64) {
        var best: (ticks: UInt64, nanoseconds: UInt64, width: UInt64) = (0, 0, .max)
        for _ in 0..<16 {
            let before = monotonicNanoseconds()
            let ticks = zf_read_cycle_counter()
            let after = monotonicNanoseconds()
            if after &- before < best.width { best = (ticks, before &+ (after &- before) / 2, after &- before) }
        }
        return best
    }

    /// The kernel's current clocksource (`tsc`, `kvm-clock`, `hpet`, ...), or "".
    static func kernelClocksource() -> String {
        guard let file = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r") else { return "" }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 64)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return "" }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self).filter { !$0.isWhitespace }
    }

    /// The `flags` of the first processor in /proc/cpuinfo.
    static func cpuFlags() -> Set<Substring> {
        guard let file = fopen("/proc/cpuinfo", "r") else { return [] }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            if text.hasPrefix("flags") {
                return Set(text.split(separator: ":", maxSplits: 1).last?.split(whereSeparator: { $0 == " " || $0 == "\n" }) ?? [])
            }
        }
        return []
    }
}
