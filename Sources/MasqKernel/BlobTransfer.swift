import MasqCrypto

/// Carries blob contents between a user's devices (docs/PROTOCOL.md,
/// "Blobs"). Sync frames of the sync service (not the engine), sealed with
/// the pair's session like every other:
///
///     WANT  (8)   u16 n · n × (u8 kind · [32] SHA-256)     kind 0 chunk, 1 manifest
///     CHUNK (9)   u8 kind · [32] SHA-256 · bytes           (FRAGMENTs when bigger than the transport carries)
///     LACK  (10)  u16 n · n × (u8 kind · [32] SHA-256)     "I do not hold these"
///
/// The device that lacks contents asks; any device holding them answers,
/// each WANT item with a CHUNK or (coalesced) LACK, in the order asked. The
/// asker checks every SHA-256 before storing (a wrong one is refused,
/// counted, and asked of another device), keeps what arrived (a restart asks
/// only for what is still missing), and bounds what it waits for: at most
/// `windowBytes` per device. An item asked of a device and overtaken by an
/// answer to a later one was lost on the way (relays drop frames for members
/// that cannot keep up): it is asked again at once; one unanswered for
/// `timeout` is asked again too. Items every present device lacks wait; the
/// devices are asked again every `lackRetry` (one of them may have fetched
/// them meanwhile). Runs on the sync service's queue only.
final class BlobTransfer {
    static let wantType: UInt8 = 8
    static let chunkType: UInt8 = 9
    static let lackType: UInt8 = 10
    static let maxItemsPerWant = 64
    static let windowBytes: UInt64 = 8 << 20
    static let maxActiveBlobs = 32
    static let timeout: UInt64 = 20_000
    static let lackRetry: UInt64 = 30_000

    struct Item: Hashable {
        var manifest: Bool
        var hash: [UInt8]
    }

    private struct Outstanding {
        var item: Item
        var seq: UInt64
        var at: UInt64
        var bytes: UInt64
    }

    /// A blob being fetched: what it still needs.
    private final class Active {
        let wanted: Store.WantedBlob
        var manifest: BlobManifest?
        /// Chunk hash -> the indexes of the blob that hold it (a chunk may repeat).
        var need: [[UInt8]: [Int]] = [:]
        var fetched: UInt64 = 0
        var problem: String?
        init(_ wanted: Store.WantedBlob) { self.wanted = wanted }
        var id: String { hex(wanted.manifest) }
    }

    let store: Store
    let mode: SyncConfig.BlobMode
    /// Seal and send one frame to a device; false if it could not go now.
    let send: (_ frame: [UInt8], _ device: String) -> Bool
    private(set) var counters = BlobTransferCounters()
    private var active: [[UInt8]: Active] = [:]
    private var order: [[UInt8]] = []  // active manifests, oldest request first
    private var waiting: [Store.WantedBlob] = []
    private var owners: [Item: [[UInt8]]] = [:]  // item -> active manifests needing it
    private var pending: [Item] = []
    private var pendingSet = Set<Item>()
    private var outstanding: [String: [Outstanding]] = [:]
    private var asked: [Item: String] = [:]
    private var lacking: [Item: Set<String>] = [:]
    private var lackSince: UInt64 = 0
    private var nextSeq: UInt64 = 0
    private var fetchEpoch = -1
    private var lastScan: UInt64 = 0
    /// Verified chunks not stored yet: they are stored together, in one
    /// transaction (one fsync) per burst of arrivals or per `unsavedLimit`
    /// bytes, not one per chunk (bench/blobs: per-chunk commits left the
    /// receiver waiting on the disk for most of each chunk).
    private var unsaved: [(item: Item, data: [UInt8], device: String)] = []
    private var unsavedItems = Set<Item>()
    private var unsavedBytes = 0
    private var saveScheduled = false
    static let unsavedLimit = 4 << 20
    /// After chunks could not be stored (a full disk), nothing is asked for
    /// this long: each round would fetch up to `unsavedLimit` again for nothing.
    static let storeFailurePause: UInt64 = 5_000
    private var pausedUntil: UInt64 = 0
    /// Calls `save()` on the service's queue after what is already queued
    /// there (the end of the current burst of frames).
    let scheduleSave: () -> Void

    init(
        store: Store, mode: SyncConfig.BlobMode, scheduleSave: @escaping () -> Void,
        send: @escaping (_ frame: [UInt8], _ device: String) -> Bool
    ) {
        self.store = store
        self.mode = mode
        self.scheduleSave = scheduleSave
        self.send = send
    }

