#if canImport(Glibc)
    import Glibc
#endif
import MasqCrypto

/// One record as it travels between replicas (values in clear: the transport
/// seals whole frames with the session of the pair of devices).
public struct SyncRecord: Equatable, Sendable {
    public var namespace: String
    public var key: [UInt8]
    var header: RecordHeader
    /// The value, or a counter's encoded state; empty for tombstones.
    public var value: [UInt8]

    public var version: Version { header.version }
    public var isTombstone: Bool { header.tombstone }
}

/// One commit of one replica, as sync sends it: everything it wrote that is
/// still current on the sending replica.
public struct SyncCommit: Equatable, Sendable {
    public var origin: UInt64
    public var seq: UInt64
    public var timestamp: UInt64
    public var records: [SyncRecord]
}

extension RecordHeader: @unchecked Sendable {}

/// Sync on the store side: version vectors, exporting and applying commits,
/// counters, conflicts, acknowledgements, tombstone collection, snapshots.
extension Store {
    static let metaGC: [UInt8] = [RecordFormat.meta] + Array("gc".utf8)
    static let ackFamily: UInt8 = 0x41  // 'A' device id -> the version vector it acknowledged
    /// Clock skew beyond which a remote timestamp is refused, not trusted.
    public static let defaultClockBound: UInt64 = 5 * 60 * 1000

    public enum ApplyResult: Equatable, Sendable {
        case applied
        /// Already applied (a duplicate delivery).
        case duplicate
        /// An earlier commit of the same origin is missing; ask again later.
        case gap
    }

    // MARK: - counters

    /// Add `delta` (may be negative) to the counter at `key`; concurrent
    /// additions on several devices all count. A key holding a plain value
    /// is an error (MASQ_E_INVALID); a deleted or absent key starts at 0.
    /// Once a counter, a key stays one: delete (or replace/clear) resets it
    /// to 0 by cancelling what this replica has seen, and put is refused —
    /// that keeps the merge a join, so every replica ends equal.
    public func counterAdd(_ ns: NamespaceName, key: [UInt8], delta: Int64) throws(MasqError) {
        try key.withBytes { (k) throws(MasqError) in
            try checkKeyForCounter(k)
            try writeCommit { (commit) throws(MasqError) in
                try stageCounter(&commit, ns, k, delta)
            }
        }
    }

    /// The counter's total (0 if absent or deleted); MASQ_E_INVALID if the key holds a plain value.
    public func counterGet(_ ns: NamespaceName, key: [UInt8]) throws(MasqError) -> Int64 {
        try lock.withLock { () throws(MasqError) -> Int64 in
            try ensureUsable()
            guard let id = try existingNamespaceID(ns) else { return 0 }
            return try key.withBytes { (k) throws(MasqError) -> Int64 in
                try withRecordKey(id, k) { (recordKey) throws(MasqError) -> Int64 in
                    guard let (header, value) = try readRecord(recordKey) else { return 0 }
                    if header.tombstone { return 0 }
                    guard header.counter else { throw .invalid("key holds a value, not a counter") }
                    return try Counter(decoding: value).total
                }
            }
        }
    }

    // MARK: - version vectors and acknowledgements

    /// This replica's version vector and its collection horizon (commits at or
    /// below it may have had their tombstones and log entries collected).
    public func syncVectors() throws(MasqError) -> (applied: VersionVector, collected: VersionVector) {
        try lock.withLock { () throws(MasqError) in
            try ensureUsable()
            return (try currentVector(), try collectedVector())
        }
    }

    func currentVector() throws(MasqError) -> VersionVector {
        try refreshIdentityLocked()
        var vv = VersionVector()
        try engine.scan(from: [RecordFormat.vector], to: [RecordFormat.vector + 1]) {
            (key, value) throws(MasqError) -> Bool in
            guard key.count == 9, value.count == 8 || value.count == 16 else {
                throw .corrupt("malformed version-vector entry")
            }
            vv[key.loadBigEndian(at: 1)] = value.loadBigEndian(at: 0)
            return true
        }
        vv[replicaID] = try Store.readClock(engine).seq
        return vv
    }

