import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// Passphrase protection: lock, unlock, set/change/remove the passphrase.
///
/// What is sealed when protected: record values, namespace names (looked up by
/// a keyed hash), the device identity, paired devices and session states.
/// Record keys and sync metadata (timestamps, replica ids) stay in clear so the
/// engine can order and merge them (docs/SECURITY.md).
///
/// Crash safety: the engine's 'M' "sealed" flag, written in the same
/// transaction as the data it describes, says how data is encoded. Protecting
/// writes `keyring.new` first and renames it after the data is sealed;
/// removing protection unseals the data, then deletes `keyring`. Opening the
/// store finishes whichever step a crash interrupted, so no state loses data.
extension Store {
    static let metaSealed: [UInt8] = [RecordFormat.meta] + Array("sealed".utf8)
    /// Families of secret entries sealed with their key as associated data.
    static let secretFamilies: [UInt8] = [
        RecordFormat.device, RecordFormat.session, RecordFormat.pairing, RecordFormat.share
    ]

    public var isProtected: Bool { lock.withLock { if case .none = protection { false } else { true } } }
    public var isLocked: Bool { lock.withLock { if case .locked = protection { true } else { false } } }

    var keyringPath: String { KeyRing.path(config.dataDir) }
    var pendingKeyringPath: String { keyringPath + ".new" }

    /// Called once from init: settle any interrupted change, then unlock,
    /// protect or load the identity as asked.
    func openProtection(passphrase: [UInt8]?) throws(MasqError) {
        let sealed = try dataSealed()
        if FileSystem.exists(pendingKeyringPath) {
            if sealed {
                guard rename(pendingKeyringPath, keyringPath) == 0 else {
                    throw MasqError(.io, "cannot finish protecting the store: \(FileSystem.errnoText())")
                }
            } else {
                unlink(pendingKeyringPath)
            }
        }
        let keyring = try KeyRing.load(config.dataDir)
        if keyring != nil && !sealed {
            unlink(keyringPath)  // an interrupted removal of the passphrase
            return try openProtection(passphrase: passphrase)
        }
        if let keyring {
            protection = .locked(keyring)
            if let passphrase { try unlock(passphrase) }
        } else {
            if sealed { throw .corrupt("the store's data is encrypted but \(keyringPath) is missing") }
            if let passphrase {
                try lock.withLock { () throws(MasqError) in try protectLocked(passphrase) }
            } else {
                identity = try loadOrCreateIdentity(box: nil)
            }
        }
    }

    /// Unlock a protected store (MASQ_E_DENIED for a wrong passphrase).
    /// Unlocking an unlocked store checks the passphrase again.
    public func unlock(_ passphrase: [UInt8]) throws(MasqError) {
        try lock.withLock { () throws(MasqError) in
            try ensureOpen()
            switch protection {
            case .none:
                throw .invalid("the store has no passphrase")
            case .unlocked(let keyring, _):
                _ = try keyring.unwrap(passphrase)
            case .locked(let keyring):
                let master = try keyring.unwrap(passphrase)
                let box = try SecretBox(master: master, algorithm: keyring.algorithm)
                protection = .unlocked(keyring, box)
                identity = try loadOrCreateIdentity(box: box)
                Log.info("kernel", "store unlocked")
            }
        }
        try finishRestoreIfNeeded()  // Store+Backup.swift
    }

    /// Forget the keys in memory; data calls fail until unlock. No-op when unprotected.
    public func relock() {
        lock.withLock {
            if case .unlocked(let keyring, _) = protection {
                protection = .locked(keyring)
                identity = nil
                namespaceIDs = [:]
            }
        }
    }

