/// Keeps a store in sync with its peers, one conversation per peer device,
/// over any transport that delivers frames (possibly late, duplicated or
/// lost: every step is idempotent, and a reconnect starts over from what the
/// other side says it has).
///
/// On connect each side says HELLO with its version vector; each then sends
/// the other the commits it lacks, in bounded batches, at most `window`
/// unacknowledged at a time; ACKs carry the receiver's vector. A peer behind
/// the sender's collection horizon first gets a snapshot. New local (or newly
/// received) commits are pushed to connected peers as they happen.
public final class SyncEngine: @unchecked Sendable {
    public struct Options: Sendable {
        public var maxCommitsPerFrame = 1_000
        public var maxBytesPerFrame = 1 << 20
        /// Frames of commits sent and not yet acknowledged, per peer.
        public var window = 4
        public var clockBound = Store.defaultClockBound
        /// Collect acknowledged tombstones after this many ACKs.
        public var collectEvery = 64
        /// Frames unacknowledged this long are taken as lost (a relay drops
        /// deliveries to a member that cannot keep up): the peer is resent
        /// everything after what it acknowledged.
        public var resendAfterMilliseconds: UInt64 = 5_000
        public init() {}
    }

    /// Catch-up progress toward one peer: commits received from it so far, and
    /// how many it announced that this replica still lacks.
    public struct Progress: Sendable, Equatable {
        public var device: String
        public var received: UInt64
        public var remaining: UInt64
    }

    final class Peer {
        var connected = false
        /// What the peer says it has applied (HELLO, ACK).
        var theirs = VersionVector()
        /// What it announced having (for progress).
        var announced = VersionVector()
        /// What has been sent to it (ahead of `theirs` while frames are in flight).
        var sent = VersionVector()
        var helloReceived = false
        var inFlight = 0
        /// When the oldest unanswered frame was sent, or the last ACK came.
        var waitingSince: UInt64 = 0
        var receivedCommits: UInt64 = 0
        var snapshotKeys: Set<SyncKey>?
        var lastSeen: UInt64 = 0
        /// Origins whose next commit the peer refused: not resent before `until`.
        var heldBack: [UInt64: (until: UInt64, backoff: UInt64)] = [:]
        /// Wall and monotonic clocks when the last refusal came: a jump of the
        /// wall clock since (the user set it right) ends every wait at once.
        var refusedAt: (wall: UInt64, monotonic: UInt64)?
        /// The peer repaired damage and asked for a whole copy.
        var snapshotRequested = false
        /// The last refusal the peer sent us, and the last we sent it (for status).
        var refusedByPeer: SyncFrame.Refusal?
        var refusedFromPeer: SyncFrame.Refusal?
        /// The namespaces the peer keeps (nil: all), from its HELLO, and its
        /// replica id: a filtered peer relays only its own commits.
        var filter: NamespaceFilter?
        var replica: UInt64 = 0
    }

    /// The first wait after a refusal before offering the commit again; it
    /// doubles on every further refusal up to `maxRefusalBackoff`.
    public static let refusalBackoff: UInt64 = 15_000
    /// Two wall clocks this close agree (network delay and small drift).
    public static let clockAgreement: UInt64 = 120_000
    public static let maxRefusalBackoff: UInt64 = 300_000

    public let store: Store
    public var options: Options
    /// The namespaces this device keeps (docs/PROTOCOL.md, "Selective sync");
    /// from the config's "sync" section unless set before sync starts.
    public var filter: NamespaceFilter
    /// The devices whose acknowledgements gate tombstone collection: nil
    /// means the store's paired devices (the user's whole group).
    public var members: [String]?
    private let lock = Lock()
    private var peers: [String: Peer] = [:]
    private var acks = 0
    /// Called after each batch received from a peer (any thread; keep it short).
    public var onProgress: (@Sendable (Progress) -> Void)?
    /// Called, during `receive`, with every value applied from a peer that
    /// starts like a blob reference (the sync service fetches its contents).
    var onBlobReference: (([UInt8]) -> Void)?
    /// Counts of rejected frames, by reason (malformed, refused commits).
    public private(set) var rejectedFrames = 0

    public init(store: Store, options: Options = Options()) {
        self.store = store
        self.options = options
        filter = store.config.sync.filter
    }

    /// A filtered device sends others only its own commits (it holds theirs incompletely).
    private var ownOnly: UInt64? { filter.keepsAll ? nil : store.replicaID }

