import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// A local store: per-application namespaces of keys and values on top of a
/// storage plugin, with the metadata sync needs on every record (hybrid
/// logical clock timestamp, replica id, tombstones, a change log with
/// per-replica sequence numbers, a version vector).
///
/// Thread-safe: one lock serializes access to the engine (the plugin
/// contract promises plugins serialized calls). Each write is one engine
/// transaction that also re-reads the clock record, so several processes may
/// share one SQLite store.
public final class Store: @unchecked Sendable {
    public let config: MasqConfig
    /// This replica's id. It changes only when the store finds it was rolled
    /// back or its clock ran ahead (Store+Identity.swift); `identityEpoch`
    /// counts those changes so sync can greet its peers again.
    public var replicaID: UInt64 { replicaLock.withLock { replicaValue } }
    public var identityEpoch: Int { replicaLock.withLock { identityChanges } }
    private let replicaLock = Lock()
    private var replicaValue: UInt64 = 0
    private var identityChanges = 0
    var replica: UInt64 { replicaID }

    func setReplica(_ id: UInt64) {
        replicaLock.withLock {
            if replicaValue != 0 && replicaValue != id { identityChanges += 1 }
            replicaValue = id
        }
    }
    public var limits: Limits { config.limits }
    public var storagePlugin: LoadedPlugin { engine.plugin }

    let engine: StoragePluginInstance
    let lock = Lock()
    var clock = HybridLogicalClock()
    private var closed = false
    let hub: WatchHub
    /// Records created (+) or deleted (−) per namespace in the transaction under way (Store+Integrity).
    var pendingCounts: [UInt32: Int64] = [:]
    /// Namespace name (its exact bytes: Swift strings compare canonically
    /// equivalent names equal, the store does not) -> id, for committed
    /// assignments only (ids never change).
    var namespaceIDs: [[UInt8]: UInt32] = [:]

    /// Passphrase protection (Store+Protection.swift).
    enum Protection {
        case none
        case locked(KeyRing)
        case unlocked(KeyRing, SecretBox)
    }
    var protection: Protection = .none
    /// Seals values, names and other secrets when the store is protected and unlocked.
    var box: SecretBox? {
        if case .unlocked(_, let box) = protection { return box }
        return nil
    }
    /// This device's long-term keys (nil while locked).
    public internal(set) var identity: DeviceIdentity?
    /// Background sync started through the C API (masq_sync_start).
    let syncSlot = SyncSlot()
    /// Devices whose session was made or renewed since this store was opened:
    /// the only ones `seal` uses (Store+Devices.swift).
    let freshSessions = LockedValue<Set<String>>([])
    /// Counts device removals recorded here (by this device or learned from
    /// another), so a running sync passes them on (Store+Removals.swift).
    let removalChanges = LockedValue(0)
    /// Renewals started through the C API, waiting for their answer.
    let pendingRenewals = LockedValue<[String: SessionRenewal]>([:])
    /// Blob writes and reads in progress, fetch requests, progress (Store+Blobs.swift).
    let blobState = BlobState()
    /// The write receipt a thread is applying (Store+Receipts.swift).
    let receipts = ReceiptState()
    /// What feature modules stop before the store closes, by name (`beforeClose`).
    private let closeHooks = LockedValue<[String: @Sendable (Store) -> Void]>([:])

    /// Entries per chunk when listing without holding the lock throughout.
    static let listChunk = 256

    // MARK: - open / close

    public convenience init(configPath: String, passphrase: [UInt8]? = nil) throws(MasqError) {
        try self.init(config: MasqConfig.load(path: configPath), passphrase: passphrase)
    }

    /// Open (creating if needed) the store `config` describes. A store with a
    /// keyring opens locked unless `passphrase` unlocks it; a new store given a
    /// passphrase is protected from its first byte.
    public init(config: MasqConfig, passphrase: [UInt8]? = nil) throws(MasqError) {
        self.config = config
        if let level = config.logLevel { Log.setStandardErrorLevel(level) }
        try FileSystem.makeDirectories(config.dataDir)
        let plugin = try PluginLoader.load(
            config.storage, kind: .storage, searchPath: PluginLoader.searchPath(config: config))
        var options = config.storage.options.filter { $0.key != "data_dir" }
        options.append(("data_dir", config.dataDir))
        engine = try StoragePluginInstance(plugin: plugin, options: options)
        hub = WatchHub(label: "masq.watch")
        let (initialReplica, initialClock) = try Store.initialize(engine)
        try Store.establishCounts(engine)
        clock = initialClock
        setReplica(initialReplica)
        try openProtection(passphrase: passphrase)
        try finishRestoreIfNeeded()  // a store restored from a backup takes a new replica id (Store+Backup.swift)
        savePairingCopy()  // what a rebuild needs to sync again (Store+Rebuild.swift)
        Log.info(
            "kernel",
            "opened store in \(config.dataDir) with storage plugin '\(plugin.name)' \(plugin.version), replica \(String(replicaID, radix: 16))\(isLocked ? " (locked)" : "")"
        )
    }

