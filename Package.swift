// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "zapfleet",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "zapfleet", targets: ["zapfleet"]),
        .library(name: "ZapEngine", targets: ["ZapEngine"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/groue/GRDB.swift", exact: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", exact: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1")
    ],
    targets: [
        // The simulation of KVM's TDP MMU root lifecycle. Knows nothing of networks or CLIs.
        .target(
            name: "ZapEngine",
            dependencies: ["ZapPlatform", .product(name: "Atomics", package: "swift-atomics")]
        ),
        // Scenario files: the schema, strict YAML parsing with located errors, built-ins, SLOs.
        .target(
            name: "ZapScenario",
            dependencies: ["ZapEngine", .product(name: "Yams", package: "Yams")]
        ),
        // Running scenarios on the engine: vCPU threads, block-time histograms, kernel projection,
        // reports (JSON, .hgrm, table) and objective verdicts.
        .target(
            name: "ZapRun",
            dependencies: [
                "ZapEngine", "ZapScenario", "ZapPlatform",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Atomics", package: "swift-atomics")
            ]
        ),
        // sched_getcpu and sched_setaffinity, which glibc declares only under _GNU_SOURCE.
        .target(name: "CLinuxScheduling"),
        // RDTSC, for the block-time clock.
        .target(name: "CCycleCounter"),
        // The platform under everything: OS threads, pthread mutexes and conditions, the monotonic
        // and thread-CPU clocks, CPU affinity. Used by the engine, the fleet and the CLI alike.
        .target(name: "ZapPlatform", dependencies: ["CLinuxScheduling", "CCycleCounter"]),
        // zlib, from Debian's zlib1g-dev.
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        // HdrHistogram's V2 encoding (compressed and plain, base64), which hdrhistogram-swift lacks.
        .target(
            name: "HistogramCodec",
            dependencies: ["CZlib", .product(name: "Histogram", package: "hdrhistogram-swift")]
        ),
        // The wire protocol: Swift generated from Proto/zapfleet.proto (scripts/generate-proto).
        .target(
            name: "ZapProtocol",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        // libzmq, from Debian's libzmq3-dev, found with pkg-config.
        .systemLibrary(name: "CZeroMQ", pkgConfig: "libzmq", providers: [.apt(["libzmq3-dev"])]),
        // A thin Swift layer of our own over libzmq: context, sockets, multipart messages, poller.
        .target(name: "ZeroMQ", dependencies: ["CZeroMQ"]),
        // The fleet: coordinator, workers, shard planning, result coding and merging. Uses the engine
        // only through ZapRun's and ZapEngine's public API.
        .target(
            name: "ZapCluster",
            dependencies: [
                "ZapEngine", "ZapScenario", "ZapRun", "ZapProtocol", "ZeroMQ", "HistogramCodec", "CZlib", "ZapPlatform",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift")
            ]
        ),
        // The run history: reports kept in SQLite (GRDB, with migrations), listed, plotted as
        // trends and checked for regressions. Reads report.json; knows nothing of the engine.
        .target(name: "ZapHistory", dependencies: [.product(name: "GRDB", package: "GRDB.swift")]),
        // The live view of a fleet run over HTTP (Hummingbird): OpenMetrics at /metrics with the
        // merged histograms' exact buckets, the report at /report.json. Reads the coordinator's
        // snapshots; knows nothing of sockets or page tables.
        .target(
            name: "ZapLive",
            dependencies: [
                "ZapCluster", "ZapRun", "ZapEngine", "ZapPlatform", .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"), .product(name: "Histogram", package: "hdrhistogram-swift")
            ]
        ),
        // The command-line tool: parses arguments and wires the other targets together.
        .executableTarget(
            name: "zapfleet",
            dependencies: [
                "ZapEngine",
                "ZapScenario",
                "ZapRun",
                "ZapCluster",
                "ZapPlatform",
                "ZapHistory",
                "ZapLive",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log")
            ]
        ),
        // Release-mode micro-benchmarks of the engine's hot paths against raw memory sweeps.
        .executableTarget(
            name: "zapfleet-bench",
            dependencies: [
                "ZapEngine", "ZapScenario", "ZapRun", "ZapCluster", "ZapProtocol", "ZeroMQ", "ZapPlatform",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"), .product(name: "SwiftProtobuf", package: "swift-protobuf")
            ],
            path: "Benchmarks/zapfleet-bench"
        ),
        // What every test target shares: the built binary and subprocesses, temporary directories,
        // waiting, scenario and histogram fixtures, a coordinator and workers on threads, a peer
        // that speaks the protocol by hand, raw TCP, seeded fuzz input.
        .target(
            name: "ZapfleetTestSupport",
            dependencies: [
                "ZapCluster", "ZapProtocol", "ZapRun", "ZapScenario", "ZapEngine", "ZeroMQ", "HistogramCodec", "CZlib",
                "ZapPlatform", .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"), .product(name: "Logging", package: "swift-log")
            ],
            path: "Tests/ZapfleetTestSupport"
        ),
        .testTarget(
            name: "ZapEngineTests",
            dependencies: ["ZapEngine", "ZapPlatform", "ZapfleetTestSupport", .product(name: "Atomics", package: "swift-atomics")]),
        .testTarget(name: "ZapScenarioTests", dependencies: ["ZapScenario", "ZapEngine", "ZapPlatform", "ZapfleetTestSupport"]),
        .testTarget(
            name: "ZapRunTests",
            dependencies: [
                "ZapRun", "ZapScenario", "ZapEngine", "ZapPlatform", "HistogramCodec", "ZapfleetTestSupport",
                .product(name: "Histogram", package: "hdrhistogram-swift")
            ]),
        .testTarget(
            name: "HistogramCodecTests",
            dependencies: [
                "HistogramCodec", "CZlib", "ZapPlatform", "ZapfleetTestSupport", .product(name: "Histogram", package: "hdrhistogram-swift")
            ],
            resources: [.copy("Vectors")]
        ),
        .testTarget(name: "ZeroMQTests", dependencies: ["ZeroMQ", "ZapfleetTestSupport"]),
        .testTarget(
            name: "ZapHistoryTests", dependencies: ["ZapHistory", "ZapfleetTestSupport", .product(name: "GRDB", package: "GRDB.swift")]),
        .testTarget(
            name: "ZapClusterTests",
            dependencies: [
                "ZapCluster", "ZapProtocol", "ZapRun", "ZapScenario", "ZapEngine", "ZeroMQ", "ZapfleetTestSupport", "ZapPlatform",
                .product(name: "Logging", package: "swift-log"), .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf")
            ]),
        // End-to-end tests of the built executable, run as a subprocess.
        .testTarget(
            name: "ZapfleetCLITests",
            dependencies: [
                "ZapRun", "ZapCluster", "ZapEngine", "ZapScenario", "ZapProtocol", "ZeroMQ", "ZapfleetTestSupport", "ZapPlatform",
                .product(name: "Histogram", package: "hdrhistogram-swift"), .product(name: "SwiftProtobuf", package: "swift-protobuf")
            ])
    ]
)

// Every Swift target holds to MemberImportVisibility: a file uses members only of the modules it
// imports itself, so that Package.swift's dependencies stay what the code really imports.
for target in package.targets where target.type != .system {
    target.swiftSettings = (target.swiftSettings ?? []) + [.enableUpcomingFeature("MemberImportVisibility")]
}