    func collectedVector() throws(MasqError) -> VersionVector {
        guard let bytes = try Store.getMeta(engine, Store.metaGC) else { return VersionVector() }
        return try bytes.withBytes { (raw) throws(MasqError) in
            var reader = ByteReader(raw)
            return try VersionVector.decode(&reader)
        }
    }

    /// Remember what a paired device acknowledged (for tombstone collection).
    public func recordAcknowledgement(device: String, _ vv: VersionVector) throws(MasqError) {
        try localTransaction { () throws(MasqError) in
            let key = [Store.ackFamily] + Array(device.utf8)
            var stored = VersionVector()
            if let old = try Store.getMeta(engine, key) {
                stored = try old.withBytes { (raw) throws(MasqError) in
                    var r = ByteReader(raw); return try VersionVector.decode(&r)
                }
            }
            stored.merge(vv)
            var bytes: [UInt8] = []
            stored.encode(into: &bytes)
            bytes.appendBigEndian(Clock.unixMilliseconds())  // when: for `masq status`
            try Store.putMeta(engine, key, bytes)
        }
    }

    // MARK: - exporting

    /// Commits a replica with version vector `peer` lacks, oldest first per
    /// origin, up to the limits. Returns nil if `peer` is behind the
    /// collection horizon: it needs a snapshot first.
    /// Origins in `holdBack` are skipped (the peer refused their next commit for now).
    /// `keeping`: the namespaces the peer keeps (records of others are left
    /// out; each commit still goes, so the peer's vector advances).
    /// `onlyOrigin`: send only that replica's commits (a filtered device relays only its own).
    public func exportCommits(
        after peer: VersionVector, maxCommits: Int = 1_000, maxBytes: Int = 1 << 20,
        holdBack: Set<UInt64> = [], keeping: NamespaceFilter? = nil, onlyOrigin: UInt64? = nil
    ) throws(MasqError) -> [SyncCommit]? {
        try lock.withLock { () throws(MasqError) -> [SyncCommit]? in
            try ensureUsable()
            var mine = try currentVector()
            if let onlyOrigin { mine = VersionVector([onlyOrigin: mine[onlyOrigin]]) }
            var collected = try collectedVector()
            if let onlyOrigin { collected = VersionVector([onlyOrigin: collected[onlyOrigin]]) }
            if collected.entries.contains(where: { peer[$0.key] < $0.value }) { return nil }
            var out: [SyncCommit] = []
            var bytes = 0
            var namespaceNames: [UInt32: String] = [:]
            for origin in mine.entries.keys.sorted() where peer[origin] < mine[origin] && !holdBack.contains(origin) {
                var seq = peer[origin] + 1
                while seq <= mine[origin] {
                    guard out.count < maxCommits && bytes < maxBytes else { return out }
                    var commit = try exportCommit(origin: origin, seq: seq, names: &namespaceNames)
                    if let keeping, !keeping.keepsAll { commit.records.removeAll { !keeping.keeps($0.namespace) } }
                    let size = commit.records.reduce(32) {
                        $0 + $1.key.count + $1.value.count + $1.namespace.utf8.count + 48
                    }
                    // A batch never grows past maxBytes (a single larger commit goes alone).
                    if !out.isEmpty && bytes + size > maxBytes { return out }
                    bytes += size
                    out.append(commit)
                    seq += 1
                }
            }
            return out
        }
    }

    private func exportCommit(origin: UInt64, seq: UInt64, names: inout [UInt32: String]) throws(MasqError)
        -> SyncCommit
    {
        let logKey = RecordFormat.logKey(replica: origin, seq: seq)
        guard
            let entry = try logKey.withBytes({ (k) throws(MasqError) in
                try engine.get(k) { (raw) throws(MasqError) in try LogEntryWriter.decodeWithTimestamp(raw) }
            })
        else {
            throw .corrupt("change log lacks commit \(seq) of replica \(String(origin, radix: 16))")
        }
        var records: [SyncRecord] = []
        for item in entry.keys {
            let name: String
            if let cached = names[item.namespaceID] {
                name = cached
            } else {
                name = try namespaceNameLocked(id: item.namespaceID)
                names[item.namespaceID] = name
            }
            let found = try item.key.withBytes { (k) throws(MasqError) in
                try withRecordKey(item.namespaceID, k) { (recordKey) throws(MasqError) in try readRecord(recordKey) }
            }
            // Only what this commit still holds: newer writes travel in their own commits.
            // A counter's state joins every commit that touched it, so it travels with each.
            guard let (header, value) = found, header.counter || (header.version.replica == origin && header.seq == seq)
            else { continue }
            records.append(SyncRecord(namespace: name, key: item.key, header: header, value: value))
        }
        return SyncCommit(origin: origin, seq: seq, timestamp: entry.timestamp, records: records)
    }

