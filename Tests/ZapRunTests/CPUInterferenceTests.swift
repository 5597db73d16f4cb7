import Testing
import ZapEngine
@testable import ZapRun
import ZapPlatform
#if canImport(Glibc)
import Glibc
#endif

/// Where zap work runs and what it takes from pinned vCPUs: the measurements behind the report's
/// CPU-interference section. No figure here is a speed: each test sets up a CPU that two threads
/// must share, or one that only one thread may use.
@Suite("CPU interference", .serialized)
struct CPUInterferenceTests {
    @Test("a thread pinned to a CPU runs there")
    func pinning() {
        let cpus = CPUAccounting.onlineCPUs
        let seen = (0..<cpus).map { cpu in
            let result = ManagedCPU()
            OSThread(name: "pinned") {
                result.pinned = CPUAccounting.pinCallingThread(to: cpu)
                result.cpu = CPUAccounting.currentCPU()
            }.join()
            return result
        }
        for (cpu, result) in seen.enumerated() {
            #expect(result.pinned, "pinning to cpu \(cpu) refused")
            #expect(result.cpu == cpu)
        }
        #expect(!CPUAccounting.pinCallingThread(to: -1) && !CPUAccounting.pinCallingThread(to: 1 << 20))
    }

    @Test("a zap in the caller's context (preserve) spends its CPU time on the caller's CPU and nowhere else")
    func zapCPUTimeLandsWhereTheZapRan() throws {
        let vm = try VirtualMachine(configuration: VMConfiguration(policy: .preserve, pageTableBudgetBytes: 256 << 20))
        let cpu = CPUAccounting.onlineCPUs - 1
        OSThread(name: "deleter") {
            CPUAccounting.pinCallingThread(to: cpu)
            let vcpu = vm.makeVCPU()
            for region: UInt64 in 0..<256 { vcpu.populate2MRegion(firstFrame: region << 9) }
            vm.fastZap()
        }.join()
        let byCPU = vm.zapCPUNanoseconds
        #expect(byCPU[cpu] > 0, "\(byCPU)")
        #expect(byCPU.enumerated().allSatisfy { $0.offset == cpu || $0.element == 0 }, "\(byCPU)")
        vm.teardown()
    }

    @Test("an unbound worker started by a pinned thread may run on every CPU (WQ_UNBOUND), not the queuer's")
    func workersAreUnbound() {
        let everyCPU = ManagedCPU()
        OSThread(name: "unpinned") {
            CPUAccounting.unpinCallingThread()
            everyCPU.cpu = CPUAccounting.allowedCPUCount()
        }.join()
        let worker = ManagedCPU()
        let queue = WorkQueue(name: "kvm-test", maxActive: 2)
        let done = Flag()
        OSThread(name: "queuer") {
            CPUAccounting.pinCallingThread(to: 0)
            worker.pinned = CPUAccounting.allowedCPUCount() == 1
            queue.queue(
                WorkItem(label: "where") {
                    worker.cpu = CPUAccounting.allowedCPUCount()
                    done.set()
                })
        }.join()
        while !done.isSet { sched_yield() }
        queue.destroy()
        #expect(worker.pinned, "the queuing thread was pinned to one CPU")
        #expect(everyCPU.cpu >= 1 && worker.cpu == everyCPU.cpu, "the worker may use \(worker.cpu) CPUs of \(everyCPU.cpu)")
    }

    @Test("guest work sharing its CPU with a thread that spins loses run time; the lost time never exceeds the guest time")
    func guestWorkLosesTimeToACompetitor() {
        // A competitor pinned to vCPU 0's CPU for the whole window: the scheduler must share that CPU.
        let stop = Flag()
        let competitor = OSThread(name: "competitor") {
            CPUAccounting.pinCallingThread(to: 0)
            var state: UInt64 = 1
            while !stop.isSet { for _ in 0..<1000 { state = state &* 6_364_136_223_846_793_005 &+ 1 } }
            stop.sink = state
        }
        let guest = GuestWork(vcpus: 1)
        usleep(300_000)
        let shares = guest.stop()
        stop.set()
        competitor.join()
        let share = shares[0]
        #expect(share.cpu == 0 && share.units > 0)
        #expect(share.lostNs <= share.guestNs)
        #expect(share.lostNs * 10 >= share.guestNs, "two threads on one CPU: the guest lost only \(share.lostNs) of \(share.guestNs) ns")
    }

    @Test("shards' figures add per vCPU and per CPU, and keep the largest deletion")
    func adding() {
        var first = CPUInterference()
        first.vcpus = [
            .init(vcpu: 0, cpu: 0, guestNs: 100, lostNs: 10, units: 5), .init(vcpu: 1, cpu: 1, guestNs: 100, lostNs: 20, units: 5)
        ]
        first.zapCpuNs = ["0": 7]
        first.addDeletion(before: [0, 0], after: [30, 0])
        var second = CPUInterference()
        second.vcpus = [.init(vcpu: 1, cpu: 1, guestNs: 50, lostNs: 5, units: 2)]
        second.zapCpuNs = ["0": 1, "1": 2]
        second.addDeletion(before: [0, 0], after: [10, 40])
        let sum = first.adding(second)
        #expect(sum.vcpus.map(\.guestNs) == [100, 150] && sum.vcpus.map(\.lostNs) == [10, 25])
        #expect(sum.zapCpuNs == ["0": 8, "1": 2])
        #expect(sum.memslotDeletions == 2 && sum.deletionZapCpuNs == 80 && sum.deletionZapCpuNsMax == 50 && sum.deletionCpusMax == 2)
        #expect(abs(sum.lostPercent - 35.0 / 250 * 100) < 1e-9)
    }
}

private final class ManagedCPU: @unchecked Sendable {
    var pinned = false
    var cpu = -2
}

private final class Flag: @unchecked Sendable {
    private let mutex = PThreadMutex()
    private var value = false
    var sink: UInt64 = 0
    var isSet: Bool { mutex.withLock { value } }
    func set() { mutex.withLock { value = true } }
}