    /// A peer became reachable: the HELLO to send it.
    public func connected(_ device: String) throws(MasqError) -> [UInt8] {
        lock.withLock {
            let peer = peers[device] ?? Peer()
            peer.connected = true
            peer.helloReceived = false
            peer.inFlight = 0
            peer.snapshotKeys = nil
            peers[device] = peer
        }
        return try helloFrame()
    }

    private func helloFrame() throws(MasqError) -> [UInt8] {
        let (applied, collected) = try store.syncVectors()
        return SyncFrame.hello(
            replica: store.replicaID, applied: applied, collected: collected, tips: try store.tips(of: applied),
            wantsSnapshot: store.wantsSnapshot, filter: filter.keepsAll ? nil : filter
        ).encoded()
    }

    public func disconnected(_ device: String) {
        lock.withLock {
            peers[device]?.connected = false
            peers[device]?.helloReceived = false
        }
    }

    /// Handle a frame from `device`; returns the frames to send back to it.
    /// A malformed frame throws (MASQ_E_INVALID) and changes nothing.
    public func receive(_ bytes: [UInt8], from device: String) throws(MasqError) -> [[UInt8]] {
        let frame: SyncFrame
        do throws(MasqError) { frame = try SyncFrame.decode(bytes) } catch {
            lock.withLock { rejectedFrames += 1 }
            throw error
        }
        let peer = lock.withLock { () -> Peer in
            let peer = peers[device] ?? Peer()
            peers[device] = peer
            peer.connected = true
            peer.lastSeen = Clock.unixMilliseconds()
            return peer
        }
        switch frame {
        case .hello(let replica, let applied, _, let tips, let wantsSnapshot, let peerFilter):
            // A peer holding commits of ours we do not have: this store went back
            // in time. Continue under a new identity before anything else.
            var out: [[UInt8]] = []
            if try store.peerShowsRollback(theirs: applied, tips: tips) {
                try store.reidentify(.rollback(peer: device))
                out.append(try helloFrame())
            }
            // A refusal of the peer's own commits is over when it greets under a new
            // replica id: it re-stamped them (clock repair) or started over (rollback).
            let identityChanged = lock.withLock { () -> Bool in
                guard let r = peer.refusedFromPeer, peer.replica == r.origin, replica != r.origin else { return false }
                peer.refusedFromPeer = nil
                return true
            }
            lock.withLock {
                peer.helloReceived = true
                peer.theirs = applied
                peer.announced = applied
                peer.sent = applied
                peer.inFlight = 0
                peer.snapshotRequested = wantsSnapshot
                peer.filter = peerFilter
                peer.replica = replica
            }
            try store.recordAcknowledgement(device: device, applied)
            try resolveRefusal(device, peer, theirs: applied)
            if identityChanged { try store.setSyncProblem(device: device, problem(with: device)) }
            return out + (try pump(device, peer))

        case .commits(let commits):
            var gap = false
            var received: UInt64 = 0
            var appliedOrigins: Set<UInt64> = []
            var refusal: SyncFrame.Refusal?
            for var commit in commits {
                // After a refusal, later commits of the same origin are gaps: say nothing more of them.
                if let refusal, refusal.origin == commit.origin { continue }
                // Namespaces this device does not keep are left out (whatever the sender sent).
                if !filter.keepsAll { commit.records.removeAll { !filter.keeps($0.namespace) } }
                switch applyCounted(commit, from: device) {
                case .success(.applied):
                    received += 1
                    appliedOrigins.insert(commit.origin)
                    noticeBlobs(commit.records)
                case .success(.duplicate): break
                case .success(.gap): gap = true
                case .failure(let refused): refusal = refusal ?? refused
                }
            }
            let mine = try store.syncVectors().applied
            let (was, now) = lock.withLock { () -> (SyncFrame.Refusal?, SyncFrame.Refusal?) in
                peer.receivedCommits += received
                let was = peer.refusedFromPeer
                // A refusal is over once a commit of the refused origin applies.
                if let refusal {
                    peer.refusedFromPeer = refusal
                } else if let was = peer.refusedFromPeer, appliedOrigins.contains(was.origin) {
                    peer.refusedFromPeer = nil
                }
                return (was, peer.refusedFromPeer)
            }
            if let now, now != was { try store.setSyncProblem(device: device, Self.describe(now, mine: false)) }
            if now == nil && was != nil { try store.setSyncProblem(device: device, nil) }
            report(device, peer, mine)
            var out = [SyncFrame.ack(mine).encoded()]
            // A refusal is answered once, with its reason (never a HELLO, which
            // would make the sender resend at once, in a loop).
            if let refusal {
                out.append(SyncFrame.refused(refusal).encoded())
            } else if gap {
                out.append(try helloFrame())
            }
            return out

        case .refused(let refusal):
            let now = Clock.unixMilliseconds()
            // Evidence that this replica's clock ran ahead: the peer refuses its commit as
            // stamped in the future while the two wall clocks agree. Re-stamp (a new replica
            // id) and greet again: the refused commits are replaced by acceptable ones.
            if refusal.reason == .futureClock, refusal.origin == store.replicaID,
                max(now, refusal.receiverTime) - min(now, refusal.receiverTime) <= Self.clockAgreement,
                HybridLogicalClock.milliseconds(of: refusal.timestamp) > now + options.clockBound
            {
                try store.reidentify(.clockAhead)
                lock.withLock {
                    peer.refusedByPeer = nil
                    peer.heldBack[refusal.origin] = nil
                    peer.inFlight = 0
                }
                try store.setSyncProblem(device: device, nil)
                return [try helloFrame()]
            }
            lock.withLock {
                let backoff =
                    peer.heldBack[refusal.origin].map { min($0.backoff * 2, Self.maxRefusalBackoff) }
                    ?? Self.refusalBackoff
                peer.heldBack[refusal.origin] = (now + backoff, backoff)
                peer.refusedAt = (now, Clock.monotonicNanoseconds() / 1_000_000)
                peer.refusedByPeer = refusal
                peer.inFlight = 0
                peer.sent = peer.theirs
            }
            Log.warn(
                "sync",
                "device \(device) refused commit \(refusal.seq) of replica \(String(refusal.origin, radix: 16)): \(Self.describe(refusal, mine: true))"
            )
            try store.setSyncProblem(device: device, Self.describe(refusal, mine: true))
            return try pump(device, peer)

        case .ack(let vv):
            lock.withLock {
                peer.theirs.merge(vv)
                peer.inFlight = max(0, peer.inFlight - 1)
                peer.waitingSince = Clock.unixMilliseconds()
                // Nothing in flight but not all acknowledged: frames were lost; resend from what it has.
                if peer.inFlight == 0 { peer.sent = peer.theirs }
                acks += 1
            }
            try store.recordAcknowledgement(device: device, vv)
            try resolveRefusal(device, peer, theirs: lock.withLock { peer.theirs })
            if lock.withLock({ acks % max(options.collectEvery, 1) == 0 }) { try collectGarbage() }
            return try pump(device, peer)

        case .snapshot(var records, let final):
            if !filter.keepsAll { records.removeAll { !filter.keeps($0.namespace) } }
            let keys = lock.withLock { () -> Set<SyncKey> in
                var keys = peer.snapshotKeys ?? []
                for r in records { keys.insert(SyncKey(namespace: r.namespace, key: r.key)) }
                peer.snapshotKeys = final == nil ? keys : nil
                return keys
            }
            try store.applySnapshotRecords(records, clockBound: options.clockBound)
            noticeBlobs(records)
            guard let final else { return [] }
            try store.finishSnapshot(vector: final, received: keys, keeping: filter.keepsAll ? nil : filter)
            let mine = try store.syncVectors().applied
            report(device, peer, mine)
            return [SyncFrame.ack(mine).encoded()]
        }
    }