    /// A record's header and its value in clear (opened when sealed; a counter's raw state).
    func readRecord(_ recordKey: UnsafeRawBufferPointer) throws(MasqError) -> (RecordHeader, [UInt8])? {
        let box = self.box
        return try engine.get(recordKey) { (record) throws(MasqError) -> (RecordHeader, [UInt8]) in
            let header = try RecordHeader.read(record, key: recordKey)
            if header.tombstone { return (header, []) }
            if let box { return (header, try openValue(box, recordKey, record, header)) }
            return (header, Array(RecordHeader.value(in: record, header: header)))
        }
    }

    // MARK: - applying

    /// Apply one commit from another replica in one transaction: per key the
    /// greatest (timestamp, replica) wins; counters merge; a concurrent
    /// overwrite is reported to watchers as a conflict with both values.
    /// Commits must arrive in order per origin (a later one is a .gap).
    public func applyRemote(_ commit: SyncCommit, clockBound: UInt64 = Store.defaultClockBound) throws(MasqError)
        -> ApplyResult
    {
        guard commit.origin != 0, commit.seq > 0 else { throw .invalid("commit without origin or sequence number") }
        if let ahead = Store.futureSkew(
            [commit.timestamp] + commit.records.map(\.header.version.timestamp), bound: clockBound)
        {
            throw MasqError(
                .invalid,
                "commit \(commit.seq) of replica \(String(commit.origin, radix: 16)) is timestamped \(ahead) ms in the future (bound: \(clockBound) ms); refused until the clocks agree"
            )
        }
        for record in commit.records
        where !record.header.counter
            && (record.header.version.replica != commit.origin || record.header.seq != commit.seq)
        {
            throw .invalid("a record of commit \(commit.seq) claims another commit")
        }
        return try lock.withLock { () throws(MasqError) -> ApplyResult in
            try ensureUsable()
            do throws(MasqError) {
                let (result, pending, changes) = try engine.transaction {
                    (keep) throws(MasqError) -> (ApplyResult, [[UInt8]: UInt32], [Change]) in
                    try refreshIdentityLocked()
                    let applied =
                        commit.origin == replicaID ? try Store.readClock(engine).seq : try vectorEntry(commit.origin)
                    if commit.seq <= applied { keep = false; return (.duplicate, [:], []) }
                    if commit.seq > applied + 1 { keep = false; return (.gap, [:], []) }
                    guard commit.origin != replicaID else {
                        throw .corrupt(
                            "a peer holds commit \(commit.seq) of this replica, which this replica never made")
                    }

                    var changes: [Change] = []
                    var log = LogEntryWriter()
                    log.timestamp = commit.timestamp
                    var pending: [[UInt8]: UInt32] = [:]
                    for record in commit.records {
                        let ns = try NamespaceName(record.namespace, limits: limits)
                        guard !record.key.isEmpty, record.key.count <= limits.maxKeyBytes,
                            record.value.count <= limits.maxValueBytes + 1_024
                        else {
                            throw .invalid("a synced record exceeds this store's limits")
                        }
                        let id = try namespaceID(ns, pending: &pending)
                        try record.key.withBytes { (k) throws(MasqError) in
                            log.append(namespaceID: id, key: k)
                            try withRecordKey(id, k) { (recordKey) throws(MasqError) in
                                if let change = try merge(record, into: recordKey, namespace: ns, id: id) {
                                    changes.append(change)
                                }
                            }
                        }
                    }
                    try Store.putMeta(
                        engine, RecordFormat.logKey(replica: commit.origin, seq: commit.seq), log.encoded())
                    // The entry keeps the commit's timestamp too: the tip HELLO reports (Store+Identity).
                    try Store.putMeta(
                        engine, RecordFormat.vectorKey(replica: commit.origin),
                        bigEndianBytes(commit.seq) + bigEndianBytes(commit.timestamp))
                    try observeRemoteTime(commit.timestamp)
                    try flushCounts()
                    return (.applied, pending, changes)
                }
                namespaceIDs.merge(pending) { a, _ in a }
                if !changes.isEmpty && hub.isActive { hub.publish(changes) }
                return result
            } catch {
                pendingCounts = [:]
                throw error
            }
        }
    }