    // MARK: - what to fetch

    /// Load the blobs this device is fetching (and, eagerly, every blob a
    /// kept namespace references whose contents are not all here).
    func start(filter: NamespaceFilter) {
        if mode == .eager {
            do throws(MasqError) {
                let n = try store.wantReferencedBlobs(filter: filter)
                if n > 0 { Log.info("sync", "\(n) blob(s) to fetch") }
            } catch {
                Log.warn("sync", "cannot look for blobs to fetch: \(error.message)")
            }
        }
        reload()
    }

    func stop() {
        save()  // what arrived and verified is kept: a restart asks only for the rest
        store.blobState.lock.withLock { store.blobState.fetched = [:] }
    }

    /// A change committed here: a blob reference whose contents are missing is fetched (eager mode).
    func noticed(_ value: [UInt8]) {
        guard mode == .eager, let reference = try? BlobReference.parse(value) else { return }
        guard active[reference.manifest] == nil, !waiting.contains(where: { $0.manifest == reference.manifest }) else {
            return
        }
        do throws(MasqError) { try store.requestFetch(reference) } catch {
            Log.warn("sync", "cannot record blob \(reference.id.prefix(12)) to fetch: \(error.message)")
        }
        if store.blobState.lock.withLock({ store.blobState.fetchEpoch }) != fetchEpoch { reload() }
    }

    /// Re-read the fetch list (when asked for, or every few seconds: other
    /// processes sharing the store may ask too) and activate blobs up to the bound.
    private func reload() {
        lastScan = Clock.unixMilliseconds()
        fetchEpoch = store.blobState.lock.withLock { store.blobState.fetchEpoch }
        guard let wanted = try? store.wantedBlobs() else { return }
        let known = Set(order)
        waiting = wanted.filter { !known.contains($0.manifest) }
        let stillWanted = Set(wanted.map(\.manifest))
        // A fetch dropped meanwhile (collected: nothing references it any more).
        for manifest in order where !stillWanted.contains(manifest) { finish(manifest, complete: false) }
        activate()
    }

    private func activate() {
        while active.count < Self.maxActiveBlobs, !waiting.isEmpty {
            let wanted = waiting.removeFirst()
            let blob = Active(wanted)
            active[wanted.manifest] = blob
            order.append(wanted.manifest)
            do throws(MasqError) {
                if let (manifest, missing) = try store.blobFetchPlan(wanted) {
                    plan(blob, manifest, missing: missing)
                } else {
                    enqueue(Item(manifest: true, hash: wanted.manifest), for: wanted.manifest)
                }
            } catch {
                blob.problem = error.message
                Log.warn("sync", "blob \(blob.id.prefix(12)): \(error.message)")
            }
        }
    }

    private func plan(_ blob: Active, _ manifest: BlobManifest, missing: [Int]) {
        blob.manifest = manifest
        blob.fetched = manifest.size
        for i in missing {
            let hash = manifest.hash(i)
            blob.need[hash, default: []].append(i)
            blob.fetched -= UInt64(manifest.length(i))
        }
        publish(blob)
        if blob.need.isEmpty {
            complete(blob)
            return
        }
        for hash in blob.need.keys.sorted(by: { blob.need[$0]![0] < blob.need[$1]![0] }) {
            enqueue(Item(manifest: false, hash: hash), for: blob.wanted.manifest)
        }
    }

    private func enqueue(_ item: Item, for manifest: [UInt8], front: Bool = false) {
        if !(owners[item]?.contains(manifest) ?? false) { owners[item, default: []].append(manifest) }
        // Arrived and waiting for `save()`: not asked again (save counts it for every owner).
        guard asked[item] == nil, !pendingSet.contains(item), !unsavedItems.contains(item) else { return }
        pendingSet.insert(item)
        if front { pending.insert(item, at: 0) } else { pending.append(item) }
    }

    private func requeue(_ item: Item) {
        guard owners[item] != nil, !pendingSet.contains(item) else { return }
        pendingSet.insert(item)
        pending.insert(item, at: 0)
    }

    // MARK: - asking

