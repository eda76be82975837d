import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// Backup, restore and export (issue 15; file format in docs/BACKUP.md,
/// export format in docs/EXPORT.md).
///
/// **Backup** copies the whole key space of the storage engine — records,
/// change log, vectors, devices, sessions, shares, everything, exactly as
/// stored (sealed parts stay sealed) — plus the files the store keeps beside
/// it (`identity`, and `keyring` when it has a passphrase), from ONE engine
/// transaction: `begin`, one scan of every key, `rollback`. With SQLite that
/// is a `BEGIN IMMEDIATE`, so the copy is consistent even while other
/// processes write to the same file (they wait for it, up to their busy
/// timeout). The stream is encrypted in chunks under a random file key,
/// itself wrapped by a key derived from a passphrase (scrypt) or from a
/// random 256-bit recovery key shown once.
///
/// **Restore** rebuilds a store in an empty (or new) data directory: it
/// writes into a temporary sibling directory and renames it into place only
/// after the last chunk authenticated and the store opened, so a bad file
/// leaves nothing behind. The restored store is marked; the first time it is
/// open and unlocked it continues under a new replica id (as a store that
/// finds itself rolled back does, Store+Identity.swift), so it never writes
/// under the id of the device it was copied from — that device may have
/// written more since, and peers send those writes back. Its sessions are
/// not fresh (a new Store), so it seals nothing before renewing them.
///
/// **Export** writes every live key as one JSON line (docs/EXPORT.md).
extension Store {
    /// 'M' "restored": u64 when the store was restored from a backup; the
    /// store takes a new replica id at its first unlocked open and deletes it.
    static let metaRestored: [UInt8] = [RecordFormat.meta] + Array("restored".utf8)

    // MARK: - backup

    /// Write a backup of this store to `path` (replacing nothing: MASQ_E_INVALID
    /// if it exists). Works on a locked store too (sealed parts are copied
    /// sealed). Returns what was written; for `.newRecoveryKey`, the key to
    /// show the user once.
    public func backup(to path: String, key: BackupKeySource) throws(MasqError) -> BackupSummary {
        guard !path.isEmpty else { throw .invalid("the backup file name is empty") }
        guard !FileSystem.exists(path) else {
            throw .invalid("\(path) exists: a backup never replaces a file (remove it, or choose another name)")
        }
        let recovery: RecoveryKey?
        let secret: BackupSecret
        switch key {
        case .passphrase(let p):
            guard !p.isEmpty else { throw .invalid("the backup passphrase is empty") }
            secret = .passphrase(p); recovery = nil
        case .newRecoveryKey:
            let generated = RecoveryKey.generate()
            secret = .recoveryKey(generated); recovery = generated
        }
        // The key derivation (scrypt, ~0.5 s) runs before the store is locked.
        let temporary = path + ".partial-\(getpid())"
        let writer = try BackupWriter(path: temporary, secret: secret, scryptLogN: config.scryptLogN)
        var entries = 0, files = 0
        var manifest: BackupManifest!
        do throws(MasqError) {
            try lock.withLock { () throws(MasqError) in
                try ensureOpen()
                try engine.begin()
                defer { engine.rollback() }
                // Beside the engine: the identity, and the keyring of a protected store.
                let sealed = try dataSealed()
                let keyring = FileSystem.exists(keyringPath) ? try FileSystem.readFile(keyringPath, limit: 4096) : nil
                guard sealed == (keyring != nil), !FileSystem.exists(pendingKeyringPath) else {
                    throw MasqError(.busy, "the store's passphrase is being set or removed; try the backup again")
                }
                let identityPath = config.dataDir + "/" + DeviceIdentity.fileName
                guard FileSystem.exists(identityPath) else {
                    throw .corrupt("the store has no identity file (\(identityPath))")
                }
                let identityFile = try FileSystem.readFile(identityPath, limit: 4096)
                guard let replicaBytes = try Store.getMeta(engine, RecordFormat.metaReplica), replicaBytes.count == 8
                else {
                    throw .corrupt("store has no valid replica id")
                }
                manifest = BackupManifest(
                    createdAt: Clock.unixMilliseconds(), masqVersion: "\(MasqVersion.string)",
                    replica: replicaBytes.withUnsafeBytes { $0.loadBigEndian(at: 0) },
                    deviceID: identity?.publicKeys.deviceID,
                    deviceName: try Store.getMeta(engine, Store.metaDeviceName).flatMap {
                        String(validating: $0, as: UTF8.self)
                    },
                    protected: sealed, storage: config.storage.name, config: config.json(), entries: 0, files: 0)
                try writer.record(BackupFormat.manifestTag, manifest.json)
                try writer.file(DeviceIdentity.fileName, identityFile)
                files += 1
                if let keyring {
                    try writer.file(KeyRing.fileName, keyring)
                    files += 1
                }
                try engine.scan(from: [], to: nil) { (key, value) throws(MasqError) -> Bool in
                    try writer.entry(key, value)
                    entries += 1
                    return true
                }
                try writer.end(entries: UInt64(entries), files: UInt32(files))
            }
            let size = try writer.finish()
            try FileSystem.publish(temporary, as: path)
            manifest.entries = entries
            manifest.files = files
            Log.info("kernel", "backup written: \(entries) entries, \(size) bytes")
            return BackupSummary(path: path, bytes: size, manifest: manifest, recoveryKey: recovery?.text)
        } catch {
            writer.abandon()
            unlink(temporary)
            throw error
        }
    }

    // MARK: - restore

    /// What a backup file says about itself before any key is given.
    public static func backupInfo(path: String) throws(MasqError) -> BackupInfo {
        let reader = try BackupReader(path: path)
        defer { reader.close() }
        return BackupInfo(formatVersion: Int(BackupFormat.version), keyKind: reader.kind, chunkBytes: reader.chunkSize)
    }

    /// Decrypt and check a whole backup without writing anything; returns its manifest.
    public static func verifyBackup(path: String, secret: [UInt8]) throws(MasqError) -> BackupManifest {
        try readBackup(path: path, secret: secret, onManifest: { _ in }, onFile: { _, _ in }, onEntry: { _, _ in })
    }

