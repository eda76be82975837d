/// A replica's identity over time: what happens when a store finds that it
/// went back in time (its data directory restored from a copy, the tail of
/// its write-ahead log lost) or that its clock ran ahead of the real time.
///
/// Both are repaired the same way: the store continues under a **new replica
/// id**. Its own commits up to the last one a paired device acknowledged
/// (which every device agrees on) stay what they are; every record it wrote
/// after that point is written again as a commit of the new replica — with
/// its timestamp kept, or, for a clock repair, with the corrected clock when
/// it lay in the future. The old id becomes an ordinary origin whose later
/// commits peers send back. So peers take no new write for a duplicate, the
/// store takes back what peers hold, and nothing any device acknowledged is
/// lost (docs/PROTOCOL.md, "Rollback and clock repair").
extension Store {
    /// Why a store takes a new replica id.
    public enum Reidentification: Sendable, Equatable {
        /// A peer holds commits of this replica that this store does not have,
        /// or a different commit under one of its numbers.
        case rollback(peer: String)
        /// The store's clock ran ahead of the wall clock by more than the
        /// clock bound (the device's clock was wrong, or an older version
        /// accepted a future timestamp): writes stamped in the future are
        /// re-stamped with the corrected clock.
        case clockAhead
        /// The store was restored from a backup (Store+Backup.swift): the
        /// device it was copied from may have written more under its id.
        case restored
    }

    /// Records re-issued per commit when a store takes a new identity.
    static let reissueChunk = 256

    /// How far the store's clock may run ahead of the wall clock before it is
    /// repaired: the bound peers enforce, plus a minute for the clocks of the
    /// peers whose timestamps it accepted.
    static var clockRepairThreshold: UInt64 { defaultClockBound + 60_000 }

    /// The store's replica id as stored (another process may have changed it,
    /// and with it the clock). Caller holds the lock.
    func refreshIdentityLocked() throws(MasqError) {
        guard let bytes = try Store.getMeta(engine, RecordFormat.metaReplica), bytes.count == 8 else {
            throw .corrupt("store has no valid replica id")
        }
        let stored = bytes.withUnsafeBytes { $0.loadBigEndian(at: 0) as UInt64 }
        if stored != replica {
            setReplica(stored)
            clock = HybridLogicalClock(last: max(try Store.readClock(engine).timestamp, try Store.readObserved(engine)))
        }
    }

    /// The timestamp of commit `seq` of `origin` as the change log holds it
    /// (nil once collected, or if never applied).
    func commitTimestampLocked(origin: UInt64, seq: UInt64) throws(MasqError) -> UInt64? {
        guard seq > 0 else { return nil }
        return try RecordFormat.logKey(replica: origin, seq: seq).withBytes { (k) throws(MasqError) in
            try engine.get(k) { (raw) throws(MasqError) in try LogEntryWriter.decodeWithTimestamp(raw).timestamp }
        }
    }

    /// The timestamp of the last commit applied from `origin` if it is commit
    /// `seq`: this replica's own tip ('M' "clock"), an origin's from its vector
    /// entry — neither is ever collected — else the change log. Caller holds the lock.
    func tipLocked(origin: UInt64, seq: UInt64) throws(MasqError) -> UInt64? {
        guard seq > 0 else { return nil }
        if origin == replica {
            let own = try Store.readClock(engine)
            if own.seq == seq { return own.timestamp }
        } else if let entry = try Store.getMeta(engine, RecordFormat.vectorKey(replica: origin)), entry.count == 16 {
            let (entrySeq, timestamp) = entry.withUnsafeBytes {
                ($0.loadBigEndian(at: 0) as UInt64, $0.loadBigEndian(at: 8) as UInt64)
            }
            if entrySeq == seq && timestamp != 0 { return timestamp }
        }
        return try commitTimestampLocked(origin: origin, seq: seq)
    }

    /// For each origin of the vector, the timestamp of its last applied commit
    /// (what HELLO carries as tips).
    public func tips(of vector: VersionVector) throws(MasqError) -> [UInt64: UInt64] {
        try lock.withLock { () throws(MasqError) -> [UInt64: UInt64] in
            try ensureUsable()
            var out: [UInt64: UInt64] = [:]
            for (origin, seq) in vector.entries {
                if let t = try tipLocked(origin: origin, seq: seq) { out[origin] = t }
            }
            return out
        }
    }