    private func noticeBlobs(_ records: [SyncRecord]) {
        guard let onBlobReference else { return }
        for r in records where !r.header.tombstone && !r.header.counter && r.value.first == BlobReference.magic[0] {
            onBlobReference(r.value)
        }
    }

    /// Frames to push to every connected peer after local writes (or after
    /// receiving commits other peers may lack).
    public func pending() throws(MasqError) -> [(device: String, frame: [UInt8])] {
        let ready = lock.withLock {
            peers.filter { $0.value.connected && $0.value.helloReceived }.map { ($0.key, $0.value) }
        }
        var out: [(device: String, frame: [UInt8])] = []
        for (device, peer) in ready.sorted(by: { $0.0 < $1.0 }) {
            for frame in try pump(device, peer) { out.append((device, frame)) }
        }
        return out
    }

    /// Give up waiting on frames unacknowledged for `resendAfterMilliseconds`
    /// (lost on the way, or their ACK was): the next `pending()` resends from
    /// what each such peer acknowledged. Returns whether any peer stalled.
    public func resendStalled() -> Bool {
        let now = Clock.unixMilliseconds()
        return lock.withLock {
            var any = false
            for peer in peers.values
            where peer.connected && peer.inFlight > 0
                && now >= peer.waitingSince + options.resendAfterMilliseconds
            {
                peer.inFlight = 0
                peer.sent = peer.theirs
                any = true
            }
            // The wall clock jumped since a refusal (it was set right): offer again now.
            let monotonic = Clock.monotonicNanoseconds() / 1_000_000
            for peer in peers.values where peer.connected {
                guard let at = peer.refusedAt else { continue }
                let wall = Int64(bitPattern: now &- at.wall), steady = Int64(bitPattern: monotonic &- at.monotonic)
                if abs(wall - steady) > 60_000 {
                    for (origin, hold) in peer.heldBack { peer.heldBack[origin] = (0, hold.backoff) }
                    peer.refusedAt = nil
                    any = true
                }
            }
            // A refused origin whose wait is over is offered again (once per wait).
            for peer in peers.values
            where peer.connected && peer.heldBack.contains(where: { $0.value.until <= now && $0.value.until != 0 }) {
                for (origin, hold) in peer.heldBack where hold.until <= now && hold.until != 0 {
                    peer.heldBack[origin] = (0, hold.backoff)
                }
                any = true
            }
            return any
        }
    }

