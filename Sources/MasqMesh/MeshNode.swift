import FoundationEssentials
import Logging
import MasqCrypto
import NIOCore
import NIOPosix
import Dispatch
#if canImport(Glibc)
    import Glibc
#endif

/// A mesh node's settings. All limits explicit.
public struct MeshConfiguration: Sendable {
    public var network = "masq"
    public var host = "127.0.0.1"
    public var port = 0
    public var seeds: [NodeDescriptor] = []
    public var maxNeighbours = 5
    /// Client links (devices' transports) a node serves besides its neighbours.
    public var maxClients = 32
    /// Inbound connections still in their handshake, in all and from one
    /// address prefix (an IPv4 address, an IPv6 /64: whoever holds one /64
    /// holds all of its addresses): a flood of TCP connections costs bounded
    /// memory and DH work. Past the prefix's share a newcomer is refused
    /// (`pendingRefused`); when the whole table is full, the oldest handshake
    /// in it is closed to make room (`pendingEvicted`), so a few prefixes
    /// that fill the table and stall cannot lock newcomers out (see
    /// `linkOpened`).
    public var maxPendingLinks = 64
    public var maxPendingLinksPerPrefix = 8
    /// A handshake not complete this long after its connection opened is closed.
    public var handshakeTimeoutMilliseconds: UInt64 = 5_000
    /// Records of other nodes held at once, besides the linked neighbours'
    /// (always kept). Full, the node refuses records of keys it does not hold
    /// (`recordsRefused`); see `admitNewKey` for why.
    public var maxRecords = 4_096
    /// Gossip work one peer may cause per second, counted in record
    /// verifications (decoding and checking a record new to the node: JSON
    /// and Ed25519, the expensive part); reading a record in a frame costs
    /// `MeshNode.readCost` of one. A token bucket holding two seconds' worth.
    /// Records past a peer's credit are dropped unverified
    /// (`gossipOverBudget`), whole frames unread once it is spent
    /// (`gossipFramesDropped`). An honest neighbour sends one frame a round
    /// (at most 256 records, most of them repeats): a few dozen a second.
    public var gossipRecordsPerSecond = 256
    /// The same work per turn of the event loop, over all links: past it the
    /// rest is dropped (`gossipOverTurnLimit`, `gossipFramesDropped`; senders
    /// repeat their records next round), so a turn spends at most this many
    /// verifications' time on gossip and links' pings and cells wait no longer.
    public var gossipVerificationsPerTurn = 64
    /// Bytes of records a gossip frame carries at most (a record is about
    /// 750 to 900 bytes: some 80 fit in the default, the most one link
    /// message holds). Smaller frames are for tests that put a few dozen
    /// nodes in the regime of thousands.
    public var gossipFrameBytes = Link.maxFrame - 64
    /// Neighbours a node looks for (it accepts up to maxNeighbours).
    public var targetNeighbours = 3
    /// A node's oldest links (those it dialed first) that are its
    /// **anchors**, named in its record: it never sheds them, and its
    /// neighbours honour the claim (see `MeshNode.protectedLinks`).
    /// 1...min(targetNeighbours, `MeshNode.maxAnchorClaims`).
    public var anchorNeighbours = 2
    /// A node with `maxNeighbours` node links **sheds** one every this many
    /// gossip rounds (0: never), on its own clock, never on a message: one of
    /// its unprotected links, at random. So a growing network keeps room for
    /// newcomers (see docs/MESH.md, "Anchors and shedding").
    public var shedRounds = 30
    /// Links per route; below 3 only with allowShortRoutes (no anonymity).
    public var hops = 3
    public var allowShortRoutes = false
    /// Every cell on every link has this payload size (padding hides sizes).
    public var cellBytes = 4_096
    public var gossipMilliseconds: UInt64 = 1_000
    /// A record nobody has repeated for this long is dropped (its node and
    /// every node that held it are gone, or out of reach). Longer than the
    /// gossip rotation takes to go round a full table (see `buildGossip`).
    public var recordTTLMilliseconds: UInt64 = 300_000
    /// A record whose version is this old here (no newer one verified since
    /// this node first took it) is dropped however often others repeat it:
    /// every node signs a new version every `recordRefreshRounds`, and one of
    /// them in this long is enough to stay (one of 120 at the defaults: a
    /// busy node that drops most updates keeps live records), while records
    /// of nodes gone (or keys flooded once) expire instead of living forever.
    public var recordMaxAgeMilliseconds: UInt64 = 3_600_000
    /// How long the gossip rotation may take to go round a full table
    /// (`maxRecords` records of about 900 bytes in half of each frame): a
    /// TTL shorter than this can drop live records that only the rotation
    /// repeats (the node warns at start).
    public var fullRotationMilliseconds: UInt64 {
        let perFrame = max(1, gossipFrameBytes / 2 / 900)
        return UInt64((maxRecords + perFrame - 1) / perFrame) * gossipMilliseconds
    }

    /// Gossip rounds between the new versions a node signs of its own record
    /// (besides those its neighbours' changes make): 30, or fewer so that 8
    /// fall within the maximum age (every round when it is under 8 rounds).
    /// Each is news every node verifies:
    /// with N nodes, N / 30 a round, which the gossip budgets carry at
    /// several thousand nodes (every 5 rounds, as before, they did not).
    public var recordRefreshRounds: Int {
        let rounds = recordMaxAgeMilliseconds / 8 / max(1, gossipMilliseconds)
        return Int(max(1, min(30, rounds)))
    }
    /// A neighbour silent this long is dropped.
    public var linkTimeoutMilliseconds: UInt64 = 5_000
    public var setupTimeoutMilliseconds: UInt64 = 10_000
    public var exit = false
    /// A client: no listener, not gossiped, never a relay or exit (a device's transport).
    public var client = false
    public var rates = RatePack()
    /// Pays for this node's own traffic (payer proofs, payables).
    public var consumingWallet: MeshWallet?
    /// Receives what others owe for the traffic this node carries; with one,
    /// circuits without a valid payer proof are refused.
    public var earningWallet: MeshWallet?
    /// Keeps payables and receivables; with one, the node scans, pays and bans.
    public var accountant: MeshAccountant?
    /// SOCKS5 front (host:port), on loopback.
    public var socks: String?
    public var dataDirectory = "."
    public var banSeconds: UInt64 = 600
    public var banThreshold = 30
    /// Cells a stream may have in flight each way before it waits for a SENDME.
    public var window = 1_024
    public var sendmeEvery = 64
    public var routeAttempts = 3
    /// Streams a route carries at once (1: a route per stream).
    public var streamsPerRoute = 64
    /// New streams go on a route younger than this (later ones get a fresh route).
    public var routeMaxAgeMilliseconds: UInt64 = 600_000
    /// A route without streams closes after this long.
    public var routeIdleMilliseconds: UInt64 = 60_000
    /// Target connections an exit keeps open at once, over all routes.
    public var maxExitStreams = 4_096
    /// Bytes a relay lets wait toward one link; past it, circuits pushing into it are destroyed.
    public var maxLinkQueueBytes = 256 << 20
    /// Where this node, as an exit, connects for others (see `ExitPolicy`):
    /// by default never to loopback, private, link-local, multicast,
    /// unspecified or its own addresses.
    public var exitPolicy = ExitPolicy()
    /// A set-up onion's layer is accepted only when it was made within this
    /// long of the node's clock (either way), and never twice (`ReplayCache`).
    public var replayWindowMilliseconds: UInt64 = 300_000
    /// Handshake keys the replay cache holds at most.
    public var replayCacheEntries = 65_536
    /// Circuits one link carries at most (relayed, exited, originated, both
    /// directions): a CREATE past it, coming in on the link or to be sent on
    /// it, is refused, so one neighbour cannot fill the node's memory.
    public var maxCircuitsPerLink = 4_096
    /// Introductions (descriptors of nodes to dial) held at once.
    public var maxIntroductions = 64
    /// At most one node neighbour per address group: an IPv4 address (/32)
    /// and an IPv6 /64 by default (0: no limit, for tests on one address).
    public var neighbourPrefixV4 = 32
    public var neighbourPrefixV6 = 64
    /// A relay refuses to join two hops in one network (an IPv4 /16, an
    /// IPv6 /32 by default; 0: off, for tests on loopback).
    public var hopPrefixV4 = 16
    public var hopPrefixV6 = 32
    /// This operator's other nodes (published in the record): an origin never
    /// puts two nodes of one family on a route when both name each other.
    public var family: [NodeKey] = []
    /// Routes use only nodes whose advertised charge per cell is at most this
    /// (wei; nil: ten times MASQ's default rates). Among the acceptable routes
    /// one is chosen at random: rates are a bound, not a ranking.
    public var maxRoutingCharge: UInt128?
    public var maxExitCharge: UInt128?

    public init() {}

    /// Sets the record lifetimes; one not given follows the gossip interval
    /// (a TTL of 300 rounds and at least 5 minutes, at most a day; a maximum
    /// age of twice the TTL and at least an hour), so slower gossip gives
    /// records longer lives, as the node's checks ask. Values too large to
    /// scale are kept as they are (the node refuses them, with its limits)
    /// rather than overflowing.
    public mutating func setRecordLifetimes(ttl: UInt64? = nil, maxAge: UInt64? = nil) {
        let gossip = gossipMilliseconds
        recordTTLMilliseconds = ttl ?? (gossip > 600_000 ? gossip : min(86_400_000, max(300_000, 300 * gossip)))
        let ttl = recordTTLMilliseconds
        recordMaxAgeMilliseconds = maxAge ?? (ttl > 86_400_000 ? ttl : max(3_600_000, 2 * ttl))
    }
}

/// A node: links to at most `maxNeighbours` others, gossip of signed
/// records, onion circuits as origin, relay or exit, and a SOCKS5 front.
/// All state lives on one event loop; nothing here takes a lock.
public final class MeshNode: @unchecked Sendable {
    public let configuration: MeshConfiguration
    public let identity: NodeIdentity
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    let loop: EventLoop
    var listener: Channel?
    var socksListener: Channel?
    public private(set) var port = 0
    public private(set) var socksPort = 0

    struct Known {
        var record: NodeRecord
        var signed: SignedRecord
        var heard: UInt64
        /// When this node took this version (what `recordMaxAgeMilliseconds` counts from).
        var taken: UInt64 = 0
    }
    var records: [NodeKey: Known] = [:]
    /// Which node a held record's signature belongs to (entries of records
    /// dropped since are ignored: the record itself is compared).
    var recordBySignature: [String: NodeKey] = [:]
    /// Signatures of records that expired here, until when they stay refused
    /// (the maximum age; at most `maxRecords`): a neighbour that still holds
    /// one echoes it back, and it must not come back as new — else two nodes
    /// would hand it to each other forever. Entries are added in the order
    /// they lapse (one lifetime, a monotonic clock), so `expiredOrder` is a
    /// queue: pruning and making room touch only its head.
    var expiredSignatures: [String: UInt64] = [:]
    var expiredOrder: [(signature: String, until: UInt64)] = []
    var expiredHead = 0

    private func rememberExpired(_ signature: String, now: UInt64) {
        if expiredSignatures.count >= configuration.maxRecords { dropOldestExpired() }
        let until = now + configuration.recordMaxAgeMilliseconds
        expiredSignatures[signature] = until
        expiredOrder.append((signature, until))
    }

    private func dropOldestExpired() {
        guard expiredHead < expiredOrder.count else { return }
        let (signature, until) = expiredOrder[expiredHead]
        expiredHead += 1
        if expiredSignatures[signature] == until { expiredSignatures[signature] = nil }
        if expiredHead > 1_024 && expiredHead * 2 > expiredOrder.count {
            expiredOrder.removeFirst(expiredHead)
            expiredHead = 0
        }
    }

    private func pruneExpired(now: UInt64) {
        while expiredHead < expiredOrder.count && expiredOrder[expiredHead].until <= now { dropOldestExpired() }
    }

