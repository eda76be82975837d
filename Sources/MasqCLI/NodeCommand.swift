import ArgumentParser
import Logging
import MasqAccounting
import MasqKernel
import MasqMesh
import CMasqSupport
#if canImport(Glibc)
    import Glibc
#endif

/// The kernel's accountant, as the mesh drives it.
extension Accountant: MeshAccountant {
    public func paidCreditors() -> [String] { book.payables.filter { (UInt128($0.value.paid) ?? 0) > 0 }.map(\.key) }
}

/// The Masq store a node keeps its accounts in: `<data dir>/store` (SQLite).
func nodeStore(_ dataDirectory: String, create: Bool) throws -> Store? {
    let directory = FileSystem.absolute(dataDirectory, base: FileSystem.currentDirectory()) + "/store"
    guard create || FileSystem.exists(directory) else { return nil }
    return try guarded { () throws(MasqError) in try Store(config: MasqConfig.defaults(dataDir: directory)) }
}

/// `masq node`: run a mesh node.
struct Node: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Run a mesh node: gossip with neighbours, relay onion circuits, optionally exit, and offer a SOCKS5 front.",
        discussion: """
            Prints its descriptor (masq://NETWORK:KEY@HOST:PORT); give it to other nodes as --seed. With --socks, \
            applications reach the network through 127.0.0.1:PORT (curl --socks5-hostname); routes have --hops \
            links (at least 3), the exit is never a neighbour of the origin, and the return route avoids the \
            forward route's relays when it can. The node writes state.json in --data-dir every gossip interval.
            """)

    @Option(help: "Network name ([a-z0-9-]); nodes of other networks are refused.") var network = "masq"
    @Option(help: "Address to listen on (and to advertise, signed).") var host = "127.0.0.1"
    @Option(help: "Port (0 picks one).") var port = 0
    @Option(help: ArgumentHelp("Directory for the node's keys and state.json.", valueName: "dir")) var dataDir = "."
    @Option(help: ArgumentHelp("A node to debut to (repeatable).", valueName: "descriptor")) var seed: [String] = []
    @Flag(help: "Let this node connect to targets for others.") var exit = false
    @Option(
        help: ArgumentHelp(
            "As an exit, connect to these addresses although they are loopback, private, link-local or the node's own (repeatable): ADDRESS[/BITS][:PORTS], [IPV6][/BITS][:PORTS]; PORTS is N, N-M or *.",
            valueName: "rule"))
    var exitAllow: [String] = []
    @Option(
        help: ArgumentHelp(
            "As an exit, never connect to these (repeatable; beats --exit-allow): ADDRESS[/BITS][:PORTS] or *:PORTS.",
            valueName: "rule"))
    var exitDeny: [String] = []
    @Option(help: ArgumentHelp("Offer a SOCKS5 proxy on this loopback address.", valueName: "host:port")) var socks:
        String?
    @Option(help: "Links per route (1...6; below 3 only with --allow-short-routes).") var hops = 3
    @Flag(help: "Allow routes of 1 or 2 hops (no anonymity: for tests and benchmarks).") var allowShortRoutes = false
    @Option(help: "Most neighbours.") var maxNeighbours = 5
    @Option(help: "Neighbours to look for.") var targetNeighbours = 3
    @Option(help: "Oldest dialed links kept as anchors: never shed at either end (at most the target and 3).")
    var anchorNeighbours = 2
    @Option(help: "A full node sheds one unprotected link, at random, every this many gossip rounds (0: never).")
    var shedRounds = 30
    @Option(help: "Client links (devices' mesh transports) served besides the neighbours.") var maxClients = 32
    @Option(help: "Cell payload bytes (the same on every node of a network).") var cellBytes = 4_096
    @Option(help: "Streams one route carries at once (1: a route per stream).") var streamsPerRoute =
        MeshConfiguration().streamsPerRoute
    @Option(help: "New streams reuse a route younger than this (ms); later ones get a fresh route.") var routeMaxAgeMs =
        MeshConfiguration().routeMaxAgeMilliseconds
    @Option(help: "A route without streams closes after this long (ms).") var routeIdleMs = MeshConfiguration()
        .routeIdleMilliseconds
    @Option(help: "Target connections an exit keeps open at once.") var maxExitStreams = MeshConfiguration()
        .maxExitStreams
    @Option(help: "MiB a relay lets wait toward one slow link before destroying the circuits that push into it.")
    var maxLinkQueueMib = MeshConfiguration().maxLinkQueueBytes >> 20
    @Option(
        help:
            "Cells a stream may have in flight each way before the other end acknowledges (memory per stream: window x cell size)."
    ) var window = MeshConfiguration().window
    @Option(help: "Milliseconds between gossip rounds.") var gossipMs: UInt64 = 1_000
    @Option(
        help:
            "Milliseconds before a record nobody repeats is dropped (default: 300 gossip rounds, at least 300000, at most a day)."
    )
    var recordTtlMs: UInt64?
    @Option(
        help:
            "Milliseconds a record is kept with no newer version of it (nodes sign one every 30 rounds, or 8 within this age), however often others repeat it (default: an hour, at least twice the TTL)."
    ) var recordMaxAgeMs: UInt64?
    @Option(help: "Bytes of records one gossip frame carries at most (2048 to the default, the largest).")
    var gossipFrameBytes = MeshConfiguration().gossipFrameBytes
    @Option(
        help:
            "Records of other nodes held at once; when full, records of new keys heard in gossip are refused (neighbours' records always kept)."
    )
    var maxRecords = MeshConfiguration().maxRecords
    @Option(
        help:
            "Gossip records one peer may have verified per second (burst: twice that); the rest are dropped unverified."
    )
    var gossipRecordsPerSecond = MeshConfiguration().gossipRecordsPerSecond
    @Option(
        help:
            "Gossip records verified per turn of the event loop, over all links; the rest are dropped (and sent again next round)."
    )
    var gossipVerificationsPerTurn = MeshConfiguration().gossipVerificationsPerTurn
    @Option(
        help: "Inbound handshakes in progress at once; when full, the oldest is closed to make room for a newcomer.")
    var maxPendingHandshakes = MeshConfiguration().maxPendingLinks
    @Option(
        help:
            "Inbound handshakes in progress from one IPv4 address or IPv6 /64; past it, newcomers from there are refused."
    )
    var maxPendingHandshakesPerPrefix = MeshConfiguration().maxPendingLinksPerPrefix
    @Option(help: "Milliseconds a link's handshake may take from its connection.") var handshakeTimeoutMs =
        MeshConfiguration().handshakeTimeoutMilliseconds
    @Option(
        help:
            "Milliseconds an onion may be old (or ahead) when it reaches this node; its handshake key is remembered that long, so a replayed set-up is refused."
    )
    var replayWindowMs = MeshConfiguration().replayWindowMilliseconds
    @Option(help: "At most one neighbour per IPv4 block of this many bits (0: no limit).") var neighbourPrefixV4 =
        MeshConfiguration().neighbourPrefixV4
    @Option(help: "At most one neighbour per IPv6 block of this many bits (0: no limit).") var neighbourPrefixV6 =
        MeshConfiguration().neighbourPrefixV6
    @Option(
        help: "As a relay, never join two hops in one IPv4 block of this many bits (0: off, for tests on loopback).")
    var hopPrefixV4 = MeshConfiguration().hopPrefixV4
    @Option(help: "As a relay, never join two hops in one IPv6 block of this many bits (0: off).") var hopPrefixV6 =
        MeshConfiguration().hopPrefixV6
    @Option(
        help: ArgumentHelp(
            "Another node of this operator, by its key (repeatable): published, so that routes never take two of them.",
            valueName: "key"))
    var family: [String] = []
    @Option(help: "Routes use only relays charging at most this (wei per cell; default ten times MASQ's rates).")
    var maxRoutingCharge: String?
    @Option(help: "Routes use only exits charging at most this (wei per cell; default ten times MASQ's rates).")
    var maxExitCharge: String?
    @Option(help: "Circuits one link carries at most; CREATEs past it are refused.") var maxCircuitsPerLink =
        MeshConfiguration().maxCircuitsPerLink
    @Option(help: "Handshake keys the replay cache holds at most (past it, older onions are refused).")
    var replayCache = MeshConfiguration().replayCacheEntries
    @Option(help: "Milliseconds of silence before a neighbour is dropped.") var linkTimeoutMs: UInt64 = 5_000
    @Option(help: "Milliseconds a route may take to open.") var setupTimeoutMs: UInt64 = 10_000
    @Option(help: "Seconds a misbehaving node stays banned.") var banSeconds: UInt64 = 600
    @Option(
        help: ArgumentHelp(
            "The wallet that pays for this node's traffic, as JSON ({\"plugin\": \"ledger\", \"options\": {...}}).",
            valueName: "json"))
    var consumingWallet: String?
    @Option(help: ArgumentHelp("The wallet that is paid for routing and exits, as JSON.", valueName: "json"))
    var earningWallet: String?
    @Option(help: "Debt (wei) paid at once when mature.") var debtThreshold = "1000000000000000000"
    @Option(help: "Seconds before a debt is due.") var maturitySeconds: UInt64 = 1_200
    @Option(help: "Debt (wei) tolerated for ever.") var permanentAllowance = "500000000000000000"
    @Option(help: "Seconds over which the tolerated debt falls to the permanent allowance.")
    var thresholdIntervalSeconds: UInt64 = 21_600
    @Option(help: "Seconds past the curve before a debtor is banned.") var graceSeconds: UInt64 = 1_200
    @Option(help: "Debt (wei) below which a banned consumer is unbanned.") var unbanBelow = "500000000000000000"
    @Option(help: "Seconds between accounting scans.") var scanSeconds: UInt64 = 300
    @Option(help: "Log level (error, warning, info, debug).") var logLevel = "info"

    func execute() throws {
        // A node's link messages and socket reads (64-256 KiB) come and go
        // thousands of times a second: glibc would hand the freed memory back
        // to the kernel and fault it in again (a sixth of the node's time in
        // bench/mesh). Keep it for reuse.
        masqsupport_keep_freed_memory()
        try bootstrapServerLogging(logLevel)
        var config = MeshConfiguration()
        config.network = network
        config.host = host
        config.port = port
        config.dataDirectory = dataDir
        config.seeds = try seed.map { text in
            guard let d = NodeDescriptor(text) else {
                throw CLIError("not a node descriptor: \(text) (masq://NETWORK:KEY@HOST:PORT)", code: 64)
            }
            return d
        }
        config.exit = exit
        for (option, texts) in [("--exit-allow", exitAllow), ("--exit-deny", exitDeny)] {
            for text in texts {
                guard let rule = ExitPolicy.Rule(text) else {
                    throw CLIError(
                        "\(option): not a rule: \(text) (ADDRESS[/BITS][:PORTS], [IPV6][/BITS][:PORTS], *:PORTS)",
                        code: 64)
                }
                if option == "--exit-allow" {
                    guard rule.network != nil else {
                        throw CLIError(
                            "--exit-allow needs an address block (\"*\" would open the exit's own network)", code: 64)
                    }
                    config.exitPolicy.allow.append(rule)
                } else {
                    config.exitPolicy.deny.append(rule)
                }
            }
        }
        config.socks = socks
        config.hops = hops
        config.allowShortRoutes = allowShortRoutes
        config.maxNeighbours = maxNeighbours
        config.targetNeighbours = min(targetNeighbours, maxNeighbours)
        config.anchorNeighbours = min(anchorNeighbours, config.targetNeighbours)
        config.shedRounds = shedRounds
        guard (0...10_000).contains(maxClients) else { throw CLIError("--max-clients must be 0...10000", code: 64) }
        config.maxClients = maxClients
        config.cellBytes = cellBytes
        config.window = window
        config.streamsPerRoute = streamsPerRoute
        config.routeMaxAgeMilliseconds = routeMaxAgeMs
        config.routeIdleMilliseconds = routeIdleMs
        config.maxExitStreams = maxExitStreams
        guard (1...65_536).contains(maxLinkQueueMib) else {
            throw CLIError("--max-link-queue-mib must be 1...65536", code: 64)
        }
        config.maxLinkQueueBytes = maxLinkQueueMib << 20
        config.gossipMilliseconds = max(50, gossipMs)
        // Defaults follow the gossip interval (values out of range are refused by the node, with the limits).
        config.setRecordLifetimes(ttl: recordTtlMs, maxAge: recordMaxAgeMs)
        config.maxRecords = maxRecords
        config.gossipFrameBytes = gossipFrameBytes
        config.gossipRecordsPerSecond = gossipRecordsPerSecond
        config.gossipVerificationsPerTurn = gossipVerificationsPerTurn
        config.maxPendingLinks = maxPendingHandshakes
        config.maxPendingLinksPerPrefix = maxPendingHandshakesPerPrefix
        config.handshakeTimeoutMilliseconds = handshakeTimeoutMs
        config.linkTimeoutMilliseconds = linkTimeoutMs
        config.setupTimeoutMilliseconds = setupTimeoutMs
        config.banSeconds = banSeconds
        config.replayWindowMilliseconds = replayWindowMs
        config.replayCacheEntries = replayCache
        config.maxCircuitsPerLink = maxCircuitsPerLink
        config.neighbourPrefixV4 = neighbourPrefixV4
        config.neighbourPrefixV6 = neighbourPrefixV6
        config.hopPrefixV4 = hopPrefixV4
        config.hopPrefixV6 = hopPrefixV6
        config.family = try family.map { text in
            guard let k = NodeKey(text: text) else { throw CLIError("--family: not a node key: \(text)", code: 64) }
            return k
        }
        for (option, text) in [("--max-routing-charge", maxRoutingCharge), ("--max-exit-charge", maxExitCharge)] {
            guard let text else { continue }
            guard let amount = UInt128(text) else { throw CLIError("\(option): a decimal amount of wei", code: 64) }
            if option == "--max-routing-charge" {
                config.maxRoutingCharge = amount
            } else {
                config.maxExitCharge = amount
            }
        }
        guard (0...65_535).contains(port) else { throw CLIError("the port must be 0...65535", code: 64) }
        mkdir(dataDir, 0o700)
        if let consumingWallet {
            config.consumingWallet = try PluginWallet(
                openWallet(consumingWallet, option: "--consuming-wallet", dataDirectory: dataDir))
        }
        if let earningWallet {
            config.earningWallet = try PluginWallet(
                openWallet(earningWallet, option: "--earning-wallet", dataDirectory: dataDir))
        }
        guard let debt = UInt128(debtThreshold), let allowance = UInt128(permanentAllowance),
            let unban = UInt128(unbanBelow)
        else {
            throw CLIError("amounts must be decimal integers", code: 64)
        }
        var thresholds = PaymentThresholds()
        thresholds.debtThreshold = debt
        thresholds.maturitySeconds = maturitySeconds
        thresholds.permanentAllowance = allowance
        thresholds.thresholdIntervalSeconds = max(1, thresholdIntervalSeconds)
        thresholds.graceSeconds = graceSeconds
        thresholds.unbanBelow = unban
        thresholds.scanSeconds = max(1, scanSeconds)
        if config.consumingWallet != nil || config.earningWallet != nil,
            let store = try nodeStore(dataDir, create: true)
        {
            // The accountant lives in the core; its book in the node's store.
            config.accountant = try guarded { () throws(MasqError) in
                try Accountant(store: store, thresholds: thresholds)
            }
        }
        let identity: NodeIdentity
        do { identity = try NodeIdentity.loadOrCreate(dataDir + "/node.key") } catch { throw CLIError("\(error)") }
        let node: MeshNode
        do { node = try MeshNode(configuration: config, identity: identity) } catch {
            throw CLIError("\(error)", code: 64)
        }
        do { try node.start() } catch { throw CLIError("cannot start the node: \(error)") }
        print("node \(node.descriptor)")
        if socks != nil { print("socks5 127.0.0.1:\(node.socksPort)") }
        fflush(nil)
        try node.wait()
    }
}