    /// Ask `devices` (present, greeted) for what is pending, within each one's window.
    func pump(_ devices: [String]) {
        guard !pending.isEmpty, !devices.isEmpty else { return }
        let now = Clock.unixMilliseconds()
        guard now >= pausedUntil else { return }
        if now >= lackSince + Self.lackRetry {
            lacking = [:]
            lackSince = now
        }
        for device in devices.sorted(by: { (outstanding[$0]?.count ?? 0) < (outstanding[$1]?.count ?? 0) }) {
            var budget =
                Self.windowBytes - min(Self.windowBytes, (outstanding[device] ?? []).reduce(0) { $0 + $1.bytes })
            var batch: [Item] = []
            var index = 0
            while index < pending.count && batch.count < Self.maxItemsPerWant {
                let item = pending[index]
                let size = expectedBytes(item)
                guard budget >= size || (budget == Self.windowBytes && batch.isEmpty) else { break }
                if lacking[item]?.contains(device) == true {
                    index += 1
                    continue
                }
                pending.remove(at: index)
                pendingSet.remove(item)
                batch.append(item)
                budget -= min(budget, size)
            }
            guard !batch.isEmpty else { continue }
            var frame: [UInt8] = [SyncFrame.version, Self.wantType, UInt8(batch.count >> 8), UInt8(batch.count & 0xFF)]
            for item in batch { frame += [item.manifest ? 1 : 0] + item.hash }
            guard send(frame, device) else {
                for item in batch.reversed() { requeue(item) }
                continue
            }
            for item in batch {
                nextSeq += 1
                outstanding[device, default: []].append(
                    Outstanding(item: item, seq: nextSeq, at: now, bytes: expectedBytes(item)))
                asked[item] = device
            }
        }
    }

    private func expectedBytes(_ item: Item) -> UInt64 {
        guard !item.manifest, let owner = owners[item]?.first, let blob = active[owner], let manifest = blob.manifest
        else {
            return UInt64(BlobManifest.defaultChunkSize)
        }
        return UInt64(manifest.chunkSize)
    }

    /// Every `pollInterval`: look for new fetch requests, give up on answers that never came.
    func tick(_ devices: [String]) {
        let now = Clock.unixMilliseconds()
        let epoch = store.blobState.lock.withLock { store.blobState.fetchEpoch }
        if epoch != fetchEpoch || now >= lastScan + 5_000 { reload() }
        for (device, list) in outstanding {
            let expired = list.filter { now >= $0.at + Self.timeout }
            guard !expired.isEmpty else { continue }
            outstanding[device] = list.filter { now < $0.at + Self.timeout }
            for o in expired {
                asked[o.item] = nil
                counters.resent += 1
                requeue(o.item)
            }
        }
        // Devices that went away: what they were asked is asked of others.
        for (device, list) in outstanding where !devices.contains(device) {
            outstanding[device] = nil
            for o in list {
                asked[o.item] = nil
                requeue(o.item)
            }
        }
        pump(devices)
    }

    /// A device greeted again (a new session, or it came back): it may hold what it lacked.
    func deviceReady(_ device: String) {
        for item in Array(lacking.keys) { lacking[item]?.remove(device) }
        if let list = outstanding.removeValue(forKey: device) {
            for o in list {
                asked[o.item] = nil
                requeue(o.item)
            }
        }
    }

    // MARK: - frames

    /// Handle a WANT, CHUNK or LACK frame from `device`; MASQ_E_INVALID for a malformed one.
    func receive(_ frame: [UInt8], from device: String, devices: [String]) throws(MasqError) {
        guard frame.count >= 2 else { throw .invalid("truncated blob frame") }
        switch frame[1] {
        case Self.wantType: try serve(try Self.items(frame), to: device)
        case Self.lackType:
            let items = try Self.items(frame)
            counters.lacksReceived += items.count
            for item in items {
                guard answered(item, from: device) else { continue }
                lacking[item, default: []].insert(device)
                requeue(item)
            }
            pump(devices)
        case Self.chunkType:
            guard frame.count >= 35, frame[2] <= 1 else { throw .invalid("malformed blob chunk frame") }
            let item = Item(manifest: frame[2] == 1, hash: Array(frame[3..<35]))
            received(item, Array(frame[35...]), from: device)
            pump(devices)
        default:
            throw .invalid("unknown blob frame \(frame[1])")
        }
    }

