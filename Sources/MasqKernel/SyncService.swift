import CMasq
import Dispatch
import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// Runs sync for a store over its configured transports: joins the group's
/// room, learns which paired devices are present, seals every sync frame with
/// the Double Ratchet session of the pair of devices, and feeds the sync
/// engine. Everything runs on one serial queue, off the transports' threads.
///
/// Room payloads (docs/PROTOCOL.md):
///   u8 type · body
///   1 SEALED   : [10] recipient · [10] sender · ratchet message (AD = room · type · recipient · sender)
///   2 PRESENT  : [10] sender           ("I am here")
///   3 WHO      : [10] sender           ("I am here; who else is?")
///   4 RENEW    : [10] recipient · [10] sender · u8 step (1, 2) · Noise KK message
///
/// Sessions are renewed before this service seals anything with a device:
/// every start renews each session with a fresh Noise KK handshake between
/// the two device keys, so a store restored from a copy never seals under a
/// message key it used before; a session that fails (messages that do not
/// open, or too many sent without an answer) is renewed the same way. What
/// makes this side seal is bounded: at most `maxUnanswered` messages to a
/// device without hearing from it, so forged presence cannot push a peer's
/// ratchet past what it can skip.
public final class SyncService: @unchecked Sendable {
    public struct Status: Sendable {
        public var connected: Bool
        public var room: String
        public var devices: [DeviceStatus]
        /// Local commits some present device still lacks.
        public var pending: UInt64
        /// Room payloads received, and those refused (malformed, unknown
        /// type, from an unpaired device, failing to open).
        public var framesReceived: Int
        public var framesRejected: Int
        /// Each transport's own counters (its plugin's `stats`), by plugin name.
        public var transports: [(plugin: String, stats: [String: UInt64])]
        /// Blobs being fetched, and what this run carried (BlobTransfer.swift).
        public var blobs: [BlobFetchStatus] = []
        public var blobCounters = BlobTransferCounters()
    }

    public struct DeviceStatus: Sendable {
        public var deviceID: String
        public var name: String
        public var present: Bool
        public var theyLack: UInt64
        public var weLack: UInt64
        public var lastSeen: UInt64  // Unix ms, 0 = never
        /// What holds sync with this device back, in words (nil: nothing).
        public var problem: String?
    }

    /// Where the session with one device stands in this run.
    private final class PeerSession {
        enum State {
            /// Not renewed in this run: nothing is sealed with it.
            case stale
            /// A renewal this side started, waiting for the answer.
            case renewing(SessionRenewal)
            case ready
        }
        var state = State.stale
        /// Messages sealed for the device since it was last heard from.
        var unanswered = 0
        /// When the last renewal was started (or answered), and the wait before another.
        var lastRenewal: UInt64 = 0
        var renewalWait: UInt64 = SyncService.renewalInterval
        /// Messages from the device that did not open since it was last understood.
        var failures = 0
        /// Renewals this side started that have not completed.
        var attempts = 0
        /// When this side last answered the device's renewal (answers cost two X25519s and a write).
        var lastAnswered: UInt64 = 0
        var problem: String?
        /// When this side last sent the device a NOTICE, and the time of the last one it accepted from it.
        var lastNoticeSent: UInt64 = 0
        var lastNoticeReceived: UInt64 = 0
        /// Whether a stored "cannot store" problem was looked at since a frame from it opened in this run.
        var storedNoticeChecked = false
        /// Renewals made because its HELLO never came, in a row (then this side backs off).
        var missingHelloRenewals = 0
    }

    /// Most messages sealed for a device without hearing from it; then the
    /// session is renewed (which needs the device to answer) instead.
    public static let maxUnanswered = 200
    /// The first wait between renewal attempts; doubles up to `maxRenewalInterval`.
    public static let renewalInterval: UInt64 = 2_000
    public static let maxRenewalInterval: UInt64 = 60_000

    public let store: Store
    public let engine: SyncEngine
    /// Blob contents: WANT, CHUNK and LACK frames (BlobTransfer.swift).
    private var transfer: BlobTransfer!
    private var lastBlobCollection: UInt64 = 0
    /// Unreferenced blob chunks are collected this often while sync runs.
    public var blobCollectionInterval: UInt64 = 600_000
    private let queue = DispatchQueue(label: "masq.sync")
    private var transports: [(TransportPluginInstance, endpoint: String?)] = []
    private let transportReferences: [PluginReference]
    private let room: [UInt8]
    private let roomText: String
    private let me: [UInt8]
    private var present: Set<String> = []
    private var helloed: Set<String> = []
    private var sessions: [String: PeerSession] = [:]
    private var identityEpoch = 0
    private var watchID: UInt64?
    private var pumpScheduled = false
    /// Indexes of the transports that can send now (MASQ_TRANSPORT_UP, or a frame arrived).
    private var transportsUp: Set<Int> = []
    private var transportUp: Bool { !transportsUp.isEmpty }
    private var stopped = false
    private var timer: DispatchSourceTimer?
    private var lastLocalSeq: UInt64 = 0
    /// How often to look for commits other processes made to this store.
    public var pollInterval: Double = 0.5
    private(set) public var framesReceived = 0
    private(set) public var framesRejected = 0
    /// A frame bigger than this (what the transports carry, less sealing) goes
    /// as FRAGMENTs (docs/PROTOCOL.md).
    private var fragmentBytes = 1 << 20
    private var nextMessageID: UInt32 = 0
    /// One message being reassembled per device (its fragments may come in
    /// any order; a fragment of another message replaces it, and the engine
    /// resends what was not acknowledged).
    private var reassembly: [String: Reassembly] = [:]
    private struct Reassembly {
        let id: UInt32
        let count: UInt32
        var parts: [UInt32: ArraySlice<UInt8>] = [:]
        var bytes = 0
    }
    /// The smallest frame a transport must carry for sync (fragments of at
    /// least 16 KiB keep the largest message within the ratchet's skip bound).
    static let minTransportFrameBytes = (16 << 10) + sealingOverhead + fragmentHeaderBytes
    static let fragmentHeaderBytes = 14

