import ZapEngine

/// Everything one policy's run of a scenario measured except its histograms: what a worker
/// reports beside them, and what the coordinator adds up over shards.
public struct PolicyOutcome: Sendable {
    /// The policy.
    public var policy: ZapPolicy
    /// The VM's counters after teardown.
    public var statistics: EngineStatistics
    /// Violations kept by the checker (a worker reports up to ten).
    public var violations: [Violation]
    /// Every violation seen, by kind.
    public var violationCounts: [Violation.Kind: Int]
    /// Wall time of each step.
    public var steps: [StepTiming]
    /// Wall time of the whole policy run.
    public var wallNanoseconds: UInt64
    /// False if the run was cancelled before the timeline ended.
    public var complete: Bool
    /// SPTEs zapped per second of zap wall time.
    public var zapThroughput: Double
    /// How often each injected bug's broken path ran (only injected bugs appear).
    public var injectedPathRuns: [InjectedBug: Int]
    /// Remote TLB flushes the policy's kernel would have issued, by cause.
    public var tlbFlushes: TLBFlushCounts
    /// Guest run time lost to zap work (scenarios with `guest_work`), else nil.
    public var interference: CPUInterference?

    /// A policy's outcome, as measured here or decoded from a worker's result.
    public init(
        policy: ZapPolicy, statistics: EngineStatistics, violations: [Violation],
        violationCounts: [Violation.Kind: Int], steps: [StepTiming], wallNanoseconds: UInt64, complete: Bool,
        zapThroughput: Double, injectedPathRuns: [InjectedBug: Int] = [:], tlbFlushes: TLBFlushCounts = TLBFlushCounts(),
        interference: CPUInterference? = nil
    ) {
        self.policy = policy
        self.statistics = statistics
        self.violations = violations
        self.violationCounts = violationCounts
        self.steps = steps
        self.wallNanoseconds = wallNanoseconds
        self.complete = complete
        self.zapThroughput = zapThroughput
        self.injectedPathRuns = injectedPathRuns
        self.tlbFlushes = tlbFlushes
        self.interference = interference
    }
}

/// What one policy's run of a scenario measured: its outcome and its block-time histograms.
/// The outcome's fields read as the run's own (`run.statistics`).
@dynamicMemberLookup
public struct PolicyRun: Sendable {
    /// Everything but the histograms.
    public var outcome: PolicyOutcome
    /// Block-time histograms, measured and projected, root lifetimes included.
    public var recorder: BlockTimeRecorder

    /// A run of `outcome` with the histograms of `recorder`.
    public init(_ outcome: PolicyOutcome, recorder: BlockTimeRecorder) {
        self.outcome = outcome
        self.recorder = recorder
    }

    /// The outcome's fields.
    public subscript<Value>(dynamicMember field: WritableKeyPath<PolicyOutcome, Value>) -> Value {
        get { outcome[keyPath: field] }
        set { outcome[keyPath: field] = newValue }
    }
}
