/// What a run of a scenario needs in memory, estimated before it starts.
public struct MemoryEstimate: Sendable, Equatable {
    /// Page-table bytes for one full population of the VM (or of one shard).
    public var pageTableBytes: UInt64
    /// The most the run holds at once: a timeline that repopulates right after a reset can have
    /// the old root's tables (still being zapped) and the new root's at the same time.
    public var peakBytes: UInt64

    /// Estimates the page tables of `bytes` of `scenario`'s memory: tables are 1/512 of
    /// 4 KiB-mapped memory, 1/262144 of 2 MiB-mapped memory, plus the upper levels.
    public static func estimate(_ scenario: Scenario, bytes: UInt64? = nil) -> MemoryEstimate {
        let memory = Double(bytes ?? scenario.vm.memoryBytes) * scenario.workload.touched
        // Dirty logging splits huge pages into 4 KiB ones (eagerly, or by the writes that follow).
        let logsDirtyPages = scenario.timeline.contains(.dirtyLog(.enable))
        let mix = logsDirtyPages ? PageMix(fraction4K: 1, fraction2M: 0, fraction1G: 0) : scenario.vm.effectivePageMix
        let levelOne = memory * mix.fraction4K / 512
        let levelTwo = memory * (mix.fraction4K + mix.fraction2M) / (512 * 512)
        let upper = memory / (512 * 512 * 512) + 2 * 4096
        var tables = levelOne + levelTwo + upper
        if scenario.vm.smm {
            tables += Double(scenario.vm.smramBytes) / 512 + Double(scenario.vm.smramBytes) / (512 * 512)
        }
        let pageTables = UInt64(tables.rounded(.up))
        // A new root may be populated while the previous one is still being zapped.
        var repopulates = false
        var sawReset = false
        for step in scenario.timeline {
            switch step {
            case .resetVCPUs, .deleteMemslots, .unmap, .dirtyLog, .workout: sawReset = true
            case .populate, .run, .fastFaults, .dirtyMemory: if sawReset { repopulates = true }
            default: break
            }
        }
        return MemoryEstimate(pageTableBytes: pageTables, peakBytes: repopulates ? pageTables * 2 : pageTables)
    }
}