    /// Restore the backup at `path` into the data directory of `config`,
    /// which must not exist or be empty. `secret` is the backup's passphrase or
    /// its recovery key (as text). Nothing is written in the target unless the
    /// whole file authenticates; the store is renamed into place at the end.
    @discardableResult
    public static func restore(from path: String, secret: [UInt8], config: MasqConfig) throws(MasqError)
        -> BackupManifest
    {
        try checkRestoreTarget(config)  // before the key derivation: fail fast
        return try restore(from: path, secret: secret) { (_) throws(MasqError) in config }
    }

    /// As above, with the config chosen once the manifest is read (the CLI
    /// takes the backed-up store's transports when the machine has no config).
    @discardableResult
    public static func restore(
        from path: String, secret: [UInt8],
        config choose: (BackupManifest) throws(MasqError) -> MasqConfig
    ) throws(MasqError) -> BackupManifest {
        var temporary: String?
        var engine: StoragePluginInstance?
        var target = ""
        var files: [(String, [UInt8])] = []
        var pending = 0
        var last: [UInt8]?
        do throws(MasqError) {
            let manifest = try readBackup(
                path: path, secret: secret,
                onManifest: { (manifest) throws(MasqError) in
                    let config = try choose(manifest)
                    target = config.dataDir
                    try checkRestoreTarget(config)
                    let (directory, opened) = try openRestoreEngine(config)
                    temporary = directory
                    engine = opened
                    try opened.begin()
                },
                onFile: { (name, bytes) throws(MasqError) in
                    files.append((name, bytes))
                },
                onEntry: { (key, value) throws(MasqError) in
                    guard let engine else { throw MasqError(.internal, "restore: no engine") }
                    if let last, !last.lexicographicallyPrecedes(key) {
                        throw .corrupt("the backup's entries are out of order (damaged)")
                    }
                    try key.withBytes { (k) throws(MasqError) in
                        try value.withBytes { (v) throws(MasqError) in try engine.put(k, v) }
                    }
                    last = key
                    pending += key.count + value.count
                    if pending >= 16 << 20 {
                        try engine.commit()
                        try engine.begin()
                        pending = 0
                    }
                })
            guard let opened = engine, let temporary else { throw MasqError(.internal, "restore: nothing was opened") }
            // The marker: the first unlocked open takes a new replica id.
            try Store.putMeta(opened, metaRestored, bigEndianBytes(Clock.unixMilliseconds()))
            try opened.commit()
            opened.close()
            engine = nil
            let names = Set(files.map { $0.0 })
            guard names.contains(DeviceIdentity.fileName) else { throw .corrupt("the backup holds no device identity") }
            guard names.contains(KeyRing.fileName) == manifest.protected else {
                throw .corrupt(
                    "the backup's keyring does not match its store (\(manifest.protected ? "missing" : "unexpected"))")
            }
            for (name, bytes) in files { try FileSystem.writeFile(temporary + "/" + name, bytes, mode: 0o600) }
            // Open it once where it is: format, counts and keyring are read; an
            // unprotected store takes its new replica id now.
            var check = try choose(manifest)
            check.dataDir = temporary
            let store = try Store(config: check)
            try store.close()
            // Into place: rename(2) replaces an empty directory, and fails if
            // anything appeared in it meanwhile (then nothing is lost either).
            guard rename(temporary, target) == 0 else {
                throw MasqError(.io, "cannot move the restored store into \(target): \(FileSystem.errnoText())")
            }
            Log.info("kernel", "restored \(manifest.entries) entries into \(target)")
            return manifest
        } catch {
            engine?.rollback()
            engine?.close()
            if let temporary { FileSystem.removeTree(temporary) }
            throw error
        }
    }

    /// The target data directory must be new or empty; storage options must
    /// not name files outside it (they would escape the temporary directory).
    public static func checkRestoreTarget(_ config: MasqConfig) throws(MasqError) {
        let target = config.dataDir
        if FileSystem.exists(target) {
            guard FileSystem.isDirectory(target) else { throw .invalid("\(target) is not a directory") }
            let present = FileSystem.listDirectory(target)
            guard present.isEmpty else {
                throw .invalid(
                    "the data directory \(target) is not empty (\(present.prefix(3).joined(separator: ", "))\(present.count > 3 ? ", …" : "")): restore only into a new or empty directory; nothing was changed"
                )
            }
        }
        for (key, value) in config.storage.options where value.hasPrefix("/") {
            throw .config(
                "storage option \"\(key)\" is an absolute path (\(value)): a restore writes only inside its data directory"
            )
        }
    }

    /// A temporary directory beside the target, and the config's storage engine opened in it (empty).
    private static func openRestoreEngine(_ config: MasqConfig) throws(MasqError) -> (String, StoragePluginInstance) {
        let parent = FileSystem.directoryName(config.dataDir)
        try FileSystem.makeDirectories(parent)
        let directory =
            parent + "/." + FileSystem.baseName(config.dataDir)
            + ".restoring-\(getpid())-\(String(SecureRandom.uint64(), radix: 16))"
        guard mkdir(directory, 0o700) == 0 else {
            throw MasqError(.io, "cannot create \(directory): \(FileSystem.errnoText())")
        }
        do throws(MasqError) {
            let plugin = try PluginLoader.load(
                config.storage, kind: .storage, searchPath: PluginLoader.searchPath(config: config))
            var options = config.storage.options.filter { $0.key != "data_dir" }
            options.append(("data_dir", directory))
            let engine = try StoragePluginInstance(plugin: plugin, options: options)
            guard engine.isPersistent else {
                engine.close()
                throw MasqError(
                    .unsupported,
                    "the storage plugin '\(plugin.name)' keeps nothing once closed: restore into a persistent one (sqlite)"
                )
            }
            var empty = true
            try engine.scan(from: [], to: nil) { _, _ in
                empty = false; return false
            }
            guard empty else {
                engine.close()
                throw .invalid("the storage engine already holds data: restore only into an empty store")
            }
            return (directory, engine)
        } catch {
            FileSystem.removeTree(directory)
            throw error
        }
    }

