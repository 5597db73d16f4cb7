import Dispatch
import Foundation
import Logging
import ZapEngine
import ZapRun
import ZapScenario
import ZapPlatform

/// Progress on standard error: a live line on a terminal, log lines otherwise.
final class ProgressReporter: @unchecked Sendable {
    private let logger: Logger
    private let terminal = isatty(STDERR_FILENO) == 1
    private let mutex = PThreadMutex()
    private var lastInstalled = 0
    private var lastZapped = 0
    private var lastTime: UInt64 = 0
    private var lastPolicy: ZapPolicy?

    init(logger: Logger) { self.logger = logger }

    func update(_ progress: RunProgress) {
        mutex.withLock {
            if lastPolicy != progress.policy || progress.elapsedNanoseconds < lastTime {
                // A new policy (or shard) restarts the counters.
                (lastInstalled, lastZapped, lastTime, lastPolicy) = (0, 0, 0, progress.policy)
            }
            let seconds = Double(progress.elapsedNanoseconds - lastTime) / 1e9
            let installRate = seconds > 0 ? Double(max(0, progress.sptesInstalled - lastInstalled)) / seconds : 0
            let zapRate = seconds > 0 ? Double(max(0, progress.sptesZapped - lastZapped)) / seconds : 0
            (lastInstalled, lastZapped, lastTime) = (progress.sptesInstalled, progress.sptesZapped, progress.elapsedNanoseconds)
            var line =
                "\(progress.policy) step \(progress.step)/\(progress.steps) \(progress.stepName): "
                + "mapped \(Quantities.describeSize(Double(progress.sptesInstalled) * 4096)) "
                + "(\(Quantities.rounded(installRate / 1e6, 1)) M SPTE/s), "
                + "zapped \(Quantities.describeSize(Double(progress.sptesZapped) * 4096)) "
                + "(\(Quantities.rounded(zapRate / 1e6, 1)) M SPTE/s), \(Quantities.formatDuration(Double(progress.elapsedNanoseconds)))"
            if progress.stepName == "populate" && installRate > 0 {
                let remaining = Double(progress.sptesPerPopulation - progress.sptesInstalled % max(1, progress.sptesPerPopulation))
                line += ", step ETA \(Quantities.formatDuration(remaining / installRate * 1e9))"
            }
            if terminal {
                FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
            } else {
                logger.info("\(line)")
            }
        }
    }

    /// Clears the live line before the table is printed.
    func clear() {
        mutex.withLock {
            if terminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        }
    }
}