    /// A refusal by the peer is over once it holds what was refused, or this
    /// store has nothing more of that origin for it (after a clock repair the
    /// refused commits went back to their writer under a new replica id).
    private func resolveRefusal(_ device: String, _ peer: Peer, theirs: VersionVector) throws(MasqError) {
        guard let refused = lock.withLock({ peer.refusedByPeer }) else { return }
        let mine = try store.syncVectors().applied
        guard theirs[refused.origin] >= refused.seq || theirs[refused.origin] >= mine[refused.origin] else { return }
        lock.withLock {
            peer.refusedByPeer = nil
            peer.heldBack[refused.origin] = nil
        }
        try store.setSyncProblem(device: device, nil)
    }

    /// What holds sync back with `device`, in words for the user (nil when nothing does).
    public func problem(with device: String) -> String? {
        lock.withLock { () -> String? in
            guard let peer = peers[device] else { return nil }
            if let r = peer.refusedByPeer { return Self.describe(r, mine: true) }
            if let r = peer.refusedFromPeer { return Self.describe(r, mine: false) }
            return nil
        }
    }

    /// A refusal in words: `mine` from the side whose commit was refused.
    static func describe(_ r: SyncFrame.Refusal, mine: Bool) -> String {
        switch r.reason {
        case .futureClock:
            let ahead = HybridLogicalClock.milliseconds(of: r.timestamp) &- r.receiverTime
            let minutes = max(1, (ahead + 30_000) / 60_000)
            return mine
                ? "your clock is \(minutes) minute(s) ahead of this device's: it refuses your changes until the clocks agree (set the clock right; they are then sent again)"
                : "refusing its changes: its clock is \(minutes) minute(s) ahead of this device's"
        case .limits:
            return mine
                ? "it refuses a change that exceeds its limits" : "refusing a change that exceeds this store's limits"
        case .storage:
            return mine
                ? "it cannot store your changes (full disk or I/O error)"
                : "cannot store its changes (full disk or I/O error)"
        case .invalid:
            return mine ? "it refuses one of your changes as invalid" : "refusing one of its changes as invalid"
        }
    }

    /// Whether every one of `devices` has said HELLO (so its vector is known).
    public func heardFrom(_ devices: Set<String>) -> Bool {
        lock.withLock { devices.allSatisfy { peers[$0]?.helloReceived == true } }
    }

    /// Status toward each peer that has said HELLO: what it has, what it
    /// still lacks from us, what we still lack from it.
    public func status() throws(MasqError) -> [(
        device: String, connected: Bool, theyLack: UInt64, weLack: UInt64, lastSeen: UInt64
    )] {
        let mine = try store.syncVectors().applied
        return lock.withLock {
            peers.map { device, p in
                let theyLack = mine.entries.reduce(UInt64(0)) {
                    $0 + ($1.value > p.theirs[$1.key] ? $1.value - p.theirs[$1.key] : 0)
                }
                let weLack = Self.lacking(p, mine)
                return (device, p.connected, theyLack, weLack, p.lastSeen)
            }.sorted { $0.device < $1.device }
        }
    }

    /// Forget tombstones every member has acknowledged.
    public func collectGarbage() throws(MasqError) {
        try store.collectGarbage(acknowledged: store.acknowledgedVectors(of: members))
    }

    // MARK: - sending