    /// Read (or on first open, write) the format marker, replica id and clock.
    private static func initialize(_ engine: StoragePluginInstance) throws(MasqError) -> (UInt64, HybridLogicalClock) {
        if let format = try getMeta(engine, RecordFormat.metaFormat) {
            guard format == [RecordFormat.version] else {
                throw .corrupt(
                    "store format \(format.first.map(String.init) ?? "?") is not one this library reads (\(RecordFormat.version))"
                )
            }
        } else {
            let raced = try engine.transaction { (commit) throws(MasqError) -> Bool in
                // Another process may have created it since we looked.
                if try getMeta(engine, RecordFormat.metaFormat) != nil {
                    commit = false
                    return true
                }
                var replica: UInt64 = 0
                while replica == 0 { replica = SecureRandom.uint64() }
                try putMeta(engine, RecordFormat.metaFormat, [RecordFormat.version])
                try putMeta(engine, RecordFormat.metaReplica, bigEndianBytes(replica))
                try putMeta(engine, RecordFormat.metaClock, bigEndianBytes(0) + bigEndianBytes(0))
                return false
            }
            if raced { return try initialize(engine) }
        }
        guard let replicaBytes = try getMeta(engine, RecordFormat.metaReplica), replicaBytes.count == 8 else {
            throw .corrupt("store has no valid replica id")
        }
        let replica = replicaBytes.withUnsafeBytes { $0.loadBigEndian(at: 0) }
        let saved = try readClock(engine)
        return (replica, HybridLogicalClock(last: max(saved.timestamp, try readObserved(engine))))
    }

    /// Close the engine after queued watch callbacks ran. Idempotent.
    public func close() throws(MasqError) {
        guard !hub.isCallbackThread else {
            throw MasqError(.busy, "cannot close a store from inside its own watch callback")
        }
        for hook in closeHooks.withLock({ hooks in
            defer { hooks = [:] }; return Array(hooks.values)
        }) { hook(self) }
        syncSlot.stop()
        hub.drain()
        if !isClosed { savePairingCopy() }
        lock.withLock {
            closed = true
            engine.close()
        }
        hub.drain()
    }

    public var isClosed: Bool { lock.withLock { closed } }

    /// Call `hook` when the store is about to close (first thing in `close`,
    /// without the lock): how a feature module stops what it runs on the
    /// store (MasqSharing's background sharing). One hook per `name`; a later
    /// one replaces it.
    package func beforeClose(_ name: String, _ hook: @escaping @Sendable (Store) -> Void) {
        closeHooks.withLock { $0[name] = hook }
    }

    // MARK: - reads

    /// Call `body` with the live value of `key`, or return nil if absent or deleted.
    public func read<T>(
        _ ns: NamespaceName, key: UnsafeRawBufferPointer,
        _ body: (UnsafeRawBufferPointer) throws(MasqError) -> T
    ) throws(MasqError) -> T? {
        try checkKey(key)
        return try lock.withLock { () throws(MasqError) -> T? in
            try ensureUsable()
            guard let id = try existingNamespaceID(ns) else { return nil }
            return try withRecordKey(id, key) { (recordKey) throws(MasqError) -> T? in
                let hit = try engine.get(recordKey) { (record) throws(MasqError) -> T? in
                    let header = try RecordHeader.read(record, key: recordKey)
                    if header.tombstone { return nil }
                    if box == nil && !header.counter { return try body(RecordHeader.value(in: record, header: header)) }
                    let value =
                        try box.map { (b) throws(MasqError) in try openValue(b, recordKey, record, header) }
                        ?? Array(RecordHeader.value(in: record, header: header))
                    if Store.isZeroCounter(header, value) { return nil }
                    return try displayValue(header, value).withBytes { (v) throws(MasqError) in try body(v) }
                }
                return hit ?? nil
            }
        }
    }

    /// A counter at zero reads as an absent key (deleting a counter sets it to
    /// zero; its record stays, so concurrent additions elsewhere still count).
    static func isZeroCounter(_ header: RecordHeader, _ value: [UInt8]) -> Bool {
        header.counter && (try? Counter(decoding: value).total) == 0
    }

    public func get(_ ns: NamespaceName, key: [UInt8]) throws(MasqError) -> [UInt8]? {
        try key.withBytes { (k) throws(MasqError) in try read(ns, key: k) { Array($0) } }
    }

