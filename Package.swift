// swift-tools-version:6.0
// Peregrine: a high-volume mail transfer agent. No Swift package dependencies:
// the toolchain (Foundation, Dispatch, Glibc, Synchronization, Swift Testing)
// plus Debian's liburing and OpenSSL through system library targets.
import PackageDescription

// Language modes: Swift 6 (`strictSettings`) wherever the checker accepts the
// module as it is: SMTP, Config, DNS, HTTP, Transport, Engine. Swift 5
// (`loopSettings`) stays, because the Swift 6 checker rejects, for:
// - PeregrineIO, PeregrineAccounting (its writer), PeregrineDaemon, the sink,
//   loadgen and bench: they capture a generic `EventLoop` and loop-bound state in
//   the `@Sendable` closures that hand work to a loop thread (`execute`). The
//   EventLoop contract (one driving thread, hand-off through `execute`) makes
//   that safe; the checker cannot see it, the conformance suite proves it.
// - PeregrineTLS: the session cache returns `SSL_SESSION` pointers (non-Sendable
//   `OpaquePointer`) out of its `Mutex`.
// - PeregrineSpool and the executables: they write diagnostics to C's global
//   `stderr`/`stdout`, which the checker treats as shared mutable state.
// - Test targets: not tried in Swift 6 yet (they share fixtures with loop threads).
// Release builds optimise across modules: the engine, daemon and transport are
// generic over the loop and call each other on every message; without this the
// split into modules left those calls un-inlined (relay CPU per message rose).
// Release builds also drop the run-time exclusivity checks: the engine and
// daemon mutate Transport's and Spool's per-connection buffers on every event,
// and a check (swift_beginAccess/endAccess, a TLS lookup each) that one
// module's whole-module optimisation used to prove away costs about 3 % of the
// relay's CPU across modules (results/structure-relay-side-by-side-*.md).
// Compile-time checks stay, and debug builds (every test) keep the run-time ones.
let crossModule: [SwiftSetting] = [.unsafeFlags(["-cross-module-optimization", "-enforce-exclusivity=unchecked"],
                                                .when(configuration: .release))]
let loopSettings: [SwiftSetting] = [.swiftLanguageMode(.v5)] + crossModule
let strictSettings: [SwiftSetting] = [.swiftLanguageMode(.v6)] + crossModule
let testSettings: [SwiftSetting] = [.swiftLanguageMode(.v5)]