    /// Set (old nil), change, or remove (new nil) the passphrase. Changing
    /// re-wraps the master key only; setting or removing re-encodes the data
    /// in one transaction.
    public func setPassphrase(old: [UInt8]?, new: [UInt8]?) throws(MasqError) {
        if let new, new.isEmpty { throw .invalid("the new passphrase is empty") }
        try lock.withLock { () throws(MasqError) in
            try ensureOpen()
            switch protection {
            case .none:
                guard let new else { throw .invalid("the store has no passphrase to remove") }
                try protectLocked(new)
            case .locked:
                throw MasqError(.denied, "the store is locked: unlock it first")
            case .unlocked(let keyring, let box):
                guard let old else { throw MasqError(.denied, "the current passphrase is required") }
                let master = try keyring.unwrap(old)
                if let new {
                    let rewrapped = try KeyRing(
                        master: master, passphrase: new, algorithm: keyring.algorithm, logN: keyring.logN)
                    try rewrapped.save(config.dataDir)
                    protection = .unlocked(rewrapped, box)
                    Log.info("kernel", "passphrase changed")
                } else {
                    try migrate(from: box, to: nil)
                    protection = .none
                    namespaceIDs = [:]
                    try identity?.save(config.dataDir, box: nil)
                    unlink(keyringPath)
                    Log.info("kernel", "passphrase removed; data is stored in clear")
                }
            }
        }
    }

    /// Protect an unprotected store; the caller holds the lock.
    private func protectLocked(_ passphrase: [UInt8]) throws(MasqError) {
        let master = SecureBytes.random(count: 32)
        let algorithm = AEAD.preferred
        let keyring = try KeyRing(master: master, passphrase: passphrase, algorithm: algorithm, logN: config.scryptLogN)
        let box = try SecretBox(master: master, algorithm: algorithm)
        try FileSystem.writeFile(pendingKeyringPath, keyring.encoded, mode: 0o600)
        try migrate(from: nil, to: box)
        try engine.compact()  // no copy of the clear data may linger in free pages or the WAL
        guard rename(pendingKeyringPath, keyringPath) == 0 else {
            throw MasqError(.io, "cannot install the keyring: \(FileSystem.errnoText())")
        }
        protection = .unlocked(keyring, box)
        namespaceIDs = [:]
        if let identity {
            try identity.save(config.dataDir, box: box)
        } else {
            identity = try loadOrCreateIdentity(box: box)
        }
        Log.info(
            "kernel",
            "store protected with a passphrase (scrypt N=2^\(keyring.logN), \(algorithm == .aesGCM ? "AES-256-GCM" : "ChaCha20-Poly1305"))"
        )
    }

    func dataSealed() throws(MasqError) -> Bool {
        try Store.getMeta(engine, Store.metaSealed) == [1]
    }

    /// The identity in the data directory, created (exclusively, so two
    /// processes opening a new store agree) if absent; re-sealed if protection
    /// was set while it was still in clear.
    func loadOrCreateIdentity(box: SecretBox?) throws(MasqError) -> DeviceIdentity {
        if let (loaded, sealed) = try DeviceIdentity.load(config.dataDir, box: box) {
            if box != nil && !sealed { try loaded.save(config.dataDir, box: box) }
            return loaded
        }
        let fresh = DeviceIdentity.generate()
        if try fresh.create(config.dataDir, box: box) { return fresh }
        guard let (existing, _) = try DeviceIdentity.load(config.dataDir, box: box) else {
            throw .corrupt("identity file vanished")
        }
        return existing
    }