    private func vectorEntry(_ replica: UInt64) throws(MasqError) -> UInt64 {
        guard let bytes = try Store.getMeta(engine, RecordFormat.vectorKey(replica: replica)) else { return 0 }
        guard bytes.count == 8 || bytes.count == 16 else { throw .corrupt("malformed version-vector entry") }
        return bytes.withUnsafeBytes { $0.loadBigEndian(at: 0) }
    }

    /// How far (ms) the latest of `timestamps` lies beyond the wall clock plus
    /// `bound`, or nil when none does. Every path that applies remote records
    /// checks this first: a refused record never touches the clock.
    public static func futureSkew(_ timestamps: [UInt64], bound: UInt64 = Store.defaultClockBound) -> UInt64? {
        let now = Clock.unixMilliseconds()
        guard let latest = timestamps.map(HybridLogicalClock.milliseconds(of:)).max(), latest > now,
            latest - now > bound
        else { return nil }
        return latest - now
    }

    /// Advance the local clock past a remote timestamp (HLC receive rule),
    /// never beyond the wall clock plus the clock bound (callers refuse such
    /// timestamps first; this keeps a missed check from moving the clock).
    func observeRemoteTime(_ timestamp: UInt64) throws(MasqError) {
        let ceiling = (Clock.unixMilliseconds() + Store.defaultClockBound) << 16 | 0xFFFF
        let observed = try Store.readObserved(engine)
        let seen = min(timestamp, ceiling)
        clock.observe(seen)
        // Kept apart from the replica's own tip ('M' "clock"), which HELLO reports.
        if seen > observed { try Store.putMeta(engine, RecordFormat.metaObserved, bigEndianBytes(seen)) }
    }

    /// Merge one remote record under the lock, inside a transaction; returns the change to report.
    private func merge(
        _ remote: SyncRecord, into recordKey: UnsafeRawBufferPointer, namespace: NamespaceName, id: UInt32
    ) throws(MasqError) -> Change? {
        let local = try readRecord(recordKey)
        if local == nil { countRecords(id, 1) }  // merge always writes when nothing was there
        var header = remote.header
        var value = remote.value
        var conflict: (lost: [UInt8]?, lostDeleted: Bool)?
        if remote.header.counter {
            // This replica alone writes its own share of a counter: a remote value for
            // it (a share peer's forgery) is dropped, or it could swallow our increments.
            var incoming = try Counter(decoding: remote.value)
            if incoming.entries.removeValue(forKey: replicaID) != nil { value = incoming.encoded }
        }

        if let (l, localValue) = local {
            // Counters form a join of their own: a counter beats any plain value or
            // tombstone, and two counters merge per replica, whatever the order.
            if l.counter && !remote.header.counter { return nil }
            if l.counter && remote.header.counter {
                var merged = try Counter(decoding: localValue)
                merged.merge(try Counter(decoding: value))
                if l.version > remote.header.version { header = l }
                value = merged.encoded
                if value == localValue && header == l { return nil }
            } else if remote.header.counter {
                // A counter replaces a plain value or tombstone.
            } else if l.version == remote.header.version {
                return nil  // the same write, seen before
            } else if remote.header.version < l.version {
                // The local write wins; if it did not know the remote one, say what was lost
                // (nothing was, when both deleted the key).
                if remote.header.version != l.previous && remote.header.version > l.previous
                    && !(l.tombstone && remote.header.tombstone)
                {
                    hubReportConflict(namespace, remote.key, winner: (l, localValue), lost: remote)
                }
                return nil
            } else if l.version != remote.header.previous && l.version > remote.header.previous
                && !(l.tombstone && remote.header.tombstone)
            {
                conflict = (l.tombstone ? nil : displayValue(l, localValue), l.tombstone)
            }
        }
        try writeRecord(recordKey, header: header, value: value)
        let shown = header.tombstone ? nil : displayValue(header, value)
        var change = Change(
            kind: header.tombstone ? .delete : .put, origin: .remote, namespace: namespace.string,
            key: remote.key, value: shown, version: header.version)
        if let conflict {
            change.kind = .conflict
            change.lostValue = conflict.lost
            change.lostWasDeleted = conflict.lostDeleted
        }
        return change
    }