    /// Nodes introduced to this one (their signed link records said where they listen), with when and from which
    /// address group: dialed once, forgotten after 30 s; one group holds at most `introductionsPerGroup` of them.
    /// `reverse`: named by a full seed answering this node's dial (its INTRO, then its BYE "full"): settled
    /// neighbours, anchors it may take in the slot kept for own dials.
    var introduced: [NodeKey: (descriptor: NodeDescriptor, at: UInt64, from: String, reverse: Bool)] = [:]
    /// Entries of `introduced` one address group may hold: a neighbour sending INTRO after INTRO (records can be
    /// minted), or linking again and again, replaces its own oldest and never fills the table against the
    /// others' introductions.
    static let introductionsPerGroup = 8
    /// Dials of introduced nodes in flight, and the address group that introduced each (`introductionFailed`).
    var introducedDials: [NodeKey: String] = [:]
    /// Address groups whose introductions failed, how often, and until when that counts (at most 1,024 groups).
    var introductionFailures: [String: (failures: Int, until: UInt64)] = [:]
    /// Failed introductions after which a group's INTROs are ignored until its count expires.
    static let introductionFailuresAllowed = 4
    /// About how many nodes of a part dial a seed for a split, per 10 shedding periods (`tick`).
    static let splitDialers = 4
    /// The largest part size that chance is worked out for: at least 1 in 16 nodes of a part dials, whatever
    /// made-up keys inflate the count (and made-up keys showing a split make at most that many dial).
    static let splitPartCap = 64
    /// Address groups of dialers a full node sent its roomy neighbours to, until when (one per shedding period each).
    var reverseIntroduced: [String: UInt64] = [:]
    /// Address groups of dialers refused for being full that this node introduced to its neighbours, until when
    /// (one per 10 rounds each: fresh keys cost nothing, and each refused dial would send two introductions).
    var refusedIntroduced: [String: UInt64] = [:]
    /// When this node may next dial its seeds for being short of dialed links or cut off, and the interval
    /// (doubling while the condition lasts: nobody can make a node dial on and on).
    var redialAt = 0
    var redialRounds = 10
    /// When this node may next dial its seeds for live nodes out of reach or neighbours that do not count.
    var slowRedialAt = 0
    /// `hiddenNodes` at the last check (every 10 rounds): a split counts only when the same nodes were hidden at
    /// two checks (records change as links do, and reach a node a few rounds apart).
    var lastHidden: Set<String> = []
    /// Nodes reached over links both ends advertise, and when last (at a check), while their records are held.
    var reachedBefore: [String: UInt64] = [:]
    /// When this node dials a seed for live nodes out of reach (a random round after the check: every node of a
    /// part sees the split at about the same time, and the seeds should not take all their dials at once).
    var splitDialAt: Int?
    /// How many nodes the last check reached (this node's part of the network, as far as it can tell).
    var reachedCount = 1
    var links: [Int: Link] = [:]
    var neighbours: [NodeKey: Link] = [:]
    /// Neighbours that are clients: they take no neighbour slot and are never advertised.
    var clientPeers: Set<NodeKey> = []
    var nodeNeighbourCount: Int { neighbours.count - clientPeers.count }
    var dialing: Set<NodeKey> = []
    var bannedKeys: [NodeKey: UInt64] = [:]
    var bannedHosts: [String: UInt64] = [:]
    var nextLinkID = 1
    /// Our public record (gossiped), our link record (sent in handshakes), and the record itself (without its address).
    var ownSigned: SignedRecord?
    var ownLinkSigned: SignedRecord?
    var ownRecord: NodeRecord?
    /// When each neighbour was last introduced to others (introductions of a seeking neighbour are spaced).
    var lastIntroduced: [NodeKey: UInt64] = [:]
    /// Neighbours' degrees as the network sees them (`seenDegrees`), worked out at most once a round.
    var seenDegreeCache: (tick: Int, degrees: [NodeKey: Int])?
    var advertisedNeighbours: [String] = []
    var advertisedAnchors: [String] = []
    var advertisedSeeking = false
    /// This round's gossip frame body (`sendGossip`); nil when our record changed.
    var gossipBody: (tick: Int, bytes: [UInt8])?
    /// Where the gossip rotation stopped (the last key it went past).
    var gossipCursor: NodeKey?
    /// Where this round's rotation started, and in which round.
    var gossipRound: (tick: Int, cursor: NodeKey?) = (-1, nil)
    var ticks = 0
    var dirty: [Int: Link] = [:]
    /// Streams with bytes gathered for their sockets this turn.
    var dirtyExits: [ObjectIdentifier: (ExitCircuit, ExitStream)] = [:]
    var dirtyOrigins: [UInt64: OriginStream] = [:]
    var counters = Counters()
    /// Gossip work done in this turn of the loop, in verifications (`gossipVerificationsPerTurn`).
    var gossipWorkThisTurn = 0.0
    var gossipWorkResetScheduled = false
    // Circuits (MeshCircuits.swift).
    var relays: [CircuitEnd: RelayHop] = [:]
    var exits: [CircuitEnd: ExitCircuit] = [:]
    /// An exit's return circuit → its forward circuit (the exit's key).
    var exitByReturn: [CircuitEnd: CircuitEnd] = [:]
    var routes: [UInt64: OriginRoute] = [:]
    var routeByForward: [CircuitEnd: UInt64] = [:]
    var routeByReturn: [CircuitEnd: UInt64] = [:]
    var routeByToken: [[UInt8]: UInt64] = [:]
    var nextRoute: UInt64 = 1
    var streams: [UInt64: OriginStream] = [:]
    var nextStream: UInt64 = 1
    var failedNodes: [NodeKey: UInt64] = [:]
    var accountant: MeshAccountant? { configuration.accountant }
    private let scanQueue = DispatchQueue(label: "masq.node.scan")
    private var scanning = false
    /// Exits this origin parted from so that routes can end at them.
    var keepApart: [NodeKey: UInt64] = [:]
    /// Address groups (`neighbourGroup`) of links shed: no node from there for a while, whatever its key.
    var keepApartGroups: [String: UInt64] = [:]
    /// Nodes that said BYE (full): not dialed again for a while.
    var refused: [NodeKey: UInt64] = [:]

    /// This machine's addresses (an exit never connects to them unless allowed), refreshed every minute.
    var ownAddresses: Set<IPAddress> = []
    var replayCache: ReplayCache
    /// Circuit ends per link (see `circuitCount`).
    var circuitEnds: [Int: Int] = [:]
    /// The consumer's pseudonyms (one per hop), with a consuming wallet.
    var pseudonyms: Pseudonyms?
    /// Earning wallets this node is about to pay and has not yet told which pseudonym it pays for.
    var bindingsDue: Set<String> = []
    /// Earning wallets told (a binding reached their node, as a route through it proved).
    var bound: Set<String> = []
    /// Earning wallets due a payment at the last scan and not told yet.
    var waited: Set<String> = []
    /// As a hop: wallets bound to pseudonyms, payments waiting for a binding.
    var payers = Payers()

    public struct Counters: Codable, Sendable {
        public var linksUp = 0
        /// Streams an exit refused because of its destination policy.
        public var exitRefused = 0
        /// Links refused because a neighbour from the same address group was linked.
        public var neighboursRefusedSameAddress = 0
        /// Introductions sent (a seeking neighbour's link record to a neighbour with room).
        public var introductionsSent = 0
        /// Dials of introduced nodes that never completed a handshake (nobody there, or nothing that speaks it).
        public var introductionsFailed = 0
        /// INTRO frames ignored because their sender's address group introduced too many that failed.
        public var introductionsMuted = 0
        /// Links this node shed when full (`MeshConfiguration.shedRounds`).
        public var linksShed = 0
        /// Times this node was short of links it dialed and dialed its seeds again (`shortOfOutbound`).
        public var anchorRedials = 0
        /// Times this node found itself cut off from most of the network and dialed its seeds again (`cutOff`).
        public var cutOffRedials = 0
        /// Times this node dialed its seeds again because live nodes were out of its reach over links both ends
        /// advertise (`hiddenNodes`: parts of the network joined only through nodes that hide their links).
        public var splitRedials = 0
        /// Times this node dialed its seeds again because fewer than its target of neighbours name it
        /// (`countedNeighbours`: the others, squatters, fill slots without counting).
        public var uncountedRedials = 0
        /// CREATEs refused because the previous and next hop are in one network (`hopPrefixV4`).
        public var circuitsRefusedSameNetwork = 0
        /// CREATEs refused because a link carried `maxCircuitsPerLink` circuits.
        public var circuitsRefused = 0
        /// Onion layers refused because their handshake key was seen before (a replayed set-up).
        public var createsReplayed = 0
        /// Onion layers refused because they were made too long ago (or too far ahead).
        public var createsStale = 0
        public var gossipRejected = 0
        public var cellsRejected = 0
        public var cellsRelayed = 0
        public var cellsDropped = 0
        public var circuitsRelayed = 0
        public var circuitsExited = 0
        public var circuitsOriginated = 0
        public var streamsOpened = 0
        public var flowControlViolations = 0
        public var queueOverflows = 0
        public var routeFailures = 0
        public var bans = 0
        /// Inbound connections refused because their address prefix already
        /// had `maxPendingLinksPerPrefix` handshakes in progress.
        public var pendingRefused = 0
        /// Handshakes closed to make room for a newcomer (the table was full: the oldest goes).
        public var pendingEvicted = 0
        /// Handshakes closed for taking longer than `handshakeTimeoutMilliseconds`.
        public var handshakeTimeouts = 0
        /// Gossip records decoded and verified (new keys and new versions).
        public var gossipVerified = 0
        /// Gossip records dropped unverified: past their sender's credit.
        public var gossipOverBudget = 0
        /// Gossip records dropped unverified: past `gossipVerificationsPerTurn` in one turn of the loop.
        public var gossipOverTurnLimit = 0
        /// Gossip frames dropped unread: their sender's credit or the turn's allowance was spent.
        public var gossipFramesDropped = 0
        /// Records of new keys refused because `maxRecords` were held.
        public var recordsRefused = 0
        /// Records of departed neighbours dropped because `maxRecords` others were held
        /// (a neighbour's record is held beyond the cap only while it is linked).
        public var recordsEvicted = 0
    }

    public init(configuration: MeshConfiguration, identity: NodeIdentity, logger: Logger = Logger(label: "masq.node"))
        throws(MeshError)
    {
        guard NodeDescriptor.validNetwork(configuration.network) else {
            throw .invalid("network names are [a-z0-9-], 1 to 32 characters")
        }
        guard (1...6).contains(configuration.hops) else { throw .invalid("hops must be 1...6") }
        guard configuration.hops >= 3 || configuration.allowShortRoutes else {
            throw .invalid(
                "routes of fewer than 3 hops give no anonymity (one node would see both ends); refused without allowShortRoutes"
            )
        }
        guard (1...16).contains(configuration.maxNeighbours), configuration.targetNeighbours >= 1,
            configuration.targetNeighbours <= configuration.maxNeighbours
        else {
            throw .invalid("neighbours: 1 <= target <= max <= 16")
        }
        let mostAnchors = min(configuration.targetNeighbours, MeshNode.maxAnchorClaims)
        guard (1...mostAnchors).contains(configuration.anchorNeighbours),
            (0...1_000_000).contains(configuration.shedRounds)
        else {
            throw .invalid("anchors must be 1...target neighbours (at most 3), shedding every 0...1000000 rounds")
        }
        guard (2_560...60_000).contains(configuration.cellBytes) else {
            throw .invalid("cell size must be 2560...60000 bytes (onions of 7 layers fit)")
        }
        guard (64...65_536).contains(configuration.window),
            (1...configuration.window).contains(configuration.sendmeEvery)
        else {
            throw .invalid("the window must be 64...65536 cells, acknowledged every 1...window cells")
        }
        // (neighbours dial the host a link record names, and introduce a node only when its links come from it)
        guard let host = IPAddress(configuration.host), Self.addressScope(host) != .unusable else {
            throw .invalid(
                "the host must be an IP address others can dial (it is signed in the node's records): not a name, "
                    + "not unspecified (0.0.0.0, ::), multicast or link-local")
        }
        guard (1...4_096).contains(configuration.streamsPerRoute) else {
            throw .invalid("streams per route must be 1...4096")
        }
        guard (1...1_000_000).contains(configuration.maxExitStreams) else {
            throw .invalid("exit streams must be 1...1000000")
        }
        guard configuration.maxLinkQueueBytes >= 1 << 20 else {
            throw .invalid("a link queue must hold at least 1 MiB")
        }
        guard (1...100_000).contains(configuration.maxPendingLinks),
            (1...configuration.maxPendingLinks).contains(configuration.maxPendingLinksPerPrefix)
        else {
            throw .invalid("pending handshakes must be 1...100000 in all, 1...that per address prefix")
        }
        guard (100...600_000).contains(configuration.handshakeTimeoutMilliseconds) else {
            throw .invalid("the handshake timeout must be 100...600000 ms")
        }
        guard (16...10_000_000).contains(configuration.maxRecords) else {
            throw .invalid("max records must be 16...10000000")
        }
        guard (1...1_000_000).contains(configuration.gossipRecordsPerSecond) else {
            throw .invalid("gossip records per second must be 1...1000000")
        }
        guard (1...100_000).contains(configuration.gossipVerificationsPerTurn) else {
            throw .invalid("gossip verifications per turn must be 1...100000")
        }
        guard (2_048...(Link.maxFrame - 64)).contains(configuration.gossipFrameBytes) else {
            throw .invalid("gossip frame bytes must be 2048...\(Link.maxFrame - 64)")
        }
        guard (1...600_000).contains(configuration.gossipMilliseconds),
            (3 * configuration.gossipMilliseconds...86_400_000).contains(configuration.recordTTLMilliseconds),
            (2 * configuration.recordTTLMilliseconds...604_800_000).contains(configuration.recordMaxAgeMilliseconds)
        else {
            throw .invalid(
                "records: gossip every 1...600000 ms, TTL at least 3 gossip rounds (at most a day), maximum age at least twice the TTL (at most a week)"
            )
        }
        guard (10_000...86_400_000).contains(configuration.replayWindowMilliseconds) else {
            throw .invalid("the replay window must be 10000...86400000 ms")
        }
        // Allowed, but a full table would lose live records: say so.
        let rotation = configuration.fullRotationMilliseconds
        if configuration.recordTTLMilliseconds < rotation {
            logger.warning(
                "the record TTL is shorter than the gossip rotation may take round a full table: live records may expire",
                metadata: [
                    "ttl ms": "\(configuration.recordTTLMilliseconds)", "rotation ms": "\(rotation)",
                    "max records": "\(configuration.maxRecords)", "frame bytes": "\(configuration.gossipFrameBytes)"
                ])
        }
        guard (0...32).contains(configuration.neighbourPrefixV4), (0...128).contains(configuration.neighbourPrefixV6),
            (0...32).contains(configuration.hopPrefixV4), (0...128).contains(configuration.hopPrefixV6)
        else {
            throw .invalid("address prefixes must be 0...32 bits (IPv4), 0...128 (IPv6)")
        }
        guard (1...1_000_000).contains(configuration.maxCircuitsPerLink) else {
            throw .invalid("circuits per link must be 1...1000000")
        }
        guard (1_024...100_000_000).contains(configuration.replayCacheEntries) else {
            throw .invalid("the replay cache must hold 1024...100000000 keys")
        }
        replayCache = ReplayCache(
            window: configuration.replayWindowMilliseconds, capacity: configuration.replayCacheEntries)
        self.configuration = configuration
        self.identity = identity
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        loop = group.next()
    }