    /// Visit live keys of `ns` starting with `prefix`, in order, in chunks read
    /// under the lock; `visitor` runs without the lock and returns false to stop.
    public func list(
        _ ns: NamespaceName, prefix: [UInt8] = [], keysOnly: Bool = false,
        _ visitor: (_ key: [UInt8], _ value: [UInt8]?) throws(MasqError) -> Bool
    ) throws(MasqError) {
        guard prefix.count <= limits.maxKeyBytes else { throw .tooLarge("prefix is longer than limits.max_key_bytes") }
        guard
            let id = try lock.withLock({ () throws(MasqError) in
                try ensureUsable(); return try existingNamespaceID(ns)
            })
        else { return }
        let base = RecordFormat.recordPrefix(namespaceID: id)
        let end = RecordFormat.successor(ofPrefix: base + prefix)
        var cursor = base + prefix
        var total: UInt64 = 0
        while true {
            var chunk: [([UInt8], [UInt8]?)] = []
            var visited = 0
            var last: [UInt8]?
            try lock.withLock { () throws(MasqError) in
                try ensureUsable()
                let box = self.box
                try engine.scan(from: cursor, to: end) { (key, record) throws(MasqError) -> Bool in
                    visited += 1
                    last = Array(key)
                    let header = try RecordHeader.read(record, key: key)
                    if !header.tombstone {
                        let stored: [UInt8]? =
                            keysOnly && !header.counter
                            ? nil
                            : try box.map { (b) throws(MasqError) in try openValue(b, key, record, header) }
                                ?? Array(RecordHeader.value(in: record, header: header))
                        if !(stored.map { Store.isZeroCounter(header, $0) } ?? false) {
                            chunk.append(
                                (Array(key[base.count...]), keysOnly ? nil : stored.map { displayValue(header, $0) }))
                        }
                    }
                    return chunk.count < Store.listChunk && visited < Store.listChunk * 16
                }
            }
            for (key, value) in chunk {
                guard try visitor(key, value) else { return }
            }
            total += UInt64(visited)
            guard let last, chunk.count == Store.listChunk || visited == Store.listChunk * 16 else {
                // A whole namespace was listed: as many records as were written, or the store is damaged.
                if prefix.isEmpty { try verifyListing(ns, visited: total) }
                return
            }
            cursor = last + [0]
        }
    }

    /// Every live entry of `ns` from one consistent snapshot, in key order.
    /// `body` sees them while the lock is held, without copies.
    public func withAllEntries<T>(
        _ ns: NamespaceName,
        _ body: (_ entries: [(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)]) throws(MasqError) -> T
    ) throws(MasqError) -> T {
        return try lock.withLock { () throws(MasqError) -> T in
            try ensureUsable()
            let box = self.box
            guard let id = try existingNamespaceID(ns) else { return try body([]) }
            let base = RecordFormat.recordPrefix(namespaceID: id)
            // One scan copies records into a single buffer; slices point into it.
            var blob: [UInt8] = []
            var spans: [(Int, Int, Int, Int)] = []
            var visited: UInt64 = 0
            try engine.scan(from: base, to: RecordFormat.successor(ofPrefix: base)) {
                (key, record) throws(MasqError) -> Bool in
                visited += 1
                let header = try RecordHeader.read(record, key: key)
                guard !header.tombstone else { return true }
                guard spans.count < limits.maxBatchEntries else {
                    throw .tooLarge(
                        "namespace '\(ns)' holds more than \(limits.maxBatchEntries) keys (limits.max_batch_entries); list it instead"
                    )
                }
                var opened: [UInt8]?
                if box != nil || header.counter {
                    let value =
                        try box.map { (b) throws(MasqError) in try openValue(b, key, record, header) }
                        ?? Array(RecordHeader.value(in: record, header: header))
                    if Store.isZeroCounter(header, value) { return true }
                    opened = displayValue(header, value)
                }
                let keyStart = blob.count
                blob += key[base.count...]
                let valueStart = blob.count
                if let opened { blob += opened } else { blob += RecordHeader.value(in: record, header: header) }
                spans.append((keyStart, valueStart - keyStart, valueStart, blob.count - valueStart))
                return true
            }
            // One lock: the records seen must be as many as were written.
            if let stored = try storedCount(id), stored != visited {
                throw .corrupt(
                    "namespace \(ns.string) holds \(visited) records where \(stored) were written: the store is damaged (run `masq check`)"
                )
            }
            return try blob.withBytes { (raw) throws(MasqError) -> T in
                try body(
                    spans.map {
                        (
                            UnsafeRawBufferPointer(rebasing: raw[$0.0..<($0.0 + $0.1)]),
                            UnsafeRawBufferPointer(rebasing: raw[$0.2..<($0.2 + $0.3)])
                        )
                    })
            }
        }
    }

    public func getAll(_ ns: NamespaceName) throws(MasqError) -> [(key: [UInt8], value: [UInt8])] {
        try withAllEntries(ns) { $0.map { (Array($0.key), Array($0.value)) } }
    }