    /// The local write stays, but watchers learn a concurrent remote write lost.
    private func hubReportConflict(
        _ ns: NamespaceName, _ key: [UInt8], winner: (RecordHeader, [UInt8]), lost: SyncRecord
    ) {
        guard hub.isActive else { return }
        var change = Change(
            kind: .conflict, origin: .remote, namespace: ns.string, key: key,
            value: winner.0.tombstone ? nil : displayValue(winner.0, winner.1), version: winner.0.version)
        change.lostValue = lost.header.tombstone ? nil : displayValue(lost.header, lost.value)
        change.lostWasDeleted = lost.header.tombstone
        hub.publish([change])
    }

    func displayValue(_ header: RecordHeader, _ value: [UInt8]) -> [UInt8] {
        header.counter ? ((try? Counter(decoding: value).text) ?? []) : value
    }

    /// Write a record with a given header (sealed when the store is protected).
    func writeRecord(_ recordKey: UnsafeRawBufferPointer, header given: RecordHeader, value: [UInt8]) throws(MasqError)
    {
        var header = given
        header.checksummed = true  // every record written now carries its trailer
        let box = self.box
        let stored = header.tombstone ? 0 : value.count + (box == nil ? 0 : SecretBox.overhead)
        let length = header.size + stored + RecordHeader.trailer
        try withUnsafeTemporaryAllocation(byteCount: length, alignment: 8) { (record) throws(MasqError) in
            let offset = header.write(to: record)
            let rest = UnsafeMutableRawBufferPointer(rebasing: record[offset..<(length - RecordHeader.trailer)])
            if !header.tombstone {
                try value.withBytes { (v) throws(MasqError) in
                    if let box {
                        try withValueAD(recordKey, UnsafeRawBufferPointer(rebasing: record[0..<offset])) {
                            (ad) throws(MasqError) in
                            try box.seal(v, ad: ad, into: rest)
                        }
                    } else if v.count > 0 {
                        rest.copyMemory(from: v)
                    }
                }
            }
            RecordHeader.seal(record, key: recordKey)
            try engine.put(recordKey, UnsafeRawBufferPointer(record))
        }
    }

    // MARK: - tombstone collection

    /// Forget tombstones and change-log entries every device of the group has
    /// acknowledged (`devices`: the last vector each acknowledged). Safe only
    /// once this replica holds everything each device had when it
    /// acknowledged: any commit still on its way was then made after its
    /// author saw the delete, so its clock is later and cannot resurrect the
    /// key. Peers behind the new horizon get a snapshot first.
    @discardableResult
    public func collectGarbage(acknowledged devices: [VersionVector], minimumAgeMilliseconds: UInt64 = 0)
        throws(MasqError) -> Int
    {
        try lock.withLock { () throws(MasqError) -> Int in
            try ensureUsable()
            var horizon = try currentVector()
            for device in devices {
                guard device.entries.allSatisfy({ horizon[$0.key] >= $0.value }) else { return 0 }
            }
            for device in devices { horizon = horizon.meet(device) }
            let previous = try collectedVector()
            var collected = previous
            collected.merge(horizon)
            guard collected != previous else { return 0 }
            let cutoff = Clock.unixMilliseconds() &- minimumAgeMilliseconds
            do throws(MasqError) {
                return try engine.transaction { (_) throws(MasqError) -> Int in
                    var doomed: [[UInt8]] = []
                    try engine.scan(from: [RecordFormat.record], to: [RecordFormat.record + 1]) {
                        (key, record) throws(MasqError) -> Bool in
                        let h = try RecordHeader.read(record, key: key)
                        if h.tombstone && horizon.covers(h.version.replica, h.seq)
                            && HybridLogicalClock.milliseconds(of: h.version.timestamp) <= cutoff
                        {
                            doomed.append(Array(key))
                        }
                        return true
                    }
                    for key in doomed {
                        try key.withBytes { (k) throws(MasqError) in try engine.delete(k) }
                        countRecords(Store.namespaceID(ofRecordKey: key), -1)
                    }
                    for (origin, seq) in horizon.entries where seq > previous[origin] {
                        try engine.deleteRange(
                            from: RecordFormat.logKey(replica: origin, seq: 0),
                            to: RecordFormat.logKey(replica: origin, seq: seq + 1))
                    }
                    var bytes: [UInt8] = []
                    collected.encode(into: &bytes)
                    try Store.putMeta(engine, Store.metaGC, bytes)
                    try flushCounts()
                    return doomed.count
                }
            } catch {
                pendingCounts = [:]
                throw error
            }
        }
    }

