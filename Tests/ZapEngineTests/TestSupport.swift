import Testing
@testable import ZapEngine
import ZapPlatform
#if canImport(Glibc)
import Glibc
#endif

/// A one-shot gate that test threads block on until the test opens it: the engine's own event.
typealias Gate = OneShotEvent

extension OneShotEvent {
    /// Lets every waiter through.
    public func open() { signal() }
}

/// A counter and an ordered log that several threads append to.
final class Log<Element: Sendable>: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private var items: [Element] = []

    func append(_ item: Element) { mutex.withLock { items.append(item) } }
    var all: [Element] { mutex.withLock { items } }
    var count: Int { mutex.withLock { items.count } }
}

/// Polls `condition` until it holds or about 10 seconds pass; returns whether it held.
func eventually(_ condition: () -> Bool) -> Bool {
    for _ in 0..<10_000 {
        if condition() { return true }
        usleep(1000)
    }
    return condition()
}

/// Occupies the VM's only zap worker with an item that waits until the returned gate opens, so
/// that the next item queued stays pending.
func occupyWorker(_ vm: VirtualMachine) throws -> Gate {
    let queue = try #require(vm.zapQueue)
    let release = Gate()
    let started = Gate()
    queue.queue(
        WorkItem(label: "blocker") {
            started.open(); release.wait()
        })
    started.wait()
    return release
}

extension VirtualMachine {
    /// The leaf that maps `gfn` under `root`, and its level, read through the tables.
    func mapping(of gfn: UInt64, under root: Root) -> (entry: SPTE, level: Int)? {
        var table = pool.table(root.table)
        for level in stride(from: 4, through: 1, by: -1) {
            let entry = table.load(PagingGeometry.index(of: gfn, atLevel: level))
            guard entry.isPresent else { return nil }
            if entry.isLeaf(atLevel: level) { return (entry, level) }
            table = pool.table(PageIndex(rawValue: UInt32(entry.frame)))
        }
        return nil
    }
}