    /// Send `peer` what it lacks: a snapshot if it is behind our collection
    /// horizon, else commit batches up to the window.
    private func pump(_ device: String, _ peer: Peer) throws(MasqError) -> [[UInt8]] {
        var out: [[UInt8]] = []
        while true {
            let (ready, sent, held, peerFilter) = lock.withLock {
                () -> (Bool, VersionVector, Set<UInt64>, NamespaceFilter?) in
                let now = Clock.unixMilliseconds()
                return (
                    peer.helloReceived && peer.inFlight < options.window, peer.sent,
                    Set(peer.heldBack.filter { $0.value.until > now }.keys), peer.filter
                )
            }
            guard ready else { return out }
            if lock.withLock({ peer.snapshotRequested }) {
                lock.withLock { peer.snapshotRequested = false }
                out += try snapshot(for: peer)
                continue
            }
            guard
                let commits = try store.exportCommits(
                    after: sent, maxCommits: options.maxCommitsPerFrame, maxBytes: options.maxBytesPerFrame,
                    holdBack: held, keeping: peerFilter, onlyOrigin: ownOnly)
            else {
                out += try snapshot(for: peer)
                continue
            }
            guard !commits.isEmpty else { return out }
            lock.withLock {
                for c in commits where c.seq > peer.sent[c.origin] { peer.sent[c.origin] = c.seq }
                if peer.inFlight == 0 { peer.waitingSince = Clock.unixMilliseconds() }
                peer.inFlight += 1
            }
            out.append(SyncFrame.commits(commits).encoded())
        }
    }

    /// The whole store in chunks, the last carrying the vector it reflects;
    /// deltas continue from that vector.
    private func snapshot(for peer: Peer) throws(MasqError) -> [[UInt8]] {
        var vector = try store.syncVectors().applied
        // A filtered device vouches for its own records only.
        if let own = ownOnly { vector = VersionVector([own: vector[own]]) }
        let peerFilter = lock.withLock { peer.filter }
        var frames: [[UInt8]] = []
        var cursor: [UInt8]?
        repeat {
            let chunk = try store.snapshotChunk(
                after: cursor, maxBytes: options.maxBytesPerFrame, keeping: peerFilter, onlyReplica: ownOnly)
            cursor = chunk.next
            frames.append(SyncFrame.snapshot(records: chunk.records, final: cursor == nil ? vector : nil).encoded())
        } while cursor != nil
        lock.withLock {
            peer.sent = vector
            if peer.inFlight == 0 { peer.waitingSince = Clock.unixMilliseconds() }
            peer.inFlight += 1  // the final chunk is acknowledged like a batch
        }
        return frames
    }

    /// Apply one commit; a commit that cannot be applied becomes a refusal
    /// with its reason (it stays unapplied, and its sender is told why).
    private func applyCounted(_ commit: SyncCommit, from device: String) -> Result<Store.ApplyResult, SyncFrame.Refusal>
    {
        let now = Clock.unixMilliseconds()
        let reason: SyncFrame.Refusal.Reason
        let message: String
        if Store.futureSkew(
            [commit.timestamp] + commit.records.map(\.header.version.timestamp), bound: options.clockBound) != nil
        {
            reason = .futureClock
            message = "timestamped beyond the clock bound"
        } else {
            do throws(MasqError) {
                return .success(try store.applyRemote(commit, clockBound: options.clockBound))
            } catch {
                switch error.status {
                case .tooLarge: reason = .limits
                case .io, .busy, .noMemory: reason = .storage
                default: reason = error.message.contains("exceeds this store's limits") ? .limits : .invalid
                }
                message = error.message
            }
        }
        lock.withLock { rejectedFrames += 1 }
        Log.warn(
            "sync",
            "refused commit \(commit.seq) of replica \(String(commit.origin, radix: 16)) from \(device): \(message)")
        let latest = ([commit.timestamp] + commit.records.map(\.header.version.timestamp)).max() ?? commit.timestamp
        return .failure(
            SyncFrame.Refusal(
                reason: reason, origin: commit.origin, seq: commit.seq, timestamp: latest, receiverTime: now))
    }

    /// Commits `p` announced that this replica lacks and can get from it: a
    /// filtered peer relays only its own.
    private static func lacking(_ p: Peer, _ mine: VersionVector) -> UInt64 {
        if p.filter != nil {
            return p.announced[p.replica] > mine[p.replica] ? p.announced[p.replica] - mine[p.replica] : 0
        }
        return p.announced.entries.reduce(UInt64(0)) { $0 + ($1.value > mine[$1.key] ? $1.value - mine[$1.key] : 0) }
    }

    private func report(_ device: String, _ peer: Peer, _ mine: VersionVector) {
        guard let onProgress else { return }
        let (received, remaining) = lock.withLock { (peer.receivedCommits, Self.lacking(peer, mine)) }
        onProgress(Progress(device: device, received: received, remaining: remaining))
    }
}
