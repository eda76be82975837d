import MasqCrypto
/// Catching a damaged store instead of answering from it (issue 21).
///
/// Two checks complement each other. Every record carries a CRC-32 trailer
/// (RecordHeader): a flipped byte in a key, header or value is an error. And
/// the store keeps, per namespace, how many records it holds (tombstones
/// included): a damaged file can lose whole pages of records without the
/// storage engine noticing (SQLite's b-tree may simply return fewer rows), so
/// a full listing that finds fewer records than counted fails instead of
/// answering a truncated list. `check()` walks everything (`masq check`).
extension Store {
    static let countFamily: UInt8 = 0x43  // 'C' u32 namespace id -> u64 records (tombstones included)
    static let metaCounted: [UInt8] = [RecordFormat.meta] + Array("counted".utf8)

    /// The namespace id a record key ('R' varint(id) key) starts with.
    static func namespaceID(ofRecordKey key: [UInt8]) -> UInt32 {
        key.withUnsafeBytes { raw in
            guard raw.count > 1 else { return 0 }
            var reader = ByteReader(UnsafeRawBufferPointer(rebasing: raw[1...]))
            return UInt32(truncatingIfNeeded: (try? reader.varint()) ?? 0)
        }
    }

    static func countKey(_ id: UInt32) -> [UInt8] {
        var key = [countFamily]
        key.appendBigEndian32(id)
        return key
    }

    /// Note records created (+) or deleted (−) in namespace `id` within the
    /// current transaction; `flushCounts` writes them before it commits.
    func countRecords(_ id: UInt32, _ delta: Int64) {
        pendingCounts[id, default: 0] += delta
    }

    /// Write the counts noted in this transaction (caller holds the lock, inside it).
    func flushCounts() throws(MasqError) {
        defer { pendingCounts = [:] }
        for (id, delta) in pendingCounts where delta != 0 {
            let stored = try storedCount(id) ?? 0
            let updated = Int64(bitPattern: stored) + delta
            try Store.putMeta(engine, Store.countKey(id), bigEndianBytes(UInt64(max(0, updated))))
        }
    }

    /// The record count of namespace `id` (nil for a store that has none yet). Caller holds the lock.
    func storedCount(_ id: UInt32) throws(MasqError) -> UInt64? {
        guard let bytes = try Store.getMeta(engine, Store.countKey(id)) else { return nil }
        guard bytes.count == 8 else { throw .corrupt("malformed record count of namespace \(id)") }
        return bytes.withUnsafeBytes { $0.loadBigEndian(at: 0) }
    }

    /// Stores written before counts existed get them once, in one transaction.
    static func establishCounts(_ engine: StoragePluginInstance) throws(MasqError) {
        guard try getMeta(engine, metaCounted) == nil else { return }
        try engine.transaction { (_) throws(MasqError) in
            var counts: [UInt32: UInt64] = [:]
            try engine.scan(from: [RecordFormat.record], to: [RecordFormat.record + 1]) {
                (key, _) throws(MasqError) -> Bool in
                var reader = ByteReader(UnsafeRawBufferPointer(rebasing: key[1...]))
                counts[UInt32(truncatingIfNeeded: try reader.varint()), default: 0] += 1
                return true
            }
            for (id, n) in counts { try putMeta(engine, countKey(id), bigEndianBytes(n)) }
            try putMeta(engine, metaCounted, [1])
        }
    }

    /// Count the records of namespace `id` by walking them (caller holds the
    /// lock) and compare with the stored count: MASQ_E_CORRUPT on a mismatch.
    func verifyCountLocked(_ id: UInt32, name: String) throws(MasqError) {
        guard let stored = try storedCount(id) else { return }
        let base = RecordFormat.recordPrefix(namespaceID: id)
        var found: UInt64 = 0
        try engine.scan(from: base, to: RecordFormat.successor(ofPrefix: base)) { (_, _) throws(MasqError) -> Bool in
            found += 1
            return true
        }
        guard found == stored else {
            throw .corrupt(
                "namespace \(name) holds \(found) records where \(stored) were written: the store is damaged (run `masq check`)"
            )
        }
    }

    /// After a full listing saw `visited` records of `ns`: the count must
    /// agree (a listing runs in chunks, so when it does not — a concurrent
    /// write, or damage — the namespace is counted again under one lock).
    func verifyListing(_ ns: NamespaceName, visited: UInt64) throws(MasqError) {
        try lock.withLock { () throws(MasqError) in
            guard let id = try existingNamespaceID(ns), let stored = try storedCount(id), stored != visited else {
                return
            }
            try verifyCountLocked(id, name: ns.string)
        }
    }

    /// What `check()` found.
    public struct IntegrityReport: Sendable {
        public var namespaces = 0
        public var records = 0
        /// Records written before checksums existed (cannot be verified byte for byte).
        public var unchecksummed = 0
        public var logEntries = 0
        public var problems: [String] = []
        public var ok: Bool { problems.isEmpty }
    }