    static func items(_ frame: [UInt8]) throws(MasqError) -> [Item] {
        guard frame.count >= 4 else { throw .invalid("truncated blob list") }
        let n = Int(frame[2]) << 8 | Int(frame[3])
        guard n <= maxItemsPerWant, frame.count == 4 + n * 33 else {
            throw .invalid("malformed blob list of \(n) items")
        }
        // Kind 0 (chunk) or 1 (manifest); anything else is refused, not read as a chunk.
        guard (0..<n).allSatisfy({ frame[4 + $0 * 33] <= 1 }) else {
            throw .invalid("a blob list item of unknown kind")
        }
        return (0..<n).map { i in
            let at = 4 + i * 33
            return Item(manifest: frame[at] == 1, hash: Array(frame[(at + 1)..<(at + 33)]))
        }
    }

    /// Answer a WANT: each item in order, a CHUNK for what is here and a LACK for the rest.
    private func serve(_ items: [Item], to device: String) throws(MasqError) {
        var lacks: [Item] = []
        func flushLacks() {
            guard !lacks.isEmpty else { return }
            var frame: [UInt8] = [SyncFrame.version, Self.lackType, UInt8(lacks.count >> 8), UInt8(lacks.count & 0xFF)]
            for item in lacks { frame += [item.manifest ? 1 : 0] + item.hash }
            _ = send(frame, device)
            lacks = []
        }
        for item in items {
            let content: [UInt8]?
            do throws(MasqError) { content = try store.blobContent(manifest: item.manifest, item.hash) } catch {
                Log.warn(
                    "sync", "cannot read a blob \(item.manifest ? "manifest" : "chunk") asked for: \(error.message)")
                content = nil
            }
            // What is damaged here is not sent: the other device asks elsewhere.
            guard let content, Hash.sha256(content) == item.hash else {
                if content != nil {
                    Log.warn("sync", "a blob chunk stored here is damaged (its SHA-256 does not match); not sent")
                }
                lacks.append(item)
                continue
            }
            flushLacks()
            var frame: [UInt8] = []
            frame.reserveCapacity(35 + content.count)
            frame += [SyncFrame.version, Self.chunkType, item.manifest ? 1 : 0]
            frame += item.hash
            frame += content
            guard send(frame, device) else { return }
            counters.chunksSent += 1
            counters.bytesSent += UInt64(content.count)
        }
        flushLacks()
    }

    /// Take `item` off what `device` was asked for. Items asked before it and
    /// still unanswered were lost on the way: asked again. False if unasked.
    private func answered(_ item: Item, from device: String) -> Bool {
        guard var list = outstanding[device], let index = list.firstIndex(where: { $0.item == item }) else {
            return false
        }
        let seq = list[index].seq
        let lost = list.filter { $0.seq < seq }
        list.removeAll { $0.seq <= seq }
        outstanding[device] = list
        asked[item] = nil
        for o in lost {
            asked[o.item] = nil
            counters.resent += 1
            requeue(o.item)
        }
        return true
    }

    private func received(_ item: Item, _ data: [UInt8], from device: String) {
        let wasAsked = answered(item, from: device)
        guard let manifests = owners[item] else {
            // Unasked (or already here from another device): nothing to do with it.
            if !wasAsked { counters.rejected += 1 }
            return
        }
        guard Hash.sha256(data) == item.hash else {
            counters.rejected += 1
            Log.warn(
                "sync",
                "device \(device) sent a blob \(item.manifest ? "manifest" : "chunk") whose SHA-256 does not match: refused"
            )
            lacking[item, default: []].insert(device)
            requeue(item)
            for m in manifests { active[m]?.problem = "a chunk from \(device) failed its SHA-256 check; asking again" }
            return
        }
        if item.manifest {
            receivedManifest(item, data)
            return
        }
        guard !unsavedItems.contains(item) else { return }  // a second copy of one already verified
        let wanted = manifests.contains { m in
            guard let blob = active[m], let manifest = blob.manifest, let indexes = blob.need[item.hash] else {
                return false
            }
            return indexes.allSatisfy { manifest.length($0) == data.count }
        }
        guard wanted else {
            for m in manifests where active[m]?.need[item.hash] != nil {
                counters.rejected += 1
                active[m]?.problem = "a chunk arrived with the wrong length"
            }
            lacking[item, default: []].insert(device)
            requeue(item)
            return
        }
        unsaved.append((item, data, device))
        unsavedItems.insert(item)
        unsavedBytes += data.count
        if unsavedBytes >= Self.unsavedLimit {
            save()
        } else if !saveScheduled {
            saveScheduled = true
            scheduleSave()
        }
    }