// Module order (imports point down this list only; siblings never import each other):
//   PeregrineIO
//   PeregrineSMTP, PeregrineTLS, PeregrineDNS, PeregrineConfig, PeregrineHTTP, PeregrineRedis
//   PeregrineTransport, PeregrineSpool, PeregrineAccounting
//   PeregrineEngine
//   PeregrineDaemon
//   executables (the sink, loadgen and bench never link the engine or daemon)
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
    ],
    targets: [
        .systemLibrary(name: "CURing", path: "Sources/CURing", pkgConfig: "liburing",
                       providers: [.apt(["liburing-dev"])]),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        // epoll, eventfd, accept4: Linux APIs the Glibc module does not map.
        .systemLibrary(name: "CLinux", path: "Sources/CLinux"),
        // DKIM's relaxed body scan, sixteen bytes per step with SSE2 (a static inline function: no library).
        .systemLibrary(name: "CDKIMScan", path: "Sources/CDKIMScan"),
        // CRC32C with SSE4.2's crc32 instruction (a static inline function, checked against the CPU at run time).
        .systemLibrary(name: "CCRC32C", path: "Sources/CCRC32C"),

        // Loops, sockets, files, ByteBuffer, locks, clocks.
        .target(name: "PeregrineIO", dependencies: ["CURing", "CLinux"], swiftSettings: loopSettings),

        // Protocols and formats, each over IO only.
        .target(name: "PeregrineSMTP", dependencies: ["PeregrineIO"], swiftSettings: strictSettings),
        .target(name: "PeregrineTLS", dependencies: ["PeregrineIO", "COpenSSL"], swiftSettings: loopSettings),
        .target(name: "PeregrineConfig", dependencies: ["PeregrineIO"], swiftSettings: strictSettings),
        .target(name: "PeregrineDNS", dependencies: ["PeregrineIO"], swiftSettings: strictSettings),
        .target(name: "PeregrineHTTP", dependencies: ["PeregrineIO"], swiftSettings: strictSettings),
        // The Redis wire codec and a pipelined connection: the cluster's shared state (issue #21).
        .target(name: "PeregrineRedis", dependencies: ["PeregrineIO"], swiftSettings: loopSettings),
        // DKIM signing and verification over bytes (the daemon signs, the sink verifies).
        .target(name: "PeregrineDKIM", dependencies: ["PeregrineIO", "COpenSSL", "CDKIMScan"], swiftSettings: loopSettings),

        // SMTP over a loop; the spool; the accounting file format and writer.
        .target(name: "PeregrineTransport", dependencies: ["PeregrineIO", "PeregrineSMTP", "PeregrineTLS"],
                swiftSettings: strictSettings),
        .target(name: "PeregrineSpool", dependencies: ["PeregrineIO", "CCRC32C"], swiftSettings: loopSettings),
        .target(name: "PeregrineAccounting", dependencies: ["PeregrineIO", "PeregrineSMTP"], swiftSettings: loopSettings),

        .target(name: "PeregrineEngine",
                dependencies: ["PeregrineIO", "PeregrineSMTP", "PeregrineTLS", "PeregrineConfig",
                               "PeregrineTransport", "PeregrineSpool", "PeregrineAccounting"],
                swiftSettings: strictSettings),
        .target(name: "PeregrineDaemon",
                dependencies: ["PeregrineIO", "PeregrineSMTP", "PeregrineTLS", "PeregrineDNS", "PeregrineConfig",
                               "PeregrineHTTP", "PeregrineTransport", "PeregrineSpool", "PeregrineAccounting",
                               "PeregrineEngine", "PeregrineDKIM", "PeregrineRedis"],
                swiftSettings: loopSettings),

        .executableTarget(name: "Peregrine",
                          dependencies: ["PeregrineIO", "PeregrineConfig", "PeregrineSpool", "PeregrineDaemon"],
                          swiftSettings: loopSettings, plugins: ["PeregrineBuildInfo"]),
        // `peregrine --version`: the git commit, generated before each build (no dependency: PackagePlugin is the toolchain's).
        .plugin(name: "PeregrineBuildInfo", capability: .buildTool()),

        .target(name: "PeregrineSink",
                dependencies: ["PeregrineIO", "PeregrineSMTP", "PeregrineTLS", "PeregrineDNS", "PeregrineConfig",
                               "PeregrineHTTP", "PeregrineTransport", "PeregrineDKIM"],
                path: "sink/Sources/PeregrineSink", swiftSettings: loopSettings),
        .executableTarget(name: "peregrine-sink", dependencies: ["PeregrineSink"],
                          path: "sink/Sources/peregrine-sink", swiftSettings: loopSettings),
        .executableTarget(name: "peregrine-loadgen",
                          dependencies: ["PeregrineIO", "PeregrineSMTP", "PeregrineTLS", "PeregrineTransport"],
                          path: "loadgen/Sources/peregrine-loadgen", swiftSettings: loopSettings),
        // The bench measures the spool itself (spool scenarios) and reads accounting files
        // back for reconciliation; it never links the engine or the daemon.
        .executableTarget(name: "peregrine-bench",
                          dependencies: ["PeregrineIO", "PeregrineSMTP", "PeregrineSpool", "PeregrineAccounting", "PeregrineDKIM"],
                          path: "Benchmarks/Sources/peregrine-bench", swiftSettings: loopSettings),

        .testTarget(name: "PeregrineIOTests", dependencies: ["PeregrineIO", "PeregrineTestSupport"], swiftSettings: testSettings),
        .testTarget(name: "PeregrineSMTPTests", dependencies: ["PeregrineSMTP", "PeregrineIO"], swiftSettings: testSettings),
        // What several test targets need to drive external programs (one copy, not one per target).
        .target(name: "PeregrineTestSupport", path: "Tests/PeregrineTestSupport", swiftSettings: testSettings),
        // The library modules' unit and loopback tests (one target: their fixtures are shared).
        .testTarget(name: "PeregrineCoreTests",
                    dependencies: ["PeregrineIO", "PeregrineSMTP", "PeregrineTLS", "PeregrineDNS", "PeregrineConfig",
                                   "PeregrineHTTP", "PeregrineTransport", "PeregrineSpool", "PeregrineAccounting",
                                   "PeregrineEngine", "PeregrineDaemon", "PeregrineDKIM", "PeregrineRedis",
                                   "PeregrineTestSupport"],
                    swiftSettings: testSettings),
        .testTarget(name: "EndToEndTests",
                    dependencies: ["PeregrineIO", "PeregrineSMTP", "PeregrineTLS", "PeregrineDNS", "PeregrineConfig",
                                   "PeregrineHTTP", "PeregrineTransport", "PeregrineSpool", "PeregrineAccounting",
                                   "PeregrineEngine", "PeregrineDaemon", "PeregrineSink", "PeregrineDKIM", "PeregrineTestSupport"],
                    swiftSettings: testSettings),
    ]
)

// The fuzz targets (Tests/Fuzz/PeregrineFuzz, one binary; PEREGRINE_FUZZ_TARGET
// picks the target), built only by scripts/fuzz with PEREGRINE_FUZZ=1 and
// `--sanitize fuzzer`: libFuzzer supplies their `main`, so a normal build
// could not link them.
if Context.environment["PEREGRINE_FUZZ"] != nil {
    package.products.append(.executable(name: "peregrine-fuzz", targets: ["PeregrineFuzz"]))
    package.targets.append(.executableTarget(
        name: "PeregrineFuzz",
        dependencies: ["PeregrineIO", "PeregrineSMTP", "PeregrineDNS", "PeregrineHTTP", "PeregrineConfig",
                       "PeregrineSpool", "PeregrineAccounting", "PeregrineDaemon", "PeregrineRedis"],
        path: "Tests/Fuzz/PeregrineFuzz", swiftSettings: loopSettings))
}
