import Foundation

/// Polling for something another thread or process brings about. Tests wait for outcomes, not for
/// fixed times, so that they pass on a loaded machine; the bound only ends a test that would hang.
public enum Waiting {
    /// Polls `condition` every `interval` seconds until it holds or `seconds` pass; returns whether
    /// it held (checked once more at the deadline).
    public static func until(seconds: Double = 10, interval: Double = 0.001, _ condition: () -> Bool) -> Bool {
        value(seconds: seconds, interval: interval) { condition() ? true : nil } ?? false
    }

    /// Polls `produce` every `interval` seconds until it returns a value or `seconds` pass.
    public static func value<T>(seconds: Double, interval: Double = 0.05, _ produce: () -> T?) -> T? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let value = produce() { return value }
            Thread.sleep(forTimeInterval: interval)
        }
        return produce()
    }
}

/// Polls `condition` until it holds or about 10 seconds pass; returns whether it held.
public func eventually(_ condition: () -> Bool) -> Bool { Waiting.until(condition) }