    /// Decrypt a backup from end to end, handing its parts over in order;
    /// throws at the first problem (truncated, tampered, wrong key, damaged).
    static func readBackup(
        path: String, secret: [UInt8],
        onManifest: (BackupManifest) throws(MasqError) -> Void,
        onFile: (String, [UInt8]) throws(MasqError) -> Void,
        onEntry: ([UInt8], [UInt8]) throws(MasqError) -> Void
    ) throws(MasqError) -> BackupManifest {
        let reader = try BackupReader(path: path)
        defer { reader.close() }
        try reader.unlock(secret)
        var stream = BackupPlainStream(reader)
        guard try stream.byte() == BackupFormat.manifestTag else {
            throw .corrupt("the backup does not start with its manifest")
        }
        let manifestLength = Int(try stream.uint32())
        guard manifestLength <= 1 << 20 else { throw .corrupt("the backup's manifest is too large (damaged)") }
        var manifest = try BackupManifest(json: try stream.bytes(manifestLength))
        try onManifest(manifest)
        var entries: UInt64 = 0, files: UInt32 = 0
        while true {
            switch try stream.byte() {
            case BackupFormat.fileTag:
                let name = String(decoding: try stream.bytes(Int(try stream.byte())), as: UTF8.self)
                guard [DeviceIdentity.fileName, KeyRing.fileName].contains(name) else {
                    throw .corrupt("the backup holds an unknown file \"\(name.prefix(40))\"")
                }
                let size = Int(try stream.uint32())
                guard size <= 1 << 20 else { throw .corrupt("the backup's file \(name) is too large") }
                try onFile(name, try stream.bytes(size))
                files += 1
            case BackupFormat.entryTag:
                let keyLength = try stream.varint(max: 1 << 20)
                let key = try stream.bytes(keyLength)
                let valueLength = try stream.varint(max: 1 << 30)
                try onEntry(key, try stream.bytes(valueLength))
                entries += 1
            case BackupFormat.endTag:
                let countedEntries = try stream.uint64(), countedFiles = try stream.uint32()
                guard countedEntries == entries, countedFiles == files else {
                    throw .corrupt(
                        "the backup holds \(entries) entries and \(files) files where its end says \(countedEntries) and \(countedFiles)"
                    )
                }
                try stream.expectEnd()
                manifest.entries = Int(entries)
                manifest.files = Int(files)
                return manifest
            case let tag:
                throw .corrupt("the backup holds an unknown record type \(tag)")
            }
        }
    }

    // MARK: - the first open after a restore

    /// Called when the store becomes usable (opened unprotected, or
    /// unlocked): a store restored from a backup takes a new replica id, in
    /// one transaction with the removal of its marker.
    func finishRestoreIfNeeded() throws(MasqError) {
        let result = try lock.withLock { () throws(MasqError) -> (old: UInt64, new: UInt64, reissued: Int)? in
            guard (try? ensureOpen()) != nil, box != nil || !isProtectedLocked else { return nil }
            guard try Store.getMeta(engine, Store.metaRestored) != nil else { return nil }
            do throws(MasqError) {
                let result = try engine.transaction {
                    (keep) throws(MasqError) -> (old: UInt64, new: UInt64, reissued: Int)? in
                    guard try Store.getMeta(engine, Store.metaRestored) != nil else {  // another process did it
                        keep = false
                        return nil
                    }
                    let result = try reidentifyLocked(.restored)
                    try Store.metaRestored.withBytes { (k) throws(MasqError) in try engine.delete(k) }
                    return result
                }
                guard let result else {
                    try refreshIdentityLocked()
                    return nil
                }
                setReplica(result.new)
                return result
            } catch {
                try? refreshIdentityLocked()
                throw error
            }
        }
        if let result {
            Log.warn(
                "kernel",
                "restored from a backup: continuing as replica \(String(result.new, radix: 16)) instead of \(String(result.old, radix: 16)); \(result.reissued) record(s) written again; sessions are renewed before anything is sent"
            )
        }
    }

    /// Whether any device is paired or any share exists (caller holds the lock).
    func hasPeersLocked() throws(MasqError) -> Bool {
        var found = false
        for family in [RecordFormat.device, RecordFormat.share, Store.ackFamily] {
            try engine.scan(from: [family], to: [family + 1]) { _, _ in
                found = true; return false
            }
            if found { return true }
        }
        return false
    }

    private var isProtectedLocked: Bool { if case .none = protection { false } else { true } }

    // MARK: - export

    /// Write every live key as JSON lines (docs/EXPORT.md) to `path`
    /// (atomically, mode 0600; MASQ_E_INVALID if it exists). Needs the store
    /// unlocked. Returns the number of records written.
    @discardableResult
    public func export(to path: String) throws(MasqError) -> Int {
        guard !path.isEmpty else { throw .invalid("the export file name is empty") }
        guard !FileSystem.exists(path) else { throw .invalid("\(path) exists: an export never replaces a file") }
        let temporary = path + ".partial-\(getpid())"
        let fd = Glibc.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw MasqError(.io, "cannot write \(path): \(FileSystem.errnoText())") }
        do throws(MasqError) {
            let count = try exportAndClose(fd, path)
            try FileSystem.publish(temporary, as: path)
            return count
        } catch {
            unlink(temporary)
            throw error
        }
    }

    private func exportAndClose(_ fd: Int32, _ path: String) throws(MasqError) -> Int {
        defer { Glibc.close(fd) }
        let count = try export(toDescriptor: fd)
        guard fsync(fd) == 0 else { throw MasqError(.io, "cannot write \(path): \(FileSystem.errnoText())") }
        return count
    }

    /// Export to an open file descriptor (the CLI's standard output).
    @discardableResult
    public func export(toDescriptor fd: Int32) throws(MasqError) -> Int {
        var out = FileOutput(fd: fd)
        var count = 0
        try lock.withLock { () throws(MasqError) in
            try ensureUsable()
            try engine.begin()
            defer { engine.rollback() }
            let replica =
                try Store.getMeta(engine, RecordFormat.metaReplica).map {
                    $0.withUnsafeBytes { $0.loadBigEndian(at: 0) as UInt64 }
                } ?? 0
            var header =
                "{\"masq_export\":1,\"exported_at\":\(Clock.unixMilliseconds()),\"masq_version\":\(jsonString("\(MasqVersion.string)"))"
            if let id = identity?.publicKeys.deviceID { header += ",\"device_id\":\(jsonString(id))" }
            header += ",\"replica\":\"\(hex16(replica))\"}\n"
            try out.write(Array(header.utf8))
            // Namespace ids -> names (opened when sealed).
            var names: [UInt32: String] = [:]
            try engine.scan(from: [RecordFormat.namespaceByID], to: [RecordFormat.namespaceByID + 1]) {
                (key, value) throws(MasqError) -> Bool in
                guard key.count == 5 else { throw .corrupt("malformed namespace entry") }
                let id = UInt32(bigEndianBytes: Array(key)[1..<5])
                names[id] = try NamespaceName(storedBytes: decodeNamespaceName(id: id, stored: value)).string
                return true
            }
            let box = self.box
            var line: [UInt8] = []
            line.reserveCapacity(4096)
            try engine.scan(from: [RecordFormat.record], to: [RecordFormat.record + 1]) {
                (key, record) throws(MasqError) -> Bool in
                let header = try RecordHeader.read(record, key: key)
                guard !header.tombstone else { return true }
                var reader = ByteReader(UnsafeRawBufferPointer(rebasing: key[1...]))
                let id = UInt32(truncatingIfNeeded: try reader.varint())
                guard let name = names[id] else { throw .corrupt("a record of namespace \(id), which has no name") }
                let userKey = UnsafeRawBufferPointer(rebasing: key[(1 + varintSize(UInt64(id)))...])
                line.removeAll(keepingCapacity: true)
                line += Array("{\"ns\":\(jsonString(name)),\"key_b64\":\"".utf8)
                Base64.append(userKey, to: &line)
                line += Array("\",\"value_b64\":\"".utf8)
                if box == nil && !header.counter {
                    Base64.append(RecordHeader.value(in: record, header: header), to: &line)
                } else {
                    let value = displayValue(
                        header,
                        try box.map { (b) throws(MasqError) in try openValue(b, key, record, header) }
                            ?? Array(RecordHeader.value(in: record, header: header)))
                    value.withUnsafeBytes { Base64.append($0, to: &line) }
                }
                line += Array(
                    "\",\"ts\":\(HybridLogicalClock.milliseconds(of: header.version.timestamp)),\"hlc\":\"\(hex16(header.version.timestamp))\",\"replica\":\"\(hex16(header.version.replica))\""
                        .utf8)
                if header.counter { line += Array(",\"counter\":true".utf8) }
                line += Array("}\n".utf8)
                try out.write(line)
                count += 1
                return true
            }
            try out.write(Array("{\"masq_export_end\":true,\"records\":\(count)}\n".utf8))
        }
        try out.flush()
        return count
    }
}