    /// Namespaces holding at least one live key, in bytewise order.
    public func namespaces() throws(MasqError) -> [String] {
        try lock.withLock { () throws(MasqError) -> [String] in
            try ensureUsable()
            var all: [(name: [UInt8], id: UInt32)] = []
            try engine.scan(from: [RecordFormat.namespaceByID], to: [RecordFormat.namespaceByID + 1]) {
                (key, value) throws(MasqError) -> Bool in
                guard key.count == 5 else { throw .corrupt("malformed namespace entry") }
                let id = UInt32(bigEndianBytes: Array(key)[1..<5])
                all.append((try decodeNamespaceName(id: id, stored: value), id))
                return true
            }
            var live: [String] = []
            for (name, id) in all.sorted(by: { $0.name.lexicographicallyPrecedes($1.name) }) {
                let base = RecordFormat.recordPrefix(namespaceID: id)
                var found = false
                try engine.scan(from: base, to: RecordFormat.successor(ofPrefix: base)) {
                    (key, record) throws(MasqError) -> Bool in
                    let header = try RecordHeader.read(record, key: key)
                    if header.tombstone { return true }
                    if header.counter {
                        let value =
                            try box.map { (b) throws(MasqError) in try openValue(b, key, record, header) }
                            ?? Array(RecordHeader.value(in: record, header: header))
                        found = !Store.isZeroCounter(header, value)
                    } else {
                        found = true
                    }
                    return !found
                }
                if found { live.append(try NamespaceName(storedBytes: name).string) }
            }
            return live
        }
    }

    // MARK: - writes

    public func put(_ ns: NamespaceName, key: [UInt8], value: [UInt8]) throws(MasqError) {
        try key.withBytes { (k) throws(MasqError) in
            try value.withBytes { (v) throws(MasqError) in try put(ns, key: k, value: v) }
        }
    }

    public func put(_ ns: NamespaceName, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws(MasqError) {
        try checkKey(key)
        try checkValue(value)
        try writeCommit { (commit) throws(MasqError) in try stage(&commit, ns, key, value) }
    }

    public func delete(_ ns: NamespaceName, key: [UInt8]) throws(MasqError) {
        try key.withBytes { (k) throws(MasqError) in try delete(ns, key: k) }
    }

    public func delete(_ ns: NamespaceName, key: UnsafeRawBufferPointer) throws(MasqError) {
        try checkKey(key)
        try writeCommit { (commit) throws(MasqError) in try stage(&commit, ns, key, nil) }
    }

    /// Put (value non-nil) or delete (nil) every entry in one transaction;
    /// with `replace`, also delete every other key of the namespace.
    public func setAll(
        _ ns: NamespaceName, _ entries: [(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?)],
        replace: Bool = false
    ) throws(MasqError) {
        guard entries.count <= limits.maxBatchEntries else {
            throw .tooLarge(
                "\(entries.count) entries; the limit is \(limits.maxBatchEntries) (limits.max_batch_entries)")
        }
        for (index, entry) in entries.enumerated() {
            do throws(MasqError) {
                try checkKey(entry.key)
                if let value = entry.value { try checkValue(value) }
            } catch {
                throw MasqError(error.status, "entry \(index): \(error.message)")
            }
        }
        try writeCommit { (commit) throws(MasqError) in
            if replace, let id = try existingNamespaceID(ns, commit: commit) {
                let keep = Set(entries.map { Array($0.key) })
                let base = RecordFormat.recordPrefix(namespaceID: id)
                var doomed: [[UInt8]] = []
                try engine.scan(from: base, to: RecordFormat.successor(ofPrefix: base)) {
                    (key, record) throws(MasqError) -> Bool in
                    let userKey = Array(key[base.count...])
                    if try !RecordHeader.read(record, key: key).tombstone && !keep.contains(userKey) {
                        doomed.append(userKey)
                    }
                    return true
                }
                for key in doomed { try key.withBytes { (k) throws(MasqError) in try stage(&commit, ns, k, nil) } }
            }
            for entry in entries { try stage(&commit, ns, entry.key, entry.value) }
        }
    }

    public func setAll(_ ns: NamespaceName, _ entries: [(key: [UInt8], value: [UInt8]?)], replace: Bool = false)
        throws(MasqError)
    {
        // Keep the arrays alive while raw pointers into them are in use.
        let owned = entries.map { (key: $0.key, value: $0.value) }
        var keys: [UnsafeMutableRawBufferPointer] = []
        defer { keys.forEach { $0.deallocate() } }
        var raw: [(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?)] = []
        for entry in owned {
            let k = UnsafeMutableRawBufferPointer.allocate(byteCount: entry.key.count, alignment: 1)
            k.copyBytes(from: entry.key)
            keys.append(k)
            var v: UnsafeRawBufferPointer?
            if let value = entry.value {
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: value.count, alignment: 1)
                buffer.copyBytes(from: value)
                keys.append(buffer)
                v = UnsafeRawBufferPointer(buffer)
            }
            raw.append((UnsafeRawBufferPointer(k), v))
        }
        try setAll(ns, raw, replace: replace)
    }

