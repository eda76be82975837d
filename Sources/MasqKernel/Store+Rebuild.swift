import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// Rebuilding a damaged store (issue 21.3): removing damaged records in place
/// is not enough when the storage engine's own structures are damaged — a
/// flipped byte in a b-tree key or cell header leaves entries out of order or
/// unreachable, and a damaged page can hide whole ranges. So `masq check
/// --repair` copies everything that still reads back *and verifies* into a
/// fresh store beside the damaged one (records by their CRC-32 with their key,
/// change-log entries by their format), recounts the namespaces, asks paired
/// devices for a whole copy at the next sync, and swaps the directories: the
/// damaged one is kept aside, never deleted. What was lost comes back from a
/// paired device that has it.
extension Store {
    /// What a rebuild kept and dropped, and where the damaged copy went.
    public struct RebuildReport: Sendable {
        public var kept = 0
        /// Entries read back that failed verification (records, change-log entries).
        public var dropped = 0
        /// Places where the engine failed to read, skipped over.
        public var unreadable = 0
        /// Entries taken back from the pairing copy (the store had lost them).
        public var fromPairingCopy = 0
        /// The replica id or its clock was lost: the store continues under a new one.
        public var newReplica = false
        public var damagedCopy = ""
    }

    /// Whether the storage engine keeps the store on disk (a rebuild needs one).
    public var isOnDisk: Bool { engine.isPersistent }

    /// Most places an engine may fail to read before the rebuild gives up.
    static let maxUnreadable = 10_000

    /// Rebuild the store `config` describes. The store must not be open in
    /// any process (stop `masq sync` and masqd first): its data directory is
    /// renamed aside and replaced.
    public static func rebuild(config: MasqConfig) throws(MasqError) -> RebuildReport {
        let plugin = try PluginLoader.load(
            config.storage, kind: .storage, searchPath: PluginLoader.searchPath(config: config))
        var options = config.storage.options.filter { $0.key != "data_dir" }
        options.append(("data_dir", config.dataDir))
        let old = try StoragePluginInstance(plugin: plugin, options: options)
        defer { old.close() }
        guard old.isPersistent else {
            throw MasqError(
                .unsupported, "the storage plugin '\(plugin.name)' keeps nothing on disk: nothing to rebuild")
        }

        let parent = FileSystem.directoryName(config.dataDir)
        let name = FileSystem.baseName(config.dataDir)
        let fresh = parent + "/." + name + ".rebuilding-\(getpid())-\(String(SecureRandom.uint64(), radix: 16))"
        guard mkdir(fresh, 0o700) == 0 else {
            throw MasqError(.io, "cannot create \(fresh): \(FileSystem.errnoText())")
        }
        var report = RebuildReport()
        do throws(MasqError) {
            var freshOptions = config.storage.options.filter { $0.key != "data_dir" }
            freshOptions.append(("data_dir", fresh))
            let new = try StoragePluginInstance(plugin: plugin, options: freshOptions)
            do throws(MasqError) {
                try copyVerified(from: old, to: new, pairing: readPairingCopy(config.dataDir), &report)
            } catch {
                new.rollback()
                new.close()
                throw error
            }
            new.close()
            // The files beside the engine's (identity, keyring) go along.
            let engineFiles = Set(FileSystem.listDirectory(fresh))
            for file in FileSystem.listDirectory(config.dataDir)
            where !engineFiles.contains(where: { file.hasPrefix($0) }) {
                let path = config.dataDir + "/" + file
                guard !FileSystem.isDirectory(path) else { continue }
                try FileSystem.writeFile(
                    fresh + "/" + file, try FileSystem.readFile(path, limit: 64 << 20), mode: 0o600)
            }
        } catch {
            FileSystem.removeTree(fresh)
            throw error
        }
        old.close()
        report.damagedCopy = parent + "/" + name + ".damaged-\(Clock.unixMilliseconds())"
        guard rename(config.dataDir, report.damagedCopy) == 0 else {
            let why = FileSystem.errnoText()
            FileSystem.removeTree(fresh)
            throw MasqError(.io, "cannot move the damaged store aside: \(why); nothing was changed")
        }
        guard rename(fresh, config.dataDir) == 0 else {
            let why = FileSystem.errnoText()
            _ = rename(report.damagedCopy, config.dataDir)
            throw MasqError(
                .io, "cannot move the rebuilt store into place: \(why); the damaged one is back where it was")
        }
        Log.warn(
            "kernel",
            "rebuilt the store: kept \(report.kept) entries, dropped \(report.dropped) damaged, \(report.unreadable) unreadable place(s) skipped; the damaged copy is in \(report.damagedCopy)"
        )
        return report
    }