func hex16(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
}

// MARK: - public types

/// How a new backup is keyed.
public enum BackupKeySource: Sendable {
    /// A passphrase the user chooses (scrypt, the store's `security.scrypt_log_n`).
    case passphrase([UInt8])
    /// A random 256-bit recovery key, returned once in `BackupSummary.recoveryKey`.
    case newRecoveryKey
}

/// What `backup` wrote.
public struct BackupSummary: Sendable {
    public let path: String
    public let bytes: UInt64
    public let manifest: BackupManifest
    /// The recovery key as text (14 groups of 4 characters), for a backup
    /// keyed by one: shown once, never stored.
    public let recoveryKey: String?
}

/// The key kind and format of a backup, read from its header alone.
public struct BackupInfo: Sendable {
    public let formatVersion: Int
    public let keyKind: BackupKeyKind
    public let chunkBytes: Int
}

public enum BackupKeyKind: UInt8, Sendable {
    case passphrase = 1
    case recoveryKey = 2

    public var name: String { self == .passphrase ? "passphrase" : "recovery_key" }
}

/// The first record of a backup (JSON inside the encryption).
public struct BackupManifest: Sendable {
    public var createdAt: UInt64
    public var masqVersion: String
    public var replica: UInt64
    public var deviceID: String?
    public var deviceName: String?
    /// The backed-up store had a passphrase (its keyring is in the backup:
    /// the restored store opens with the same passphrase).
    public var protected: Bool
    /// The storage plugin it was kept in (a restore may use another).
    public var storage: String
    /// The store's config as it was (its transports, sharing services, limits).
    public var config: String
    /// Counted while reading or writing (not stored in the manifest).
    public var entries: Int
    public var files: Int

    var json: [UInt8] {
        var fields = [
            "\"format\":\(BackupFormat.version)", "\"created_at\":\(createdAt)",
            "\"masq_version\":\(jsonString(masqVersion))",
            "\"replica\":\"\(hex16(replica))\""
        ]
        if let deviceID { fields.append("\"device_id\":\(jsonString(deviceID))") }
        if let deviceName { fields.append("\"device_name\":\(jsonString(deviceName))") }
        fields += [
            "\"protected\":\(protected)", "\"storage\":\(jsonString(storage))", "\"config\":\(jsonString(config))"
        ]
        return Array(("{" + fields.joined(separator: ",") + "}").utf8)
    }

    /// The manifest as JSON for the C API (with the counts).
    public var description: String {
        var fields = [
            "\"format\": \(BackupFormat.version)", "\"created_at\": \(createdAt)",
            "\"masq_version\": \(jsonString(masqVersion))",
            "\"replica\": \"\(hex16(replica))\"", "\"device_id\": \(deviceID.map(jsonString) ?? "null")",
            "\"device_name\": \(deviceName.map(jsonString) ?? "null")", "\"protected\": \(protected)",
            "\"storage\": \(jsonString(storage))", "\"entries\": \(entries)", "\"files\": \(files)"
        ]
        fields.append("\"config\": \(jsonString(config))")
        return "{" + fields.joined(separator: ", ") + "}"
    }

    init(
        createdAt: UInt64, masqVersion: String, replica: UInt64, deviceID: String?, deviceName: String?,
        protected: Bool,
        storage: String, config: String, entries: Int, files: Int
    ) {
        self.createdAt = createdAt
        self.masqVersion = masqVersion
        self.replica = replica
        self.deviceID = deviceID
        self.deviceName = deviceName
        self.protected = protected
        self.storage = storage
        self.config = config
        self.entries = entries
        self.files = files
    }

    init(json bytes: [UInt8]) throws(MasqError) {
        guard let text = String(validating: bytes, as: UTF8.self),
            case .object(let o) = try? JSONValue.parse(text, source: "backup manifest")
        else {
            throw .corrupt("the backup's manifest is not a JSON object")
        }
        func string(_ key: String) -> String? { if case .string(let s) = o[key] { s } else { nil } }
        func number(_ key: String) -> UInt64? { if case .number(_, let text) = o[key] { UInt64(text) } else { nil } }
        guard number("format") == UInt64(BackupFormat.version), let createdAt = number("created_at"),
            let replicaText = string("replica"), let replica = UInt64(replicaText, radix: 16),
            case .bool(let protected) = o["protected"], let storage = string("storage"), let config = string("config")
        else {
            throw .corrupt("the backup's manifest lacks a field this library needs")
        }
        self.init(
            createdAt: createdAt, masqVersion: string("masq_version") ?? "?", replica: replica,
            deviceID: string("device_id"),
            deviceName: string("device_name"), protected: protected, storage: storage, config: config, entries: 0,
            files: 0)
    }

