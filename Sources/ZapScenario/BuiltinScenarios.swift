/// The scenarios that ship with zapfleet, written in the same YAML a user would write.
public enum BuiltinScenarios {
    /// Name, one line of purpose, and the YAML.
    public static let all: [(name: String, purpose: String, yaml: String)] = [
        ("quick", "the default: 32 GiB of 4 KiB pages, 2 vCPUs, every policy; well under a minute on 2 cores", quick),
        (
            "seed-64t", "the seed's experiment: 64 TiB of 4 KiB SPTEs, vCPU reset drops the last reference, then a fast zap; for the fleet",
            seed64T
        ),
        (
            "max-guest-memory",
            "the shape of the kernel's max_guest_memory_test: run, reset, run, delete half the slots, exit without cleanup", maxGuestMemory
        ),
        ("smm", "two address spaces: every vCPU also maps SMRAM in SMM, and every zap must reach both", smm),
        (
            "races",
            "every walker at once under race amplification: slow and lockless faults, resets, SMM, fast zaps, unmaps, dirty logging, NX recovery, full zaps, teardown",
            races
        ),
        (
            "memslot-delete",
            "the v6.6 story: pinned vCPUs run guest work while memslots are deleted; async zaps on an unbound workqueue (any CPU), preserve in the deleting thread; guest time lost per vCPU and where the zap work ran",
            memslotDelete
        ),
        (
            "dirty-log",
            "dirty_log_perf_test's shape on 2 MiB pages: enable dirty logging, dirty every page, clear, dirty again, disable; remote TLB flushes per policy beside the published figures (full size: --size 256GiB --vcpus 64)",
            dirtyLog
        )
    ]

    /// The YAML of the built-in named `name`.
    public static func yaml(named name: String) -> String? { all.first { $0.name == name }?.yaml }

    static let quick = """
        name: quick
        description: "sync vs async vs preserve on 32 GiB of 4 KiB mappings: who blocks when a root's last reference drops"
        vm:
          memory: 32GiB
          memslot: 2GiB
          pages: {4K: 1.0}
        workload:
          vcpus: 2
          coverage: sequential
        timeline:
          - populate
          - run: {faults: 20000}
          - reset_vcpus
          - populate
          - delete_memslots: {fraction: 0.5}
          - teardown
        policies: [sync, async, preserve]
        seed: 1
        slos:
          - "violations == 0"
          - "async.reset.p99.9 < 100ms"

        """

    static let seed64T = """
        name: seed-64t
        description: "the seed: ~64 TiB of guest memory on 4 KiB SPTEs; vCPU reset drops the last root reference, then a memslot is deleted"
        vm:
          memory: 64TiB
          memslot: 2GiB
          pages: {4K: 1.0}
        workload:
          vcpus: 8
          coverage: sequential
        timeline:
          - populate
          - reset_vcpus
          - delete_memslots: {fraction: 0.00003}   # one memslot of 32768: one fast zap
          - teardown
        policies: [sync, async]
        seed: 1
        # The projection's 52 ns per SPTE is the seed's whole 900 s over its 2^34 SPTEs, remote TLB
        # flushes included: charging the flushes again would count them twice. They are still counted.
        tlb_flush_cost: 0ns
        slos:
          - "violations == 0"
          - "async.reset.projected.max < 100ms"

        """

    static let maxGuestMemory = """
        name: max-guest-memory
        description: "max_guest_memory_test: run the vCPUs over all memory, reset them, run again, delete half the slots, exit without cleanup"
        vm:
          memory: 64GiB
          memslot: 2GiB
          pages: {4K: 1.0}
        workload:
          vcpus: 2
          coverage: sequential
        timeline:
          - populate
          - reset_vcpus
          - populate
          - delete_memslots: {fraction: 0.5}
          - full_zap
          - teardown
        policies: [sync, async, preserve]
        seed: 1
        slos:
          - "violations == 0"

        """

    static let smm = """
        name: smm
        description: "two address spaces: vCPUs map guest memory and SMRAM; fast zaps must invalidate and zap the roots of both"
        vm:
          memory: 16GiB
          memslot: 2GiB
          pages: {4K: 0.5, 2M: 0.5}
          smm: true
          smram: 1GiB
        workload:
          vcpus: 2
          coverage: random
        timeline:
          - populate
          - run: {faults: 5000}
          - delete_memslots: {fraction: 0.25}
          - populate
          - reset_vcpus
          - teardown
        repeat: 2
        policies: [sync, async, preserve]
        seed: 7
        slos:
          - "violations == 0"

        """