    /// Delete every key of `ns` in one transaction.
    public func clear(_ ns: NamespaceName) throws(MasqError) {
        try setAll(ns, [] as [(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?)], replace: true)
    }

    // MARK: - watch

    /// Call `callback` for every change committed after this returns to keys
    /// of `namespace` (nil: all) starting with `prefix`.
    public func watch(namespace: NamespaceName?, prefix: [UInt8] = [], _ callback: @escaping @Sendable (Change) -> Void)
        throws(MasqError) -> UInt64
    {
        try lock.withLock { () throws(MasqError) in try ensureUsable() }
        return hub.add(namespace: namespace?.string, prefix: prefix, callback: callback)
    }

    public func unwatch(_ id: UInt64) throws(MasqError) {
        guard hub.remove(id) else { throw MasqError(.notFound, "no watch with id \(id)") }
    }

    // MARK: - sync metadata (read side; the sync engine builds on these)

    /// The version vector: for each replica, the highest commit seq applied here.
    public func versionVector() throws(MasqError) -> [UInt64: UInt64] {
        try lock.withLock { () throws(MasqError) -> [UInt64: UInt64] in
            try ensureOpen()
            var vector: [UInt64: UInt64] = [:]
            try engine.scan(from: [RecordFormat.vector], to: [RecordFormat.vector + 1]) {
                (key, value) throws(MasqError) -> Bool in
                guard key.count == 9, value.count == 8 || value.count == 16 else {
                    throw .corrupt("malformed version-vector entry")
                }
                vector[key.loadBigEndian(at: 1)] = value.loadBigEndian(at: 0)
                return true
            }
            vector[replicaID] = try Store.readClock(engine).seq
            return vector
        }
    }

    /// The (namespace, key) pairs commit `seq` of `replica` wrote, or nil if
    /// that commit is not in the log.
    public func changeLog(replica: UInt64, seq: UInt64) throws(MasqError) -> [(namespace: String, key: [UInt8])]? {
        try lock.withLock { () throws(MasqError) -> [(namespace: String, key: [UInt8])]? in
            try ensureUsable()
            let entry = try RecordFormat.logKey(replica: replica, seq: seq).withBytes { (k) throws(MasqError) in
                try engine.get(k) { (bytes) throws(MasqError) in try LogEntryWriter.decode(bytes) }
            }
            guard let entry else { return nil }
            var out: [(namespace: String, key: [UInt8])] = []
            for item in entry { out.append((try namespaceNameLocked(id: item.namespaceID), item.key)) }
            return out
        }
    }

    /// A record's metadata, tombstones included (nil if never written).
    public func recordInfo(_ ns: NamespaceName, key: [UInt8]) throws(MasqError) -> (
        version: Version, seq: UInt64, previous: Version, deleted: Bool
    )? {
        try lock.withLock {
            () throws(MasqError) -> (version: Version, seq: UInt64, previous: Version, deleted: Bool)? in
            try ensureUsable()
            guard let id = try existingNamespaceID(ns) else { return nil }
            return try key.withBytes { (k) throws(MasqError) in
                try withRecordKey(id, k) { (recordKey) throws(MasqError) in
                    try engine.get(recordKey) { (bytes) throws(MasqError) in
                        let h = try RecordHeader.read(bytes, key: recordKey)
                        return (h.version, h.seq, h.previous, h.tombstone)
                    }
                }
            }
        }
    }

    // MARK: - internals

    /// One commit in progress: every record it writes shares its seq and timestamp.
    struct Commit {
        let seq: UInt64
        let timestamp: UInt64
        var log = LogEntryWriter()
        var changes: [Change]?
        /// Namespace ids assigned by this commit; cached only once it commits.
        var newNamespaces: [[UInt8]: UInt32] = [:]
        /// Each namespace's write policy (Store+WritePolicy.swift), by exact bytes.
        var writePolicies: [[UInt8]: WritePolicy] = [:]
        /// What the commit will weigh in a sync frame (records, roughly): a
        /// commit travels whole, so one too big to sync is refused here.
        var syncBytes = 0

        func checkWritable(_ ns: NamespaceName) throws(MasqError) {
            if case .readOnly(let reason)? = writePolicies[ns.bytes] {
                throw MasqError(.denied, "namespace \"\(ns.string)\" is \(reason)")
            }
        }
    }