    /// Store the verified chunks received since the last save, in one
    /// transaction, then count them fetched (a blob is whole only once its
    /// last chunk is stored).
    func save() {
        saveScheduled = false
        guard !unsaved.isEmpty else { return }
        // What no active blob wants any more (it was dropped meanwhile) is not stored.
        let batch = unsaved.filter { owners[$0.item]?.isEmpty == false }
        unsaved = []
        unsavedItems = []
        unsavedBytes = 0
        guard !batch.isEmpty else { return }
        var complete: [(manifest: [UInt8], size: UInt64)] = []
        var touched: [(item: Item, blob: Active, indexes: [Int], count: Int)] = []
        for entry in batch {
            for m in owners[entry.item] ?? [] {
                guard let blob = active[m], let manifest = blob.manifest, let indexes = blob.need[entry.item.hash],
                    indexes.allSatisfy({ manifest.length($0) == entry.data.count })
                else { continue }
                touched.append((entry.item, blob, indexes, entry.data.count))
            }
        }
        // A blob is whole when every chunk it needs is among those stored for it here
        // (a chunk of the right length for this blob, not merely one that arrived).
        var covered: [ObjectIdentifier: Set<[UInt8]>] = [:]
        for t in touched { covered[ObjectIdentifier(t.blob), default: []].insert(t.item.hash) }
        for m in Set(touched.map { $0.blob.wanted.manifest }) {
            guard let blob = active[m], let mine = covered[ObjectIdentifier(blob)],
                blob.need.keys.allSatisfy({ mine.contains($0) })
            else { continue }
            complete.append((m, blob.wanted.size))
        }
        do throws(MasqError) {
            try store.storeReceived(batch.map { (false, $0.item.hash, $0.data) }, complete: complete)
        } catch {
            Log.warn("sync", "cannot store blob chunks: \(error.message)")
            pausedUntil = Clock.unixMilliseconds() + Self.storeFailurePause
            for t in touched { t.blob.problem = "cannot store its chunks here: \(error.message)" }
            for entry in batch.reversed() { requeue(entry.item) }
            return
        }
        for entry in batch {
            owners[entry.item] = nil
            if pendingSet.remove(entry.item) != nil { pending.removeAll { $0 == entry.item } }
            counters.chunksReceived += 1
            counters.bytesReceived += UInt64(entry.data.count)
        }
        var finished: [[UInt8]] = []
        for t in touched {
            t.blob.need[t.item.hash] = nil
            t.blob.fetched += UInt64(t.count * t.indexes.count)
            t.blob.problem = nil
            if t.blob.need.isEmpty, !finished.contains(t.blob.wanted.manifest) {
                finished.append(t.blob.wanted.manifest)
            }
        }
        var published = Set<ObjectIdentifier>()
        for t in touched where published.insert(ObjectIdentifier(t.blob)).inserted { publish(t.blob) }
        for m in finished { finish(m, complete: true) }
    }

    private func receivedManifest(_ item: Item, _ data: [UInt8]) {
        guard let manifests = owners.removeValue(forKey: item) else { return }
        for m in manifests {
            guard let blob = active[m] else { continue }
            let manifest: BlobManifest
            do throws(MasqError) {
                manifest = try data.withBytes { (d) throws(MasqError) in try BlobManifest(decoding: d) }
                guard manifest.matches(blob.wanted.reference) else {
                    throw .invalid("its size does not match the reference")
                }
                try store.storeReceived([(true, item.hash, data)], complete: [])
                guard let (stored, missing) = try store.blobFetchPlan(blob.wanted) else {
                    throw MasqError(.internal, "manifest vanished")
                }
                plan(blob, stored, missing: missing)
            } catch {
                counters.rejected += 1
                blob.problem = "its manifest is unusable: \(error.message)"
                Log.warn("sync", "blob \(blob.id.prefix(12)): manifest refused: \(error.message)")
            }
        }
    }

    private func complete(_ blob: Active) {
        do throws(MasqError) { try store.markBlobComplete(blob.wanted.manifest, size: blob.wanted.size) } catch {
            blob.problem = error.message
            return
        }
        finish(blob.wanted.manifest, complete: true)
    }

    /// The blob left the active set (whole, or no longer wanted).
    private func finish(_ manifest: [UInt8], complete: Bool) {
        guard let blob = active.removeValue(forKey: manifest) else { return }
        order.removeAll { $0 == manifest }
        for hash in blob.need.keys {
            let item = Item(manifest: false, hash: hash)
            owners[item]?.removeAll { $0 == manifest }
            if owners[item]?.isEmpty == true { owners[item] = nil }
        }
        let manifestItem = Item(manifest: true, hash: manifest)
        owners[manifestItem]?.removeAll { $0 == manifest }
        if owners[manifestItem]?.isEmpty == true { owners[manifestItem] = nil }
        pending.removeAll { owners[$0] == nil }
        pendingSet = Set(pending)
        store.blobState.lock.withLock { store.blobState.fetched[manifest] = nil }
        if complete { Log.info("sync", "blob \(blob.id.prefix(12)) fetched (\(blob.wanted.size) bytes)") }
        activate()
    }

