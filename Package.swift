// swift-tools-version:6.0
// Peregrine: a high-volume mail transfer agent. No Swift package dependencies:
// the toolchain (Foundation, Dispatch, Glibc, Synchronization, Swift Testing)
// plus Debian's liburing and OpenSSL through system library targets.
import PackageDescription

// The I/O layer and the executables use the Swift 5 language mode: the event
// loops hand non-Sendable closures around on their own thread by design, and
// their thread-safety is proven by the conformance suite, not by the checker.
// Pure protocol code (PeregrineSMTP) is compiled in the Swift 6 mode.
let loopSettings: [SwiftSetting] = [.swiftLanguageMode(.v5)]
let testSettings: [SwiftSetting] = [.swiftLanguageMode(.v5)]

let package = Package(
    name: "Peregrine",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "peregrine", targets: ["Peregrine"]),
        .executable(name: "peregrine-sink", targets: ["peregrine-sink"]),
        .executable(name: "peregrine-loadgen", targets: ["peregrine-loadgen"]),
        .executable(name: "peregrine-bench", targets: ["peregrine-bench"]),
        .library(name: "PeregrineIO", targets: ["PeregrineIO"]),
        .library(name: "PeregrineSMTP", targets: ["PeregrineSMTP"]),
        .library(name: "PeregrineCore", targets: ["PeregrineCore"]),
    ],
    targets: [
        .systemLibrary(name: "CURing", path: "Sources/CURing", pkgConfig: "liburing",
                       providers: [.apt(["liburing-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        // epoll, eventfd, accept4: Linux APIs the Glibc module does not map.
        .systemLibrary(name: "CLinux", path: "Sources/CLinux"),

        .target(name: "PeregrineIO", dependencies: ["CURing", "CLinux"], swiftSettings: loopSettings),
        .target(name: "PeregrineSMTP", swiftSettings: [.swiftLanguageMode(.v6)]),
        .target(name: "PeregrineCore", dependencies: ["PeregrineIO", "PeregrineSMTP", "COpenSSL"],
                swiftSettings: loopSettings),
        .executableTarget(name: "Peregrine", dependencies: ["PeregrineCore"], swiftSettings: loopSettings),

        .target(name: "PeregrineSink", dependencies: ["PeregrineIO", "PeregrineSMTP", "PeregrineCore"],
                path: "sink/Sources/PeregrineSink", swiftSettings: loopSettings),
        .executableTarget(name: "peregrine-sink", dependencies: ["PeregrineSink"],
                          path: "sink/Sources/peregrine-sink", swiftSettings: loopSettings),
        .executableTarget(name: "peregrine-loadgen", dependencies: ["PeregrineIO", "PeregrineSMTP", "PeregrineCore"],
                          path: "loadgen/Sources/peregrine-loadgen", swiftSettings: loopSettings),
        .executableTarget(name: "peregrine-bench", dependencies: ["PeregrineIO", "PeregrineSMTP", "PeregrineCore"],
                          path: "Benchmarks/Sources/peregrine-bench", swiftSettings: loopSettings),

        .testTarget(name: "PeregrineIOTests", dependencies: ["PeregrineIO"], swiftSettings: testSettings),
        .testTarget(name: "PeregrineSMTPTests", dependencies: ["PeregrineSMTP", "PeregrineIO"], swiftSettings: testSettings),
        // What several test targets need to drive external programs (one copy, not one per target).
        .target(name: "PeregrineTestSupport", path: "Tests/PeregrineTestSupport", swiftSettings: testSettings),
        .testTarget(name: "PeregrineCoreTests", dependencies: ["PeregrineCore", "PeregrineTestSupport"], swiftSettings: testSettings),
        .testTarget(name: "EndToEndTests", dependencies: ["PeregrineCore", "PeregrineSink", "PeregrineTestSupport"],
                    swiftSettings: testSettings),
    ]
)

// Fuzz targets (Tests/Fuzz, one folder each), built only by scripts/fuzz with
// PEREGRINE_FUZZ=1 and `--sanitize fuzzer`: libFuzzer supplies their `main`,
// so a normal build could not link them.
if Context.environment["PEREGRINE_FUZZ"] != nil {
    let fuzzTargets: [(name: String, dependencies: [Target.Dependency])] = [
        ("FuzzSMTPServer", ["PeregrineSMTP"]),
        ("FuzzSMTPClient", ["PeregrineSMTP"]),
        ("FuzzDNSMessage", ["PeregrineCore"]),
        ("FuzzHTTPRequest", ["PeregrineCore"]),
        ("FuzzConfig", ["PeregrineCore"]),
        ("FuzzSpoolRecords", ["PeregrineCore"]),
        ("FuzzAccountingCSV", ["PeregrineCore"]),
    ]
    for target in fuzzTargets {
        package.products.append(.executable(name: target.name, targets: [target.name]))
        package.targets.append(.executableTarget(name: target.name, dependencies: target.dependencies,
                                                 path: "Tests/Fuzz/\(target.name)", swiftSettings: loopSettings))
    }
}