    /// Run `body` in one engine transaction; append the change-log entry and
    /// the clock; commit; queue the changes for watchers (under the lock, so
    /// queue order is commit order). A commit that wrote nothing is rolled back.
    func writeCommit(_ body: (inout Commit) throws(MasqError) -> Void) throws(MasqError) {
        try lock.withLock { () throws(MasqError) in
            try ensureUsable()
            do throws(MasqError) {
                let done = try engine.transaction { (keep) throws(MasqError) -> Commit? in
                    try refreshIdentityLocked()
                    let saved = try Store.readClock(engine)
                    clock.observe(saved.timestamp)
                    clock.observe(try Store.readObserved(engine))  // another process's sync may have moved it
                    var commit = Commit(
                        seq: saved.seq + 1, timestamp: clock.tick(nowMilliseconds: Clock.unixMilliseconds()),
                        changes: hub.isActive ? [] : nil)
                    commit.log.timestamp = commit.timestamp
                    commit.writePolicies = try writePoliciesLocked()
                    try body(&commit)
                    guard commit.syncBytes <= SyncFrame.maxCommitBytes else {
                        throw .tooLarge(
                            "this change is \(commit.syncBytes >> 20) MiB; one change travels to other devices whole, "
                                + "in at most \(SyncFrame.maxCommitBytes >> 20) MiB: write it in smaller batches")
                    }
                    guard commit.log.count > 0 else {
                        // Nothing changed; a retried write's receipt is still kept (Store+Receipts.swift).
                        keep = try writePendingReceipt()
                        return nil
                    }
                    _ = try writePendingReceipt()
                    try Store.putMeta(
                        engine, RecordFormat.logKey(replica: replicaID, seq: commit.seq), commit.log.encoded())
                    try Store.putMeta(
                        engine, RecordFormat.metaClock, bigEndianBytes(commit.seq) + bigEndianBytes(commit.timestamp))
                    try flushCounts()
                    return commit
                }
                guard let done else { return }  // nothing was written
                namespaceIDs.merge(done.newNamespaces) { a, _ in a }
                if let changes = done.changes { hub.publish(changes) }
            } catch {
                pendingCounts = [:]
                throw error
            }
        }
    }

    /// Write one record (value nil: a tombstone) into the commit. Deleting an
    /// absent or deleted key writes nothing.
    private func stage(
        _ commit: inout Commit, _ ns: NamespaceName, _ key: UnsafeRawBufferPointer,
        _ value: UnsafeRawBufferPointer?
    ) throws(MasqError) {
        try commit.checkWritable(ns)
        let existing = try existingNamespaceID(ns, commit: commit)
        if existing == nil && value == nil { return }
        let id: UInt32
        if let existing { id = existing } else { id = try assignNamespaceID(ns, &commit) }
        try withRecordKey(id, key) { (recordKey) throws(MasqError) in
            let old = try engine.get(recordKey) { (bytes) throws(MasqError) in
                try RecordHeader.read(bytes, key: recordKey)
            }
            if let old, old.counter {
                guard value == nil else { throw .invalid("key holds a counter: change it with counter_add") }
                return try resetCounter(&commit, ns, id, key, recordKey)
            }
            if value == nil && (old == nil || old!.tombstone) { return }
            if old == nil { countRecords(id, 1) }
            let version = Version(timestamp: commit.timestamp, replica: replicaID)
            var previous = old?.version ?? .none
            var rewrite = false
            if let old {
                if old.version == version {
                    // Written earlier in this same commit: keep what it replaced.
                    previous = old.previous
                    rewrite = true
                } else if old.version > version {
                    throw MasqError(.internal, "record timestamp is ahead of this replica's clock")
                }
            }
            let header = RecordHeader(tombstone: value == nil, version: version, seq: commit.seq, previous: previous)
            let box = self.box
            let stored = value.map { $0.count + (box == nil ? 0 : SecretBox.overhead) } ?? 0
            let length = header.size + stored + RecordHeader.trailer
            try withUnsafeTemporaryAllocation(byteCount: length, alignment: 8) { (record) throws(MasqError) in
                let offset = header.write(to: record)
                let rest = UnsafeMutableRawBufferPointer(rebasing: record[offset..<(length - RecordHeader.trailer)])
                if let value, let box {
                    try withValueAD(recordKey, UnsafeRawBufferPointer(rebasing: record[0..<offset])) {
                        (ad) throws(MasqError) in
                        try box.seal(value, ad: ad, into: rest)
                    }
                } else if let value, value.count > 0 {
                    rest.copyMemory(from: value)
                }
                RecordHeader.seal(record, key: recordKey)
                try engine.put(recordKey, UnsafeRawBufferPointer(record))
            }
            if !rewrite { commit.log.append(namespaceID: id, key: key) }
            commit.syncBytes += key.count + (value?.count ?? 0) + 48
            commit.changes?.append(
                Change(
                    kind: value == nil ? .delete : .put, origin: .local, namespace: ns.string,
                    key: Array(key), value: value.map { Array($0) }, version: version))
        }
    }

