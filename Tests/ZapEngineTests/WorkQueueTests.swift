import Testing
import ZapfleetTestSupport
import ZapEngine
import ZapPlatform
#if canImport(Glibc)
import Glibc
#endif

/// The workqueue rules of docs/model.md, one test each.
@Suite("Workqueue semantics")
struct WorkQueueTests {
    @Test("queueing an item that is already pending returns false and runs it once")
    func pendingItemRunsOnce() {
        let queue = WorkQueue(name: "t", maxActive: 1)
        let blocker = Gate()
        let started = Gate()
        queue.queue(
            WorkItem(label: "blocker") {
                started.open(); blocker.wait()
            })
        started.wait()
        let runs = Log<Int>()
        let item = WorkItem(label: "item") { runs.append(1) }
        #expect(queue.queue(item) == .queued)
        #expect(queue.queue(item) == .alreadyPending)
        #expect(queue.alreadyPendingCount == 1)
        blocker.open()
        queue.flush()
        #expect(runs.count == 1)
        queue.destroy()
    }

    @Test("an item re-queued while it runs runs again afterwards, never on two workers at once")
    func requeueWhileRunning() {
        let queue = WorkQueue(name: "t", maxActive: 3)
        let inside = Gate()
        let release = Gate()
        let runs = Log<Int>()
        let concurrent = Log<Int>()
        let active = Log<Int>()
        let item = WorkItem(label: "item") {
            active.append(1)
            if active.count > runs.count + 1 { concurrent.append(1) }
            if runs.count == 0 { inside.open(); release.wait() }
            runs.append(1)
        }
        #expect(queue.queue(item) == .queued)
        inside.wait()
        // Running, not pending: this queue succeeds and schedules a second run.
        #expect(queue.queue(item) == .queued)
        release.open()
        queue.flush()
        #expect(runs.count == 2)
        #expect(concurrent.count == 0)
        queue.destroy()
    }

    @Test("up to maxActive items run in parallel")
    func parallelWorkers() {
        let queue = WorkQueue(name: "t", maxActive: 3)
        let allInside = Log<Int>()
        let release = Gate()
        for index in 0..<3 {
            queue.queue(
                WorkItem(label: "w\(index)") {
                    allInside.append(index); release.wait()
                })
        }
        #expect(eventually { allInside.count == 3 }, "three items should be running at once")
        release.open()
        queue.flush()
        queue.destroy()
    }

    @Test("flush waits for items queued before it, not for items queued after")
    func flushScope() {
        let queue = WorkQueue(name: "t", maxActive: 2)
        let before = Log<Int>()
        let beforeRelease = Gate()
        let lateRelease = Gate()
        for index in 0..<5 {
            queue.queue(
                WorkItem(label: "b\(index)") {
                    beforeRelease.wait(); before.append(index)
                })
        }
        let flushed = Gate()
        let flusher = OSThread(name: "flusher") {
            queue.flush()
            flushed.open()
        }
        #expect(eventually { queue.flushesInProgress == 1 })
        // Queued while the flush waits: the flush must return while this one still blocks.
        queue.queue(WorkItem(label: "late") { lateRelease.wait() })
        beforeRelease.open()
        flushed.wait()
        flusher.join()
        #expect(before.count == 5)
        lateRelease.open()
        queue.destroy()
    }

    @Test("destroy drains work, including work queued by running items, then refuses")
    func destroyDrainsThenRefuses() {
        let queue = WorkQueue(name: "t", maxActive: 1)
        let runs = Log<String>()
        let chained = WorkItem(label: "chained") { runs.append("chained") }
        queue.queue(
            WorkItem(label: "first") {
                usleep(5000)
                runs.append("first")
                queue.queue(chained)
            })
        queue.destroy()
        #expect(runs.all == ["first", "chained"])
        #expect(queue.isDestroyed)
        #expect(queue.queue(WorkItem(label: "too late") { runs.append("late") }) == .refused)
        #expect(queue.refusedCount == 1)
        #expect(runs.count == 2)
    }
}

@Suite("The workqueue's rules are probed")
struct WorkQueueProbeTests {
    @Test("the probe finds no broken rule in the engine's queue, at several widths")
    func probeOfTheRealQueue() {
        for width in [1, 2, 8] {
            #expect(WorkQueue.kernelRuleViolations(maxActive: width) == [], "width \(width)")
        }
    }

    @Test("an async VM records no workqueue-rule violation at creation")
    func asyncVMProbesItsQueue() throws {
        let vm = try VirtualMachine(configuration: VMConfiguration(policy: .async, pageTableBudgetBytes: 1 << 20))
        #expect(!vm.checker.saw(.workqueueRule))
        vm.teardown()
    }
}

@Suite("Workqueue workers start on demand")
struct WorkQueueOnDemandTests {
    @Test("a wide queue starts a worker only when work waits and none is idle, never more than max_active")
    func workersOnDemand() {
        let queue = WorkQueue(name: "t", maxActive: 256)
        #expect(queue.workerCount == 0)
        let runs = Log<Int>()
        for index in 0..<20 { queue.queue(WorkItem(label: "serial\(index)") { runs.append(index) }); queue.flush() }
        #expect(runs.count == 20)
        #expect(queue.workerCount <= 2, "one item at a time needs one worker (two at most while the first goes idle): \(queue.workerCount)")
        let release = Gate()
        let inside = Log<Int>()
        for index in 0..<6 {
            queue.queue(
                WorkItem(label: "parallel\(index)") {
                    inside.append(index); release.wait()
                })
        }
        #expect(eventually { inside.count == 6 }, "six blocked items run at once")
        release.open()
        queue.flush()
        let narrow = WorkQueue(name: "n", maxActive: 3)
        let gate = Gate()
        let running = Log<Int>()
        for index in 0..<6 {
            narrow.queue(
                WorkItem(label: "w\(index)") {
                    running.append(index); gate.wait()
                })
        }
        #expect(eventually { running.count == 3 })
        #expect(narrow.workerCount == 3)
        gate.open()
        narrow.flush()
        #expect(running.count == 6)
        queue.destroy()
        narrow.destroy()
    }
}
