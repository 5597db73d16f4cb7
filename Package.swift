// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "zapfleet",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "zapfleet", targets: ["zapfleet"]),
        .library(name: "ZapEngine", targets: ["ZapEngine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // The simulation of KVM's TDP MMU root lifecycle. Knows nothing of networks or CLIs.
        .target(
            name: "ZapEngine",
            dependencies: [.product(name: "Atomics", package: "swift-atomics")]
        ),
        // Scenario files: the schema, strict YAML parsing with located errors, built-ins, SLOs.
        .target(
            name: "ZapScenario",
            dependencies: ["ZapEngine", .product(name: "Yams", package: "Yams")]
        ),
        // The command-line tool: parses arguments and wires the other targets together.
        .executableTarget(
            name: "zapfleet",
            dependencies: [
                "ZapEngine",
                "ZapScenario",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Release-mode micro-benchmarks of the engine's hot paths against raw memory sweeps.
        .executableTarget(
            name: "zapfleet-bench",
            dependencies: [
                "ZapEngine",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/zapfleet-bench"
        ),
        .testTarget(name: "ZapEngineTests", dependencies: ["ZapEngine"]),
        .testTarget(name: "ZapScenarioTests", dependencies: ["ZapScenario"]),
    ]
)