    public var key: NodeKey { identity.key }
    public var descriptor: NodeDescriptor {
        NodeDescriptor(network: configuration.network, key: key, host: configuration.host, port: port)
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    static func wallClock() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    // MARK: - life cycle

    public func start() throws {
        let node = self
        if !configuration.client {
            try listen()
        }
        if let socks = configuration.socks {
            guard let colon = socks.lastIndex(of: ":"), let p = Int(socks[socks.index(after: colon)...]) else {
                throw MeshError.invalid("socks must be HOST:PORT")
            }
            let host = String(socks[..<colon])
            guard host == "127.0.0.1" || host == "::1" || host == "localhost" else {
                throw MeshError.invalid("the SOCKS front listens on loopback only")
            }
            let s = try ServerBootstrap(group: group)
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    do {
                        try channel.pipeline.syncOperations.addHandler(SocksHandler(node: node))
                        return channel.eventLoop.makeSucceededVoidFuture()
                    } catch { return channel.eventLoop.makeFailedFuture(error) }
                }
                .bind(host: host, port: p).wait()
            socksListener = s
            socksPort = s.localAddress?.port ?? p
        }
        let own = ExitPolicy.ownAddresses(host: configuration.host)
        let secret =
            configuration.consumingWallet == nil
            ? nil : try Pseudonyms.loadOrCreateSecret(configuration.dataDirectory + "/payer.key")
        try loop.submit {
            node.ownAddresses = own
            node.pseudonyms = secret.map { Pseudonyms(secret: $0) }
            // Paid once means told once (a binding comes before a payment).
            node.bound = Set(node.accountant?.paidCreditors() ?? [])
            if node.configuration.earningWallet != nil { node.loadPayers() }
            try node.refreshOwnRecord(force: true)
            // Debut to as many seeds as neighbours are wanted; upkeep finds the rest.
            for seed in node.configuration.seeds.shuffled().filter({ $0.key != node.key }).prefix(
                node.configuration.targetNeighbours)
            { node.dial(seed) }
        }.wait()
        loop.scheduleRepeatedTask(
            initialDelay: .milliseconds(Int64(configuration.gossipMilliseconds)),
            delay: .milliseconds(Int64(configuration.gossipMilliseconds))
        ) { _ in node.tick() }
        if let accountant {
            let every = Int64(max(1, accountant.scanSeconds)) * 1_000
            loop.scheduleRepeatedTask(initialDelay: .milliseconds(every), delay: .milliseconds(every)) { _ in
                node.scan()
            }
        }
        logger.info(
            "node started",
            metadata: [
                "descriptor": "\(descriptor)", "socks": "\(socksPort)", "exit": "\(configuration.exit)",
                "client": "\(configuration.client)"
            ])
    }

