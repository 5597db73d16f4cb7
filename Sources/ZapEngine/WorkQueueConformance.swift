import Atomics
import ZapPlatform

/// The kernel's workqueue rules (docs/model.md, "Workqueue semantics"), checked on a scratch
/// ``WorkQueue`` of the same code and width as a VM's.
///
/// In a correct engine nothing queues a pending item, so a queue that breaks "pending at most
/// once" would never show it in a workout: only the double-queue bug reaches that rule. So the
/// rules are probed directly, before a workout trusts the queue with its roots.
extension WorkQueue {
    /// Each rule the queue broke, in words; empty when it kept them all.
    public static func kernelRuleViolations(maxActive: Int) -> [String] {
        var problems: [String] = []
        let queue = WorkQueue(name: "wq-probe", maxActive: maxActive)

        // 1. `queue_work` on a pending item returns false, and the item runs once.
        let release = OneShotEvent()
        let started = ManagedAtomic<Int>(0)
        for index in 0..<maxActive {
            queue.queue(
                WorkItem(label: "blocker\(index)") {
                    started.wrappingIncrement(ordering: .relaxed); release.wait()
                })
        }
        while started.load(ordering: .relaxed) < maxActive { yieldProcessor() }
        let runs = ManagedAtomic<Int>(0)
        let pending = WorkItem(label: "pending") { runs.wrappingIncrement(ordering: .relaxed) }
        let first = queue.queue(pending)
        let second = queue.queue(pending)
        if first != .queued || second != .alreadyPending {
            problems.append("queueing a pending item twice returned \(first), \(second), not queued, already pending")
        }
        release.signal()
        queue.flush()
        if runs.load(ordering: .relaxed) != 1 {
            problems.append("an item queued twice while pending ran \(runs.load(ordering: .relaxed)) times, not once")
        }

        // 2. Queueing a running item runs it again afterwards, never on two workers at once.
        let inside = OneShotEvent()
        let letGo = OneShotEvent()
        let reruns = ManagedAtomic<Int>(0)
        let overlapping = ManagedAtomic<Int>(0)
        let active = ManagedAtomic<Int>(0)
        let running = WorkItem(label: "running") {
            if active.wrappingIncrementThenLoad(ordering: .acquiringAndReleasing) > 1 {
                overlapping.wrappingIncrement(ordering: .relaxed)
            }
            if reruns.load(ordering: .relaxed) == 0 { inside.signal(); letGo.wait() }
            reruns.wrappingIncrement(ordering: .relaxed)
            active.wrappingDecrement(ordering: .acquiringAndReleasing)
        }
        queue.queue(running)
        inside.wait()
        let again = queue.queue(running)
        letGo.signal()
        queue.flush()
        if again != .queued || reruns.load(ordering: .relaxed) != 2 {
            problems.append("an item queued while running was \(again) and ran \(reruns.load(ordering: .relaxed)) times, not again once")
        }
        if overlapping.load(ordering: .relaxed) > 0 { problems.append("one item ran on two workers at once") }

        // 3. `flush_workqueue` returns only when every item queued before it has run.
        let done = ManagedAtomic<Int>(0)
        for index in 0..<(maxActive + 2) {
            queue.queue(
                WorkItem(label: "late\(index)") {
                    for _ in 0..<50 { yieldProcessor() }
                    done.wrappingIncrement(ordering: .relaxed)
                })
        }
        queue.flush()
        if done.load(ordering: .relaxed) != maxActive + 2 {
            problems.append("flush returned after \(done.load(ordering: .relaxed)) of the \(maxActive + 2) items queued before it")
        }

        // 4. A destroyed queue refuses work.
        queue.destroy()
        let refused = queue.queue(WorkItem(label: "after") {})
        if refused != .refused { problems.append("a destroyed queue answered \(refused) to new work, not refused") }
        return problems
    }
}