    /// Deleting a counter sets it to 0: this replica's share cancels the total
    /// it has seen (additions made elsewhere concurrently still count).
    private func resetCounter(
        _ commit: inout Commit, _ ns: NamespaceName, _ id: UInt32, _ key: UnsafeRawBufferPointer,
        _ recordKey: UnsafeRawBufferPointer
    ) throws(MasqError) {
        guard let (_, value) = try readRecord(recordKey) else { return }
        let total = try Counter(decoding: value).total
        if total != 0 { try stageCounter(&commit, ns, key, -total) }
    }

    /// Add to a counter inside a commit: this replica's share grows by `delta`.
    func stageCounter(_ commit: inout Commit, _ ns: NamespaceName, _ key: UnsafeRawBufferPointer, _ delta: Int64)
        throws(MasqError)
    {
        try commit.checkWritable(ns)
        let existing = try existingNamespaceID(ns, commit: commit)
        let id: UInt32
        if let existing { id = existing } else { id = try assignNamespaceID(ns, &commit) }
        try withRecordKey(id, key) { (recordKey) throws(MasqError) in
            var counter = Counter()
            var previous = Version.none
            if let (old, value) = try readRecord(recordKey) {
                previous = old.version
                if !old.tombstone {
                    guard old.counter else { throw .invalid("key holds a value, not a counter") }
                    counter = try Counter(decoding: value)
                }
            } else {
                countRecords(id, 1)
            }
            try counter.add(delta, replica: replicaID)
            let version = Version(timestamp: commit.timestamp, replica: replicaID)
            if previous == version { previous = .none }
            let header = RecordHeader(
                tombstone: false, counter: true, version: version, seq: commit.seq, previous: previous)
            try writeRecord(recordKey, header: header, value: counter.encoded)
            commit.log.append(namespaceID: id, key: key)
            commit.changes?.append(
                Change(
                    kind: .put, origin: .local, namespace: ns.string, key: Array(key),
                    value: counter.text, version: version))
        }
    }

    /// Build 'R' varint(id) key in a stack buffer and pass it to body.
    func withRecordKey<T>(
        _ namespaceID: UInt32, _ key: UnsafeRawBufferPointer,
        _ body: (UnsafeRawBufferPointer) throws(MasqError) -> T
    ) throws(MasqError) -> T {
        let idLength = varintSize(UInt64(namespaceID))
        return try withUnsafeTemporaryAllocation(byteCount: 1 + idLength + key.count, alignment: 1) {
            (buffer) throws(MasqError) -> T in
            buffer[0] = RecordFormat.record
            var v = namespaceID
            var offset = 1
            while v >= 0x80 {
                buffer[offset] = UInt8(truncatingIfNeeded: v) | 0x80
                v >>= 7
                offset += 1
            }
            buffer[offset] = UInt8(v)
            if key.count > 0 {
                UnsafeMutableRawBufferPointer(rebasing: buffer[(1 + idLength)...]).copyMemory(from: key)
            }
            return try body(UnsafeRawBufferPointer(buffer))
        }
    }

    /// The id of a namespace that was ever written, or nil. Caller holds the lock.
    func existingNamespaceID(_ ns: NamespaceName, commit: Commit? = nil) throws(MasqError) -> UInt32? {
        if let id = commit?.newNamespaces[ns.bytes] ?? namespaceIDs[ns.bytes] { return id }
        guard let bytes = try Store.getMeta(engine, namespaceLookupKey(ns)) else { return nil }
        let id = try bytes.withBytes { (raw) throws(MasqError) -> UInt64 in
            var reader = ByteReader(raw)
            return try reader.varint()
        }
        guard id > 0 && id <= UInt64(UInt32.max) else { throw .corrupt("namespace '\(ns)' has an invalid id") }
        namespaceIDs[ns.bytes] = UInt32(id)
        return UInt32(id)
    }

    /// The id of a namespace met while applying synced records, given to it if
    /// new; `pending` holds the ids given so far in this transaction (they
    /// reach `namespaceIDs` only once it commits). Caller holds the lock.
    func namespaceID(_ ns: NamespaceName, pending: inout [[UInt8]: UInt32]) throws(MasqError) -> UInt32 {
        var staging = Commit(seq: 0, timestamp: 0, changes: nil)
        staging.newNamespaces = pending
        if let existing = try existingNamespaceID(ns, commit: staging) { return existing }
        let id = try assignNamespaceID(ns, &staging)
        pending = staging.newNamespaces
        return id
    }