    /// Re-encode every sealed part of the store from `from` to `to` (nil: clear)
    /// in one engine transaction, ending with the 'sealed' flag.
    func migrate(from: SecretBox?, to: SecretBox?) throws(MasqError) {
        try engine.transaction { (_) throws(MasqError) in
            // Namespace names: 'n' id -> name, 'N' lookup key -> id.
            var names: [(id: UInt32, name: [UInt8])] = []
            try engine.scan(from: [RecordFormat.namespaceByID], to: [RecordFormat.namespaceByID + 1]) {
                (key, value) throws(MasqError) -> Bool in
                guard key.count == 5 else { throw .corrupt("malformed namespace entry") }
                let id = UInt32(bigEndianBytes: Array(key)[1..<5])
                names.append((id, try from.map { (b) throws(MasqError) in try b.open(value, ad: key) } ?? Array(value)))
                return true
            }
            try engine.deleteRange(from: [RecordFormat.namespaceByName], to: [RecordFormat.namespaceByName + 1])
            for (id, name) in names {
                let nameKey = RecordFormat.namespaceIDKey(id)
                try Store.putMeta(
                    engine, nameKey, try to.map { (b) throws(MasqError) in try b.seal(name, ad: nameKey) } ?? name)
                var idBytes: [UInt8] = []
                idBytes.appendVarint(UInt64(id))
                try Store.putMeta(engine, [RecordFormat.namespaceByName] + (to?.nameTag(name) ?? name), idBytes)
            }
            // Record values, in chunks.
            try rewrite(family: RecordFormat.record) { (key, record) throws(MasqError) -> [UInt8]? in
                let old = try RecordHeader.read(record, key: key)
                if old.tombstone && old.checksummed { return nil }
                let value =
                    old.tombstone
                    ? []
                    : try from.map { (b) throws(MasqError) in try openValue(b, key, record, old) }
                        ?? Array(RecordHeader.value(in: record, header: old))
                // Re-encoded with a checksum trailer (records of older versions gain one).
                var header = old
                header.checksummed = true
                let stored = old.tombstone ? 0 : value.count + (to == nil ? 0 : SecretBox.overhead)
                var out = [UInt8](repeating: 0, count: header.size + stored + RecordHeader.trailer)
                try out.withUnsafeMutableBytes { o in
                    value.withUnsafeBytes { v in
                        Result { () throws(MasqError) in
                            let offset = header.write(to: o)
                            let rest = UnsafeMutableRawBufferPointer(
                                rebasing: o[offset..<(o.count - RecordHeader.trailer)])
                            if let to, !old.tombstone {
                                try withValueAD(
                                    key, UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(o)[0..<offset])
                                ) { (ad) throws(MasqError) in
                                    try to.seal(v, ad: ad, into: rest)
                                }
                            } else if v.count > 0 {
                                rest.copyMemory(from: v)
                            }
                            RecordHeader.seal(o, key: key)
                        }
                    }
                }.get()
                return out
            }
            // Devices, sessions, pairing secrets.
            for family in Store.secretFamilies {
                try rewrite(family: family) { (key, value) throws(MasqError) -> [UInt8]? in
                    let plain = try from.map { (b) throws(MasqError) in try b.open(value, ad: key) } ?? Array(value)
                    return try to.map { (b) throws(MasqError) in try b.seal(plain, ad: Array(key)) } ?? plain
                }
            }
            // Blob chunks, manifests and fetch state (Store+Blobs.swift).
            try migrateBlobs(from: from, to: to)
            // The group room (a sealed 'M' entry).
            if let room = try Store.getMeta(engine, Store.metaGroupRoom) {
                let plain = try from.map { (b) throws(MasqError) in try b.open(room, ad: Store.metaGroupRoom) } ?? room
                try Store.putMeta(
                    engine, Store.metaGroupRoom,
                    try to.map { (b) throws(MasqError) in try b.seal(plain, ad: Store.metaGroupRoom) } ?? plain)
            }
            try Store.putMeta(engine, Store.metaSealed, [to == nil ? 0 : 1])
        }
    }

    /// Rewrite each entry of a key family with `transform` (nil: leave as is),
    /// reading in chunks so memory stays bounded.
    private func rewrite(
        family: UInt8, _ transform: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws(MasqError) -> [UInt8]?
    ) throws(MasqError) {
        var cursor: [UInt8] = [family]
        while true {
            var batch: [([UInt8], [UInt8])] = []
            var last: [UInt8]?
            try engine.scan(from: cursor, to: [family + 1]) { (key, value) throws(MasqError) -> Bool in
                last = Array(key)
                if let replaced = try transform(key, value) { batch.append((Array(key), replaced)) }
                return batch.count < 1_000
            }
            for (key, value) in batch { try Store.putMeta(engine, key, value) }
            guard let last, batch.count == 1_000 else { return }
            cursor = last + [0]
        }
    }

    // MARK: - secret entries (devices, sessions, pairing)

    /// Read a secret entry (opened when the store is sealed). Caller holds the lock.
    func getSecret(_ key: [UInt8]) throws(MasqError) -> [UInt8]? {
        guard let stored = try Store.getMeta(engine, key) else { return nil }
        return try box.map { (b) throws(MasqError) in try b.open(stored, ad: key) } ?? stored
    }

    /// Encode a secret entry for writing (sealed when the store is protected).
    func sealSecret(_ key: [UInt8], _ value: [UInt8]) throws(MasqError) -> [UInt8] {
        try box.map { (b) throws(MasqError) in try b.seal(value, ad: key) } ?? value
    }
}
