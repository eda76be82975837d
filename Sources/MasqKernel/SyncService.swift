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
/// A device says HELLO only to devices it knows are present, so messages are
/// not piled up for absent ones (their ratchet would have to skip them).
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
    }

    public struct DeviceStatus: Sendable {
        public var deviceID: String
        public var name: String
        public var present: Bool
        public var theyLack: UInt64
        public var weLack: UInt64
        public var lastSeen: UInt64   // Unix ms, 0 = never
    }

    public let store: Store
    public let engine: SyncEngine
    private let queue = DispatchQueue(label: "masq.sync")
    private var transports: [(TransportEngine, endpoint: String?)] = []
    private let transportReferences: [PluginReference]
    private let room: [UInt8]
    private let roomText: String
    private let me: [UInt8]
    private var present: Set<String> = []
    private var helloed: Set<String> = []
    private var watchID: UInt64?
    private var pumpScheduled = false
    private var transportUp = false
    private var stopped = false
    private var timer: DispatchSourceTimer?
    private var lastLocalSeq: UInt64 = 0
    /// How often to look for commits other processes made to this store.
    public var pollInterval: Double = 0.5
    private(set) public var framesReceived = 0
    private(set) public var framesRejected = 0

    /// A device in no group yet gets a room of its own (pairing will share it).
    /// `transports` replaces the config's (a host that changed its config
    /// file after opening the store, e.g. after pairing through a relay).
    public init(store: Store, options: SyncEngine.Options = SyncEngine.Options(), transports: [PluginReference]? = nil) throws(MasqError) {
        self.store = store
        transportReferences = transports ?? store.config.transports
        engine = SyncEngine(store: store, options: options)
        room = try store.groupRoom()
        roomText = hex(room)
        me = try Self.idBytes(store.requireIdentity().publicKeys.deviceID)
    }

    static func idBytes(_ deviceID: String) throws(MasqError) -> [UInt8] {
        // Device ids are written in lowercase hex only.
        guard deviceID.utf8.count == 20, deviceID.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }),
              let bytes = Hex.decode(deviceID) else { throw .invalid("malformed device id \(deviceID)") }
        return bytes
    }

    /// Open the configured transports, join the room, announce presence.
    public func start() throws(MasqError) {
        guard !transportReferences.isEmpty else {
            throw .config("no transport configured: add {\"plugin\": \"relay\", \"options\": {\"url\": \"ws://HOST:PORT/\"}} to \"transports\"")
        }
        for reference in transportReferences {
            let endpoint = reference.options.first { $0.key == "url" }?.value
            let transport = try store.openTransport(reference, onFrame: { [weak self] _, room, frame in
                guard let service = self else { return }
                service.queue.async { service.received(room: room, frame) }
            }, onPeerEvent: { [weak self] peer, event in
                guard let service = self else { return }
                service.queue.async { service.peerEvent(peer, event) }
            })
            try transport.start()
            if let endpoint { try transport.connect(endpoint) }
            try transport.join(roomText)
            transports.append((transport, endpoint))
        }
        watchID = try store.watch(namespace: nil) { [weak self] change in
            guard change.origin == .local, let service = self else { return }
            service.queue.async { service.schedulePump() }
        }
        queue.async { self.announce(who: true) }
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
        while Clock.monotonicNanoseconds() < deadline {
            usleep(50_000)
            let s = try status()
            let elapsed = Double(Clock.monotonicNanoseconds() - started) / 1e9
            let talking = s.devices.filter(\.present)
            let settled = talking.allSatisfy { $0.weLack == 0 && $0.theyLack == 0 }
                && queue.sync(execute: { helloed.isSuperset(of: present) && engine.heardFrom(present) })
            // Done when everyone answered and nothing is missing; absent devices get `grace` seconds.
            if settled && (talking.count == s.devices.count || elapsed >= grace) { return true }
        }
        return false
    }

    public func status() throws(MasqError) -> Status {
        let devices = try store.devices()
        let engineStatus = Dictionary(uniqueKeysWithValues: try engine.status().map { ($0.device, $0) })
        let (up, here, received, rejected) = queue.sync { (transportUp, present, framesReceived, framesRejected) }
        var rows: [DeviceStatus] = []
        for d in devices {
            let e = engineStatus[d.deviceID]
            rows.append(DeviceStatus(deviceID: d.deviceID, name: d.name, present: here.contains(d.deviceID),
                                     theyLack: e?.theyLack ?? 0, weLack: e?.weLack ?? 0, lastSeen: e?.lastSeen ?? 0))
        }
        return Status(connected: up, room: roomText, devices: rows, pending: rows.filter(\.present).map(\.theyLack).reduce(0, +),
                      framesReceived: received, framesRejected: rejected + engine.rejectedFrames,
                      transports: transports.map { ($0.0.plugin.name, $0.0.stats() ?? [:]) })
    }

    // MARK: - queue

    private func peerEvent(_ peer: String, _ event: Int32) {
        guard !stopped else { return }
        if peer == "relay" {
            transportUp = event == MASQ_PEER_UP
            present = []
            helloed = []
            if transportUp { announce(who: true) }
        } else if peer == roomText {
            // Someone joined or left: ask who is here.
            present = []
            helloed = []
            announce(who: true)
        }
    }

    private func announce(who: Bool) {
        broadcast([who ? 3 : 2] + me)
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
            if !helloed.contains(sender) { hello(sender) }
        case 1:
            guard payload.count > 21, Array(payload[1..<11]) == me else { return }
            let sender = hex(Array(payload[11..<21]))
            guard isPaired(sender) else { return reject("frame from an unpaired device") }
            present.insert(sender)
            do throws(MasqError) {
                let plain = try store.open(from: sender, Array(payload[21...]), associatedData: room_ad(Array(payload[0..<21])))
                for reply in try engine.receive(plain, from: sender) { try deliver(reply, to: sender) }
                if !helloed.contains(sender) { hello(sender) }
                pump()
            } catch {
                reject("from \(sender): \(error.message)")
            }
        default:
            reject("unknown payload type \(type)")
        }
    }

    private func hello(_ device: String) {
        do throws(MasqError) {
            try deliver(try engine.connected(device), to: device)
            helloed.insert(device)
        } catch {
            Log.warn("sync", "cannot greet \(device): \(error.message)")
        }
    }

    /// Runs every `pollInterval`: pushes commits another process wrote, and
    /// resends to peers whose frames went unacknowledged too long.
    private func poll() {
        guard !stopped else { return }
        let stalled = engine.resendStalled()
        let seq = (try? store.syncVectors().applied[store.replicaID]) ?? lastLocalSeq
        guard stalled || seq != lastLocalSeq else { return }
        lastLocalSeq = seq
        pump()
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
            for (device, frame) in try engine.pending() where present.contains(device) { try deliver(frame, to: device) }
        } catch {
            Log.warn("sync", "cannot send: \(error.message)")
        }
    }

    /// Seal for `device` with its session and send to the room.
    private func deliver(_ frame: [UInt8], to device: String) throws(MasqError) {
        let header = [UInt8(1)] + (try Self.idBytes(device)) + me
        let sealed = try store.seal(for: device, frame, associatedData: room_ad(header))
        broadcast(header + sealed)
    }

    private func room_ad(_ header: [UInt8]) -> [UInt8] { room + header }

    private func broadcast(_ payload: [UInt8]) {
        for (transport, _) in transports {
            do throws(MasqError) { try transport.send(roomText, payload) } catch {
                Log.warn("sync", "\(transport.component): \(error.message)")
            }
        }
    }

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