    /// A device in no group yet gets a room of its own (pairing will share it).
    /// `transports` replaces the config's (a host that changed its config
    /// file after opening the store, e.g. after pairing through a relay).
    public init(store: Store, options: SyncEngine.Options = SyncEngine.Options(), transports: [PluginReference]? = nil)
        throws(MasqError)
    {
        self.store = store
        transportReferences = transports ?? store.config.transports
        engine = SyncEngine(store: store, options: options)
        room = try store.groupRoom()
        roomText = hex(room)
        me = try Self.idBytes(store.requireIdentity().publicKeys.deviceID)
        identityEpoch = store.identityEpoch
        transfer = BlobTransfer(
            store: store, mode: store.config.sync.blobs,
            scheduleSave: { [unowned self] in
                self.queue.async { [weak self] in self?.transfer.save() }
            }
        ) { [unowned self] frame, device in
            (try? self.deliver(frame, to: device)) ?? false
        }
        // References applied from peers are noticed on this queue, before the frame's
        // answer: `syncOnce` cannot take the blob for settled in between.
        engine.onBlobReference = { [unowned self] value in self.transfer.noticed(value) }
    }

    static func idBytes(_ deviceID: String) throws(MasqError) -> [UInt8] {
        // Device ids are written in lowercase hex only.
        guard deviceID.utf8.count == 20,
            deviceID.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }),
            let bytes = Hex.decode(deviceID)
        else { throw .invalid("malformed device id \(deviceID)") }
        return bytes
    }

    /// Open the configured transports, join the room, announce presence.
    public func start() throws(MasqError) {
        guard !transportReferences.isEmpty else {
            throw .config(
                "no transport configured: add {\"plugin\": \"relay\", \"options\": {\"url\": \"ws://HOST:PORT/\"}} to \"transports\""
            )
        }
        for (index, reference) in transportReferences.enumerated() {
            let endpoint = reference.options.first { $0.key == "url" }?.value
            let transport = try store.openTransport(
                reference,
                onFrame: { [weak self] _, room, frame in
                    guard let service = self else { return }
                    service.queue.async {
                        service.transportsUp.insert(index)  // it carries frames: it is up
                        service.received(room: room, frame)
                    }
                },
                onPeerEvent: { [weak self] peer, event in
                    guard let service = self else { return }
                    service.queue.async { service.peerEvent(index, peer, event) }
                })
            guard transport.hasRooms else {
                transport.close()
                throw .config("transport \(reference.name) cannot join rooms (MASQ_TRANSPORT_ROOMS), which sync needs")
            }
            try transport.start()
            if let endpoint { try transport.connect(endpoint) }
            try transport.join(roomText)
            transports.append((transport, endpoint))
            // Sync frames are cut to fit the smallest transport (sealing adds its
            // overhead); a single larger frame goes as fragments.
            if let limit = transport.maxFrameBytes {
                guard limit >= Self.minTransportFrameBytes else {
                    for (t, _) in transports { t.close() }
                    transports = []
                    throw .config(
                        "transport \(reference.name) carries frames of at most \(limit) bytes; sync needs at least \(Self.minTransportFrameBytes)"
                    )
                }
                engine.options.maxBytesPerFrame = min(
                    engine.options.maxBytesPerFrame, limit - Self.sealingOverhead - Self.fragmentHeaderBytes)
            }
            fragmentBytes = engine.options.maxBytesPerFrame
        }
        try store.noteSyncFilter(engine.filter)
        watchID = try store.watch(namespace: nil) { [weak self] change in
            guard let service = self else { return }
            // A blob reference (local or remote) whose contents may be missing here.
            guard change.origin == .local else { return }
            if let value = change.value, value.first == BlobReference.magic[0] {
                service.queue.async { service.transfer.noticed(value) }
            }
            service.queue.async { service.schedulePump() }
        }
        lastBlobCollection = Clock.unixMilliseconds() - blobCollectionInterval + 60_000
        queue.async {
            self.transfer.start(filter: self.engine.filter)
            self.announce(who: true)
        }
        // Another process (the CLI) may write to the same store: notice its commits.
        let source = DispatchSource.makeTimerSource(queue: queue)
        source.schedule(deadline: .now() + pollInterval, repeating: pollInterval)
        source.setEventHandler { [weak self] in self?.poll() }
        source.resume()
        timer = source
        Log.info("sync", "started: room \(roomText.prefix(8))…, \(transports.count) transport(s)")
    }

    /// Stop transports; no callback runs afterwards.
    public func stop() {
        queue.sync {
            stopped = true
            timer?.cancel()
            timer = nil
            transfer.stop()
        }
        if let watchID { try? store.unwatch(watchID) }
        for (transport, _) in transports { transport.close() }
        transports = []
        queue.sync {}
    }

    /// Catch up with every present device, then return: true once nothing is
    /// missing either way (devices that do not answer within `grace` seconds
    /// are taken as absent), false at `timeout`.
    public func syncOnce(timeout: Double = 60, grace: Double = 3) throws(MasqError) -> Bool {
        try start()
        defer { stop() }
        let started = Clock.monotonicNanoseconds()
        let deadline = started + UInt64(timeout * 1e9)
        // When the transport came up: absent devices' grace counts from
        // there, not from the start, so a slow connect (a loaded machine, a
        // far relay) does not end the run before present devices said hello.
        var connectedAt: UInt64?
        while Clock.monotonicNanoseconds() < deadline {
            usleep(50_000)
            // Who is present and whether each has said HELLO first, the counts
            // after: counts read before a HELLO arrived say 0 lacking (nothing
            // announced yet) and would end the run before a single commit came.
            let (here, greeted) = queue.sync {
                (present, helloed.isSuperset(of: present) && engine.heardFrom(present) && transfer.settled(blobDevices))
            }
            let s = try status()
            let now = Clock.monotonicNanoseconds()
            if s.connected { connectedAt = connectedAt ?? now } else { connectedAt = nil }
            let talking = s.devices.filter { here.contains($0.deviceID) }
            let settled = greeted && talking.allSatisfy { $0.weLack == 0 && $0.theyLack == 0 }
            // Done when everyone answered and nothing is missing; absent
            // devices get `grace` seconds once connected. A transport that
            // never comes up ends the run after `grace` + 10 s (the caller
            // then says it is not connected) rather than at the timeout.
            let elapsed = Double(now - started) / 1e9
            let waited = connectedAt.map { Double(now - $0) / 1e9 } ?? 0
            let givenUp = connectedAt == nil && elapsed >= grace + 10
            if settled && (talking.count == s.devices.count || waited >= grace || givenUp) { return true }
        }
        return false
    }

    public func status() throws(MasqError) -> Status {
        let devices = try store.devices()
        let engineStatus = Dictionary(uniqueKeysWithValues: try engine.status().map { ($0.device, $0) })
        let (up, here, received, rejected, sessionProblems, blobs, blobCounters) = queue.sync {
            (
                transportUp, present, framesReceived, framesRejected, sessions.compactMapValues(\.problem),
                transfer.status(blobDevices), transfer.counters
            )
        }
        var rows: [DeviceStatus] = []
        for d in devices {
            let e = engineStatus[d.deviceID]
            rows.append(
                DeviceStatus(
                    deviceID: d.deviceID, name: d.name, present: here.contains(d.deviceID),
                    theyLack: e?.theyLack ?? 0, weLack: e?.weLack ?? 0, lastSeen: e?.lastSeen ?? 0,
                    problem: engine.problem(with: d.deviceID) ?? sessionProblems[d.deviceID]))
        }
        return Status(
            connected: up, room: roomText, devices: rows, pending: rows.filter(\.present).map(\.theyLack).reduce(0, +),
            framesReceived: received, framesRejected: rejected + engine.rejectedFrames,
            transports: transports.map { ($0.0.plugin.name, $0.0.stats() ?? [:]) }, blobs: blobs,
            blobCounters: blobCounters)
    }

    // MARK: - queue

    /// Transport events (masq_plugin.h): up/down of the transport itself, and
    /// any change in who is there — peers coming or going, or the room's
    /// membership — after which the room is asked who is present.
    private func peerEvent(_ index: Int, _ peer: String, _ event: Int32) {
        guard !stopped else { return }
        switch event {
        case MASQ_TRANSPORT_UP:
            transportsUp.insert(index)
            present = []
            helloed = []
            announce(who: true)
        case MASQ_TRANSPORT_DOWN:
            transportsUp.remove(index)
            present = []
            helloed = []
        case MASQ_ROOM_CHANGED where peer != roomText:
            break  // another room of the transport
        case MASQ_PEER_UP, MASQ_PEER_DOWN, MASQ_ROOM_CHANGED:
            present = []
            helloed = []
            announce(who: true)
        default:
            break
        }
    }

    /// Bytes sealing adds to a sync frame: payload type, two device ids, the
    /// ratchet header and tag, and room for the transport's framing.
    static let sealingOverhead = 1 + 10 + 10 + 41 + 16 + 183

    private func announce(who: Bool) {
        broadcast([who ? 3 : 2] + me)
    }

    private func session(_ device: String) -> PeerSession {
        if let s = sessions[device] { return s }
        let s = PeerSession()
        sessions[device] = s
        return s
    }

    private func received(room: String?, _ payload: [UInt8]) {
        guard !stopped, room == roomText, let type = payload.first else { return }
        framesReceived += 1
        switch type {
        case 2, 3:
            guard payload.count == 11 else { return reject("malformed presence") }
            let sender = hex(Array(payload[1...]))
            guard sender != hex(me), isPaired(sender) else { return }
            let new = present.insert(sender).inserted
            if type == 3 || new { broadcast([2] + me) }
            // Unauthenticated: it may start a renewal or a greeting, both bounded.
            greet(sender)
        case 1:
            guard payload.count > 21, Array(payload[1..<11]) == me else { return }
            let sender = hex(Array(payload[11..<21]))
            guard isPaired(sender) else { return reject("frame from an unpaired device") }
            present.insert(sender)
            let peer = session(sender)
            let plain: [UInt8]
            do throws(MasqError) {
                plain = try store.open(
                    from: sender, Array(payload[21...]), associatedData: room_ad(Array(payload[0..<21])))
            } catch {
                if Self.isStorageFailure(error) { return cannotStore(from: sender, peer, error) }
                peer.failures += 1
                reject("from \(sender): \(error.message)")
                // Messages that do not open (a broken or outdated session): renew it.
                if peer.failures >= 2 || error.status != .badSignature {
                    peer.problem = "messages from it do not open; renewing the session"
                    renew(sender, force: true)
                }
                return
            }
            peer.failures = 0
            peer.unanswered = 0
            if case .ready = peer.state, peer.problem?.hasPrefix("messages from it") == true { peer.problem = nil }
            // It stored its ratchet step to send this: its storage works again — also
            // when the problem was recorded by an earlier run (or a replayed NOTICE).
            if peer.problem?.hasPrefix(Self.cannotStoreProblem) == true {
                peer.problem = nil
                try? store.setSyncProblem(device: sender, engine.problem(with: sender))
            } else if !peer.storedNoticeChecked {
                peer.storedNoticeChecked = true
                if (try? store.syncProblem(device: sender))??.text.hasPrefix(Self.cannotStoreProblem) == true {
                    try? store.setSyncProblem(device: sender, engine.problem(with: sender))
                }
            }
            // Greet first (a renewed session's initiator speaks once it has heard
            // from the other side), then handle the frame: greeting resets what
            // the engine knows of the peer, so it must not follow the peer's HELLO.
            if !helloed.contains(sender) { hello(sender) }
            guard let whole = reassemble(plain, from: sender) else { return }
            if whole.count >= 2, whole[0] == SyncFrame.version, whole[1] == 7 {
                receivedRemovals(whole, from: sender)
                return
            }
            if whole.count >= 2, whole[0] == SyncFrame.version,
                (BlobTransfer.wantType...BlobTransfer.lackType).contains(whole[1])
            {
                do throws(MasqError) { try transfer.receive(whole, from: sender, devices: blobDevices) } catch {
                    reject("from \(sender): \(error.message)")
                }
                return
            }
            do throws(MasqError) {
                let replies = try engine.receive(whole, from: sender)
                for reply in replies { try deliver(reply, to: sender) }
                pump()
                transfer.pump(blobDevices)
            } catch {
                if Self.isStorageFailure(error) { return cannotStore(from: sender, peer, error) }
                reject("from \(sender): \(error.message)")
            }
            checkIdentity()
        case 5:
            guard payload.count == 1 + 20 + 1 + 8 + 64, Array(payload[1..<11]) == me else { return }
            let sender = hex(Array(payload[11..<21]))
            guard isPaired(sender) else { return reject("notice from an unpaired device") }
            receivedNotice(from: sender, Array(payload[21...]), header: Array(payload[0..<21]))
        case 4:
            guard payload.count > 22, Array(payload[1..<11]) == me else { return }
            let sender = hex(Array(payload[11..<21]))
            guard isPaired(sender) else { return reject("renewal from an unpaired device") }
            present.insert(sender)
            renewal(from: sender, step: payload[21], Array(payload[22...]), header: Array(payload[0..<21]))
        default:
            reject("unknown payload type \(type)")
        }
    }

    /// Greet a present device: renew the session first if this run has not.
    private func greet(_ device: String) {
        let peer = session(device)
        switch peer.state {
        case .ready: if !helloed.contains(device) { hello(device) }
        case .stale: renew(device, force: false)
        case .renewing: break
        }
    }

    /// Start a renewal with `device` unless one was started too recently
    /// (`force` skips nothing but the wait for a first attempt).
    private func renew(_ device: String, force: Bool) {
        let peer = session(device)
        let now = Clock.unixMilliseconds()
        if peer.lastRenewal != 0 && now < peer.lastRenewal + peer.renewalWait { return }
        if case .renewing = peer.state, now < peer.lastRenewal + peer.renewalWait { return }
        do throws(MasqError) {
            let (renewal, message) = try store.beginSessionRenewal(
                with: device, prologue: renewalPrologue(initiator: me, responder: try Self.idBytes(device)))
            if peer.lastRenewal != 0 { peer.renewalWait = min(peer.renewalWait * 2, Self.maxRenewalInterval) }
            peer.lastRenewal = now
            peer.attempts += 1
            peer.state = .renewing(renewal)
            helloed.remove(device)
            Log.debug("sync", "renewing the session with \(device)")
            broadcast([4] + (try Self.idBytes(device)) + me + [1] + message)
        } catch {
            Log.warn("sync", "cannot renew the session with \(device): \(error.message)")
        }
    }

    private func renewal(from sender: String, step: UInt8, _ message: [UInt8], header: [UInt8]) {
        let peer = session(sender)
        Log.debug("sync", "renewal step \(step) from \(sender)")
        do throws(MasqError) {
            let senderID = try Self.idBytes(sender)
            switch step {
            case 1:
                // Both sides started at once: the smaller device id's renewal goes on —
                // unless it keeps failing (the other side refuses it): then answer.
                if case .renewing = peer.state, me.lexicographicallyPrecedes(senderID), peer.attempts < 3 { return }
                // Answers are rate-limited per device: forged step 1s cannot buy unbounded work.
                let now = Clock.unixMilliseconds()
                guard now >= peer.lastAnswered + 1_000 else {
                    return reject("renewal from \(sender): answered one less than a second ago")
                }
                peer.lastAnswered = now
                let answer: [UInt8]
                switch try store.answerOrRefuseSessionRenewal(
                    from: sender, message, prologue: renewalPrologue(initiator: senderID, responder: me))
                {
                case .answer(let a): answer = a
                case .clockAhead(let by, let refusal):
                    // Tell the device whose clock is ahead (signed: step 3), and show it here.
                    broadcast([4] + senderID + me + [3] + refusal)
                    setProblem(
                        sender, peer,
                        "refusing its session renewal: its clock is \(max(1, (by + 30_000) / 60_000)) minute(s) ahead of this device's"
                    )
                    return
                }
                broadcast([4] + senderID + me + [2] + answer)
                established(sender, peer)
                // The answering side speaks first on the new session.
                hello(sender)
            case 2:
                guard case .renewing(let renewal) = peer.state else { return }
                try store.completeSessionRenewal(renewal, message)
                established(sender, peer)
            // The other side greets first; this side answers its HELLO.
            case 3:
                // The other device refused this renewal: this clock is ahead of its own.
                guard case .renewing(let renewal) = peer.state else { return }
                let ahead = try store.checkRenewalRefusal(
                    renewal, prologue: renewalPrologue(initiator: me, responder: senderID), message)
                let minutes = max(1, (ahead + 30_000) / 60_000)
                Log.warn(
                    "sync",
                    "device \(sender) refuses to renew the session: this clock is \(minutes) minute(s) ahead of its own"
                )
                setProblem(
                    sender, peer,
                    "your clock is \(minutes) minute(s) ahead of this device's: it refuses to renew the session until the clocks agree (set the clock right)"
                )
            default:
                throw .invalid("unknown renewal step \(step)")
            }
        } catch {
            // Answering writes the new session: a full disk is said to the other device.
            if Self.isStorageFailure(error) { return cannotStore(from: sender, peer, error) }
            reject("renewal from \(sender): \(error.message)")
            if step == 1 { peer.problem = "its session renewal was refused: \(error.message)" }
        }
    }

    // MARK: - NOTICE: "I cannot store your changes" (docs/PROTOCOL.md)

    static let cannotStoreProblem = "it cannot store your changes"
    static let missingHelloProblem = "its greeting (HELLO) does not arrive"
    /// One NOTICE per device per this many ms at most.
    static let noticeInterval: UInt64 = 5_000

    /// A write failed for want of space or of a working disk (not a bad frame).
    static func isStorageFailure(_ error: MasqError) -> Bool {
        error.status == .io || error.message.lowercased().contains("disk is full")
            || error.message.contains("SQLITE_FULL")
    }

    /// This store cannot write what `sender` sent (nor even its ratchet step,
    /// so no sealed answer is possible): say so, signed, without touching the
    /// store, and show it in this run's status.
    private func cannotStore(from sender: String, _ peer: PeerSession, _ error: MasqError) {
        reject("from \(sender): cannot store: \(error.message)")
        let text = "this device cannot store what it sends (full disk or I/O error): \(error.message)"
        if peer.problem != text {
            peer.problem = text
            Log.warn("sync", "cannot store the changes of \(sender): \(error.message)")
        }
        let now = Clock.unixMilliseconds()
        guard now >= peer.lastNoticeSent + Self.noticeInterval else { return }
        peer.lastNoticeSent = now
        do throws(MasqError) {
            let header = [UInt8(5)] + (try Self.idBytes(sender)) + me
            let body = [UInt8(1)] + bigEndianBytes(now)
            let key = try store.requireIdentity().signingKey
            let signature = try crypto { () throws(CryptoError) in
                try Ed25519.sign(Self.noticeMessage(room, header, body), privateKey: key)
            }
            broadcast(header + body + signature)
        } catch {
            Log.warn("sync", "cannot tell \(sender) why: \(error.message)")
        }
    }

    static func noticeMessage(_ room: [UInt8], _ header: [UInt8], _ body: [UInt8]) -> [UInt8] {
        Array("masq notice v1".utf8) + room + header + body
    }

    /// A paired device says it cannot store our changes: believe it only
    /// signed by its device key, recent, and newer than its last notice.
    private func receivedNotice(from sender: String, _ body: [UInt8], header: [UInt8]) {
        let peer = session(sender)
        do throws(MasqError) {
            guard let device = try store.devices().first(where: { $0.deviceID == sender }) else { return }
            let signed = Array(body[0..<9]), signature = Array(body[9...])
            guard
                Ed25519.verify(
                    signature, message: Self.noticeMessage(room, header, signed), publicKey: device.keys.signing)
            else {
                return reject("notice from \(sender): bad signature")
            }
            let time = signed.withUnsafeBytes { $0.loadBigEndian(at: 1) as UInt64 }
            let now = Clock.unixMilliseconds()
            guard signed[0] == 1, time > peer.lastNoticeReceived,
                max(time, now) - min(time, now) <= Store.renewalCounterSlack
            else {
                return reject("notice from \(sender): stale, replayed or unknown")
            }
            peer.lastNoticeReceived = time
            peer.storedNoticeChecked = false
            setProblem(
                sender, peer,
                Self.cannotStoreProblem + ": its disk is full or failing (free space there, then sync resumes)")
        } catch {
            reject("notice from \(sender): \(error.message)")
        }
    }

    /// Show what holds sync with `device` back, in `masq status` too (stored).
    private func setProblem(_ device: String, _ peer: PeerSession, _ text: String) {
        guard peer.problem != text else { return }
        peer.problem = text
        try? store.setSyncProblem(device: device, text)
    }

    private func established(_ device: String, _ peer: PeerSession) {
        peer.state = .ready
        peer.unanswered = 0
        peer.failures = 0
        peer.attempts = 0
        peer.renewalWait = Self.renewalInterval
        peer.lastRenewal = Clock.unixMilliseconds()
        // (A missing greeting is cleared by the greeting itself, in tick.)
        if let problem = peer.problem, !problem.hasPrefix(Self.missingHelloProblem) {
            peer.problem = nil
            try? store.setSyncProblem(device: device, nil)
        }
        helloed.remove(device)
        engine.disconnected(device)
        Log.info("sync", "session with \(device) renewed")
    }

    private func renewalPrologue(initiator: [UInt8], responder: [UInt8]) -> [UInt8] {
        Array("masq session renewal v1".utf8) + room + initiator + responder
    }

    private func hello(_ device: String) {
        do throws(MasqError) {
            if try deliver(try engine.connected(device), to: device) {
                helloed.insert(device)
                sendRemovals(to: device)
                transfer.deviceReady(device)
                transfer.pump(blobDevices)
            }
        } catch {
            Log.warn("sync", "cannot greet \(device): \(error.message)")
        }
    }

    /// Runs every `pollInterval`: pushes commits another process wrote,
    /// resends to peers whose frames went unacknowledged too long, renews
    /// sessions that need it.
    private func poll() {
        guard !stopped else { return }
        checkIdentity()
        checkRemovals()
        let now = Clock.unixMilliseconds()
        for device in present {
            let peer = session(device)
            switch peer.state {
            case .stale: renew(device, force: false)
            case .renewing: if now >= peer.lastRenewal + peer.renewalWait { renew(device, force: true) }
            case .ready:
                // The side that started a renewal waits for the other's first
                // message; if it never comes, renew again.
                if !store.canSend(to: device) && now >= peer.lastRenewal + 5_000 {
                    renew(device, force: true)
                }
                // Greeted, but its HELLO never came (lost, or eaten by a crossing renewal):
                // renew, after which the answering side greets first.
                // Three times in a row: say so, and try only once a minute (a peer that
                // refuses our HELLO, or a relay that drops it, is not renewed every 5 s).
                else if helloed.contains(device) && !engine.heardFrom([device]) {
                    let wait: UInt64 = peer.missingHelloRenewals >= 3 ? 60_000 : 5_000
                    if now >= peer.lastRenewal + wait {
                        peer.missingHelloRenewals += 1
                        if peer.missingHelloRenewals == 3 {
                            setProblem(
                                device, peer,
                                Self.missingHelloProblem + " after a session renewal; trying again every minute")
                        }
                        renew(device, force: true)
                    }
                } else if engine.heardFrom([device]) && peer.missingHelloRenewals > 0 {
                    peer.missingHelloRenewals = 0
                    if peer.problem?.hasPrefix(Self.missingHelloProblem) == true {
                        peer.problem = nil
                        try? store.setSyncProblem(device: device, engine.problem(with: device))
                    }
                }
            }
        }
        transfer.tick(blobDevices)
        if now >= lastBlobCollection + blobCollectionInterval {
            lastBlobCollection = now
            do throws(MasqError) { try store.collectBlobs() } catch {
                Log.warn("sync", "cannot collect unreferenced blob chunks: \(error.message)")
            }
        }
        let stalled = engine.resendStalled()
        let seq = (try? store.syncVectors().applied[store.replicaID]) ?? lastLocalSeq
        guard stalled || seq != lastLocalSeq else { return }
        lastLocalSeq = seq
        pump()
    }

    /// Device removals (Store+Removals): u8 version · 7 · u16 n · n × removal.
    private func sendRemovals(to device: String) {
        guard let removals = try? store.removals(), !removals.isEmpty else { return }
        var frame: [UInt8] = [
            SyncFrame.version, 7, UInt8(min(removals.count, 4_096) >> 8), UInt8(min(removals.count, 4_096) & 0xFF)
        ]
        for removal in removals.prefix(4_096) { frame += removal.encoded }
        do throws(MasqError) { try deliver(frame, to: device) } catch {
            Log.warn("sync", "cannot send removals to \(device): \(error.message)")
        }
    }

    /// A REMOVALS frame from a paired device: apply each (the store decides).
    private func receivedRemovals(_ frame: [UInt8], from sender: String) {
        guard frame.count >= 4 else { return reject("from \(sender): malformed removals") }
        let count = Int(frame[2]) << 8 | Int(frame[3])
        let reader = frame.dropFirst(4)
        guard count <= 4_096, reader.count == count * DeviceRemoval.encodedSize else {
            return reject("from \(sender): malformed removals")
        }
        for i in 0..<count {
            let start = reader.startIndex + i * DeviceRemoval.encodedSize
            guard let removal = try? DeviceRemoval(decoding: reader[start..<(start + DeviceRemoval.encodedSize)]) else {
                return reject("from \(sender): malformed removal")
            }
            do throws(MasqError) { try store.applyRemoval(removal, from: sender) } catch {
                Log.warn("sync", "cannot apply a removal from \(sender): \(error.message)")
            }
        }
        checkRemovals()
    }

    private var removalEpoch = -1

    /// After a removal was recorded (here or learned): forget the removed
    /// devices in this run and tell every other present device.
    private func checkRemovals() {
        let epoch = store.removalEpoch
        guard epoch != removalEpoch else { return }
        let first = removalEpoch < 0
        removalEpoch = epoch
        guard !first else { return }
        let paired = Set(((try? store.devices()) ?? []).map(\.deviceID))
        for device in present where !paired.contains(device) {
            present.remove(device)
            helloed.remove(device)
            sessions[device] = nil
            reassembly[device] = nil
        }
        for device in present where helloed.contains(device) { sendRemovals(to: device) }
    }

    /// After the store took a new replica id (rollback or clock repair), every
    /// present device gets a new HELLO with the new vectors.
    private func checkIdentity() {
        let epoch = store.identityEpoch
        guard epoch != identityEpoch else { return }
        identityEpoch = epoch
        for device in present { helloed.remove(device); greet(device) }
    }

    private func schedulePump() {
        guard !pumpScheduled else { return }
        pumpScheduled = true
        // Coalesce a burst of local writes into one round of frames.
        queue.asyncAfter(deadline: .now() + .milliseconds(5)) { [weak self] in
            guard let service = self else { return }
            service.pumpScheduled = false
            service.pump()
        }
    }

    private func pump() {
        guard !stopped else { return }
        do throws(MasqError) {
            for (device, frame) in try engine.pending() where present.contains(device) {
                try deliver(frame, to: device)
            }
        } catch {
            Log.warn("sync", "cannot send: \(error.message)")
        }
    }

    /// Seal for `device` with its session and send to the room. Returns false
    /// (and sends nothing) while the session is not renewed in this run or
    /// the device has not answered the last `maxUnanswered` messages.
    @discardableResult
    private func deliver(_ frame: [UInt8], to device: String) throws(MasqError) -> Bool {
        guard frame.count > fragmentBytes else { return try deliverOne(frame, to: device, counted: true) }
        // Too big for the transport: in order, as fragments, counted as one
        // message against `maxUnanswered` (the peer answers the whole).
        nextMessageID &+= 1
        let part = fragmentBytes - Self.fragmentHeaderBytes
        let count = (frame.count + part - 1) / part
        for index in 0..<count {
            var fragment: [UInt8] = [SyncFrame.version, 6]
            fragment.appendBigEndian32(nextMessageID)
            fragment.appendBigEndian32(UInt32(index))
            fragment.appendBigEndian32(UInt32(count))
            fragment += frame[(index * part)..<min(frame.count, (index + 1) * part)]
            guard try deliverOne(fragment, to: device, counted: index == 0) else { return false }
        }
        return true
    }

    /// A whole frame from `plain`: itself, or once the last FRAGMENT of its
    /// message arrived (nil meanwhile, or when a fragment is past the bounds).
    private func reassemble(_ plain: [UInt8], from sender: String) -> [UInt8]? {
        guard plain.count >= 2, plain[0] == SyncFrame.version, plain[1] == 6 else { return plain }
        guard plain.count > Self.fragmentHeaderBytes else {
            reject("from \(sender): truncated fragment")
            return nil
        }
        func u32(_ at: Int) -> UInt32 { plain[at..<(at + 4)].reduce(0) { $0 << 8 | UInt32($1) } }
        let id = u32(2), index = u32(6), count = u32(10)
        let body = plain[Self.fragmentHeaderBytes...]
        // Fragments are at least 16 KiB but the last: a count past what the
        // largest message needs is malformed.
        guard count >= 2, index < count, Int(count) <= SyncFrame.maxFrameBytes / (16 << 10) + 1 else {
            reject("from \(sender): fragment \(index) of \(count)")
            return nil
        }
        var message =
            reassembly[sender].flatMap { $0.id == id && $0.count == count ? $0 : nil }
            ?? Reassembly(id: id, count: count)
        guard message.parts[index] == nil else { return nil }  // a duplicate
        guard message.bytes + body.count <= SyncFrame.maxFrameBytes else {
            reassembly[sender] = nil
            reject("from \(sender): a message past \(SyncFrame.maxFrameBytes) bytes")
            return nil
        }
        message.parts[index] = body
        message.bytes += body.count
        guard message.parts.count == Int(count) else {
            reassembly[sender] = message
            return nil
        }
        reassembly[sender] = nil
        var whole: [UInt8] = []
        whole.reserveCapacity(message.bytes)
        for i in 0..<count { whole += message.parts[i]! }
        return whole
    }

    private func deliverOne(_ frame: [UInt8], to device: String, counted: Bool) throws(MasqError) -> Bool {
        let peer = session(device)
        guard case .ready = peer.state else {
            Log.debug("sync", "not sending to \(device): its session is not renewed yet")
            renew(device, force: false)
            return false
        }
        guard !counted || peer.unanswered < Self.maxUnanswered else {
            peer.problem = "it has not answered \(Self.maxUnanswered) messages; renewing the session"
            renew(device, force: true)
            return false
        }
        guard store.canSend(to: device) else {
            Log.debug("sync", "not sending to \(device) yet: it speaks first on the renewed session")
            return false
        }
        let header = [UInt8(1)] + (try Self.idBytes(device)) + me
        let sealed = try store.seal(for: device, frame, associatedData: room_ad(header))
        if counted { peer.unanswered += 1 }
        if let failure = broadcast(header + sealed) {
            // Shown where it can be fixed (masq status), not only logged.
            let text =
                failure.status == .tooLarge
                ? "a sync frame of \(header.count + sealed.count) bytes is over the transport's limit: \(failure.message)"
                : "the transport refused a frame: \(failure.message)"
            if peer.problem != text {
                peer.problem = text
                try? store.setSyncProblem(device: device, text)
            }
            return false
        }
        return true
    }

    private func room_ad(_ header: [UInt8]) -> [UInt8] { room + header }

    /// Send to the room on every transport. Returns the error of a transport
    /// that refused the frame (e.g. over its size limit), if every one did.
    @discardableResult
    private func broadcast(_ payload: [UInt8]) -> MasqError? {
        var failure: MasqError?
        var sent = false
        for (transport, _) in transports {
            do throws(MasqError) {
                try transport.send(roomText, payload)
                sent = true
            } catch {
                Log.warn("sync", "\(transport.component): \(error.message)")
                failure = MasqError(error.status, "\(transport.component): \(error.message)")
            }
        }
        return sent ? nil : failure
    }

    /// Devices blob contents may be asked of: present and greeted in this run.
    private var blobDevices: [String] { present.filter { helloed.contains($0) }.sorted() }

    private func isPaired(_ device: String) -> Bool {
        (try? store.devices().contains { $0.deviceID == device }) ?? false
    }

    private func reject(_ why: String) {
        framesRejected += 1
        Log.debug("sync", "rejected a frame: \(why)")
    }
}

/// The store's background sync, if any (one at a time), and its progress callback.
final class SyncSlot: @unchecked Sendable {
    private let lock = Lock()
    private var service: SyncService?
    var progress: (@Sendable (SyncEngine.Progress) -> Void)?

    func start(_ store: Store) throws(MasqError) {
        try lock.withLock { () throws(MasqError) in
            guard service == nil else { throw MasqError(.busy, "sync is already running") }
            let s = try SyncService(store: store)
            s.engine.onProgress = progress
            try s.start()
            service = s
        }
    }

    func stop() {
        let s = lock.withLock { () -> SyncService? in
            defer { service = nil }
            return service
        }
        s?.stop()
    }

    var running: SyncService? { lock.withLock { service } }
}
