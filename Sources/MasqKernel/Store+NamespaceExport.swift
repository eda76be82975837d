/// One namespace's records as a peer outside this person's devices gets
/// them (sharing, MasqSharing): its changes after a vector, or all of it in
/// chunks.
extension Store {
    /// Whether namespace `ns` was ever written here (it has an id), live keys or not.
    public func namespaceExists(_ ns: NamespaceName) throws(MasqError) -> Bool {
        try lock.withLock { () throws(MasqError) -> Bool in
            try ensureUsable()
            return try existingNamespaceID(ns) != nil
        }
    }

    /// What to send a peer next of namespace `ns` (sharing): records of commits after
    /// `acked` (the peer's acknowledged vector of this store's change log),
    /// with the vector they bring the peer to. When the log below `acked`
    /// has been collected, the namespace goes whole instead, in key order
    /// from `cursor` (the caller keeps the cursor and the vector of the
    /// snapshot's start until the last chunk).
    public func namespaceExport(_ ns: NamespaceName, after acked: VersionVector, maxBytes: Int)
        throws(MasqError) -> (records: [SyncRecord], through: VersionVector)?
    {
        guard let commits = try exportCommits(after: acked, maxCommits: 1_000, maxBytes: maxBytes) else { return nil }
        var through = acked
        var records: [SyncRecord] = []
        for commit in commits {
            through[commit.origin] = max(through[commit.origin], commit.seq)
            // bytes, not canonical equivalence
            records += commit.records.filter { $0.namespace.utf8.elementsEqual(ns.bytes) }
        }
        return (records, through)
    }

    /// One chunk of every record of `ns` after `cursor` (a user key), in
    /// key order; `next` is nil after the last.
    public func namespaceChunk(_ ns: NamespaceName, after cursor: [UInt8]?, maxBytes: Int) throws(MasqError) -> (
        records: [SyncRecord], next: [UInt8]?, vector: VersionVector
    ) {
        try lock.withLock { () throws(MasqError) in
            try ensureUsable()
            let vector = try currentVector()
            guard let id = try existingNamespaceID(ns) else { return ([], nil, vector) }
            let base = RecordFormat.recordPrefix(namespaceID: id)
            let start = cursor.map { base + $0 + [0] } ?? base
            var records: [SyncRecord] = []
            var bytes = 0
            var last: [UInt8]?
            var full = false
            try engine.scan(from: start, to: RecordFormat.successor(ofPrefix: base)) {
                (key, _) throws(MasqError) -> Bool in
                guard let (header, value) = try readRecord(key) else { return true }
                let userKey = Array(key[base.count...])
                let size = userKey.count + value.count + 48
                if !records.isEmpty && bytes + size > maxBytes { full = true; return false }
                records.append(SyncRecord(namespace: ns.string, key: userKey, header: header, value: value))
                last = userKey
                bytes += size
                full = bytes >= maxBytes
                return !full
            }
            return (records, full ? last : nil, vector)
        }
    }
}