    private func listen() throws {
        let node = self
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(
                ChannelOptions.recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 4_096, initial: 65_536, maximum: 262_144)
            )
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in node.configureLink(channel, initiator: false, dialed: nil) }
        let bound = try bootstrap.bind(host: configuration.host, port: configuration.port).wait()
        listener = bound
        port = bound.localAddress?.port ?? configuration.port
    }

    public func wait() throws { try listener?.closeFuture.wait() }

    public func stop() {
        _ = try? loop.submit { self.accountant?.save(force: true) }.wait()
        try? socksListener?.close().wait()
        try? listener?.close().wait()
        try? group.syncShutdownGracefully()
    }

    /// Run `body` on the node's loop and wait for it (tests, the CLI).
    public func onLoop<T: Sendable>(_ body: @escaping @Sendable () -> T) -> T? { try? loop.submit(body).wait() }

    // MARK: - links

    func configureLink(_ channel: Channel, initiator: Bool, dialed: NodeDescriptor?) -> EventLoopFuture<Void> {
        do {
            try channel.pipeline.syncOperations.addHandler(LengthPrefixSplitter())
            try channel.pipeline.syncOperations.addHandler(
                LinkHandler(node: self, initiator: initiator, dialed: dialed))
            return channel.eventLoop.makeSucceededVoidFuture()
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
    }

    func dial(_ descriptor: NodeDescriptor) {
        guard descriptor.key != key, neighbours[descriptor.key] == nil, !dialing.contains(descriptor.key),
            !isBanned(descriptor.key, descriptor.host),
            (keepApart[descriptor.key] ?? 0) < Self.now(), (refused[descriptor.key] ?? 0) < Self.now()
        else { return }
        // One node per address among the neighbours: no dial to a second one.
        if configuration.neighbourPrefixV4 != 0 || configuration.neighbourPrefixV6 != 0,
            let ip = IPAddress(descriptor.host)
        {
            let bits = ip.isV4 ? configuration.neighbourPrefixV4 : configuration.neighbourPrefixV6
            if bits != 0, (keepApartGroups[ip.prefix(bits)] ?? 0) > Self.now() { return }
            if bits != 0,
                neighbours.values.contains(where: { l in
                    l.peer.map { !clientPeers.contains($0) } == true && neighbourGroup(l) == ip.prefix(bits)
                })
            {
                return
            }
        }
        dialing.insert(descriptor.key)
        let node = self
        var bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(.seconds(3))
            .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .channelOption(
                ChannelOptions.recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 4_096, initial: 65_536, maximum: 262_144)
            )
            .channelOption(ChannelOptions.maxMessagesPerRead, value: 16)
            .channelInitializer { channel in node.configureLink(channel, initiator: true, dialed: descriptor) }
        // Links leave from the node's own (signed) address.
        if let local = try? SocketAddress(ipAddress: configuration.host, port: 0) {
            bootstrap = bootstrap.bind(to: local)
        }
        bootstrap.connect(host: descriptor.host, port: descriptor.port)
            .whenFailure { _ in
                node.dialing.remove(descriptor.key)
                node.introduced[descriptor.key] = nil
                if let group = node.introducedDials.removeValue(forKey: descriptor.key) {
                    node.introductionFailed(group)
                }
            }
    }

    /// How the handshake table groups inbound connections: an IPv4 address
    /// (tests and LANs give distinct nodes neighbouring IPv4 addresses, so no
    /// wider IPv4 prefix), an IPv6 /64 (the smallest block a site gets: an
    /// attacker with one holds 2^64 addresses). IPv4-mapped IPv6 is IPv4.
    static func addressPrefix(_ address: SocketAddress?) -> String {
        switch address {
        case .v4(let a)?:
            return withUnsafeBytes(of: a.address.sin_addr) { "v4:" + $0.map(String.init).joined(separator: ".") }
        case .v6(let a)?:
            let bytes = withUnsafeBytes(of: a.address.sin6_addr) { Array($0) }
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
                return "v4:" + bytes[12..<16].map(String.init).joined(separator: ".")
            }
            return "v6:" + bytes[0..<8].map { String($0, radix: 16) }.joined(separator: ":") + "::/64"
        default:
            return "?"
        }
    }

    /// The handshake table. A newcomer whose address prefix already has
    /// `maxPendingLinksPerPrefix` handshakes in progress is refused. When the
    /// whole table is full, the oldest handshake in it is closed and the
    /// newcomer takes its place: an honest handshake ends within a round trip
    /// and a few milliseconds of DH, so the oldest entry is the one most
    /// likely stalled on purpose, and refusing newcomers instead would let 8
    /// prefixes (trivial with IPv6) lock every new link out for as long as
    /// they keep their connections open. An attacker who wants to evict an
    /// honest handshake must open `maxPendingLinks` connections during its
    /// round trip. Connections still time out after `handshakeTimeoutMilliseconds`.
    func linkOpened(_ channel: Channel, initiator: Bool, dialed: NodeDescriptor?) -> Link? {
        if !initiator, let host = channel.remoteAddress?.ipAddress, let until = bannedHosts[host], until > Self.now() {
            return nil
        }
        if !initiator {
            let pending = links.values.filter { !$0.established && !$0.initiator }
            let prefix = Self.addressPrefix(channel.remoteAddress)
            guard pending.lazy.filter({ $0.prefix == prefix }).count < configuration.maxPendingLinksPerPrefix else {
                counters.pendingRefused += 1
                return nil
            }
            if pending.count >= configuration.maxPendingLinks {
                for oldest in pending.sorted(by: { $0.id < $1.id }).prefix(
                    pending.count - configuration.maxPendingLinks + 1)
                {
                    counters.pendingEvicted += 1
                    // Out of the table now (its channel's close completes later).
                    links[oldest.id] = nil
                    oldest.handshake = nil
                    oldest.channel.close(promise: nil)
                }
            }
        }
        let prologue = Array("masq mesh v1 \(configuration.network)".utf8)
        guard
            let handshake = try? Noise.Handshake(
                pattern: .XX, role: initiator ? .initiator : .responder, prologue: prologue,
                staticKey: identity.agreement.privateKey)
        else { return nil }
        let link = Link(
            id: nextLinkID, channel: channel, initiator: initiator, dialed: dialed, handshake: handshake,
            cellBytes: configuration.cellBytes, now: Self.now())
        link.onPending = { [weak self] in self?.dirty[$0.id] = $0 }
        link.gossipCredit = Double(configuration.gossipRecordsPerSecond) * 2
        nextLinkID += 1
        links[link.id] = link
        if initiator {
            guard let first = try? handshake.writeMessage() else {
                links[link.id] = nil
                return nil
            }
            link.writeRaw(first)
        }
        return link
    }

    func linkClosed(_ link: Link) {
        links[link.id] = nil
        dirty[link.id] = nil
        if let dialed = link.dialed {
            dialing.remove(dialed.key)
            // (a handshake that never completed: nothing there that is the node introduced)
            if let group = introducedDials.removeValue(forKey: dialed.key), !link.established {
                introductionFailed(group)
            }
        }
        if let peer = link.peer, neighbours[peer] === link {
            neighbours[peer] = nil
            // A client's record is for its neighbours only; a node's leaves with
            // it when the table is full (neighbours' records are held beyond the cap).
            if records[peer]?.record.isClient == true {
                records[peer] = nil
            } else if records[peer] != nil && recordsBesidesNeighbours > configuration.maxRecords {
                records[peer] = nil
                counters.recordsEvicted += 1
            }
            clientPeers.remove(peer)
            logger.info("neighbour gone", metadata: ["node": "\(peer)"])
            try? refreshOwnRecord(force: false)
        }
        circuitsLost(on: link)
    }

    func linkMessage(_ link: Link, _ message: ByteBuffer) {
        link.lastHeard = Self.now()
        if !link.established {
            handshakeStep(link, Array(message.readableBytesView))
            return
        }
        message.withUnsafeReadableBytes { raw in
            guard let (records, clear) = link.open(raw) else {
                return penalize(link, configuration.banThreshold, "a message that does not decrypt")
            }
            let items: [LinkRecords.Item]
            switch LinkRecords.split(records, clear: clear, cellBytes: configuration.cellBytes) {
            case .success(let split): items = split
            case .failure(let error):
                if case .malformed(let why) = error, why.contains("DATA cell") { counters.cellsRejected += 1 }
                return penalize(link, 10, "\(error)")
            }
            for item in items {
                switch item {
                case .dataCell(let circuit, let payload):
                    data(
                        link, CircuitEnd(link: link.id, circuit: circuit),
                        UnsafeRawBufferPointer(rebasing: raw[payload]))
                case .frame(let range):
                    linkFrame(link, Array(records[range]))
                }
                guard link.channel.isActive else { return }
            }
        }
    }

    /// One frame other than a DATA cell (`frame[0]` is its type).
    private func linkFrame(_ link: Link, _ frame: [UInt8]) {
        let first = frame[0]
        if first == FrameType.cell.rawValue { return receiveCell(link, frame) }
        let body = Array(frame.dropFirst())
        switch FrameType(rawValue: first) {
        case .gossip: receiveGossip(link, body)
        case .intro: receiveIntro(link, body)
        case .cell: receiveCell(link, frame)
        case .ping: link.write(.pong, [])
        case .pong: break
        case .bye:
            if link.initiator, let peer = link.peer {
                refused[peer] = Self.now() + 10 * configuration.gossipMilliseconds
                // A full seed's answer to this node's dial: the settled neighbours its INTRO just named may take
                // the slot kept for own dials. Only this answer: the same seed, as a neighbour, also forwards
                // newcomers and dialers it refused, whom anybody can make it send (sixth review).
                // The seed's descriptors replace whatever others introduced under those keys (an old link
                // record, say), past the table's cap if need be (4 at most).
                if body == Array("full".utf8), configuration.seeds.contains(where: { $0.key == peer }) {
                    let group = addressGroup(link), now = Self.now()
                    for d in link.namedInLastIntro where neighbours[d.key] == nil {
                        introduced[d.key] = (d, now, group, true)
                    }
                }
            }
            link.channel.close(promise: nil)
        case nil: penalize(link, 10, "a frame of unknown type")
        }
    }

    /// What each side sends in the handshake (Noise XX, messages 2 and 3):
    /// its link record (with the address it listens on: for the neighbour
    /// only) and, unless it is a client, its public record (gossiped on).
    struct HandshakePayload: Codable {
        var link: SignedRecord
        var record: SignedRecord?
    }

    private func handshakeStep(_ link: Link, _ bytes: [UInt8]) {
        guard let handshake = link.handshake, bytes.count <= Noise.maxMessageLength else {
            return link.channel.close(promise: nil)
        }
        do {
            let payload = try handshake.readMessage(bytes)
            if !link.initiator && !handshake.isComplete {
                link.writeRaw(try handshake.writeMessage(payload: try ownPayload()))
                return
            }
            if link.initiator {
                link.writeRaw(try handshake.writeMessage(payload: try ownPayload()))
            }
            guard handshake.isComplete else { return }
            let result = try handshake.result()
            link.sendCipher = result.send
            link.receiveCipher = result.receive
            link.handshake = nil
            let received = try JSONDecoder().decode(HandshakePayload.self, from: Data(payload))
            let linkRecord = try received.link.verified(network: configuration.network, kind: .link)
            guard let peerKey = linkRecord.nodeKey, linkRecord.agreementKey == result.remoteStatic else {
                throw MeshError.badSignature("the record does not name the link's key")
            }
            if let dialed = link.dialed, dialed.key != peerKey {
                throw MeshError.badSignature("the node at \(dialed.address) is not \(dialed.key)")
            }
            var publicRecord: (NodeRecord, SignedRecord)?
            if !linkRecord.isClient {
                guard let signed = received.record else {
                    throw MeshError.malformed("a node's handshake without its public record")
                }
                let record = try signed.verified(network: configuration.network, kind: .gossip)
                guard record.key == linkRecord.key, record.agreement == linkRecord.agreement else {
                    throw MeshError.badSignature("the public record is another node's")
                }
                publicRecord = (record, signed)
            }
            link.peer = peerKey
            link.established = true
            link.linkRecord = received.link
            if !linkRecord.isClient {
                link.listenAddress = "\(linkRecord.host):\(linkRecord.port)"
                link.listensWhereItComesFrom = Self.sameHost(linkRecord.host, link.remoteIP)
            }
            established(link, linkRecord, publicRecord ?? (linkRecord, received.link))
        } catch {
            logger.debug("handshake failed", metadata: ["address": "\(link.peerAddress)", "error": "\(error)"])
            link.channel.close(promise: nil)
        }
    }

    private func ownPayload() throws -> [UInt8] {
        guard let ownLinkSigned else { throw MeshError.failed("no record yet") }
        return Array(
            try JSONEncoder().encode(
                HandshakePayload(link: ownLinkSigned, record: configuration.client ? nil : ownSigned)))
    }

    /// The group a link's address counts in: at most
    /// `maxNeighboursPerAddressGroup` node neighbours (one) per group (an IPv4
    /// address, an IPv6 /64 by default); nil when the check is off.
    func neighbourGroup(_ link: Link) -> String? {
        guard let ip = link.remoteIP else { return nil }
        let bits = ip.isV4 ? configuration.neighbourPrefixV4 : configuration.neighbourPrefixV6
        return bits == 0 ? nil : ip.prefix(bits)
    }

    /// The group a link's far end is counted in by the tables that limit
    /// what one address may cost (introductions): its neighbour group, or
    /// its address when that check is off.
    func addressGroup(_ link: Link) -> String { neighbourGroup(link) ?? link.prefix }

    /// Records held (not this node's), by key text, clients' left out unless asked for.
    func recordsByText(clients: Bool) -> [String: NodeRecord] {
        var byText: [String: NodeRecord] = [:]
        for (k, known) in records where k != key && (clients || !known.record.isClient) {
            byText[known.record.key] = known.record
        }
        return byText
    }

    /// The group adjacent hops of a circuit must not share (an IPv4 /16, an
    /// IPv6 /32 by default); nil when the check is off.
    func hopGroup(_ link: Link) -> String? {
        guard let ip = link.remoteIP else { return nil }
        let bits = ip.isV4 ? configuration.hopPrefixV4 : configuration.hopPrefixV6
        return bits == 0 ? nil : ip.prefix(bits)
    }

    /// `record`: what is kept of the peer (a node's public record; a client's link record, kept for its neighbours only).
    private func established(_ link: Link, _ linkRecord: NodeRecord, _ kept: (NodeRecord, SignedRecord)) {
        guard let peer = link.peer else { return }
        let (record, signed) = kept
        if peer == key || isBanned(peer, link.remoteIP?.description) {
            return link.channel.close(promise: nil)
        }
        if (keepApart[peer] ?? 0) > Self.now()
            || (!record.isClient && (neighbourGroup(link).flatMap { keepApartGroups[$0] } ?? 0) > Self.now())
        {
            // (a BYE, so that the other side does not dial again at once)
            link.write(.bye, Array("apart".utf8))
            link.flush()
            return link.channel.close(promise: nil)
        }
        if let existing = neighbours[peer], existing !== link {
            // Both dialed each other: keep the link the smaller key initiated.
            let keepNew = (link.initiator && key < peer) || (!link.initiator && peer < key)
            if !keepNew { return link.channel.close(promise: nil) }
            existing.channel.close(promise: nil)
        }
        introduced[peer] = nil
        if !record.isClient, let group = neighbourGroup(link),
            neighbours.values.contains(where: {
                // (a link to the same node, being replaced just above, does not count)
                $0 !== link && $0.peer != peer && $0.peer.map { !clientPeers.contains($0) } == true
                    && neighbourGroup($0) == group
            })
        {
            // One node per address among the neighbours: a host (or an IPv6 /64) gets one slot, whatever keys it makes.
            counters.neighboursRefusedSameAddress += 1
            link.write(.bye, Array("one node per address".utf8))
            link.flush()
            return link.channel.close(promise: nil)
        }
        // A link replacing one to the same peer takes no new slot. A node short
        // of links it dialed keeps one slot for its own dials.
        let kept = !link.initiator && shortOfOutbound ? 1 : 0
        let full =
            neighbours[peer] == nil
            && (record.isClient
                ? clientPeers.count >= configuration.maxClients
                : nodeNeighbourCount >= configuration.maxNeighbours - kept)
        if full {
            // Full: neighbours with room are told about the newcomer (they may
            // dial it), and it about them (it may dial them: a node dials its
            // anchors). A link this node dialed is refused too: several dials
            // in flight may complete at once, and never past `maxNeighbours`.
            if !link.initiator && !record.isClient {
                let group = addressGroup(link), now = Self.now()
                let forward = (refusedIntroduced[group] ?? 0) < now
                if forward {
                    Self.note(group, until: now + 10 * configuration.gossipMilliseconds, in: &refusedIntroduced)
                }
                introduce(link, to: forward ? 2 : 0, back: record.isSeeking ? 2 : 0)
            }
            link.write(.bye, Array("full".utf8))
            link.flush()
            link.channel.close(promise: nil)
            return
        }
        merge(record, signed, neighbour: true)
        neighbours[peer] = link
        if record.isClient { clientPeers.insert(peer) }
        counters.linksUp += 1
        link.upAt = Self.now()
        logger.info(
            "neighbour up", metadata: ["node": "\(peer)", "address": "\(link.listenAddress ?? link.peerAddress)"])
        if !link.initiator && !record.isClient && record.isSeeking { introduce(link, to: 1) }
        try? refreshOwnRecord(force: false)
        sendGossip(to: link)
        flush()
    }

    /// Tell up to `count` other neighbours with room (chosen at random, never
    /// the least connected first: a node claiming no neighbours gains
    /// nothing) that the node on `link` looks for neighbours: its signed link
    /// record, so they can dial it. Only nodes that may link to it learn its
    /// address. `back`: settled neighbours the node on `link` is told of in
    /// turn (a dialer refused for being full, when it seeks neighbours).
    private func introduce(_ link: Link, to count: Int, back: Int = 0) {
        guard let peer = link.peer, let linkRecord = link.linkRecord, let body = try? JSONEncoder().encode([linkRecord])
        else { return }
        // (a node whose record names a host other than the one it comes from is introduced to nobody: its
        // record could point the neighbours' dials at anyone — sixth review; it may still be told of others)
        let count = link.listensWhereItComesFrom ? count : 0
        let theirs = Set(records[peer]?.record.neighbours ?? [])
        let most = configuration.maxNeighbours
        let now = Self.now(), grace = shedGrace
        let roomy = neighbours.filter { k, l in
            l !== link && !clientPeers.contains(k) && !theirs.contains(k.text)
                && (records[k]?.record.neighbours.count ?? most) < most
        }
        let eligible = roomy.filter { k, l in introductionsWelcome(k, l, now: now) }
        // Room as the network sees it (`seenDegrees`): a squatter advertising
        // room while it holds many links is seen full.
        let degrees = seenDegrees()
        let seenRoom = { (k: NodeKey, _: Link) -> Bool in (degrees[k] ?? most) < most }
        // Settled neighbours first (up for 3 shedding periods, with at least
        // the target of links both ends advertise): a squatter advertising
        // room is told about newcomers only while the network has nobody
        // else. Minted records naming every neighbour can make them all look
        // full by `seenDegrees`: then settled ones by this node's own count.
        // (Settledness itself can be faked by an attacker signing both ends
        // of its links: such a node is never an anchor — it must name the
        // dialer — and is full by the own count once it takes newcomers.)
        let isSettled = { (k: NodeKey, l: Link) -> Bool in
            now >= l.upAt + grace && self.confirmedDegree(k) >= self.configuration.targetNeighbours
        }
        let settledRoomy = roomy.filter(isSettled)
        // Reverse introductions: settled ones not full by this node's own
        // count (one advertising a fixed few — minted partners make it look
        // settled — while it takes every newcomer sent its way is full by
        // that count after as many as it had room for).
        // (only nodes whose records name the address they come from: the dialer will dial it)
        let notFull = settledRoomy.filter { k, l in l.listensWhereItComesFrom && heldByOwnCount(k, l) < most }
        let settled = notFull.filter(seenRoom).isEmpty ? notFull : notFull.filter(seenRoom)
        // Last, settled neighbours with room as the network sees it that this
        // node's own count would pass over (honest ones whose newcomers
        // went elsewhere): an island dialing a full seed must reach somebody.
        let best = eligible.filter { isSettled($0.key, $0.value) && seenRoom($0.key, $0.value) }
        let tiers = [best, eligible.filter(isSettled), eligible.filter(seenRoom), settledRoomy.filter(seenRoom)]
        let chosen = (tiers.first { !$0.isEmpty } ?? [:]).shuffled().prefix(count)
        for (_, other) in chosen {
            other.write(.intro, Array(body))
            counters.introductionsSent += 1
            other.introductions.append((peer.text, now, false))
            if other.introductions.count > 16 { other.introductions.removeFirst() }
        }
        // The dialer, when it looks for neighbours, learns of neighbours it may
        // dial (they may become its anchors): only settled ones — never a
        // squatter advertising room, or one just arrived — at most once a
        // shedding period (10 rounds at least) per address group.
        let group = addressGroup(link)
        if back > 0, (reverseIntroduced[group] ?? 0) < now {
            let settledRecords = settled.shuffled().prefix(back).compactMap { $0.value.linkRecord }
            if !settledRecords.isEmpty, let back = try? JSONEncoder().encode(settledRecords) {
                link.write(.intro, Array(back))
                Self.note(group, until: now + max(grace, 10 * configuration.gossipMilliseconds), in: &reverseIntroduced)
            }
        }
        lastIntroduced[peer] = Self.now()
    }

    /// Whether `host` (from a link record) is the address `remote` (an IPv4
    /// address seen as IPv4-mapped IPv6 counts as itself).
    static func sameHost(_ host: String, _ remote: IPAddress?) -> Bool {
        guard let named = IPAddress(host), let remote else { return false }
        let mapped: [UInt8] = Array(repeating: 0, count: 10) + [0xff, 0xff]
        let seen =
            remote.bytes.count == 16 && Array(remote.bytes[0..<12]) == mapped
            ? Array(remote.bytes[12...]) : remote.bytes
        return named.bytes == seen
    }

    /// Whether an introduced node's host may be dialed from a node at `own`:
    /// an IP address (not a name: no DNS lookup an introducer could watch),
    /// never unspecified, multicast, reserved or link-local; loopback only
    /// from loopback, private (RFC 1918, CGNAT, ULA) only from loopback or
    /// private. Introductions come from neighbours, whose records cost
    /// nothing: they must not turn this node's dials on its own machine or
    /// network (sixth review).
    static func mayDial(_ host: String, from own: String) -> Bool {
        guard let target = IPAddress(host) else { return false }
        let scope = addressScope(target)
        guard scope != .unusable else { return false }
        let mine = IPAddress(own).map(addressScope) ?? .global
        switch scope {
        case .loopback: return mine == .loopback
        case .privateNetwork: return mine == .loopback || mine == .privateNetwork
        default: return true
        }
    }

    enum AddressScope { case unusable, loopback, privateNetwork, global }

    static let unusableBlocks: [IPNetwork] = [
        "0.0.0.0/8", "169.254.0.0/16", "192.0.0.0/24", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4", "::/127",
        "100::/64", "fe80::/10", "fec0::/10", "ff00::/8"
    ].map { IPNetwork($0)! }
    static let loopbackBlocks: [IPNetwork] = ["127.0.0.0/8", "::1/128"].map { IPNetwork($0)! }
    static let privateBlocks: [IPNetwork] = [
        "10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"
    ].map { IPNetwork($0)! }

    static func addressScope(_ address: IPAddress) -> AddressScope {
        if loopbackBlocks.contains(where: { $0.contains(address) }) { return .loopback }
        if unusableBlocks.contains(where: { $0.contains(address) }) { return .unusable }
        if privateBlocks.contains(where: { $0.contains(address) }) { return .privateNetwork }
        return .global
    }

    /// An introduced node could not be reached: counted against the group
    /// that introduced it, for 10 shedding periods (100 rounds at least)
    /// from the last failure. Honest introductions fail too (a node that
    /// left), so a few are allowed.
    func introductionFailed(_ group: String) {
        counters.introductionsFailed += 1
        let now = Self.now()
        let window = UInt64(max(100, 10 * configuration.shedRounds)) * configuration.gossipMilliseconds
        var entry = introductionFailures[group] ?? (0, 0)
        if entry.until <= now { entry.failures = 0 }
        entry.failures += 1
        entry.until = now + window
        if introductionFailures[group] == nil, introductionFailures.count >= 1_024,
            let first = introductionFailures.min(by: { $0.value.until < $1.value.until })
        {
            introductionFailures[first.key] = nil
        }
        introductionFailures[group] = entry
        // (and what it introduced before goes too: up to 8 more dials otherwise)
        if entry.failures >= Self.introductionFailuresAllowed {
            introduced = introduced.filter { $0.value.from != group }
        }
    }

    /// Note an address group in a table of groups (at most `capacity`), until
    /// a time. When the table is full, the entry nearest its end makes way: a
    /// flood from many addresses limits itself, not everybody (a table that
    /// refused new entries when full would fail closed for honest dialers).
    static func note(_ group: String, until: UInt64, in table: inout [String: UInt64], capacity: Int = 1_024) {
        if table[group] == nil, table.count >= capacity, let first = table.min(by: { $0.value < $1.value }) {
            table[first.key] = nil
        }
        table[group] = until
    }

    // MARK: - anchors and shedding

    /// Anchors a record may name and have honoured (a protocol constant, so
    /// that nodes with other settings agree).
    static let maxAnchorClaims = 3

    /// How long a young link is spared (3 shedding periods), and how long a
    /// link must have lasted to be an anchor or be introduced as a settled node.
    var shedGrace: UInt64 { 3 * UInt64(configuration.shedRounds) * configuration.gossipMilliseconds }

    /// Link age order: when a link came up, then when it opened.
    static func older(_ a: Link, _ b: Link) -> Bool { (a.upAt, a.id) < (b.upAt, b.id) }

    /// Whether a neighbour may be sent one more newcomer, by what this node
    /// saw of those it sent it over the last 10 shedding periods: fewer
    /// pending (sent, not yet seen linked to it, within 2 shedding periods)
    /// than the room it has — counting its links to those this node sent it
    /// that it does not advertise — and at most 2 + 2 per one seen linked
    /// that never showed up linked. An honest neighbour dials whom it is
    /// sent (some are full by then); a squatter that takes every newcomer is
    /// seen full after as many as it has room for, one that dials them under
    /// other keys, or not at all, gets a few, then nobody for a while. Only
    /// this node's own introductions count: keys cost nothing and records
    /// can be minted, these cannot be faked to it.
    func introductionsWelcome(_ peer: NodeKey, _ link: Link, now: UInt64) -> Bool {
        let period = UInt64(configuration.shedRounds) * configuration.gossipMilliseconds
        let window = max(2 * period, 20 * configuration.gossipMilliseconds)
        let memory = max(10 * period, 5 * window)
        link.introductions.removeAll { now > $0.at + memory }
        var pending = 0, missed = 0, linked = 0
        for i in link.introductions.indices {
            let theirs = NodeKey(text: link.introductions[i].peer).flatMap { records[$0]?.record.neighbours }
            if !link.introductions[i].linked, theirs?.contains(peer.text) == true {
                link.introductions[i].linked = true
            }
            if link.introductions[i].linked {
                linked += 1
            } else if now <= link.introductions[i].at + window {
                pending += 1
            } else if (theirs?.count ?? 0) < configuration.maxNeighbours {
                missed += 1  // (one that filled up before it was dialed is nobody's fault)
            }
        }
        return pending < configuration.maxNeighbours - heldByOwnCount(peer, link) && missed <= 2 + 2 * linked
    }

    /// A neighbour's links as far as this node knows: those it advertises,
    /// this node's, and those to the nodes this node sent it that were seen
    /// linked to it (`introductionsWelcome` marks them).
    func heldByOwnCount(_ peer: NodeKey, _ link: Link) -> Int {
        Set(records[peer]?.record.neighbours ?? []).union([key.text])
            .union(link.introductions.filter(\.linked).map(\.peer)).count
    }

    /// How many links each node neighbour holds as the network sees them:
    /// those it advertises and those whose far end advertises it (this
    /// node's own included). A squatter advertising room while it holds the
    /// links of many is seen full, and nobody is sent its way. No entry for
    /// a neighbour whose record this node lacks. One pass over the records,
    /// at most once a round (an introduction may follow every refused dial).
    /// Records naming a node can be minted (sybils making it look full, so
    /// it is introduced to nobody); that costs it introductions only, not
    /// links: shedding still goes by what a far end advertises, so a
    /// newcomer's young links are spared whatever others claim.
    func seenDegrees() -> [NodeKey: Int] {
        if let cache = seenDegreeCache, cache.tick == ticks { return cache.degrees }
        var linked: [NodeKey: Set<String>] = [:]
        var byText: [String: NodeKey] = [:]
        for peer in neighbours.keys where !clientPeers.contains(peer) {
            guard let record = records[peer]?.record else { continue }
            linked[peer] = Set(record.neighbours).union([key.text])
            byText[peer.text] = peer
        }
        for (other, known) in records {
            for n in known.record.neighbours { if let peer = byText[n] { linked[peer]?.insert(other.text) } }
        }
        let degrees = linked.mapValues(\.count)
        seenDegreeCache = (ticks, degrees)
        return degrees
    }

    /// A neighbour's links that both ends advertise (this node's own link to it counts when it is one).
    func confirmedDegree(_ peer: NodeKey) -> Int {
        guard let record = records[peer]?.record else { return 0 }
        return record.neighbours.filter { n in
            n == key.text
                ? neighbours[peer] != nil
                : NodeKey(text: n).flatMap { records[$0]?.record.neighbours.contains(peer.text) } == true
        }.count
    }

    /// Whether the neighbour `peer` names this node as one of its anchors. A
    /// record naming more than `maxAnchorClaims` has its claims ignored:
    /// nobody protects all of its links that way.
    func anchoredAtFarEnd(_ peer: NodeKey) -> Bool {
        guard let anchors = records[peer]?.record.anchors, anchors.count <= Self.maxAnchorClaims else { return false }
        return anchors.contains(key.text)
    }

    /// The links this node never sheds: its anchors — its oldest links,
    /// those it dialed first (a squatter dials in; the nodes this node chose
    /// to dial are its seeds and introductions) — and the links of
    /// neighbours naming this node as their anchor, honoured oldest link
    /// first and at most `maxNeighbours - anchorNeighbours - 1` of them, so
    /// that a full node always has one it may shed (a seed whose every
    /// neighbour names it would otherwise stay full for good). A claim made
    /// on a newer link never displaces an older one's: whoever links to a
    /// node later cannot take an honest neighbour's protection away.
    var protectedLinks: (anchors: [NodeKey], honoured: [NodeKey]) {
        let links = neighbours.filter { !clientPeers.contains($0.key) }
        // (age counts from when a link came up: a handshake dragged out gains nothing)
        let byAge = links.sorted { Self.older($0.value, $1.value) }
        let now = Self.now(), grace = shedGrace
        // (the far end must name this node: a squatter advertising a fixed few,
        // minted partners among them, to look settled with room, while it
        // takes every newcomer, is never one's anchor)
        let anchors = byAge.filter { k, l in
            l.initiator && now >= l.upAt + grace && namesThisNode(k)
                && confirmedDegree(k) >= configuration.targetNeighbours
        }.prefix(configuration.anchorNeighbours).map(\.key)
        let room = max(0, configuration.maxNeighbours - configuration.anchorNeighbours - 1)
        let honoured = byAge.map(\.key)
            .filter { !anchors.contains($0) && anchoredAtFarEnd($0) }.prefix(room)
        return (anchors, Array(honoured))
    }

    /// The node's anchors (`protectedLinks`).
    var ownAnchors: [NodeKey] { protectedLinks.anchors }

    /// Whether this node has fewer links it dialed than it wants anchors
    /// (`anchorNeighbours`, at most one per seed it has): squatters dial in,
    /// so a node whose anchors left could end up with none but theirs. Such
    /// a node says it is seeking (a full seed then sends it settled
    /// neighbours it may dial), keeps one slot for its seeds (inbound links
    /// and introductions stop one short of the maximum) and redials them,
    /// backing off (`tick`).
    /// A dialed link counts once the far end names this node in its record
    /// (or while it is young: its record takes a round or two to come).
    var shortOfOutbound: Bool {
        let wanted = min(configuration.anchorNeighbours, configuration.seeds.filter { $0.key != key }.count)
        let now = Self.now(), young = 10 * configuration.gossipMilliseconds
        return neighbours.filter { k, l in
            l.initiator && !clientPeers.contains(k) && (namesThisNode(k) || now < l.upAt + young)
        }.count < wanted
    }

    /// Node neighbours that count toward the target: those whose records name
    /// this node, and those linked for less than 10 rounds (a record takes a
    /// round or two to come). A squatter advertising a fixed few fills a slot
    /// without counting: a node that came back among squatters still says it
    /// seeks neighbours, is introduced to others, and redials its seeds.
    var countedNeighbours: Int {
        let now = Self.now(), young = 10 * configuration.gossipMilliseconds
        return neighbours.filter { k, l in
            guard !clientPeers.contains(k) else { return false }
            if now < l.upAt + young { return true }
            return namesThisNode(k)
        }.count
    }

    /// Whether a neighbour's record names this node among its neighbours.
    func namesThisNode(_ peer: NodeKey) -> Bool { records[peer]?.record.neighbours.contains(key.text) == true }

    /// A full node sheds one of its links that are not protected
    /// (`protectedLinks`), at random. Spared: a link whose far end
    /// advertises fewer than the target (a newcomer, the end of a chain),
    /// carries a circuit, or looks like the only way to its far end — while
    /// the link is young (up for less than 3 shedding periods), and after
    /// that one such link only, the oldest. What a far end says or does (a
    /// squatter lying about its neighbours, holding a circuit open) buys its
    /// link that grace, or the one spared place, never more, and refilling
    /// a slot costs it a new address (the shed link's address group stays
    /// apart, as its key, for ten shedding periods). Called on the node's
    /// own clock only, never because of a message.
    @discardableResult
    func shedOneLink() -> NodeKey? {
        guard nodeNeighbourCount >= configuration.maxNeighbours else { return nil }
        let kept = protectedLinks
        let protected = Set(kept.anchors + kept.honoured)
        let now = Self.now(), grace = shedGrace
        var candidates: [(NodeKey, Link)] = []
        var spared: [(NodeKey, Link)] = []
        for (k, l) in neighbours where !clientPeers.contains(k) && !protected.contains(k) {
            let theirs = records[k]?.record.neighbours.count ?? 0
            if theirs >= configuration.targetNeighbours && circuitCount(l.id) == 0 && reachableWithout(k) {
                candidates.append((k, l))
            } else if now >= l.upAt + grace {
                spared.append((k, l))
            }
        }
        candidates += spared.sorted { Self.older($0.1, $1.1) }.dropFirst()
        guard let (peer, link) = candidates.randomElement() else { return nil }
        counters.linksShed += 1
        let until = now + 10 * UInt64(configuration.shedRounds) * configuration.gossipMilliseconds
        keepApart[peer] = until
        if let group = neighbourGroup(link) { keepApartGroups[group] = until }
        logger.info("link shed (full: room for a newcomer)", metadata: ["node": "\(peer)"])
        link.write(.bye, Array("shed".utf8))
        link.flush()
        link.channel.close(promise: nil)
        return peer
    }

    /// Whether `peer` would still reach this node without their link: a
    /// path from it to another of this node's neighbours over links both
    /// ends advertise in their records (a breadth-first search of at most
    /// the records held). Only nodes at both ends of a faked link can fake
    /// a path, and then they carry it.
    func reachableWithout(_ peer: NodeKey) -> Bool {
        let byText = recordsByText(clients: true)
        let mine = Set(neighbours.keys.filter { $0 != peer && !clientPeers.contains($0) }.map(\.text))
        var seen: Set<String> = [peer.text, key.text]
        var frontier = [peer.text]
        while let at = frontier.popLast() {
            guard let record = byText[at] else { continue }
            for next in record.neighbours where !seen.contains(next) {
                // A link counts when both ends advertise it.
                guard byText[next]?.neighbours.contains(at) == true else { continue }
                if mine.contains(next) { return true }
                seen.insert(next)
                frontier.append(next)
            }
        }
        return false
    }

    /// Whether this node is cut off from most of the network: every node
    /// signs a new version of its record every `recordRefreshRounds`, and
    /// news goes first in every frame, so in one network the versions held
    /// are young; when more than half of the records held (4 or more) have
    /// had no new version for 4 refresh periods, their nodes are out of
    /// reach, though the neighbours still echo them. A node at its target
    /// otherwise never dials again, and an island whose nodes have their
    /// target would stay one.
    func cutOff(_ now: UInt64) -> Bool {
        guard records.count >= 4 else { return false }
        return records.values.filter { now > $0.taken + quietMilliseconds }.count * 2 > records.count
    }

    /// How long a record may go without a new version and still be live (4 refresh periods).
    var quietMilliseconds: UInt64 {
        4 * UInt64(configuration.recordRefreshRounds) * configuration.gossipMilliseconds
    }

    /// Dial every seed that is not a neighbour and not being dialed.
    private func dialSeedsAgain() {
        for d in configuration.seeds where d.key != key && neighbours[d.key] == nil && !dialing.contains(d.key) {
            dial(d)
        }
    }

    /// Live nodes (a new version within `quietMilliseconds`) this node could
    /// reach at an earlier check and cannot now, over links both ends
    /// advertise, starting from its neighbours whose records name it. Nodes
    /// that relay records but advertise few of their links (squatters) keep
    /// two honest parts apart while each hears the other's fresh records
    /// through them, which `cutOff` takes for one network; here those parts
    /// are out of reach. Only nodes once reached count (records can be
    /// minted, and a minted clique no honest node names would make every
    /// node dial its seeds), and only those that signed a new version since
    /// (nodes that went down together keep live records naming each other
    /// for a while: they are gone, not hidden). Updates `reachedBefore`.
    func hiddenNodes(_ now: UInt64) -> Set<String> {
        let byText = recordsByText(clients: false)
        let me = key.text
        var reached: Set<String> = [me]
        var frontier = neighbours.keys.filter {
            !clientPeers.contains($0) && byText[$0.text]?.neighbours.contains(me) == true
        }.map(\.text)
        reached.formUnion(frontier)
        while let at = frontier.popLast() {
            guard let record = byText[at] else { continue }
            for next in record.neighbours where !reached.contains(next) {
                guard byText[next]?.neighbours.contains(at) == true else { continue }
                reached.insert(next)
                frontier.append(next)
            }
        }
        // A node that left keeps a live record for a while, naming neighbours that no longer name it: one
        // with no link both ends advertise is not a part of the network, it is gone.
        var hidden: Set<String> = []
        for (k, known) in records
        where k != key && !known.record.isClient && now <= known.taken + quietMilliseconds
            && !reached.contains(known.record.key) && reachedBefore[known.record.key].map({ known.taken > $0 }) == true
            && known.record.neighbours.contains(where: { byText[$0]?.neighbours.contains(known.record.key) == true })
        {
            hidden.insert(known.record.key)
        }
        // (bounded by the records held: a node whose record goes is forgotten here too)
        reachedBefore = reachedBefore.filter { byText[$0.key] != nil }
        for k in reached where k != me { reachedBefore[k] = now }
        reachedCount = reached.count
        return hidden
    }

    // MARK: - gossip

    func refreshOwnRecord(force: Bool) throws {
        let current = neighbours.keys.filter { !clientPeers.contains($0) }.sorted().map(\.text)
        let anchors = ownAnchors.sorted().map(\.text)
        // (also when short of links it dialed: a full seed then tells it of settled nodes it may dial)
        let seeking = !configuration.client && (countedNeighbours < configuration.targetNeighbours || shortOfOutbound)
        guard force || current != advertisedNeighbours || anchors != advertisedAnchors || seeking != advertisedSeeking
        else { return }
        advertisedNeighbours = current
        advertisedAnchors = anchors
        advertisedSeeking = seeking
        var record = NodeRecord(
            network: configuration.network, key: key.text, agreement: Base64URL.encode(identity.agreement.publicKey),
            host: configuration.host, port: port, version: max(Self.wallClock(), (ownRecord?.version ?? 0) + 1),
            neighbours: current, rates: configuration.rates, exit: configuration.exit && !configuration.client,
            client: configuration.client ? true : nil, wallet: configuration.earningWallet?.address)
        if !configuration.client {
            record.seeking = seeking ? true : nil
            record.family = configuration.family.isEmpty ? nil : configuration.family.map(\.text)
            record.anchors = anchors.isEmpty ? nil : anchors
        }
        // The link record (with the address) goes to neighbours only; the public one is gossiped.
        let (linkSigned, _) = try SignedRecord.sign(record, with: identity, kind: .link)
        ownLinkSigned = linkSigned
        if !configuration.client {
            let (signed, _) = try SignedRecord.sign(record.withoutAddress, with: identity, kind: .gossip)
            ownSigned = signed
        }
        gossipBody = nil
        ownRecord = record.withoutAddress
    }

    func sendGossip(to link: Link) {
        if gossipBody == nil || gossipBody?.tick != ticks { gossipBody = (ticks, buildGossip()) }
        if let bytes = gossipBody?.bytes, !bytes.isEmpty { link.write(.gossip, bytes) }
    }

    /// Our record; then news, the records this node took in the last three
    /// rounds (the most recent first, at most half the frame), so a new
    /// version crosses the network a hop a round; then the next records of a
    /// rotation over the whole table (in key order, from where the last frame
    /// stopped), so every record held reaches each neighbour at least every
    /// `records / (what fits in half a frame)` rounds (about 100 with 4,096
    /// records), however much news there is: the TTL outlasts that. As many
    /// as fit in one link message (256 at most); the same for every
    /// neighbour, so built once a round. Why not the records heard most
    /// recently, as before: with more records than a frame holds, the ones
    /// repeated are the ones heard again, and the rest expire while their
    /// nodes are alive (a model, bench/mesh/gossip.sh, held 19% of 2,000
    /// nodes' records that way, 100% now).
    private func buildGossip() -> [UInt8] {
        var list: [SignedRecord] = ownSigned.map { [$0] } ?? []
        // An element of the JSON array: {"r":"…","s":"…"} and a comma.
        func size(_ signed: SignedRecord) -> Int { 16 + signed.r.utf8.count + signed.s.utf8.count }
        var total = 2 + list.reduce(0) { $0 + size($1) }
        var picked = Set<NodeKey>()
        func append(_ nodeKey: NodeKey, _ signed: SignedRecord) {
            total += size(signed)
            list.append(signed)
            picked.insert(nodeKey)
        }
        let now = Self.now(), limit = configuration.gossipFrameBytes
        let newsSince = now - min(now, 3 * configuration.gossipMilliseconds)
        let news = records.compactMap { $0.value.taken >= newsSince ? ($0.value.taken, $0.key) : nil }
        // News in half the frame: one that does not fit is skipped (a large
        // record never holds back the smaller ones after it).
        for (_, nodeKey) in news.sorted(by: { $0.0 > $1.0 }) where list.count < 256 {
            guard let known = records[nodeKey], !known.record.isClient, total + size(known.signed) < limit / 2
            else { continue }
            append(nodeKey, known.signed)
        }
        // A frame built again within a round (our record changed: a new
        // neighbour) starts the rotation where this round's first did, so
        // the neighbours that got the first miss nothing of the rotation.
        if gossipRound.tick != ticks { gossipRound = (ticks, gossipCursor) }
        let keys = records.keys.sorted()
        let start = gossipRound.cursor.flatMap { cursor in keys.firstIndex { $0 > cursor } } ?? 0
        var rotated = 0
        for i in 0..<keys.count where list.count < 256 {
            let nodeKey = keys[(start + i) % keys.count]
            if let known = records[nodeKey], !known.record.isClient, !picked.contains(nodeKey) {
                if total + size(known.signed) < limit {
                    append(nodeKey, known.signed)
                    rotated += 1
                } else if rotated > 0 && size(known.signed) < limit / 2 {
                    break  // the frame is full: this record's turn comes next round
                }
                // Else it would never fit beside our record and the news (a small --gossip-frame-bytes): passed over.
            }
            gossipCursor = nodeKey
        }
        // The estimate is exact for base64url fields; should it not be, cut until it fits.
        while !list.isEmpty {
            guard let bytes = try? JSONEncoder().encode(list) else { return [] }
            if bytes.count < Link.maxFrame { return Array(bytes) }
            list.removeLast(max(1, list.count / 4))
        }
        return []
    }

    /// What reading one record of a gossip frame costs (decoding the
    /// frame's JSON, a lookup, a key hint), in verifications.
    static let readCost = 1.0 / 16

    /// A GOSSIP frame. Its records cost, in rising order: a repeat of a
    /// record held (the same signed bytes: a lookup), a record refused on its
    /// key hint (our own, or a new key while the table is full), and a record
    /// decoded (JSON) and verified (Ed25519). Reading is paid for by the
    /// frame (`readCost` a record) and each verification by one, out of the
    /// sender's credit and the turn's allowance; past either, records are
    /// dropped unverified, and frames unread once nothing is left. They come
    /// again next round if they matter (every node repeats its news each
    /// round and its whole table over a rotation). A version not newer than
    /// the one held is skipped at read cost (its version read off the bytes,
    /// as its key is); updates of nodes held and new keys take turns.
    private func receiveGossip(_ link: Link, _ body: [UInt8]) {
        let now = Self.now()
        link.refillGossipCredit(now: now, perSecond: configuration.gossipRecordsPerSecond)
        guard link.gossipCredit > 0, gossipAllowanceLeft > 0 else {
            counters.gossipFramesDropped += 1
            return
        }
        guard body.count <= 4 << 20, let list = try? JSONDecoder().decode([SignedRecord].self, from: Data(body)),
            list.count <= 512
        else {
            counters.gossipRejected += 1
            return penalize(link, 10, "malformed gossip")
        }
        let reading = Double(list.count) * Self.readCost
        link.gossipCredit -= reading
        gossipWorkThisTurn += reading
        var updates: [SignedRecord] = [], fresh: [SignedRecord] = []
        let full = recordsBesidesNeighbours >= configuration.maxRecords
        for signed in list {
            // Most gossip repeats records already held: the same signed bytes
            // need no second JSON decode and signature check.
            if let known = recordBySignature[signed.s], let held = records[known], held.signed == signed {
                // A repeat says the record is still around (`heard`, the TTL);
                // only a new version makes it younger (`taken`, the maximum age).
                if held.record.isClient && known != link.peer { continue }
                records[known]?.heard = max(held.heard, now)
                continue
            }
            if expiredSignatures[signed.s] != nil { continue }  // expired here: an echo, not news
            let hint = signed.hints()
            switch hint?.key {
            case let hinted? where hinted == key: continue  // our own record, coming back
            case let hinted?:
                if let held = records[hinted] {
                    // An older version, still travelling: skipped at read cost.
                    if let version = hint?.version, version <= held.record.version { continue }
                    updates.append(signed)
                } else if full {
                    counters.recordsRefused += 1
                } else {
                    fresh.append(signed)
                }
            case nil: fresh.append(signed)
            }
        }
        // Updates and new keys take turns: neither starves the other when the
        // credit runs out (a busy node still learns nodes new to it).
        var order: [SignedRecord] = []
        order.reserveCapacity(updates.count + fresh.count)
        for i in 0..<max(updates.count, fresh.count) {
            if i < updates.count { order.append(updates[i]) }
            if i < fresh.count { order.append(fresh[i]) }
        }
        for signed in order {
            guard link.gossipCredit >= 1 else { counters.gossipOverBudget += 1; continue }
            guard gossipAllowanceLeft >= 1 else { counters.gossipOverTurnLimit += 1; continue }
            link.gossipCredit -= 1
            gossipWorkThisTurn += 1
            do {
                let unverified = try signed.decoded(network: configuration.network)
                let record = unverified.record, nodeKey = unverified.key
                if nodeKey == key { continue }
                // Not newer than what is held: nothing to learn, no signature to check.
                if let held = records[nodeKey], held.record.version >= record.version { continue }
                if records[nodeKey] == nil && !admitNewKey(neighbour: false) { continue }
                try unverified.verify()
                counters.gossipVerified += 1
                merge(record, signed, neighbour: false)
            } catch {
                counters.gossipRejected += 1
                penalize(link, 10, "gossip: \(error)")
                if !link.channel.isActive { return }
            }
        }
    }

    /// What is left of this turn's gossip allowance, in verifications
    /// (reading a frame is charged whole, so it may overdraw). The count
    /// starts again once the loop has handled this turn's reads.
    private var gossipAllowanceLeft: Double {
        if !gossipWorkResetScheduled {
            gossipWorkResetScheduled = true
            loop.execute { [self] in
                gossipWorkThisTurn = 0
                gossipWorkResetScheduled = false
            }
        }
        return Double(configuration.gossipVerificationsPerTurn) - gossipWorkThisTurn
    }

    /// Records held besides our neighbours' (what `maxRecords` caps).
    var recordsBesidesNeighbours: Int {
        records.count - neighbours.keys.reduce(0) { $0 + (records[$1] == nil ? 0 : 1) }
    }

    /// Room for the record of a key not held. A neighbour's own record (from
    /// its handshake) is always taken: neighbours' records are held beyond
    /// `maxRecords` while they are linked (there are at most `maxNeighbours +
    /// maxClients` of them), and one that leaves a full table is dropped
    /// (`linkClosed`), so neither a neighbour nor a stream of them displaces
    /// anything. A record heard in gossip is refused when `maxRecords` are held.
    ///
    /// Why refuse rather than evict: a fresh key costs an attacker one key
    /// pair, so with eviction a peer signing fresh keys would push every real
    /// node's record out within a round or two and leave the node unable to
    /// route. Refused, a flood takes at most the free slots and never
    /// displaces a node already known; new versions of known nodes are always
    /// taken, and flooded keys whose flooder stops sending them expire within
    /// `recordMaxAgeMilliseconds` however often others repeat them, freeing
    /// their slots. The cost: while a flood holds the table, nodes new to
    /// this one are learned only as neighbours.
    private func admitNewKey(neighbour: Bool) -> Bool {
        guard neighbour || recordsBesidesNeighbours < configuration.maxRecords else {
            counters.recordsRefused += 1
            return false
        }
        return true
    }

    private func merge(_ record: NodeRecord, _ signed: SignedRecord, neighbour: Bool) {
        guard let nodeKey = record.nodeKey, nodeKey != key else { return }
        if let known = records[nodeKey], known.record.version >= record.version {
            if known.record.version == record.version { records[nodeKey]?.heard = max(known.heard, Self.now()) }
            return
        }
        if let replaced = records[nodeKey] {
            recordBySignature[replaced.signed.s] = nil
        } else if !admitNewKey(neighbour: neighbour) {
            return
        }
        records[nodeKey] = Known(record: record, signed: signed, heard: Self.now(), taken: Self.now())
        recordBySignature[signed.s] = nodeKey
    }

    /// An introduction: signed link records of nodes looking for neighbours
    /// (their neighbours sent them here because this node had room). Taken
    /// only while this node has room; dialed once, then forgotten.
    private func receiveIntro(_ link: Link, _ body: [UInt8]) {
        // From node neighbours, and from full nodes this node dialed (their reverse introductions); not from clients.
        guard link.initiator || link.peer.map({ neighbours[$0] === link && !clientPeers.contains($0) }) == true
        else { return }
        link.namedInLastIntro = []
        // A group whose introductions keep failing is not listened to for a while: minted records naming
        // somebody else's address would have this node dial it, one a round (seventh review).
        if let failed = introductionFailures[addressGroup(link)], failed.failures >= Self.introductionFailuresAllowed,
            failed.until > Self.now()
        {
            counters.introductionsMuted += 1
            return
        }
        // No room (counted without the introducer: a full seed introduces, then says BYE): nothing decoded or checked.
        let others = nodeNeighbourCount - (link.peer.map { neighbours[$0] === link } == true ? 1 : 0)
        guard others < configuration.maxNeighbours else { return }
        // Every record checked is charged to the gossip budgets (the link's and the turn's), as gossip is: a
        // neighbour streaming introductions gets no more signature checks than one streaming gossip.
        let now = Self.now()
        link.refillGossipCredit(now: now, perSecond: configuration.gossipRecordsPerSecond)
        guard link.gossipCredit > 0, gossipAllowanceLeft > 0 else {
            counters.gossipFramesDropped += 1
            return
        }
        guard body.count <= 65_536, let list = try? JSONDecoder().decode([SignedRecord].self, from: Data(body)),
            list.count <= 4
        else {
            return penalize(link, 10, "malformed introduction")
        }
        let group = addressGroup(link)
        for signed in list {
            // (the turn's allowance was checked for the frame, which may overdraw it by its 4 records: a seed's
            // answer is not lost to a busy turn)
            guard link.gossipCredit >= 1 else {
                counters.gossipOverBudget += 1
                break
            }
            link.gossipCredit -= 1
            gossipWorkThisTurn += 1
            let record: NodeRecord
            do { record = try signed.verified(network: configuration.network, kind: .link) } catch {
                return penalize(link, 10, "introduction: \(error)")
            }
            guard !record.isClient, let d = record.descriptor, d.key != key, neighbours[d.key] == nil,
                Self.mayDial(d.host, from: configuration.host)
            else { continue }
            link.namedInLastIntro.append(d)
            // An entry is never replaced (its time, group or kind): introducing a node again, from anywhere,
            // must not push it out or take a seed's `reverse` away (sixth review).
            guard introduced[d.key] == nil else { continue }
            let fromGroup = introduced.filter { $0.value.from == group }
            if fromGroup.count >= Self.introductionsPerGroup,
                let oldest = fromGroup.min(by: { $0.value.at < $1.value.at })
            {
                introduced[oldest.key] = nil
            }
            guard introduced.count < configuration.maxIntroductions else { break }
            introduced[d.key] = (d, now, group, false)
        }
    }

    func penalize(_ link: Link, _ points: Int, _ why: String) {
        link.penalty += points
        logger.warning(
            "refused input from a link",
            metadata: ["address": "\(link.peerAddress)", "why": "\(why)", "penalty": "\(link.penalty)"])
        guard link.penalty >= configuration.banThreshold else { return }
        let until = Self.now() + configuration.banSeconds * 1_000
        if let peer = link.peer { bannedKeys[peer] = until; records[peer] = nil }
        if let host = link.channel.remoteAddress?.ipAddress, !link.initiator || link.peer != nil {
            bannedHosts[host] = until
        }
        counters.bans += 1
        logger.warning("banned", metadata: ["address": "\(link.peerAddress)", "seconds": "\(configuration.banSeconds)"])
        link.channel.close(promise: nil)
    }

    func isBanned(_ peer: NodeKey, _ host: String?) -> Bool {
        let now = Self.now()
        if let until = bannedKeys[peer], until > now { return true }
        if let host, let until = bannedHosts[host], until > now { return true }
        return false
    }

    // MARK: - the periodic tick

    private func tick() {
        let now = Self.now()
        ticks += 1
        // A new version now and then: others keep a record while one of its
        // versions gets through to them every `recordMaxAgeMilliseconds`.
        try? refreshOwnRecord(force: ticks % configuration.recordRefreshRounds == 0)
        pruneExpired(now: now)
        for (nodeKey, known) in records
        where now - known.heard > configuration.recordTTLMilliseconds
            || now - known.taken > configuration.recordMaxAgeMilliseconds
        {
            records[nodeKey] = nil
            rememberExpired(known.signed.s, now: now)
        }
        recordBySignature = recordBySignature.filter { records[$0.value]?.signed.s == $0.key }
        for (peer, link) in neighbours {
            if now - link.lastHeard > configuration.linkTimeoutMilliseconds {
                logger.info("neighbour silent: dropped", metadata: ["node": "\(peer)"])
                link.channel.close(promise: nil)
                continue
            }
            link.write(.ping, [])
            sendGossip(to: link)
        }
        // Handshakes that never finish.
        for link in links.values
        where !link.established && now - link.opened > configuration.handshakeTimeoutMilliseconds {
            counters.handshakeTimeouts += 1
            links[link.id] = nil
            link.handshake = nil
            link.channel.close(promise: nil)
        }
        // Records carry no addresses: a node dials only its seeds and the nodes introduced to it.
        for (k, entry) in introduced where now - entry.at > 30_000 || neighbours[k] != nil { introduced[k] = nil }
        // Full: nobody introduced will be dialed, and their addresses are not kept.
        if nodeNeighbourCount >= configuration.maxNeighbours { introduced.removeAll() }
        // (the slot kept for a node's own dials is for its seeds, and for the settled nodes a full seed named)
        let dialable =
            nodeNeighbourCount < configuration.maxNeighbours - (shortOfOutbound ? 1 : 0)
            ? introduced : nodeNeighbourCount < configuration.maxNeighbours ? introduced.filter(\.value.reverse) : [:]
        if let (k, entry) = dialable.randomElement() {
            introduced[k] = nil
            if !dialing.contains(k) {
                dial(entry.descriptor)
                if dialing.contains(k) { introducedDials[k] = entry.from }
            }
        }
        if nodeNeighbourCount < configuration.targetNeighbours {
            let wanted = configuration.targetNeighbours - nodeNeighbourCount
            for d in configuration.seeds.shuffled().filter({
                $0.key != key && neighbours[$0.key] == nil && !dialing.contains($0.key)
            }).prefix(wanted) {
                dial(d)
            }
        }
        if configuration.shedRounds > 0 && ticks % configuration.shedRounds == 0 { shedOneLink() }
        // Short of links it dialed (its anchors left, and squatters dialed in),
        // or in an island (a bridge dropped: a link timed out, two nodes shed
        // at once): back through the seeds, every 10 rounds, then 20, 40, ...
        // (at most every 10 shedding periods) while it lasts.
        if ticks >= redialAt {
            let short = shortOfOutbound, island = cutOff(now)
            if (short || island) && nodeNeighbourCount < configuration.maxNeighbours {
                if short { counters.anchorRedials += 1 } else { counters.cutOffRedials += 1 }
                if island { logger.info("cut off from most of the network: dialing the seeds again") }
                dialSeedsAgain()
                redialAt = ticks + redialRounds
                redialRounds = min(redialRounds * 2, max(10, 10 * configuration.shedRounds))
            } else {
                redialAt = ticks + 10
                redialRounds = 10
            }
        }
        // Conditions others can bring about (records they sign, links they advertise or not): checked every 10
        // rounds, and the seeds dialed for them at most once every 10 shedding periods, whatever they do — their
        // own schedule, so that they never put off the redials above.
        if ticks % 10 == 0 {
            let hidden = hiddenNodes(now)
            let split = hidden.intersection(lastHidden).count >= 3
            lastHidden = hidden
            // (below its target by the raw count, a node dials its seeds every round anyway)
            let uncounted =
                nodeNeighbourCount >= configuration.targetNeighbours
                && countedNeighbours < configuration.targetNeighbours
            if (split || uncounted) && ticks >= slowRedialAt && nodeNeighbourCount < configuration.maxNeighbours {
                let period = max(10, 10 * configuration.shedRounds)
                if uncounted {
                    // (this node's own slots: a split, real or shown, must not put this off)
                    counters.uncountedRedials += 1
                    dialSeedsAgain()
                } else {
                    // Every node of a part sees a split at about the same time — and made-up keys that look
                    // like one, gossiped by a single attacker node, make every node see one (sixth review).
                    // So a node dials for it with a chance that makes about `splitDialers` dials per part and
                    // period (a part of that size or less: every node), one seed, at a random round within the
                    // next fifth of the period: never every node dialing every seed in the same few rounds.
                    // The part's size is capped (`splitPartCap`): made-up keys reached through an attacker
                    // would otherwise make the chance as small as it likes (seventh review).
                    let part = min(max(1, reachedCount), Self.splitPartCap)
                    if Double.random(in: 0..<1) < Double(Self.splitDialers) / Double(part) {
                        counters.splitRedials += 1
                        splitDialAt = ticks + Int.random(in: 0...(period / 5))
                    }
                }
                slowRedialAt = ticks + period
            }
        }
        if let at = splitDialAt, ticks >= at {
            splitDialAt = nil
            if nodeNeighbourCount < configuration.maxNeighbours,
                let seed = configuration.seeds.filter({
                    $0.key != key && neighbours[$0.key] == nil && !dialing.contains($0.key)
                        && (refused[$0.key] ?? 0) < now && (keepApart[$0.key] ?? 0) < now
                }).randomElement()
            {
                logger.info("live nodes out of reach: dialing a seed again")
                dial(seed)
            }
        }
        for (g, until) in reverseIntroduced where until < now { reverseIntroduced[g] = nil }
        for (g, until) in refusedIntroduced where until < now { refusedIntroduced[g] = nil }
        for (g, entry) in introductionFailures where entry.until <= now { introductionFailures[g] = nil }
        // Neighbours still looking for neighbours are introduced to others with room, now and then.
        if ticks % 5 == 0 {
            for (peer, link) in neighbours
            where !clientPeers.contains(peer) && records[peer]?.record.isSeeking == true
                && (records[peer]?.record.neighbours.count ?? 0) < configuration.maxNeighbours
                && now - (lastIntroduced[peer] ?? 0) > 5 * configuration.gossipMilliseconds
            {
                introduce(link, to: 1)
            }
        }
        for k in lastIntroduced.keys where neighbours[k] == nil { lastIntroduced[k] = nil }
        deliverBindings()
        for (nodeKey, until) in failedNodes where until < now { failedNodes[nodeKey] = nil }
        // Every table an outsider can grow is bounded, or forgets what expired.
        for (k, until) in bannedKeys where until < now { bannedKeys[k] = nil }
        for (h, until) in bannedHosts where until < now { bannedHosts[h] = nil }
        for (k, until) in refused where until < now { refused[k] = nil }
        for (k, until) in keepApart where until < now { keepApart[k] = nil }
        for (g, until) in keepApartGroups where until < now { keepApartGroups[g] = nil }
        recountCircuitEnds()
        if configuration.exit && ticks % max(1, Int(60_000 / configuration.gossipMilliseconds)) == 0 {
            let host = configuration.host
            ExitPolicy.resolver.async { [weak self] in
                let own = ExitPolicy.ownAddresses(host: host)
                self?.loop.execute { self?.ownAddresses = own }
            }
        }
        circuitTimeouts(now)
        flush()
        writeState()
        accountant?.save(force: false)
    }

    /// Write what this turn of the loop gathered: stream bytes to their
    /// sockets (one write per stream), then link messages (sealed, one per
    /// link unless full). Completions may queue more; the loop takes them too.
    func flush() {
        while !dirty.isEmpty || !dirtyExits.isEmpty || !dirtyOrigins.isEmpty {
            let exits = dirtyExits, origins = dirtyOrigins, links = dirty
            dirtyExits = [:]
            dirtyOrigins = [:]
            dirty = [:]
            for (exit, stream) in exits.values { writeToTarget(exit, stream) }
            for stream in origins.values { writeToClient(stream) }
            for link in links.values { link.flush() }
        }
    }

    // MARK: - accounting

    /// Pay what is due, credit what was received, ban and unban: wallet calls
    /// run off the loop; the book is changed on it.
    func scan() {
        guard let accountant, !scanning else { return }
        scanning = true
        let now = Self.wallClock()
        // A creditor learns which wallet pays for our pseudonym (a binding) before it is paid,
        // so that it credits the payment at once: told as soon as a payment is certain (the debt
        // to it is above what the curve ever leaves unpaid: the permanent allowance, as the curve
        // stands a day later), and a debt due to a creditor not told yet waits one scan for the
        // binding. (It is paid then anyway: a creditor that banned us may refuse the route that
        // carries the binding, though it took the binding.)
        let owed = configuration.consumingWallet == nil ? [] : accountant.due(nowMilliseconds: now)
        let certain = configuration.consumingWallet == nil ? [] : accountant.due(nowMilliseconds: now + 86_400_000)
        bindingsDue.formUnion(certain.map(\.0).filter { !bound.contains($0) })
        let unbound = Set(owed.map(\.0).filter { !bound.contains($0) })
        bindingsDue.formUnion(unbound)
        let due = owed.filter { bound.contains($0.0) || waited.contains($0.0) }
        waited = unbound
        let cursor = accountant.paymentsCursor
        let consuming = configuration.consumingWallet, earning = configuration.earningWallet
        let logger = self.logger
        scanQueue.async {
            var paid: [(String, UInt128, String)] = []
            for (creditor, amount) in due {
                do { paid.append((creditor, amount, try consuming!.pay(to: creditor, amount: amount))) } catch {
                    logger.warning(
                        "payment failed",
                        metadata: ["to": "\(creditor.prefix(16))", "amount": "\(amount)", "error": "\(error)"])
                }
            }
            let received = earning.flatMap { try? $0.payments(after: cursor) }
            let payments = paid
            self.loop.execute {
                for (creditor, amount, txid) in payments {
                    accountant.paid(creditor, amount, txid: txid)
                    // Told until a route through the creditor proves the binding arrived.
                    if !self.bound.contains(creditor) { self.bindingsDue.insert(creditor) }
                    logger.info(
                        "paid", metadata: ["to": "\(creditor.prefix(16))", "amount": "\(amount)", "txid": "\(txid)"])
                }
                if let received {
                    for (from, amount) in received.payments { self.credit(wallet: from, amount) }
                    accountant.paymentsCursor = received.cursor
                    if !received.payments.isEmpty { self.savePayers() }
                }
                let (banned, unbanned) = accountant.updateBans(nowMilliseconds: Self.wallClock())
                for debtor in banned {
                    logger.warning("consumer banned for debt", metadata: ["debtor": "\(debtor.prefix(12))"])
                }
                for debtor in unbanned {
                    logger.info("consumer unbanned", metadata: ["debtor": "\(debtor.prefix(12))"])
                }
                accountant.save(force: false)
                self.scanning = false
            }
        }
    }

    // MARK: - payers (pseudonyms and the wallets bound to them)

    /// What a hop knows of who pays: wallet → the pseudonym it pays for
    /// (from bindings), and payments from wallets not bound yet. Kept in
    /// `<data dir>/payers.json` (0600).
    struct Payers: Codable {
        var bindings: [String: String] = [:]
        var pending: [String: String] = [:]
    }

    static let maxPayers = 100_000

    /// A wallet's payment: credited to the pseudonym it is bound to, else kept until a binding comes.
    func credit(wallet: String, _ amount: UInt128) {
        if let pseudonym = payers.bindings[wallet] {
            accountant?.received(from: pseudonym, amount)
        } else {
            if payers.pending[wallet] == nil && payers.pending.count >= Self.maxPayers,
                let any = payers.pending.keys.first
            {
                payers.pending[any] = nil
            }
            let (sum, overflow) = (UInt128(payers.pending[wallet] ?? "0") ?? 0).addingReportingOverflow(amount)
            payers.pending[wallet] = String(overflow ? UInt128.max : sum)
        }
    }

    /// A binding (verified): payments from `wallet` are `pseudonym`'s, those waiting included.
    func bindPayer(wallet: String, pseudonym: String) {
        guard payers.bindings[wallet] != pseudonym else { return }
        if payers.bindings[wallet] == nil && payers.bindings.count >= Self.maxPayers,
            let any = payers.bindings.keys.first
        {
            payers.bindings[any] = nil
        }
        payers.bindings[wallet] = pseudonym
        if let waiting = payers.pending.removeValue(forKey: wallet).flatMap({ UInt128($0) }), let accountant {
            accountant.received(from: pseudonym, waiting)
            // Paid, now known: unbanned at once if the payment covers the debt (not at the next scan).
            for debtor in accountant.updateBans(nowMilliseconds: Self.wallClock()).unbanned {
                logger.info("consumer unbanned", metadata: ["debtor": "\(debtor.prefix(12))"])
            }
        }
        savePayers()
    }

    func loadPayers() {
        let path = configuration.dataDirectory + "/payers.json"
        guard let file = fopen(path, "rb") else { return }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            bytes += chunk[0..<n]
            if bytes.count > 64 << 20 { return }
        }
        if let loaded = try? JSONDecoder().decode(Payers.self, from: Data(bytes)) { payers = loaded }
    }

    func savePayers() {
        guard let bytes = try? JSONEncoder().encode(payers) else { return }
        let path = configuration.dataDirectory + "/payers.json"
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        fchmod(fd, 0o600)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count else { unlink(temporary); return }
        rename(temporary, path)
    }

    // MARK: - inspection

    public struct State: Codable, Sendable {
        public var key: String
        public var address: String
        public var neighbours: [String]
        public var known: Int
        /// Client records held, and how many of them are neighbours (a client's
        /// record reaches only its neighbours).
        public var clients: Int
        public var clientNeighbours: Int
        /// One line per circuit this node takes part in: what it knows of it.
        public var circuits: [[String: String]]
        public var banned: [String]
        /// Inbound connections in their handshake (at most `maxPendingLinks`).
        public var pending: Int
        /// Where the neighbours listen (what their handshakes said).
        public var neighbourAddresses: [String]
        /// Every node address this node holds: its neighbours', those of the
        /// nodes introduced to it and not dialed yet, and any record's (records
        /// carry none). The tests check that it is the neighbours' only.
        public var addresses: [String]
        public var counters: Counters
        /// Live nodes out of this node's reach over links both ends advertise, at the last check (every 10
        /// rounds, `hiddenNodes`).
        public var hidden: [String] = []
        /// This node's anchors, and the neighbours whose claim to it as their anchor it honours (`protectedLinks`).
        public var anchors: [String]
        public var anchoredBy: [String]
    }

    public func state() -> State {
        var lines: [[String: String]] = []
        for hop in relays.values where hop.forward {
            lines.append(["role": "relay", "previous": hop.previousAddress, "next": hop.nextAddress])
        }
        for exit in exits.values {
            if exit.streams.isEmpty { lines.append(["role": "exit", "previous": exit.previousAddress, "target": ""]) }
            for stream in exit.streams.values {
                lines.append(["role": "exit", "previous": exit.previousAddress, "target": stream.target])
            }
        }
        for stream in streams.values {
            guard let route = stream.route else { continue }
            lines.append([
                "role": "origin", "target": stream.target, "route": route.routeText, "routeID": String(route.id),
                "started": String(stream.started), "phase": stream.phase == .open ? "open" : "building"
            ])
        }
        for route in routes.values where route.streams.isEmpty {
            lines.append([
                "role": "origin", "target": "", "route": route.routeText, "routeID": String(route.id), "phase": "idle"
            ])
        }
        let clientKeys = records.filter { $0.value.record.isClient }.map(\.key)
        let protected = protectedLinks
        return State(
            key: key.text, address: "\(configuration.host):\(port)",
            neighbours: neighbours.keys.filter { !clientPeers.contains($0) }.map(\.text).sorted(),
            known: records.count, clients: clientKeys.count,
            clientNeighbours: clientKeys.filter { neighbours[$0] != nil }.count, circuits: lines,
            banned: bannedHosts.keys.sorted(),
            pending: links.values.filter { !$0.established && !$0.initiator }.count,
            neighbourAddresses: neighbours.values.compactMap(\.listenAddress).sorted(),
            addresses: Array(
                Set(
                    neighbours.values.compactMap(\.listenAddress) + introduced.values.map(\.descriptor.address)
                        + records.values.compactMap {
                            $0.record.host.isEmpty ? nil : "\($0.record.host):\($0.record.port)"
                        })
            ).sorted(),
            counters: counters, hidden: lastHidden.sorted(), anchors: protected.anchors.map(\.text).sorted(),
            anchoredBy: protected.honoured.map(\.text).sorted())
    }

    /// `<data dir>/state.json`, rewritten every tick (for operators and tests).
    /// Mode 0600: it names neighbours, circuits and an exit's targets.
    private func writeState() {
        guard let bytes = try? JSONEncoder().encode(state()) else { return }
        let path = configuration.dataDirectory + "/state.json"
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        // A file left by an older version may have been created with another mode.
        fchmod(fd, 0o600)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count else { unlink(temporary); return }
        rename(temporary, path)
    }
}
