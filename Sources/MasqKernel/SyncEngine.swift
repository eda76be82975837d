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
    }

    public let store: Store
    public var options: Options
    /// The devices whose acknowledgements gate tombstone collection: nil
    /// means the store's paired devices (the user's whole group).
    public var members: [String]?
    private let lock = Lock()
    private var peers: [String: Peer] = [:]
    private var acks = 0
    /// Called after each batch received from a peer (any thread; keep it short).
    public var onProgress: (@Sendable (Progress) -> Void)?
    /// Counts of rejected frames, by reason (malformed, refused commits).
    public private(set) var rejectedFrames = 0

    public init(store: Store, options: Options = Options()) {
        self.store = store
        self.options = options
    }

    /// A peer became reachable: the HELLO to send it.
    public func connected(_ device: String) throws(MasqError) -> [UInt8] {
        let (applied, collected) = try store.syncVectors()
        lock.withLock {
            let peer = peers[device] ?? Peer()
            peer.connected = true
            peer.helloReceived = false
            peer.inFlight = 0
            peer.snapshotKeys = nil
            peers[device] = peer
        }
        return SyncFrame.hello(replica: store.replicaID, applied: applied, collected: collected).encoded()
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
        case .hello(_, let applied, _):
            lock.withLock {
                peer.helloReceived = true
                peer.theirs = applied
                peer.announced = applied
                peer.sent = applied
                peer.inFlight = 0
            }
            try store.recordAcknowledgement(device: device, applied)
            return try pump(device, peer)

        case .commits(let commits):
            var gap = false
            var received: UInt64 = 0
            for commit in commits {
                switch try applyCounted(commit) {
                case .applied: received += 1
                case .duplicate: break
                case .gap: gap = true
                }
            }
            let mine = try store.syncVectors().applied
            lock.withLock { peer.receivedCommits += received }
            report(device, peer, mine)
            var out = [SyncFrame.ack(mine).encoded()]
            if gap { out.append(SyncFrame.hello(replica: store.replicaID, applied: mine, collected: try store.syncVectors().collected).encoded()) }
            return out

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
            if lock.withLock({ acks % max(options.collectEvery, 1) == 0 }) { try collectGarbage() }
            return try pump(device, peer)

        case .snapshot(let records, let final):
            let keys = lock.withLock { () -> Set<SyncKey> in
                var keys = peer.snapshotKeys ?? []
                for r in records { keys.insert(SyncKey(namespace: r.namespace, key: r.key)) }
                peer.snapshotKeys = final == nil ? keys : nil
                return keys
            }
            try store.applySnapshotRecords(records)
            guard let final else { return [] }
            try store.finishSnapshot(vector: final, received: keys)
            let mine = try store.syncVectors().applied
            report(device, peer, mine)
            return [SyncFrame.ack(mine).encoded()]
        }
    }

    /// Frames to push to every connected peer after local writes (or after
    /// receiving commits other peers may lack).
    public func pending() throws(MasqError) -> [(device: String, frame: [UInt8])] {
        let ready = lock.withLock { peers.filter { $0.value.connected && $0.value.helloReceived }.map { ($0.key, $0.value) } }
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
            for peer in peers.values where peer.connected && peer.inFlight > 0
                && now >= peer.waitingSince + options.resendAfterMilliseconds {
                peer.inFlight = 0
                peer.sent = peer.theirs
                any = true
            }
            return any
        }
    }

    /// Whether every one of `devices` has said HELLO (so its vector is known).
    public func heardFrom(_ devices: Set<String>) -> Bool {
        lock.withLock { devices.allSatisfy { peers[$0]?.helloReceived == true } }
    }

    /// Status toward each peer that has said HELLO: what it has, what it
    /// still lacks from us, what we still lack from it.
    public func status() throws(MasqError) -> [(device: String, connected: Bool, theyLack: UInt64, weLack: UInt64, lastSeen: UInt64)] {
        let mine = try store.syncVectors().applied
        return lock.withLock {
            peers.map { device, p in
                let theyLack = mine.entries.reduce(UInt64(0)) { $0 + ($1.value > p.theirs[$1.key] ? $1.value - p.theirs[$1.key] : 0) }
                let weLack = p.announced.entries.reduce(UInt64(0)) { $0 + ($1.value > mine[$1.key] ? $1.value - mine[$1.key] : 0) }
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
            let (ready, sent) = lock.withLock { (peer.helloReceived && peer.inFlight < options.window, peer.sent) }
            guard ready else { return out }
            guard let commits = try store.exportCommits(after: sent, maxCommits: options.maxCommitsPerFrame, maxBytes: options.maxBytesPerFrame) else {
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
        let vector = try store.syncVectors().applied
        var frames: [[UInt8]] = []
        var cursor: [UInt8]?
        repeat {
            let chunk = try store.snapshotChunk(after: cursor, maxBytes: options.maxBytesPerFrame)
            cursor = chunk.next
            frames.append(SyncFrame.snapshot(records: chunk.records, final: cursor == nil ? vector : nil).encoded())
        } while cursor != nil
        lock.withLock {
            peer.sent = vector
            if peer.inFlight == 0 { peer.waitingSince = Clock.unixMilliseconds() }
            peer.inFlight += 1     // the final chunk is acknowledged like a batch
        }
        return frames
    }

    private func applyCounted(_ commit: SyncCommit) throws(MasqError) -> Store.ApplyResult {
        do throws(MasqError) {
            return try store.applyRemote(commit, clockBound: options.clockBound)
        } catch {
            lock.withLock { rejectedFrames += 1 }
            Log.warn("sync", "refused commit \(commit.seq) of replica \(String(commit.origin, radix: 16)): \(error.message)")
            return .gap    // not applied: it will be offered again
        }
    }

    private func report(_ device: String, _ peer: Peer, _ mine: VersionVector) {
        guard let onProgress else { return }
        let (received, announced) = lock.withLock { (peer.receivedCommits, peer.announced) }
        let remaining = announced.entries.reduce(UInt64(0)) { $0 + ($1.value > mine[$1.key] ? $1.value - mine[$1.key] : 0) }
        onProgress(Progress(device: device, received: received, remaining: remaining))
    }
}