    private func publish(_ blob: Active) {
        let (fetched, size) = (blob.fetched, blob.wanted.size)
        let chunks = blob.manifest.map { m in m.count - blob.need.values.reduce(0) { $0 + $1.count } } ?? 0
        let progress = store.blobState.lock.withLock { () -> (@Sendable (String, UInt64, UInt64) -> Void)? in
            store.blobState.fetched[blob.wanted.manifest] = (chunks, fetched)
            return store.blobState.progress
        }
        progress?(blob.id, fetched, size)
    }

    // MARK: - status

    /// Nothing more can arrive now: nothing asked, and whatever is pending
    /// is lacked by every present device.
    func settled(_ devices: [String]) -> Bool {
        guard unsaved.isEmpty, outstanding.values.allSatisfy(\.isEmpty) else { return false }
        guard store.blobState.lock.withLock({ store.blobState.fetchEpoch }) == fetchEpoch else { return false }
        if devices.isEmpty { return true }
        return pending.allSatisfy { item in devices.allSatisfy { lacking[item]?.contains($0) == true } }
            && waiting.isEmpty
    }

    func status(_ devices: [String]) -> [BlobFetchStatus] {
        order.compactMap { m in
            guard let blob = active[m] else { return nil }
            var problem = blob.problem
            if problem == nil && !devices.isEmpty {
                let items =
                    blob.manifest == nil
                    ? [Item(manifest: true, hash: m)] : blob.need.keys.map { Item(manifest: false, hash: $0) }
                let nobody = items.filter { item in
                    asked[item] == nil && devices.allSatisfy { lacking[item]?.contains($0) == true }
                }
                if !nobody.isEmpty {
                    problem =
                        "no present device holds \(nobody.count) of its \(blob.manifest == nil ? "manifest" : "missing chunks") yet"
                }
            } else if problem == nil {
                problem = "no other device is present to fetch it from"
            }
            return BlobFetchStatus(
                id: blob.id, size: blob.wanted.size, fetched: blob.fetched,
                missingChunks: blob.manifest == nil
                    ? BlobManifest.chunkCount(size: blob.wanted.size, chunkSize: blob.wanted.chunkSize)
                    : blob.need.values.reduce(0) { $0 + $1.count },
                since: blob.wanted.since, manifest: blob.manifest != nil, problem: problem)
        }
            + waiting.map { w in
                BlobFetchStatus(
                    id: hex(w.manifest), size: w.size, fetched: 0,
                    missingChunks: BlobManifest.chunkCount(size: w.size, chunkSize: w.chunkSize),
                    since: w.since, manifest: false, problem: "queued behind \(Self.maxActiveBlobs) blobs being fetched"
                )
            }
    }
}

/// What the running sync has carried of blob contents (masq_sync_status "blobs").
public struct BlobTransferCounters: Sendable, Equatable {
    public var chunksReceived = 0
    public var bytesReceived: UInt64 = 0
    public var chunksSent = 0
    public var bytesSent: UInt64 = 0
    /// Chunks or manifests refused: wrong SHA-256, wrong length, malformed, unasked.
    public var rejected = 0
    /// Items another device said it does not hold.
    public var lacksReceived = 0
    /// Items asked again (lost on the way, or unanswered for too long).
    public var resent = 0
}

/// One blob this device is fetching.
public struct BlobFetchStatus: Sendable, Equatable {
    public var id: String
    public var size: UInt64
    public var fetched: UInt64
    public var missingChunks: Int
    /// When this device first asked for it (Unix ms).
    public var since: UInt64
    /// Whether its manifest arrived.
    public var manifest: Bool
    /// Why it does not progress, in words (nil: it does).
    public var problem: String?

    public var json: String {
        "{\"id\": \(jsonString(id)), \"size\": \(size), \"fetched\": \(fetched), \"missing_chunks\": \(missingChunks), "
            + "\"since\": \(since), \"manifest\": \(manifest), \"problem\": \(problem.map(jsonString) ?? "null")}"
    }
}
