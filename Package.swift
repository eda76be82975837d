// swift-tools-version:6.0
// Masq: a small Swift kernel exported as a C library (libmasq.so), with
// storage, transport and wallet plugins loaded by dlopen.
import PackageDescription

let root = Context.packageDirectory

/// `MASQ_FUZZ=1 swift build --scratch-path .build-fuzz --product masq-fuzz`
/// (Tests/fuzz/run.sh): our decoder modules get libFuzzer's coverage
/// instrumentation and AddressSanitizer (the dependencies do not), and
/// masq-fuzz becomes a libFuzzer binary. Without it masq-fuzz replays corpus
/// files through the same targets (a regression check).
let fuzzing = Context.environment["MASQ_FUZZ"] != nil
let fuzzed: [SwiftSetting] = fuzzing ? [.unsafeFlags(["-sanitize=fuzzer,address"])] : []

/// Link flags that restrict a shared object's exports to a version script.
func exportsOnly(_ map: String) -> [LinkerSetting] {
    [.unsafeFlags(["-Xlinker", "--version-script=\(root)/\(map)"])]
}

let package = Package(
    name: "masq",
    platforms: [.macOS(.v15)],
    products: [
        // The embedding API of include/masq.h: libmasq.so.
        .library(name: "masq", type: .dynamic, targets: ["MasqLibrary"]),
        // The command-line tool, installed as `masq`.
        .executable(name: "masq-cli", targets: ["MasqCLI"]),
        // The local store daemon.
        .executable(name: "masqd", targets: ["MasqDaemonMain"]),
        // First-party Swift plugins: libmasq_<kind>_<name>.so.
        .library(name: "masq_storage_sqlite", type: .dynamic, targets: ["MasqStorageSQLite"]),
        .library(name: "masq_transport_relay", type: .dynamic, targets: ["MasqTransportRelay"]),
        .library(name: "masq_transport_localws", type: .dynamic, targets: ["MasqTransportLocalWS"]),
        .library(name: "masq_transport_connectoid", type: .dynamic, targets: ["MasqTransportConnectoid"]),
        .library(name: "masq_transport_mesh", type: .dynamic, targets: ["MasqTransportMesh"]),
        .library(name: "masq_wallet_ledger", type: .dynamic, targets: ["MasqWalletLedger"]),
        .library(name: "masq_wallet_evm", type: .dynamic, targets: ["MasqWalletEVM"]),
        // Every decoder that reads what a peer, a relay, a service or an app sends (Tests/fuzz).
        .executable(name: "masq-fuzz", targets: ["MasqFuzz"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2")
    ],
    targets: [
        // C headers as Swift modules.
        .systemLibrary(name: "CMasq", path: "Sources/CMasq"),
        .systemLibrary(name: "CMasqPlugin", path: "Sources/CMasqPlugin"),
        .systemLibrary(
            name: "CSQLite", path: "Sources/CSQLite", pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(
            name: "CQREncode", path: "Sources/CQREncode", pkgConfig: "libqrencode",
            providers: [.apt(["libqrencode-dev"])]),
        // zlib's CRC-32 checks every stored record (Store: silent corruption becomes an error).
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "CMasqSupport", path: "Sources/CMasqSupport"),
        // Who owns the client end of a loopback TCP connection (Linux sock_diag).
        .target(name: "CMasqSockDiag", path: "Sources/CMasqSockDiag"),
        // OpenSSL 3 (libcrypto) behind flat C functions; every primitive is OpenSSL's.
        .target(name: "CMasqCrypto", path: "Sources/CMasqCrypto", linkerSettings: [.linkedLibrary("crypto")]),
        // Base64url, with no dependencies (plugins use it too).
        .target(name: "MasqEncoding", swiftSettings: fuzzed),
        // Primitives, Noise handshakes, the Double Ratchet: the kernel's crypto.
        .target(name: "MasqCrypto", dependencies: ["CMasqCrypto", "MasqEncoding"], swiftSettings: fuzzed),

        // Connectoid: the service's JSON and error codes (no crypto: the transport plugin uses it),
        .target(name: "MasqConnectoidWire", dependencies: ["MasqEncoding"], swiftSettings: fuzzed),
        // links and sealed boxes (P-384),
        .target(
            name: "MasqConnectoidProtocol", dependencies: ["MasqConnectoidWire", "MasqCrypto"], swiftSettings: fuzzed),
        // and the store-and-forward service (SwiftNIO HTTP, SQLite).
        .target(
            name: "MasqConnectoid",
            dependencies: [
                "MasqConnectoidProtocol", "MasqCrypto", "CSQLite",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus")
            ]),

        // The Connectoid mailbox store on PostgreSQL: several services behind a load balancer share mailboxes.
        .target(
            name: "MasqConnectoidPostgres",
            dependencies: [
                "MasqConnectoid", "MasqConnectoidWire",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log")
            ]),

        // The core: config, plugin loader, store semantics, the C API.
        .target(
            name: "MasqKernel",
            dependencies: ["CMasq", "CMasqSupport", "CMasqCrypto", "MasqCrypto", "CQREncode", "CZlib"],
            swiftSettings: fuzzed),
        // Feature modules on the kernel's Store (its `package` interface: a transaction,
        // secret entries, write policies). Sharing a namespace with another person
        // through Connectoid mailboxes, with its part of the C API (masq_share_*):
        .target(
            name: "MasqSharing",
            dependencies: ["MasqKernel", "CMasq", "CMasqSupport", "MasqCrypto", "MasqConnectoidProtocol"],
            swiftSettings: fuzzed),
        // and the mesh's accounting (payables, receivables, payment thresholds in wei).
        .target(name: "MasqAccounting", dependencies: ["MasqKernel"]),
        // Links the kernel and its C API's feature modules into libmasq.so exporting only masq_*.
        .target(
            name: "MasqLibrary", dependencies: ["MasqKernel", "MasqSharing"], exclude: ["exports.map"],
            linkerSettings: exportsOnly("Sources/MasqLibrary/exports.map")),

        // The relay's wire format, shared by the relay server and the relay transport plugin.
        .target(name: "MasqRelayProtocol", swiftSettings: fuzzed),
        // Bounded, time-limited table of connections still in their handshake (relay, localws).
        .target(
            name: "MasqHandshakeGate",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio")
            ]),
        // The relay server: WebSocket rooms forwarding ciphertext (SwiftNIO).
        .target(
            name: "MasqRelay",
            dependencies: [
                "MasqRelayProtocol", "MasqHandshakeGate",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus")
            ]),

        // The mesh: nodes, gossip, onion circuits, exits and the SOCKS5 front.
        .target(
            name: "MasqMesh",
            dependencies: [
                "MasqCrypto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log")
            ], swiftSettings: fuzzed),

        // The local store daemon: profiles, app consent, the app protocol and the manager's API.
        .target(
            name: "MasqDaemon", dependencies: ["MasqKernel", "MasqSharing", "MasqCrypto"], exclude: ["www"],
            swiftSettings: fuzzed),
        .executableTarget(
            name: "MasqDaemonMain",
            dependencies: [
                "MasqDaemon", "MasqKernel", "CMasqSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser")
            ], path: "Sources/masqd"),

        .executableTarget(
            name: "MasqCLI",
            dependencies: [
                "MasqKernel",
                "MasqSharing",
                "MasqAccounting",
                "MasqRelay",
                "MasqConnectoid",
                "MasqConnectoidPostgres",
                "MasqMesh",
                "CMasqSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log")
            ]),

        // Plugins live in plugins/<name>/ and see nothing of Masq but masq_plugin.h.
        // Page checksums for SQLite (a VFS shim): a flipped byte fails a read instead of answering wrong.
        .target(name: "CMasqSQLiteChecksum", linkerSettings: [.linkedLibrary("sqlite3")]),
        .target(
            name: "MasqStorageSQLite",
            dependencies: ["CMasqPlugin", "MasqPluginSupport", "CSQLite", "CMasqSQLiteChecksum"],
            path: "plugins/storage-sqlite",
            exclude: ["README.md"],
            linkerSettings: exportsOnly("plugins/plugin-exports.map")),

        // Descriptor, options and sinks as every Swift plugin writes them (masq_plugin.h only).
        .target(
            name: "MasqPluginSupport", dependencies: ["CMasqPlugin", .product(name: "Logging", package: "swift-log")]),

        // The relay client (WebSocket, reconnect, queue, optional SOCKS5) behind the relay and mesh plugins.
        .target(
            name: "MasqRelayClient",
            dependencies: [
                "CMasqPlugin", "MasqRelayProtocol", "MasqEncoding", "MasqPluginSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl")
            ]),

        .target(
            name: "MasqTransportRelay", dependencies: ["CMasqPlugin", "MasqPluginSupport", "MasqRelayClient"],
            path: "plugins/transport-relay",
            linkerSettings: exportsOnly("plugins/plugin-exports.map")),

        // The mesh transport: a mesh node inside the plugin; the relay reached through onion routes.
        .target(
            name: "MasqTransportMesh",
            dependencies: ["CMasqPlugin", "MasqPluginSupport", "MasqRelayClient", "MasqMesh"],
            path: "plugins/transport-mesh",
            linkerSettings: exportsOnly("plugins/plugin-exports.map")),

        .target(
            name: "MasqTransportLocalWS",
            dependencies: [
                "CMasqPlugin", "CMasqSockDiag", "MasqHandshakeGate", "MasqPluginSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio")
            ],
            path: "plugins/transport-localws",
            linkerSettings: exportsOnly("plugins/plugin-exports.map")),

        // One-request-per-connection HTTP(S) POST for plugins (mailboxes, JSON-RPC).
        .target(
            name: "MasqHTTPClient",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl")
            ]),

        .target(
            name: "MasqTransportConnectoid",
            dependencies: [
                "CMasqPlugin", "MasqPluginSupport", "MasqConnectoidWire", "MasqHTTPClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl")
            ],
            path: "plugins/transport-connectoid",
            linkerSettings: exportsOnly("plugins/plugin-exports.map")),

        .target(
            name: "MasqWalletLedger", dependencies: ["CMasqPlugin", "MasqPluginSupport", "CSQLite", "MasqCrypto"],
            path: "plugins/wallet-ledger",
            linkerSettings: exportsOnly("plugins/plugin-exports.map")),

        .target(
            name: "MasqWalletEVM",
            dependencies: [
                "CMasqPlugin", "MasqPluginSupport", "MasqCrypto", "MasqHTTPClient",
                .product(name: "NIOPosix", package: "swift-nio")
            ],
            path: "plugins/wallet-evm",
            linkerSettings: exportsOnly("plugins/plugin-exports.map")),

        // The fuzz targets (Tests/fuzz): a libFuzzer binary under MASQ_FUZZ, a corpus replayer otherwise.
        .executableTarget(
            name: "MasqFuzz",
            dependencies: [
                "MasqKernel", "MasqSharing", "MasqDaemon", "MasqMesh", "MasqCrypto", "MasqConnectoidProtocol",
                "MasqConnectoidWire", "MasqRelayProtocol"
            ],
            path: "Tests/fuzz/MasqFuzz",
            swiftSettings: fuzzing ? [.define("FUZZING"), .unsafeFlags(["-sanitize=fuzzer,address"])] : [],
            linkerSettings: fuzzing ? [.unsafeFlags(["-sanitize=fuzzer,address", "-use-ld=lld"])] : []),

        .testTarget(name: "MasqMeshTests", dependencies: ["MasqMesh"]),
        .testTarget(name: "MasqConnectoidTests", dependencies: ["MasqConnectoid", "MasqConnectoidProtocol"]),
        .testTarget(
            name: "MasqKernelTests",
            dependencies: [
                "MasqKernel", "MasqAccounting", "CMasq", "CMasqPlugin", "MasqPluginSupport",
                .product(name: "Logging", package: "swift-log")
            ]),
        .testTarget(
            name: "MasqSharingTests",
            dependencies: ["MasqSharing", "MasqKernel", "MasqCrypto", "MasqConnectoidProtocol"]),
        .testTarget(name: "MasqCryptoTests", dependencies: ["MasqCrypto"])
    ]
)