    // MARK: - the pairing copy

    /// A copy of what pairs this device with its group — paired devices,
    /// removals, the group's room, the device's name, the sealing marker — in
    /// a small file beside the store. A rebuild takes back from it whatever
    /// the damaged store lost of these (sealed entries stay sealed), so a
    /// device whose damaged pages held its pairings can still sync and fetch
    /// its data again instead of having to be paired anew.
    static let pairingCopyFile = "pairing.copy"
    static let pairingCopyMagic = Array("masq pairing copy v1\n".utf8)

    /// The entries the pairing copy holds, read from the engine (caller holds the lock).
    func pairingEntriesLocked() throws(MasqError) -> [([UInt8], [UInt8])] {
        var entries: [([UInt8], [UInt8])] = []
        for family in [RecordFormat.device, Store.removalFamily] {
            try engine.scan(from: [family], to: [family + 1]) { (k, v) throws(MasqError) -> Bool in
                entries.append((Array(k), Array(v)))
                return true
            }
        }
        for key in [Store.metaGroupRoom, Store.metaDeviceName, Store.metaSealed] {
            if let value = try Store.getMeta(engine, key) { entries.append((key, value)) }
        }
        return entries
    }

    /// Refresh the pairing copy when what it holds changed (at open and close).
    /// Written only from a store that read back whole: a read error leaves the last copy.
    func savePairingCopy() {
        guard engine.isPersistent else { return }
        do throws(MasqError) {
            let entries = try lock.withLock { () throws(MasqError) in try pairingEntriesLocked() }
            guard !entries.isEmpty else { return }
            var body: [UInt8] = []
            body.appendBigEndian32(UInt32(entries.count))
            for (k, v) in entries {
                body.appendBigEndian32(UInt32(k.count)); body += k
                body.appendBigEndian32(UInt32(v.count)); body += v
            }
            let file = Store.pairingCopyMagic + body + Hash.sha256(body)
            let path = config.dataDir + "/" + Store.pairingCopyFile
            if let present = try? FileSystem.readFile(path, limit: 16 << 20), present == file { return }
            try FileSystem.writeFile(path, file, mode: 0o600)
        } catch {
            Log.warn("kernel", "cannot refresh the pairing copy: \(error.message)")
        }
    }

    /// The entries of a pairing copy file (nil when absent or damaged).
    static func readPairingCopy(_ directory: String) -> [([UInt8], [UInt8])]? {
        guard let file = try? FileSystem.readFile(directory + "/" + pairingCopyFile, limit: 16 << 20),
            file.count >= pairingCopyMagic.count + 4 + 32,
            Array(file.prefix(pairingCopyMagic.count)) == pairingCopyMagic
        else { return nil }
        let body = Array(file[pairingCopyMagic.count..<(file.count - 32)])
        guard Hash.sha256(body) == Array(file.suffix(32)) else { return nil }
        var at = 0
        func u32() -> Int? {
            guard at + 4 <= body.count else { return nil }
            defer { at += 4 }
            return Int(body[at]) << 24 | Int(body[at + 1]) << 16 | Int(body[at + 2]) << 8 | Int(body[at + 3])
        }
        func bytes(_ n: Int) -> [UInt8]? {
            guard n >= 0, at + n <= body.count else { return nil }
            defer { at += n }
            return Array(body[at..<(at + n)])
        }
        guard let n = u32(), n <= 100_000 else { return nil }
        var entries: [([UInt8], [UInt8])] = []
        for _ in 0..<n {
            guard let kl = u32(), let k = bytes(kl), let vl = u32(), let v = bytes(vl) else { return nil }
            entries.append((k, v))
        }
        return at == body.count ? entries : nil
    }