    /// The last vector each device acknowledged (missing ones count as
    /// empty, which holds collection back). `devices` nil: the paired devices.
    public func acknowledgedVectors(of devices: [String]? = nil) throws(MasqError) -> [VersionVector] {
        let ids: [String]
        if let devices { ids = devices } else { ids = try self.devices().map(\.deviceID) }
        return try lock.withLock { () throws(MasqError) -> [VersionVector] in
            var out: [VersionVector] = []
            for device in ids {
                guard let bytes = try Store.getMeta(engine, [Store.ackFamily] + Array(device.utf8)) else {
                    out.append(VersionVector())
                    continue
                }
                out.append(
                    try bytes.withBytes { (raw) throws(MasqError) in
                        var r = ByteReader(raw); return try VersionVector.decode(&r)
                    })
            }
            return out
        }
    }

    static let problemFamily: UInt8 = 0x59  // 'Y' device id -> u64 Unix ms · UTF-8 text

    /// Remember (or, with nil, forget) what holds sync with `device` back, so
    /// that `masq status` can say it after the sync process has gone.
    public func setSyncProblem(device: String, _ text: String?) throws(MasqError) {
        try localTransaction { () throws(MasqError) in
            let key = [Store.problemFamily] + Array(device.utf8)
            if let text {
                try Store.putMeta(
                    engine, key, bigEndianBytes(Clock.unixMilliseconds()) + Array(text.utf8.prefix(1_000)))
            } else {
                try key.withBytes { (k) throws(MasqError) in try engine.delete(k) }
            }
        }
    }

    /// Below this much free space the disk holding the store counts as full.
    public static let fullDiskBytes: UInt64 = 1 << 20

    /// Whether the disk holding the store is full, in words (nil: it is not).
    /// Read from the file system, not from the store, which cannot record
    /// anything then: so `masq status` and `masq_sync_status` still say it.
    public func storageProblem() -> String? {
        var st = statvfs()
        guard statvfs(config.dataDir, &st) == 0 else { return nil }
        let free = UInt64(st.f_bavail) * UInt64(st.f_frsize)
        guard free < Store.fullDiskBytes else { return nil }
        return "the disk holding this store is full (\(free >> 10) KiB free): writes and sync fail until space is freed"
    }

    /// What last held sync with `device` back, and since when (nil: nothing).
    public func syncProblem(device: String) throws(MasqError) -> (text: String, since: UInt64)? {
        try lock.withLock { () throws(MasqError) -> (text: String, since: UInt64)? in
            try ensureUsable()
            guard let bytes = try Store.getMeta(engine, [Store.problemFamily] + Array(device.utf8)), bytes.count >= 8
            else { return nil }
            return (String(decoding: bytes[8...], as: UTF8.self), bytes.withUnsafeBytes { $0.loadBigEndian(at: 0) })
        }
    }

