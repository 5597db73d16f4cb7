import Testing
@testable import ZapEngine
import ZapPlatform
import ZapfleetTestSupport

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