    /// The backed-up store's config, moved to `dataDir` (storage options
    /// naming absolute paths are dropped: they pointed into the old machine).
    public func config(dataDir: String) throws(MasqError) -> MasqConfig {
        var parsed = try MasqConfig.parse(config, baseDir: dataDir, source: "the backup's config")
        parsed.dataDir = dataDir
        parsed.storage.options = parsed.storage.options.filter { !$0.value.hasPrefix("/") }
        return parsed
    }
}

/// A random 256-bit key that opens a backup: 32 bytes and a 3-byte checksum
/// in Crockford's base32 (no I, L, O, U; read case-insensitively, I/L as 1,
/// O as 0), 56 characters in 14 groups of 4 joined by '-'.
public struct RecoveryKey: Sendable {
    let key: SecureBytes
    static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)

    static func generate() -> RecoveryKey { RecoveryKey(key: SecureBytes.random(count: 32)) }

    init(key: SecureBytes) { self.key = key }

    static func checksum(_ key: [UInt8]) -> [UInt8] {
        Array(Hash.sha256(Array("masq recovery key v1".utf8) + key).prefix(3))
    }

    public var text: String {
        let bytes = key.bytes + RecoveryKey.checksum(key.bytes)  // 35 bytes = 280 bits = 56 characters
        var out: [UInt8] = []
        var buffer: UInt32 = 0, bits = 0
        for b in bytes {
            buffer = buffer << 8 | UInt32(b)
            bits += 8
            while bits >= 5 {
                bits -= 5
                out.append(RecoveryKey.alphabet[Int(buffer >> UInt32(bits) & 31)])
                if out.count % 5 == 4 { out.append(UInt8(ascii: "-")) }
            }
        }
        if out.last == UInt8(ascii: "-") { out.removeLast() }
        return String(decoding: out, as: UTF8.self)
    }

    /// Parse what the user typed (spaces and dashes ignored). MASQ_E_INVALID
    /// for anything that is not a recovery key, or one with a typo.
    init(parsing text: [UInt8]) throws(MasqError) {
        var values: [UInt8] = []
        for c in text {
            var u = c
            if u >= 0x61 && u <= 0x7A { u -= 0x20 }
            switch u {
            case UInt8(ascii: "-"), UInt8(ascii: " "), 0x09, 0x0A, 0x0D: continue
            case UInt8(ascii: "O"): u = UInt8(ascii: "0")
            case UInt8(ascii: "I"), UInt8(ascii: "L"): u = UInt8(ascii: "1")
            default: break
            }
            guard let v = RecoveryKey.alphabet.firstIndex(of: u) else {
                throw .invalid(
                    "this is not a recovery key (it has a character that is not one of its 32 letters and digits)")
            }
            values.append(UInt8(v))
        }
        guard values.count == 56 else {
            throw .invalid("this is not a recovery key (it has \(values.count) letters and digits, a recovery key 56)")
        }
        var bytes: [UInt8] = []
        var buffer: UInt32 = 0, bits = 0
        for v in values {
            buffer = buffer << 5 | UInt32(v)
            bits += 5
            if bits >= 8 {
                bits -= 8
                bytes.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
            }
        }
        let key = Array(bytes[0..<32])
        guard constantTimeEqual(RecoveryKey.checksum(key), Array(bytes[32..<35])) else {
            throw .invalid("the recovery key has a typo (its checksum does not match): check each group")
        }
        self.key = SecureBytes(key)
        var scratch = bytes
        wipe(&scratch)
    }
}

// MARK: - the file format (docs/BACKUP.md)

enum BackupFormat {
    static let magic = Array("MASQBKUP".utf8)
    static let version: UInt8 = 1
    static let headerLength = 132
    /// Bytes covered by the wrapped key's AD (everything before it).
    static let wrapADLength = 52
    static let chunkSize = 1 << 20
    static let finalFlag: UInt32 = 0x8000_0000

    static let manifestTag: UInt8 = 0x4D  // 'M' u32 length, JSON
    static let fileTag: UInt8 = 0x46  // 'F' u8 name length, name, u32 length, bytes
    static let entryTag: UInt8 = 0x45  // 'E' varint key length, key, varint value length, value
    static let endTag: UInt8 = 0x5A  // 'Z' u64 entries, u32 files

    static let recoveryInfo = Array("masq backup recovery key v1".utf8)
    static let chunkInfo = Array("masq backup chunks v1".utf8)

    /// Chunk nonce: 3 zero bytes, the final flag (0 or 1), u64 chunk index.
    static func nonce(_ index: UInt64, final: Bool) -> [UInt8] {
        var n: [UInt8] = [0, 0, 0, final ? 1 : 0]
        n.appendBigEndian(index)
        return n
    }
}

/// The secret a backup is written with.
enum BackupSecret {
    case passphrase([UInt8])
    case recoveryKey(RecoveryKey)
}

/// Key-encryption key from a passphrase (scrypt) or a recovery key (HKDF).
private func backupKEK(
    kind: BackupKeyKind, secret: [UInt8]?, recovery: RecoveryKey?, salt: [UInt8],
    logN: UInt8, r: UInt32, p: UInt32
) throws(MasqError) -> SecureBytes {
    switch kind {
    case .passphrase:
        return try crypto { () throws(CryptoError) in
            try Hash.scrypt(
                password: secret ?? [], salt: salt, n: 1 << UInt64(logN), r: UInt64(r), p: UInt64(p), length: 32,
                maxMemory: (UInt64(128) * UInt64(r) << UInt64(logN)) + (64 << 20))
        }
    case .recoveryKey:
        guard let recovery else { throw MasqError(.internal, "no recovery key") }
        return try crypto { () throws(CryptoError) in
            try recovery.key.withBytes { (k) throws(CryptoError) in
                try Hash.hkdfSHA256(salt: salt, ikm: k, info: BackupFormat.recoveryInfo, length: 32)
            }
        }
    }
}