    /// Whether a peer's view of this replica's log (`theirs`: its vector,
    /// `tips`: its tips) shows a history this store does not have: commits
    /// beyond this store's own last one, or a different commit under the
    /// number the peer last applied.
    public func peerShowsRollback(theirs: VersionVector, tips: [UInt64: UInt64]) throws(MasqError) -> Bool {
        try lock.withLock { () throws(MasqError) -> Bool in
            try ensureUsable()
            try refreshIdentityLocked()
            let me = replica
            let peerSeq = theirs[me]
            guard peerSeq > 0 else { return false }
            let mine = try Store.readClock(engine).seq
            if peerSeq > mine { return true }
            guard let theirTip = tips[me], let myTip = try tipLocked(origin: me, seq: peerSeq) else { return false }
            return theirTip != myTip
        }
    }

    /// Continue under a new replica id (see the type's comment). Returns the
    /// new id. Watchers see no change (values stay the same, except for
    /// re-stamped ones, which keep their values too).
    @discardableResult
    public func reidentify(_ reason: Reidentification) throws(MasqError) -> UInt64 {
        let (old, new, reissued) = try lock.withLock { () throws(MasqError) -> (UInt64, UInt64, Int) in
            try ensureUsable()
            do throws(MasqError) {
                let result = try engine.transaction { (_) throws(MasqError) in try reidentifyLocked(reason) }
                setReplica(result.new)
                return result
            } catch {
                try? refreshIdentityLocked()
                throw error
            }
        }
        let why: String
        switch reason {
        case .rollback(let peer):
            why =
                "device \(peer) holds commits of this replica this store does not (restored from a copy, or lost its last writes)"
        case .clockAhead:
            why = "the store's clock was ahead of the real time; writes stamped in the future were re-stamped"
        case .restored: why = "the store was restored from a backup"
        }
        Log.warn(
            "kernel",
            "continuing as replica \(String(new, radix: 16)) instead of \(String(old, radix: 16)): \(why); \(reissued) record(s) written again"
        )
        return new
    }

    /// Repair a clock that ran ahead of the wall clock (see `clockAhead`);
    /// returns whether it did anything. Only on evidence that the wall clock
    /// is right — a peer refused this replica's commit as stamped in the future
    /// while its own clock agreed with this device's (SyncEngine), or the user
    /// says so (`masq clock --repair`): a device whose clock is *behind* must
    /// not re-stamp good writes into the past.
    @discardableResult
    public func repairClockIfNeeded() throws(MasqError) -> Bool {
        let ahead = try lock.withLock { () throws(MasqError) -> Bool in
            try ensureUsable()
            return try clockIsAheadLocked()
        }
        guard ahead else { return false }
        try reidentify(.clockAhead)
        return true
    }

    /// The store's clock (Unix ms) and how far it is ahead of the wall clock (0 if not).
    public func clockReading() throws(MasqError) -> (storeMilliseconds: UInt64, aheadMilliseconds: UInt64) {
        try lock.withLock { () throws(MasqError) in
            try ensureUsable()
            let saved = try Store.readClock(engine)
            let ms = HybridLogicalClock.milliseconds(
                of: max(saved.timestamp, clock.last, try Store.readObserved(engine)))
            let now = Clock.unixMilliseconds()
            return (ms, ms > now ? ms - now : 0)
        }
    }

    /// Whether the stored clock is past the wall clock by more than the repair threshold. Caller holds the lock.
    func clockIsAheadLocked() throws(MasqError) -> Bool {
        let saved = try Store.readClock(engine)
        let now = Clock.unixMilliseconds()
        return HybridLogicalClock.milliseconds(of: max(saved.timestamp, clock.last)) > now + Store.clockRepairThreshold
    }