    /// What a device last acknowledged, and when (nil if never).
    public func acknowledgement(of device: String) throws(MasqError) -> (vector: VersionVector, at: UInt64)? {
        try lock.withLock { () throws(MasqError) -> (vector: VersionVector, at: UInt64)? in
            try ensureUsable()
            guard let bytes = try Store.getMeta(engine, [Store.ackFamily] + Array(device.utf8)) else { return nil }
            return try bytes.withBytes { (raw) throws(MasqError) in
                var r = ByteReader(raw)
                let vv = try VersionVector.decode(&r)
                return (vv, r.isAtEnd ? 0 : try r.uint64())
            }
        }
    }

    // MARK: - snapshots

    /// One chunk of every record (tombstones included) after `cursor`, in key
    /// order, with the cursor for the next chunk (nil when done).
    /// `keeping`: only namespaces the receiver keeps; `onlyReplica`: only records that replica wrote.
    public func snapshotChunk(
        after cursor: [UInt8]?, maxBytes: Int = 1 << 20, keeping: NamespaceFilter? = nil,
        onlyReplica: UInt64? = nil
    ) throws(MasqError) -> (records: [SyncRecord], next: [UInt8]?) {
        try lock.withLock { () throws(MasqError) in
            try ensureUsable()
            var names: [UInt32: String] = [:]
            var records: [SyncRecord] = []
            var bytes = 0
            var last: [UInt8]?
            var full = false
            try engine.scan(from: cursor.map { $0 + [0] } ?? [RecordFormat.record], to: [RecordFormat.record + 1]) {
                (key, record) throws(MasqError) -> Bool in
                guard key.count >= 2 else { throw .corrupt("malformed record key") }
                var reader = ByteReader(UnsafeRawBufferPointer(rebasing: key[1...]))
                let id = UInt32(try reader.varint())
                let keyStart = 1 + varintSize(UInt64(id))
                if names[id] == nil { names[id] = try namespaceNameLocked(id: id) }
                if let keeping, !keeping.keeps(names[id]!) { return true }
                if let onlyReplica, try RecordHeader.read(record, key: key).version.replica != onlyReplica {
                    return true
                }
                guard let (header, value) = try readRecord(key) else { return true }
                let size = key.count + value.count + 48
                // A chunk never grows past maxBytes (a single larger record goes alone).
                if !records.isEmpty && bytes + size > maxBytes { full = true; return false }
                records.append(
                    SyncRecord(namespace: names[id]!, key: Array(key[keyStart...]), header: header, value: value))
                last = Array(key)
                bytes += size
                full = bytes >= maxBytes
                return !full
            }
            return (records, full ? last : nil)
        }
    }

    /// Apply a snapshot's records (per key, the greatest version wins). A
    /// record stamped beyond the clock bound refuses the whole batch
    /// (MASQ_E_INVALID) and changes nothing, the clock included.
    public func applySnapshotRecords(_ records: [SyncRecord], clockBound: UInt64 = Store.defaultClockBound)
        throws(MasqError)
    {
        if let ahead = Store.futureSkew(records.map(\.header.version.timestamp), bound: clockBound) {
            throw MasqError(
                .invalid,
                "records timestamped \(ahead) ms in the future (bound: \(clockBound) ms); refused until the clocks agree"
            )
        }
        try lock.withLock { () throws(MasqError) in
            try ensureUsable()
            do throws(MasqError) {
                let (pending, changes) = try engine.transaction {
                    (_) throws(MasqError) -> ([[UInt8]: UInt32], [Change]) in
                    var changes: [Change] = []
                    var pending: [[UInt8]: UInt32] = [:]
                    for record in records {
                        let ns = try NamespaceName(record.namespace, limits: limits)
                        let id = try namespaceID(ns, pending: &pending)
                        try record.key.withBytes { (k) throws(MasqError) in
                            try withRecordKey(id, k) { (recordKey) throws(MasqError) in
                                if let change = try merge(record, into: recordKey, namespace: ns, id: id) {
                                    changes.append(change)
                                }
                            }
                        }
                        try observeRemoteTime(record.header.version.timestamp)
                    }
                    try flushCounts()
                    return (pending, changes)
                }
                namespaceIDs.merge(pending) { a, _ in a }
                if !changes.isEmpty && hub.isActive { hub.publish(changes) }
            } catch {
                pendingCounts = [:]
                throw error
            }
        }
    }

