/// The shards waiting for a worker, first come first served, requeued ones in front. Kept as a
/// stack whose top is the front, so that taking and requeueing cost O(1) for a fleet's
/// thousands of shards.
struct ShardQueue {
    private var stack: [UInt64]
    private var members: Set<UInt64>

    init(_ ids: [UInt64] = []) {
        stack = ids.reversed()
        members = Set(ids)
    }

    func contains(_ id: UInt64) -> Bool { members.contains(id) }

    /// The waiting shards, front first.
    var ids: ReversedCollection<[UInt64]> { stack.reversed() }

    /// How many wait.
    var count: Int { stack.count }

    mutating func pushFront(_ id: UInt64) {
        guard members.insert(id).inserted else { return }
        stack.append(id)
    }

    /// Takes the frontmost shard that `fits`.
    mutating func takeFirst(where fits: (UInt64) -> Bool) -> UInt64? {
        guard let position = stack.lastIndex(where: fits) else { return nil }
        let id = stack.remove(at: position)
        members.remove(id)
        return id
    }

    mutating func remove(_ id: UInt64) {
        guard members.remove(id) != nil else { return }
        stack.removeAll { $0 == id }
    }
}