    /// Walk the whole store: every record's checksum and header, every
    /// namespace's count, every change-log entry and vector entry. Problems
    /// are reported, not thrown (up to 100), so one damaged record does not
    /// hide the others.
    public func check() throws(MasqError) -> IntegrityReport {
        try lock.withLock { () throws(MasqError) -> IntegrityReport in
            try ensureUsable()
            var report = IntegrityReport()
            func problem(_ text: String) { if report.problems.count < 100 { report.problems.append(text) } }
            var counts: [UInt32: UInt64] = [:]
            var ids: [UInt32: String] = [:]
            do throws(MasqError) {
                try engine.scan(from: [RecordFormat.namespaceByID], to: [RecordFormat.namespaceByID + 1]) {
                    (key, value) throws(MasqError) -> Bool in
                    guard key.count == 5 else { problem("a malformed namespace entry"); return true }
                    let id = UInt32(bigEndianBytes: Array(key)[1..<5])
                    do throws(MasqError) {
                        ids[id] = try NamespaceName(storedBytes: try decodeNamespaceName(id: id, stored: value)).string
                    } catch { problem("namespace \(id): \(error.message)") }
                    return true
                }
                try engine.scan(from: [RecordFormat.record], to: [RecordFormat.record + 1]) {
                    (key, record) throws(MasqError) -> Bool in
                    var reader = ByteReader(UnsafeRawBufferPointer(rebasing: key[1...]))
                    let id = UInt32(truncatingIfNeeded: (try? reader.varint()) ?? 0)
                    counts[id, default: 0] += 1
                    report.records += 1
                    do throws(MasqError) {
                        let header = try RecordHeader.read(record, key: key)
                        if !header.checksummed { report.unchecksummed += 1 }
                        if let box, !header.tombstone && !header.counter { _ = try openValue(box, key, record, header) }
                        if header.counter && !header.tombstone {
                            _ = try Counter(decoding: try readRecord(key)?.1 ?? [])
                        }
                    } catch {
                        problem(
                            "namespace \(ids[id] ?? "#\(id)"), key \(Hex.encode(Array(Array(key[(1 + varintSize(UInt64(id)))...]).prefix(32)))): \(error.message)"
                        )
                    }
                    return true
                }
                for (id, name) in ids.sorted(by: { $0.key < $1.key }) {
                    report.namespaces += 1
                    if let stored = try storedCount(id), stored != counts[id] ?? 0 {
                        problem(
                            "namespace \(name) holds \(counts[id] ?? 0) records where \(stored) were written: records are missing"
                        )
                    }
                }
                try engine.scan(from: [RecordFormat.log], to: [RecordFormat.log + 1]) {
                    (key, value) throws(MasqError) -> Bool in
                    report.logEntries += 1
                    if key.count != 17 {
                        problem("a malformed change-log key")
                    } else if (try? LogEntryWriter.decodeWithTimestamp(value)) == nil {
                        problem(
                            "the change-log entry of commit \(key.loadBigEndian(at: 9)) of replica \(Hex.encode(Array(Array(key)[1..<9]))) is malformed"
                        )
                    }
                    return true
                }
                _ = try currentVector()
                _ = try collectedVector()
            } catch {
                problem("the storage engine: \(error.message)")
            }
            return report
        }
    }

    static let metaWantsSnapshot: [UInt8] = [RecordFormat.meta] + Array("wantsnapshot".utf8)

    /// Whether this store asked its peers for a whole copy (after a repair).
    public var wantsSnapshot: Bool {
        (try? lock.withLock { () throws(MasqError) -> Bool in try Store.getMeta(engine, Store.metaWantsSnapshot) != nil
        }) ?? false
    }

    /// Remove the damaged records (failing their checksum or unreadable), set
    /// every namespace's count to what it holds, and ask paired devices for a
    /// whole copy at the next sync (HELLO's snapshot request), so the removed
    /// keys come back from a device that has them. Returns how many records
    /// were removed.
    @discardableResult
    public func repairDamage() throws(MasqError) -> Int {
        try lock.withLock { () throws(MasqError) -> Int in
            try ensureUsable()
            let removed = try engine.transaction { (_) throws(MasqError) -> Int in
                var damaged: [[UInt8]] = []
                var counts: [UInt32: UInt64] = [:]
                try engine.scan(from: [RecordFormat.record], to: [RecordFormat.record + 1]) {
                    (key, record) throws(MasqError) -> Bool in
                    let id = Store.namespaceID(ofRecordKey: Array(key))
                    do throws(MasqError) {
                        let header = try RecordHeader.read(record, key: key)
                        if let box, !header.tombstone && !header.counter { _ = try openValue(box, key, record, header) }
                        counts[id, default: 0] += 1
                    } catch {
                        damaged.append(Array(key))
                    }
                    return true
                }
                for key in damaged { try key.withBytes { (k) throws(MasqError) in try engine.delete(k) } }
                var ids: [UInt32] = []
                try engine.scan(from: [RecordFormat.namespaceByID], to: [RecordFormat.namespaceByID + 1]) {
                    (key, _) throws(MasqError) -> Bool in
                    if key.count == 5 { ids.append(UInt32(bigEndianBytes: Array(key)[1..<5])) }
                    return true
                }
                for id in ids { try Store.putMeta(engine, Store.countKey(id), bigEndianBytes(counts[id] ?? 0)) }
                try Store.putMeta(engine, Store.metaWantsSnapshot, [1])
                return damaged.count
            }
            Log.warn(
                "kernel", "removed \(removed) damaged record(s); the next sync asks paired devices for a whole copy")
            return removed
        }
    }

    /// A whole copy arrived (finishSnapshot): no need to ask again. Caller holds the lock, in a transaction.
    func snapshotReceivedLocked() throws(MasqError) {
        try Store.metaWantsSnapshot.withBytes { (k) throws(MasqError) in try engine.delete(k) }
    }
}