    /// Give a namespace its id, inside the write transaction `commit`.
    func assignNamespaceID(_ ns: NamespaceName, _ commit: inout Commit) throws(MasqError) -> UInt32 {
        var next: UInt32 = 1
        if let bytes = try Store.getMeta(engine, RecordFormat.metaNextNamespace) {
            guard bytes.count == 4 else { throw .corrupt("malformed namespace counter") }
            next = bytes.reduce(0) { $0 << 8 | UInt32($1) }
        }
        guard next < UInt32.max else { throw MasqError(.tooLarge, "no namespace ids left") }
        var idBytes: [UInt8] = []
        idBytes.appendVarint(UInt64(next))
        var following: [UInt8] = []
        following.appendBigEndian32(next + 1)
        try Store.putMeta(engine, namespaceLookupKey(ns), idBytes)
        let nameKey = RecordFormat.namespaceIDKey(next)
        try Store.putMeta(
            engine, nameKey, try box.map { (b) throws(MasqError) in try b.seal(ns.bytes, ad: nameKey) } ?? ns.bytes)
        try Store.putMeta(engine, RecordFormat.metaNextNamespace, following)
        commit.newNamespaces[ns.bytes] = next
        return next
    }

    /// 'N' + name, or 'N' + a keyed hash of the name when names are sealed.
    func namespaceLookupKey(_ ns: NamespaceName) -> [UInt8] {
        [RecordFormat.namespaceByName] + (box?.nameTag(ns.bytes) ?? ns.bytes)
    }

    func decodeNamespaceName(id: UInt32, stored: UnsafeRawBufferPointer) throws(MasqError) -> [UInt8] {
        guard let box else { return Array(stored) }
        return try RecordFormat.namespaceIDKey(id).withBytes { (k) throws(MasqError) in try box.open(stored, ad: k) }
    }

    /// A record's value is sealed with its engine key and header as associated
    /// data, so neither a value nor its metadata can be moved or altered unseen.
    func withValueAD<T>(
        _ recordKey: UnsafeRawBufferPointer, _ header: UnsafeRawBufferPointer,
        _ body: (UnsafeRawBufferPointer) throws(MasqError) -> T
    ) throws(MasqError) -> T {
        try withConcatenation(recordKey, header, body)
    }

    func openValue(
        _ box: SecretBox, _ recordKey: UnsafeRawBufferPointer, _ record: UnsafeRawBufferPointer, _ header: RecordHeader
    ) throws(MasqError) -> [UInt8] {
        try withValueAD(recordKey, UnsafeRawBufferPointer(rebasing: record[0..<header.size])) {
            (ad) throws(MasqError) in
            try box.open(RecordHeader.value(in: record, header: header), ad: ad)
        }
    }

    private func checkKey(_ key: UnsafeRawBufferPointer) throws(MasqError) {
        guard key.count > 0 else { throw .invalid("key must not be empty") }
        guard key.count <= limits.maxKeyBytes else {
            throw .tooLarge("key is \(key.count) bytes; the limit is \(limits.maxKeyBytes) (limits.max_key_bytes)")
        }
    }

    private func checkValue(_ value: UnsafeRawBufferPointer) throws(MasqError) {
        guard value.count <= limits.maxValueBytes else {
            throw .tooLarge(
                "value is \(value.count) bytes; the limit is \(limits.maxValueBytes) (limits.max_value_bytes)")
        }
    }

    func ensureOpen() throws(MasqError) {
        if closed { throw MasqError(.closed, "the store is closed") }
    }

    /// Open and, if protected, unlocked: required for anything touching data.
    func ensureUsable() throws(MasqError) {
        try ensureOpen()
        if case .locked = protection { throw MasqError(.denied, "the store is locked: unlock it with its passphrase") }
    }

    static func readClock(_ engine: StoragePluginInstance) throws(MasqError) -> (seq: UInt64, timestamp: UInt64) {
        guard let bytes = try getMeta(engine, RecordFormat.metaClock), bytes.count == 16 else {
            throw .corrupt("store has no valid clock record")
        }
        return bytes.withUnsafeBytes { ($0.loadBigEndian(at: 0), $0.loadBigEndian(at: 8)) }
    }

    /// The greatest remote timestamp observed (0 if none).
    static func readObserved(_ engine: StoragePluginInstance) throws(MasqError) -> UInt64 {
        guard let bytes = try getMeta(engine, RecordFormat.metaObserved), bytes.count == 8 else { return 0 }
        return bytes.withUnsafeBytes { $0.loadBigEndian(at: 0) }
    }

    static func getMeta(_ engine: StoragePluginInstance, _ key: [UInt8]) throws(MasqError) -> [UInt8]? {
        try key.withBytes { (k) throws(MasqError) in try engine.get(k) { Array($0) } }
    }

    static func putMeta(_ engine: StoragePluginInstance, _ key: [UInt8], _ value: [UInt8]) throws(MasqError) {
        try key.withBytes { (k) throws(MasqError) in
            try value.withBytes { (v) throws(MasqError) in try engine.put(k, v) }
        }
    }
}

func bigEndianBytes(_ value: UInt64) -> [UInt8] {
    var out: [UInt8] = []
    out.appendBigEndian(value)
    return out
}