    static let races = """
        name: races
        description: "every path that touches SPTEs at once, with seeded delays at the race windows: slow and lockless faults, resets and SMM switches against fast zaps, MMU-notifier unmaps, dirty logging (eager huge-page splits included), NX recovery and full zaps"
        vm:
          memory: 8GiB
          memslot: 1GiB
          pages: {4K: 0.75, 2M: 0.25}
          smm: true
          smram: 256MiB
        workload:
          vcpus: 4
          coverage: random
        timeline:
          - populate
          - dirty_log: enable
          - fast_faults: {faults: 2000}
          - dirty_log: clear
          - fast_faults: {faults: 2000}
          - reset_vcpus
          - delete_memslots: {fraction: 0.125}
          - populate
          - workout: {operations: 3000}
          - dirty_log: disable
          - unmap: {fraction: 0.25}
          - populate
          - workout: {operations: 3000}
          - delete_memslots: {fraction: 0.25}
          - full_zap
          - teardown
        policies: [sync, async, preserve]
        # Two workers: roots are zapped concurrently, and a defunct root's item often waits
        # pending behind a running zap, the state the double-queue race needs (with 4 workers the
        # race was reached about once a run, sometimes not at all; with 2, some 40 times).
        workqueue_width: 2
        seed: 1
        # One passage in twenty through a race window waits up to 2 ms: long enough for a fast zap
        # after a reset to meet the defunct root's pending work item, for walkers to sit inside
        # tables while zaps free them, and for lock hand-offs to interleave.
        chaos: {probability: 0.05, max_delay: 2ms}
        # The NX recovery thread zaps one in 8 tables of small pages every 2 ms under the write lock.
        nx_recovery: {period: 2ms, ratio: 8}
        slos:
          - "violations == 0"

        """

    static let dirtyLog = """
        name: dirty-log
        description: "the shape of dirty_log_perf_test -s anonymous_hugetlb_2mb: guest memory on 2 MiB pages, dirty logging enabled, every 4 KiB page written, the log cleared, every page written again, dirty logging disabled, every page written once more. Run with --size 256GiB --vcpus 64 it is Matlack's -v 64 -b 4g run, whose flush count the figures quoted in issue #16 put at 131,072 without eager page splitting (our sync, v5.17) and 76 with it (async, v5.18); Gardon's zap of non-leaf SPTEs (v5.19) cut disabling dirty logging on a 96-vCPU, 96 GiB guest from about 200 s to about 3 s, 512 flushes becoming one (preserve)"
        vm:
          memory: 8GiB
          memslot: 1GiB
          pages: {2M: 1.0}
        workload:
          vcpus: 8
          coverage: sequential
        timeline:
          - populate
          - dirty_log: enable
          - dirty_memory
          - dirty_log: clear
          - dirty_memory
          - dirty_log: disable
          - dirty_memory
          - teardown
        policies: [sync, async, preserve]
        seed: 1
        slos:
          - "violations == 0"

        """

    static let memslotDelete = """
        name: memslot-delete
        description: "why v6.6 stopped zapping invalidated roots asynchronously (commit 0df9dab891ff): with the vCPUs pinned to their CPUs and running guest work, a memslot is deleted, four times over. async (v5.18 to v6.5) zaps the invalidated roots on the VM's unbound workqueue, on any CPU and in parallel; the commit saw that occupy all logical CPUs for about 8 ms on 6.5 and 50 ms or more on 5.15, heard as audio blips on ChromeOS. preserve (v6.6) zaps them in the deleting thread, on its own CPU, under the read lock. The report gives the guest time each vCPU lost and the CPUs the zap work ran on"
        vm:
          memory: 32GiB
          memslot: 1GiB
          pages: {4K: 1.0}
          smm: true
          smram: 4GiB
        workload:
          vcpus: 2
          coverage: sequential
          guest_work: true
        timeline:
          - populate
          - delete_memslots: {fraction: 0.04}
        repeat: 4
        policies: [async, preserve]
        seed: 1
        slos:
          - "violations == 0"

        """
}