private func chunkKey(fileKey: SecureBytes, salt: [UInt8]) throws(MasqError) -> SecureBytes {
    try crypto { () throws(CryptoError) in
        try fileKey.withBytes { (k) throws(CryptoError) in
            try Hash.hkdfSHA256(salt: salt, ikm: k, info: BackupFormat.chunkInfo, length: 32)
        }
    }
}

/// Writes the header, then the plaintext stream in sealed chunks.
final class BackupWriter {
    private var fd: Int32
    private let path: String
    private let header: [UInt8]
    private let key: SecureBytes
    private let algorithm: AEAD.Algorithm
    private var index: UInt64 = 0
    /// The chunk being filled: `plain[0..<filled]`.
    private var plain = [UInt8](repeating: 0, count: BackupFormat.chunkSize)
    private var filled = 0
    private var sealed = [UInt8](repeating: 0, count: 4 + BackupFormat.chunkSize + AEAD.tagLength)
    private var written: UInt64 = 0

    init(path: String, secret: BackupSecret, scryptLogN: UInt8) throws(MasqError) {
        self.path = path
        let algorithm = AEAD.preferred
        self.algorithm = algorithm
        let salt = Random.bytes(16), wrapNonce = Random.bytes(12)
        let kind: BackupKeyKind
        let logN: UInt8, r: UInt32, p: UInt32
        let kek: SecureBytes
        switch secret {
        case .passphrase(let passphrase):
            kind = .passphrase; logN = scryptLogN; r = 8; p = 1
            kek = try backupKEK(kind: kind, secret: passphrase, recovery: nil, salt: salt, logN: logN, r: r, p: p)
        case .recoveryKey(let recovery):
            kind = .recoveryKey; logN = 0; r = 0; p = 0
            kek = try backupKEK(kind: kind, secret: nil, recovery: recovery, salt: salt, logN: 0, r: 0, p: 0)
        }
        var h = BackupFormat.magic + [BackupFormat.version, kind.rawValue, UInt8(algorithm.rawValue), logN]
        h += r.bigEndianBytes + p.bigEndianBytes + UInt32(BackupFormat.chunkSize).bigEndianBytes + salt + wrapNonce
        precondition(h.count == BackupFormat.wrapADLength)
        let fileKey = SecureBytes.random(count: 32)
        let ad = h
        let wrapped = try crypto { () throws(CryptoError) in
            try kek.withBytes { (k) throws(CryptoError) in
                try fileKey.withBytes { (m) throws(CryptoError) in
                    try ad.withCryptoBytes { (a) throws(CryptoError) in
                        try AEAD.seal(algorithm, key: k, nonce: wrapNonce, ad: a, plaintext: m)
                    }
                }
            }
        }
        h += wrapped
        h += Hash.sha256(h)
        precondition(h.count == BackupFormat.headerLength)
        header = h
        key = try chunkKey(fileKey: fileKey, salt: salt)
        fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw MasqError(.io, "cannot write \(path): \(FileSystem.errnoText())") }
        do throws(MasqError) { try writeAll(header) } catch {
            abandon()
            throw error
        }
    }

    func record(_ tag: UInt8, _ body: [UInt8]) throws(MasqError) {
        var head: [UInt8] = [tag]
        head.appendBigEndian32(UInt32(body.count))
        try append(head)
        try append(body)
    }

    func file(_ name: String, _ bytes: [UInt8]) throws(MasqError) {
        let n = Array(name.utf8)
        var head: [UInt8] = [BackupFormat.fileTag, UInt8(n.count)] + n
        head.appendBigEndian32(UInt32(bytes.count))
        try append(head)
        try append(bytes)
    }

    func entry(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws(MasqError) {
        try withUnsafeTemporaryAllocation(byteCount: 11, alignment: 1) { (buffer) throws(MasqError) in
            buffer[0] = BackupFormat.entryTag
            try append(
                UnsafeRawBufferPointer(
                    rebasing: buffer[0..<(1 + BackupWriter.varint(UInt64(key.count), into: buffer, at: 1))]))
            try append(key)
            try append(
                UnsafeRawBufferPointer(
                    rebasing: buffer[0..<BackupWriter.varint(UInt64(value.count), into: buffer, at: 0)]))
            try append(value)
        }
    }

    /// LEB128 into `buffer` at `offset`; returns its length.
    private static func varint(_ value: UInt64, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        var v = value, i = offset
        while v >= 0x80 {
            buffer[i] = UInt8(truncatingIfNeeded: v) | 0x80
            v >>= 7
            i += 1
        }
        buffer[i] = UInt8(v)
        return i + 1 - offset
    }

    func end(entries: UInt64, files: UInt32) throws(MasqError) {
        var body: [UInt8] = [BackupFormat.endTag]
        body.appendBigEndian(entries)
        body.appendBigEndian32(files)
        try append(body)
    }

    private func append(_ bytes: [UInt8]) throws(MasqError) {
        try bytes.withBytes { (b) throws(MasqError) in try append(b) }
    }

    /// A full chunk is sealed only when more bytes follow, so the last one
    /// can carry the final flag.
    private func append(_ bytes: UnsafeRawBufferPointer) throws(MasqError) {
        var rest = bytes
        while rest.count > 0 {
            if filled == BackupFormat.chunkSize { try seal(final: false) }
            let n = min(BackupFormat.chunkSize - filled, rest.count)
            let at = filled
            plain.withUnsafeMutableBytes {
                UnsafeMutableRawBufferPointer(rebasing: $0[at..<(at + n)]).copyMemory(
                    from: UnsafeRawBufferPointer(rebasing: rest[0..<n]))
            }
            filled += n
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
    }

    private func seal(final: Bool) throws(MasqError) {
        let count = filled
        let length = count + AEAD.tagLength
        let word = UInt32(length) | (final ? BackupFormat.finalFlag : 0)
        sealed.withUnsafeMutableBytes { $0.storeBigEndian32(word, at: 0) }
        let nonce = BackupFormat.nonce(index, final: final)
        let algorithm = self.algorithm
        try crypto { () throws(CryptoError) in
            try key.withBytes { (k) throws(CryptoError) in
                try header.withCryptoBytes { (ad) throws(CryptoError) in
                    try plain.withCryptoBytes { (p) throws(CryptoError) in
                        try sealed.withUnsafeMutableBytes { (o) -> Result<Void, CryptoError> in
                            Result { () throws(CryptoError) in
                                try AEAD.seal(
                                    algorithm, key: k, nonce: nonce, ad: ad,
                                    plaintext: UnsafeRawBufferPointer(rebasing: p[0..<count]),
                                    into: UnsafeMutableRawBufferPointer(rebasing: o[4..<(4 + length)]))
                            }
                        }.get()
                    }
                }
            }
        }
        try writeAll(sealed, count: 4 + length)
        index += 1
        filled = 0
    }

    private func writeAll(_ bytes: [UInt8], count: Int? = nil) throws(MasqError) {
        let total = count ?? bytes.count
        var offset = 0
        while offset < total {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, total - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw MasqError(.io, "cannot write the backup: \(FileSystem.errnoText())")
            }
            offset += n
        }
        written += UInt64(total)
    }

    /// Seal the final chunk, make the file durable, close it. Returns its size.
    func finish() throws(MasqError) -> UInt64 {
        try seal(final: true)
        guard fsync(fd) == 0 else { throw MasqError(.io, "cannot write the backup: \(FileSystem.errnoText())") }
        guard close(fd) == 0 else {
            fd = -1
            throw MasqError(.io, "cannot write the backup: \(FileSystem.errnoText())")
        }
        fd = -1
        masqWipeArray(&plain)
        return written
    }

    func abandon() {
        if fd >= 0 { close(fd) }
        fd = -1
        masqWipeArray(&plain)
    }

    deinit { abandon() }
}