    /// Caller holds the lock inside a transaction.
    func reidentifyLocked(_ reason: Reidentification) throws(MasqError) -> (old: UInt64, new: UInt64, reissued: Int) {
        try refreshIdentityLocked()
        let old = replica
        let saved = try Store.readClock(engine)
        let now = Clock.unixMilliseconds()
        // The last commit of this replica every device agrees on: the highest
        // any paired device acknowledged (an acknowledgement is written after
        // the commits it covers, so a rolled-back store still holds them).
        var agreed: UInt64 = 0
        try engine.scan(from: [Store.ackFamily], to: [Store.ackFamily + 1]) { (_, value) throws(MasqError) -> Bool in
            var reader = ByteReader(value)
            agreed = max(agreed, try VersionVector.decode(&reader)[old])
            return true
        }
        agreed = min(agreed, saved.seq)
        // A restored store that no other device or person ever synced with
        // holds the only copy of its commits: they stay as they are (Store+Backup.swift).
        if reason == .restored, try !hasPeersLocked() { agreed = saved.seq }
        // Timestamps past this are re-stamped (a clock repair only).
        let restampAbove: UInt64? = reason == .clockAhead ? (now + Store.defaultClockBound) << 16 : nil

        // Every record written by this replica after the agreed point, and (clock
        // repair) every record of any replica stamped beyond the bound.
        var doomed: [[UInt8]] = []
        var newest: UInt64 = 0
        try engine.scan(from: [RecordFormat.record], to: [RecordFormat.record + 1]) {
            (key, record) throws(MasqError) -> Bool in
            let h = try RecordHeader.read(record, key: key)
            let future = restampAbove.map { h.version.timestamp > $0 } ?? false
            if (h.version.replica == old && h.seq > agreed) || future {
                doomed.append(Array(key))
            } else {
                newest = max(newest, h.version.timestamp)
            }
            return true
        }

        var new: UInt64 = 0
        while new == 0 || new == old { new = SecureRandom.uint64() }
        // The clock restarts from the wall clock (a repair) or where it was,
        // never below a record the store keeps.
        var fresh = HybridLogicalClock(last: reason == .clockAhead ? newest : max(saved.timestamp, clock.last))
        var seq: UInt64 = 0
        var names: [UInt32: Bool] = [:]
        for chunk in stride(from: 0, to: doomed.count, by: Store.reissueChunk) {
            seq += 1
            let timestamp = fresh.tick(nowMilliseconds: now)
            var log = LogEntryWriter()
            log.timestamp = timestamp
            for key in doomed[chunk..<min(chunk + Store.reissueChunk, doomed.count)] {
                try key.withBytes { (recordKey) throws(MasqError) in
                    guard let (header, value) = try readRecord(recordKey) else { return }
                    let restamp = restampAbove.map { header.version.timestamp > $0 } ?? false
                    let version = Version(timestamp: restamp ? timestamp : header.version.timestamp, replica: new)
                    let rewritten = RecordHeader(
                        tombstone: header.tombstone, counter: header.counter, version: version, seq: seq,
                        previous: header.version)
                    try writeRecord(recordKey, header: rewritten, value: value)
                    // 'R' varint(namespace id) user key
                    var reader = ByteReader(UnsafeRawBufferPointer(rebasing: recordKey[1...]))
                    let id = UInt32(try reader.varint())
                    names[id] = true
                    log.append(
                        namespaceID: id,
                        key: UnsafeRawBufferPointer(rebasing: recordKey[(1 + varintSize(UInt64(id)))...]))
                }
            }
            try Store.putMeta(engine, RecordFormat.logKey(replica: new, seq: seq), log.encoded())
        }
        // The old id is now an origin like any other: its log beyond the agreed
        // point goes (peers hold the authoritative commits and send them back).
        if saved.seq > agreed {
            try engine.deleteRange(
                from: RecordFormat.logKey(replica: old, seq: agreed + 1),
                to: RecordFormat.logKey(replica: old, seq: UInt64.max))
        }
        if agreed > 0 {
            let tip = try commitTimestampLocked(origin: old, seq: agreed) ?? (agreed == saved.seq ? saved.timestamp : 0)
            try Store.putMeta(
                engine, RecordFormat.vectorKey(replica: old), bigEndianBytes(agreed) + bigEndianBytes(tip))
        }
        try Store.putMeta(engine, RecordFormat.metaReplica, bigEndianBytes(new))
        try Store.putMeta(engine, RecordFormat.metaClock, bigEndianBytes(seq) + bigEndianBytes(fresh.last))
        clock = fresh
        return (old, new, doomed.count)
    }
}