    /// Finish a snapshot taken at the sender's vector `vv` and holding the
    /// keys `received`: any local record the sender's state covers but did not
    /// send was deleted and collected there, so it goes here too. The local
    /// vector then includes `vv`, and so does the collection horizon (this
    /// replica has no change log below it, so peers behind it get snapshots).
    /// `keeping`: the namespaces this device keeps (nil: all); records of the
    /// others were not sent, so they are not taken as deleted.
    public func finishSnapshot(vector vv: VersionVector, received: Set<SyncKey>, keeping: NamespaceFilter? = nil)
        throws(MasqError)
    {
        try lock.withLock { () throws(MasqError) in
            try ensureUsable()
            do throws(MasqError) {
                let changes = try engine.transaction { (_) throws(MasqError) -> [Change] in
                    var names: [UInt32: String] = [:]
                    var doomed: [([UInt8], Change)] = []
                    try engine.scan(from: [RecordFormat.record], to: [RecordFormat.record + 1]) {
                        (key, record) throws(MasqError) -> Bool in
                        let h = try RecordHeader.read(record, key: key)
                        guard vv.covers(h.version.replica, h.seq) else { return true }
                        var reader = ByteReader(UnsafeRawBufferPointer(rebasing: key[1...]))
                        let id = UInt32(try reader.varint())
                        if names[id] == nil { names[id] = try namespaceNameLocked(id: id) }
                        if let keeping, !keeping.keeps(names[id]!) { return true }
                        let userKey = Array(key[(1 + varintSize(UInt64(id)))...])
                        if !received.contains(SyncKey(namespace: names[id]!, key: userKey)) {
                            doomed.append(
                                (
                                    Array(key),
                                    Change(
                                        kind: .delete, origin: .remote, namespace: names[id]!, key: userKey, value: nil,
                                        version: h.version)
                                ))
                        }
                        return true
                    }
                    for (key, _) in doomed {
                        try key.withBytes { (k) throws(MasqError) in try engine.delete(k) }
                        countRecords(Store.namespaceID(ofRecordKey: key), -1)
                    }
                    var applied = try currentVector()
                    for (origin, seq) in vv.entries where origin != replicaID && seq > applied[origin] {
                        try Store.putMeta(engine, RecordFormat.vectorKey(replica: origin), bigEndianBytes(seq))
                        applied[origin] = seq
                    }
                    var collected = try collectedVector()
                    collected.merge(vv.meet(applied))
                    var bytes: [UInt8] = []
                    collected.encode(into: &bytes)
                    try Store.putMeta(engine, Store.metaGC, bytes)
                    try snapshotReceivedLocked()
                    try flushCounts()
                    return doomed.filter { !$0.1.key.isEmpty }.map(\.1)
                }
                if !changes.isEmpty && hub.isActive { hub.publish(changes) }
            } catch {
                pendingCounts = [:]
                throw error
            }
        }
    }

    /// The name of namespace `id`; caller holds the lock.
    func namespaceNameLocked(id: UInt32) throws(MasqError) -> String {
        guard let bytes = try Store.getMeta(engine, RecordFormat.namespaceIDKey(id)) else {
            throw .corrupt("unknown namespace id \(id)")
        }
        return try bytes.withBytes { (b) throws(MasqError) in
            try NamespaceName(storedBytes: decodeNamespaceName(id: id, stored: b)).string
        }
    }

    private func checkKeyForCounter(_ key: UnsafeRawBufferPointer) throws(MasqError) {
        guard key.count > 0 else { throw .invalid("key must not be empty") }
        guard key.count <= limits.maxKeyBytes else {
            throw .tooLarge("key is \(key.count) bytes; the limit is \(limits.maxKeyBytes) (limits.max_key_bytes)")
        }
    }
}

/// A (namespace, key) pair, for snapshot bookkeeping: equal only byte for
/// byte (canonically equivalent names are different namespaces).
public struct SyncKey: Hashable, Sendable {
    public let namespace: String
    public let key: [UInt8]

    public static func == (a: SyncKey, b: SyncKey) -> Bool {
        a.key == b.key && a.namespace.utf8.elementsEqual(b.namespace.utf8)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(key)
        for byte in namespace.utf8 { hasher.combine(byte) }
    }
}