private func masqWipeArray(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { masqWipe($0) }
    bytes.removeAll()
}

/// Reads a backup's header and hands out its chunks, authenticated, in order.
final class BackupReader {
    private var fd: Int32
    let header: [UInt8]
    let kind: BackupKeyKind
    let algorithm: AEAD.Algorithm
    let logN: UInt8
    let r: UInt32
    let p: UInt32
    let chunkSize: Int
    let salt: [UInt8]
    private let wrapNonce: [UInt8]
    private let wrapped: [UInt8]
    private var key: SecureBytes?
    private var index: UInt64 = 0
    private(set) var sawFinal = false
    private var sealed: [UInt8] = []

    init(path: String) throws(MasqError) {
        fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw MasqError(errno == ENOENT ? .notFound : .io, "cannot read \(path): \(FileSystem.errnoText())")
        }
        var head = [UInt8](repeating: 0, count: BackupFormat.headerLength)
        var got = 0
        do throws(MasqError) {
            got = try BackupReader.readFully(fd, &head, 0, BackupFormat.headerLength)
            guard got >= BackupFormat.magic.count + 1, Array(head[0..<8]) == BackupFormat.magic else {
                throw .corrupt("\(path) is not a Masq backup")
            }
            guard head[8] == BackupFormat.version else {
                throw MasqError(
                    .unsupported,
                    "\(path) is a Masq backup of format version \(head[8]); this library reads version \(BackupFormat.version)"
                )
            }
            guard got == BackupFormat.headerLength else {
                throw .corrupt("\(path) is truncated: it ends inside its header")
            }
            guard Array(head[100..<132]) == Hash.sha256(Array(head[0..<100])) else {
                throw .corrupt("\(path): the backup's header is damaged (its checksum does not match)")
            }
            guard let kind = BackupKeyKind(rawValue: head[9]), let algorithm = AEAD.Algorithm(rawValue: Int32(head[10]))
            else {
                throw .corrupt("\(path): the backup's header names an unknown key kind or cipher")
            }
            self.kind = kind
            self.algorithm = algorithm
            logN = head[11]
            r = UInt32(bigEndianBytes: head[12..<16])
            p = UInt32(bigEndianBytes: head[16..<20])
            chunkSize = Int(UInt32(bigEndianBytes: head[20..<24]))
            if kind == .passphrase {
                guard (10...22).contains(logN), (1...32).contains(r), (1...16).contains(p) else {
                    throw .corrupt("\(path): the backup's header has scrypt parameters out of range")
                }
            }
            guard (1024...(16 << 20)).contains(chunkSize) else {
                throw .corrupt("\(path): the backup's header has an impossible chunk size")
            }
            salt = Array(head[24..<40])
            wrapNonce = Array(head[40..<52])
            wrapped = Array(head[52..<100])
            header = head
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    deinit { close() }

    /// Derive the key-encryption key from `secret` (a passphrase, or the
    /// recovery key's text) and unwrap the file key.
    func unlock(_ secret: [UInt8]) throws(MasqError) {
        let recovery: RecoveryKey? = kind == .recoveryKey ? try RecoveryKey(parsing: secret) : nil
        if kind == .passphrase && secret.isEmpty { throw .invalid("the backup's passphrase is empty") }
        let kek = try backupKEK(kind: kind, secret: secret, recovery: recovery, salt: salt, logN: logN, r: r, p: p)
        let fileKey = SecureBytes(count: 32)
        let ad = Array(header[0..<BackupFormat.wrapADLength])
        do throws(CryptoError) {
            try kek.withBytes { (k) throws(CryptoError) in
                try ad.withCryptoBytes { (a) throws(CryptoError) in
                    try wrapped.withCryptoBytes { (c) throws(CryptoError) in
                        try fileKey.withMutableBytes { (out) throws(CryptoError) in
                            try AEAD.open(algorithm, key: k, nonce: wrapNonce, ad: a, ciphertext: c, into: out)
                        }
                    }
                }
            }
        } catch {
            throw MasqError(
                .denied,
                kind == .passphrase
                    ? "wrong passphrase for this backup"
                    : "this backup was made with another recovery key")
        }
        key = try chunkKey(fileKey: fileKey, salt: salt)
    }

    /// The next chunk's plaintext, or nil after the final one (then the file must end).
    func next() throws(MasqError) -> [UInt8]? {
        guard let key else { throw MasqError(.internal, "the backup is not unlocked") }
        var lengthBytes = [UInt8](repeating: 0, count: 4)
        let got = try BackupReader.readFully(fd, &lengthBytes, 0, 4)
        if sawFinal {
            guard got == 0 else {
                throw .corrupt("the backup has data after its final chunk (appended to, or damaged)")
            }
            return nil
        }
        guard got == 4 else {
            throw .corrupt(
                got == 0
                    ? "the backup is truncated: it ends after chunk \(index) without its final chunk"
                    : "the backup is truncated inside chunk \(index)")
        }
        let word = UInt32(bigEndianBytes: lengthBytes[0..<4])
        let final = word & BackupFormat.finalFlag != 0
        let length = Int(word & ~BackupFormat.finalFlag)
        guard length >= AEAD.tagLength, length <= chunkSize + AEAD.tagLength else {
            throw .corrupt("chunk \(index) of the backup has an impossible length (the file is damaged)")
        }
        if sealed.count != length { sealed = [UInt8](repeating: 0, count: length) }
        guard try BackupReader.readFully(fd, &sealed, 0, length) == length else {
            throw .corrupt("the backup is truncated inside chunk \(index)")
        }
        var plain = [UInt8](repeating: 0, count: length - AEAD.tagLength)
        let nonce = BackupFormat.nonce(index, final: final)
        let algorithm = self.algorithm
        do throws(CryptoError) {
            try key.withBytes { (k) throws(CryptoError) in
                try header.withCryptoBytes { (ad) throws(CryptoError) in
                    try sealed.withCryptoBytes { (c) throws(CryptoError) in
                        try plain.withUnsafeMutableBytes { (o) -> Result<Void, CryptoError> in
                            Result { () throws(CryptoError) in
                                try AEAD.open(algorithm, key: k, nonce: nonce, ad: ad, ciphertext: c, into: o)
                            }
                        }.get()
                    }
                }
            }
        } catch {
            throw MasqError(
                .badSignature,
                "chunk \(index) of the backup does not authenticate: the file was altered, or its chunks reordered or cut"
            )
        }
        index += 1
        sawFinal = final
        return plain
    }

    /// Read up to `count` bytes at `offset` of `buffer`; returns how many (less only at end of file).
    static func readFully(_ fd: Int32, _ buffer: inout [UInt8], _ offset: Int, _ count: Int) throws(MasqError) -> Int {
        var got = 0
        while got < count {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + offset + got, count - got) }
            if n < 0 {
                if errno == EINTR { continue }
                throw MasqError(.io, "cannot read the backup: \(FileSystem.errnoText())")
            }
            if n == 0 { break }
            got += n
        }
        return got
    }
}

