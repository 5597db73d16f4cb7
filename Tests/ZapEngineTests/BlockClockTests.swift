import Foundation
import Testing
import ZapPlatform

/// The block-time clock: the TSC where the CPU vouches for it, and durations that agree with
/// CLOCK_MONOTONIC's.
@Suite("Block-time clock")
struct BlockClockTests {
    @Test("the TSC is used exactly when the CPU reports constant_tsc and nonstop_tsc, within the calibration's bound")
    func source() throws {
        let cpuinfo = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        let flags = cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") }.map { Set($0.split(separator: " ")) } ?? []
        let vouched = flags.contains("constant_tsc") && flags.contains("nonstop_tsc")
        let calibration = BlockClock.calibration
        if calibration.source == "tsc" {
            #expect(vouched)
            #expect(calibration.ticksPerSecond > 1e8 && calibration.errorPartsPerMillion <= 1_000, "\(calibration)")
        } else {
            #expect(calibration.source == "clock_monotonic" && !calibration.reason.isEmpty, "\(calibration)")
            #expect(!vouched || calibration.reason.contains("calibration"), "the CPU vouches for its TSC, yet: \(calibration.reason)")
        }
    }

    @Test("durations read from the block clock agree with CLOCK_MONOTONIC's, and it never runs backwards")
    func agreesWithMonotonic() {
        var previous = BlockClock.nanoseconds()
        for _ in 0..<5 {
            let blockStart = BlockClock.nanoseconds(), monotonicStart = monotonicNanoseconds()
            var spin: UInt64 = 0
            while monotonicNanoseconds() &- monotonicStart < 20_000_000 {
                let now = BlockClock.nanoseconds()
                #expect(now >= previous)
                previous = now
                spin &+= 1
            }
            let block = Double(BlockClock.nanoseconds() &- blockStart), monotonic = Double(monotonicNanoseconds() &- monotonicStart)
            // A rate off by the calibration bound (1,000 ppm at most) plus the reads between the two clocks.
            #expect(
                abs(block - monotonic) <= monotonic * 0.001 + 200_000,
                "block clock \(block) ns, CLOCK_MONOTONIC \(monotonic) ns (\(spin) reads)")
        }
    }
}