    /// Copy every entry of `old` that reads back and verifies into `new`
    /// (one transaction per 16 MiB), skipping places the engine cannot read;
    /// then what the pairing copy holds and the store lost, the recomputed
    /// counts, a new replica id when the old one (or its clock) was lost, and
    /// the request for a whole copy.
    private static func copyVerified(
        from old: StoragePluginInstance, to new: StoragePluginInstance, pairing: [([UInt8], [UInt8])]?,
        _ report: inout RebuildReport
    ) throws(MasqError) {
        var counts: [UInt32: UInt64] = [:]
        var latest: UInt64 = 0
        var pending = 0
        var cursor: [UInt8] = []
        var last: [UInt8]?
        try new.begin()
        while true {
            var failure: MasqError?
            do throws(MasqError) {
                try old.scan(from: cursor, to: nil) { (k, v) throws(MasqError) -> Bool in
                    let key = Array(k)
                    // A damaged b-tree may hand keys back out of order: never step back.
                    if let last, !last.lexicographicallyPrecedes(key) { return true }
                    last = key
                    if Store.verifiedEntry(key, v, &counts, latest: &latest) {
                        try new.put(k, v)
                        report.kept += 1
                        pending += k.count + v.count
                        if pending >= 16 << 20 {
                            try new.commit()
                            try new.begin()
                            pending = 0
                        }
                    } else {
                        report.dropped += 1
                    }
                    return true
                }
            } catch {
                failure = error
            }
            guard failure != nil else { break }
            // Unreadable from here: resume past it, at the next key of a shorter prefix.
            report.unreadable += 1
            let position = last ?? (cursor.isEmpty ? [0] : cursor)
            guard report.unreadable < maxUnreadable, let next = Store.skipPast(position, after: cursor) else { break }
            cursor = next
        }
        // What pairs this device, where the damage took it.
        for (key, value) in pairing ?? [] where try getMeta(new, key) == nil {
            try putMeta(new, key, value)
            report.fromPairingCopy += 1
        }
        // Without its replica id or its clock the store could reuse commit numbers:
        // it continues under a new replica id, its clock past every record kept.
        let replica = try getMeta(new, RecordFormat.metaReplica), clock = try getMeta(new, RecordFormat.metaClock)
        if try getMeta(new, RecordFormat.metaFormat) != nil && (replica?.count != 8 || clock?.count != 16) {
            var id: UInt64 = 0
            while id == 0 { id = SecureRandom.uint64() }
            try putMeta(new, RecordFormat.metaReplica, bigEndianBytes(id))
            try putMeta(new, RecordFormat.metaClock, bigEndianBytes(0) + bigEndianBytes(latest))
            report.newReplica = true
        }
        // Counts from what was kept; meta counted so they are not redone.
        for (id, n) in counts { try putMeta(new, countKey(id), bigEndianBytes(n)) }
        try putMeta(new, metaCounted, [1])
        try putMeta(new, metaWantsSnapshot, [1])
        try new.commit()
    }

    /// Whether an entry read back from a damaged store is sound: a record
    /// passes its CRC-32 (over its key too), a change-log entry decodes;
    /// stored counts are dropped (recounted). Counts the records kept.
    static func verifiedEntry(
        _ key: [UInt8], _ value: UnsafeRawBufferPointer, _ counts: inout [UInt32: UInt64],
        latest: inout UInt64
    ) -> Bool {
        guard let family = key.first else { return false }
        switch family {
        case RecordFormat.record:
            guard let header = try? key.withBytes({ (k) throws(MasqError) in try RecordHeader.read(value, key: k) })
            else { return false }
            counts[namespaceID(ofRecordKey: key), default: 0] += 1
            latest = max(latest, header.version.timestamp)
            return true
        case RecordFormat.log:
            return key.count == 17 && (try? LogEntryWriter.decodeWithTimestamp(value)) != nil
        case countFamily:
            return false
        default:
            return key != metaCounted
        }
    }

    /// Where to resume after the engine failed to read beyond `position`:
    /// the successor of ever shorter prefixes of it (a damaged page spans a
    /// range of keys; a shorter prefix jumps further). Nil when nothing is left.
    static func skipPast(_ position: [UInt8], after cursor: [UInt8]) -> [UInt8]? {
        var length = position.count
        while length > 0 {
            if let next = RecordFormat.successor(ofPrefix: Array(position.prefix(length))),
                cursor.lexicographicallyPrecedes(next)
            {
                return next
            }
            length -= 1
        }
        return nil
    }
}