/// The decrypted stream of a backup, read across chunk boundaries.
struct BackupPlainStream {
    private let reader: BackupReader
    private var buffer: [UInt8] = []
    private var position = 0
    private var ended = false

    init(_ reader: BackupReader) { self.reader = reader }

    private mutating func ensure(_ count: Int) throws(MasqError) {
        while buffer.count - position < count {
            guard !ended, let chunk = try reader.next() else {
                ended = true
                throw .corrupt("the backup's content ends in the middle of a record (damaged)")
            }
            if position > 0 {
                buffer.removeFirst(position)
                position = 0
            }
            buffer += chunk
            if reader.sawFinal { ended = true }
        }
    }

    mutating func byte() throws(MasqError) -> UInt8 {
        try ensure(1)
        defer { position += 1 }
        return buffer[position]
    }

    mutating func bytes(_ count: Int) throws(MasqError) -> [UInt8] {
        try ensure(count)
        defer { position += count }
        return Array(buffer[position..<(position + count)])
    }

    mutating func uint32() throws(MasqError) -> UInt32 {
        let b = try bytes(4)
        return UInt32(bigEndianBytes: b[0..<4])
    }

    mutating func uint64() throws(MasqError) -> UInt64 {
        let b = try bytes(8)
        return b.withUnsafeBytes { $0.loadBigEndian(at: 0) }
    }

    mutating func varint(max: Int) throws(MasqError) -> Int {
        var value: UInt64 = 0
        for shift in stride(from: 0, to: 64, by: 7) {
            let b = try byte()
            value |= UInt64(b & 0x7F) << UInt64(shift)
            if b & 0x80 == 0 {
                guard value <= UInt64(max) else {
                    throw .corrupt("the backup holds a length beyond any this library writes (damaged)")
                }
                return Int(value)
            }
        }
        throw .corrupt("the backup holds a malformed length")
    }

    /// The end record must close the final chunk, and the file must end there.
    mutating func expectEnd() throws(MasqError) {
        guard position == buffer.count else { throw .corrupt("the backup has content after its end record") }
        if !ended {
            guard try reader.next() == nil else { throw .corrupt("the backup has chunks after its end record") }
        }
        guard try reader.next() == nil else { throw .corrupt("the backup has data after its final chunk") }
    }
}

/// Buffered writes to a file descriptor.
struct FileOutput {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(fd: Int32) {
        self.fd = fd
        buffer.reserveCapacity(1 << 16)
    }

    mutating func write(_ bytes: [UInt8]) throws(MasqError) {
        buffer += bytes
        if buffer.count >= 1 << 16 { try flush() }
    }

    mutating func flush() throws(MasqError) {
        var offset = 0
        while offset < buffer.count {
            let n = buffer.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, buffer.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw MasqError(.io, "cannot write: \(FileSystem.errnoText())")
            }
            offset += n
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

/// Standard base64 with padding (RFC 4648 §4): what docs/EXPORT.md promises.
enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    static func append(_ bytes: UnsafeRawBufferPointer, to out: inout [UInt8]) {
        var i = 0
        let a = alphabet
        while i + 3 <= bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out.append(a[Int(n >> 18)]); out.append(a[Int(n >> 12 & 63)]); out.append(a[Int(n >> 6 & 63)]);
            out.append(a[Int(n & 63)])
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out += [a[Int(n >> 18)], a[Int(n >> 12 & 63)], UInt8(ascii: "="), UInt8(ascii: "=")]
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out += [a[Int(n >> 18)], a[Int(n >> 12 & 63)], a[Int(n >> 6 & 63)], UInt8(ascii: "=")]
        }
    }
}

extension FileSystem {
    /// Give a finished temporary file its name, never replacing a file that
    /// appeared there meanwhile (link(2), then unlink of the temporary name).
    static func publish(_ temporary: String, as path: String) throws(MasqError) {
        guard link(temporary, path) == 0 else {
            let code = errno
            throw MasqError(
                code == EEXIST ? .invalid : .io,
                code == EEXIST ? "\(path) exists: it is never replaced" : "cannot write \(path): \(errnoText(code))")
        }
        unlink(temporary)
    }

    /// Remove a directory and everything in it (best effort; for temporary directories).
    static func removeTree(_ path: String) {
        for name in listDirectory(path) {
            let child = path + "/" + name
            var st = stat()
            if lstat(child, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { removeTree(child) } else { unlink(child) }
        }
        rmdir(path)
    }
}
