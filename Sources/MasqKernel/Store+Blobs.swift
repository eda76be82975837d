import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

// Blobs (docs/STORAGE-FORMAT.md, "Blobs"): file-sized data written and read
// without holding it in memory. A blob is cut into chunks of 1 MiB (the last
// shorter), each stored once per store under the SHA-256 of its plaintext; a
// manifest lists them in order and is stored the same way under its own
// SHA-256. An ordinary key holds a small reference to the manifest, written
// by the ordinary commit machinery, so a blob merges, conflicts, deletes and
// syncs exactly like any value; sync carries the chunks themselves on
// request (BlobTransfer.swift).

/// The value an ordinary key holds for a blob.
///
///     [6] magic FF 'M' 'B' 'L' 'O' 'B' · u8 version (1) · [32] manifest hash ·
///     u64 size · u32 chunk size · u8 n · content type (UTF-8) · u8 m · name (UTF-8)
///
/// The first byte (0xFF) never starts UTF-8 text, so no text value is ever
/// taken for a reference.
public struct BlobReference: Sendable, Equatable {
    public static let magic: [UInt8] = [0xFF, 0x4D, 0x42, 0x4C, 0x4F, 0x42]
    public static let version: UInt8 = 1
    public var manifest: [UInt8]
    public var size: UInt64
    public var chunkSize: UInt32
    public var contentType: String
    public var name: String

    public var id: String { hex(manifest) }
    public var chunkCount: Int { BlobManifest.chunkCount(size: size, chunkSize: chunkSize) }

    public var encoded: [UInt8] {
        var out = Self.magic + [Self.version] + manifest
        out.appendBigEndian(size)
        out.appendBigEndian32(chunkSize)
        let type = Array(contentType.utf8.prefix(255)), name = Array(self.name.utf8.prefix(255))
        out += [UInt8(type.count)] + type + [UInt8(name.count)] + name
        return out
    }

    public static func isReference(_ value: UnsafeRawBufferPointer) -> Bool {
        value.count >= magic.count && magic.indices.allSatisfy { value[$0] == magic[$0] }
    }

    /// nil when `value` is not a blob reference at all; MASQ_E_INVALID when it
    /// starts like one but is malformed or of an unknown version.
    public static func parse(_ value: UnsafeRawBufferPointer) throws(MasqError) -> BlobReference? {
        guard isReference(value) else { return nil }
        do throws(MasqError) {
            var r = ByteReader(UnsafeRawBufferPointer(rebasing: value[magic.count...]))
            let version = try r.byte()
            guard version == Self.version else {
                throw MasqError(
                    .invalid, "blob reference version \(version) is not one this library reads (\(Self.version))")
            }
            let manifest = try r.bytes(32)
            let size = try r.uint64()
            let chunk = try r.bytes(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            let type = try r.bytes(Int(try r.byte()))
            let name = try r.bytes(Int(try r.byte()))
            guard r.isAtEnd else { throw MasqError(.invalid, "blob reference has trailing bytes") }
            guard chunk > 0, chunk <= BlobManifest.maxChunkSize, size <= BlobManifest.maxBlobBytes,
                let t = String(validating: type, as: UTF8.self), let n = String(validating: name, as: UTF8.self)
            else {
                throw MasqError(.invalid, "malformed blob reference")
            }
            return BlobReference(manifest: manifest, size: size, chunkSize: chunk, contentType: t, name: n)
        } catch {
            throw MasqError(
                .invalid, error.status == .corrupt ? "malformed blob reference (\(error.message))" : error.message)
        }
    }

    public static func parse(_ value: [UInt8]) throws(MasqError) -> BlobReference? {
        try value.withBytes { (v) throws(MasqError) in try parse(v) }
    }
}

/// The ordered list of a blob's chunks:
///
///     "MQBM" · u8 version (1) · u32 chunk size · u64 size · u8 n · content type ·
///     u8 m · name · count × [32] SHA-256 of each chunk's plaintext
///
/// where count = ⌈size / chunk size⌉. Stored (and sent) under its own SHA-256.
public struct BlobManifest: Sendable, Equatable {
    static let magic: [UInt8] = Array("MQBM".utf8)
    public static let defaultChunkSize: UInt32 = 1 << 20
    static let maxChunkSize: UInt32 = 16 << 20
    /// 1 TiB: at most 1,048,576 chunks of 1 MiB, a manifest of 32 MiB, well
    /// within one sync message.
    public static let maxBlobBytes: UInt64 = 1 << 40

    public var chunkSize: UInt32
    public var size: UInt64
    public var contentType: String
    public var name: String
    /// 32 bytes per chunk, in order.
    var hashes: [UInt8]

    var count: Int { hashes.count / 32 }
    func hash(_ index: Int) -> [UInt8] { Array(hashes[(index * 32)..<(index * 32 + 32)]) }
    func length(_ index: Int) -> Int {
        let start = UInt64(index) * UInt64(chunkSize)
        return Int(min(UInt64(chunkSize), size - start))
    }

    static func chunkCount(size: UInt64, chunkSize: UInt32) -> Int {
        Int((size + UInt64(chunkSize) - 1) / UInt64(chunkSize))
    }

    var encoded: [UInt8] {
        var out = Self.magic + [1]
        out.appendBigEndian32(chunkSize)
        out.appendBigEndian(size)
        let type = Array(contentType.utf8.prefix(255)), name = Array(self.name.utf8.prefix(255))
        out += [UInt8(type.count)] + type + [UInt8(name.count)] + name
        return out + hashes
    }

    init(chunkSize: UInt32, size: UInt64, contentType: String, name: String, hashes: [UInt8]) {
        self.chunkSize = chunkSize
        self.size = size
        self.contentType = contentType
        self.name = name
        self.hashes = hashes
    }

    init(decoding bytes: UnsafeRawBufferPointer) throws(MasqError) {
        do throws(MasqError) {
            var r = ByteReader(bytes)
            guard try r.bytes(4) == Self.magic, try r.byte() == 1 else {
                throw MasqError(.corrupt, "not a blob manifest of a known version")
            }
            chunkSize = try r.bytes(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            size = try r.uint64()
            let type = try r.bytes(Int(try r.byte())), name = try r.bytes(Int(try r.byte()))
            guard chunkSize > 0, chunkSize <= Self.maxChunkSize, size <= Self.maxBlobBytes,
                let t = String(validating: type, as: UTF8.self), let n = String(validating: name, as: UTF8.self)
            else {
                throw MasqError(.corrupt, "malformed blob manifest")
            }
            contentType = t
            self.name = n
            let count = Self.chunkCount(size: size, chunkSize: chunkSize)
            hashes = try r.bytes(count * 32)
            guard r.isAtEnd else { throw MasqError(.corrupt, "blob manifest has trailing bytes") }
        } catch {
            throw MasqError(.corrupt, error.message.hasPrefix("truncated") ? "truncated blob manifest" : error.message)
        }
    }

    /// Whether this manifest describes the blob `reference` names.
    func matches(_ reference: BlobReference) -> Bool {
        size == reference.size && chunkSize == reference.chunkSize
    }
}

/// What `Store.blobInfo` reports about one blob.
public struct BlobInfo: Sendable, Equatable {
    public var reference: BlobReference
    /// The manifest is on this device (without it nothing of the blob can be read).
    public var manifestPresent: Bool
    public var presentChunks: Int
    public var presentBytes: UInt64
    public var complete: Bool {
        manifestPresent && presentBytes == reference.size && presentChunks == reference.chunkCount
    }
    /// When this device first asked its others for the contents (Unix ms; 0: not asked).
    public var wantedSince: UInt64 = 0
    /// For a blob just written: chunks (and their bytes) this write added to
    /// the store; a chunk the store already held is not written again.
    public var newChunks = 0
    public var newBytes: UInt64 = 0

    public var json: String {
        let r = reference
        return
            "{\"id\": \(jsonString(r.id)), \"size\": \(r.size), \"chunk_size\": \(r.chunkSize), \"chunks\": \(r.chunkCount), "
            + "\"content_type\": \(r.contentType.isEmpty ? "null" : jsonString(r.contentType)), \"name\": \(r.name.isEmpty ? "null" : jsonString(r.name)), "
            + "\"complete\": \(complete), \"manifest\": \(manifestPresent), \"present_chunks\": \(presentChunks), \"present_bytes\": \(presentBytes), "
            + "\"missing_chunks\": \(r.chunkCount - presentChunks), \"fetching_since\": \(wantedSince), "
            + "\"new_chunks\": \(newChunks), \"new_bytes\": \(newBytes)}"
    }
}

/// What a blob collection removed and kept.
public struct BlobCollection: Sendable, Equatable {
    public var chunksKept = 0
    public var bytesKept: UInt64 = 0
    public var chunksDeleted = 0
    public var bytesDeleted: UInt64 = 0
    public var manifestsKept = 0
    public var manifestsDeleted = 0
    /// Fetches dropped because no live key references their blob any more.
    public var fetchesDropped = 0
    /// Another process is writing a blob: unreferenced chunks were kept this time.
    public var deferred = false

    public var json: String {
        "{\"chunks_kept\": \(chunksKept), \"bytes_kept\": \(bytesKept), \"chunks_deleted\": \(chunksDeleted), "
            + "\"bytes_deleted\": \(bytesDeleted), \"manifests_kept\": \(manifestsKept), \"manifests_deleted\": \(manifestsDeleted), "
            + "\"fetches_dropped\": \(fetchesDropped), \"deferred\": \(deferred)}"
    }
}

/// In-memory blob state of one open store: what writes and reads in progress
/// protect from collection, fetch requests for the running sync, progress.
final class BlobState: @unchecked Sendable {
    let lock = Lock()
    /// Pin id -> the chunk (and manifest) hashes a write in progress relies on.
    var writing: [[UInt8]: Set<[UInt8]>] = [:]
    /// Manifest hash -> reads in progress.
    var reading: [[UInt8]: Int] = [:]
    /// Bumped when a fetch is asked for (the running sync looks again).
    var fetchEpoch = 0
    /// The running transfer's view: manifest hash -> chunks and bytes here.
    var fetched: [[UInt8]: (chunks: Int, bytes: UInt64)] = [:]
    var progress: (@Sendable (_ blobID: String, _ fetched: UInt64, _ size: UInt64) -> Void)?
}

/// Key layout of the 'B' family (docs/STORAGE-FORMAT.md).
enum BlobFormat {
    static let family: UInt8 = 0x42  // 'B'
    /// Second byte: lowercase in a store without passphrase (followed by the
    /// 32-byte SHA-256), uppercase in a protected one (followed by a 16-byte
    /// keyed hash of it, so the keys do not reveal which content is stored).
    enum Kind: UInt8, CaseIterable {
        case chunk = 0x63  // 'c' chunk plaintext (sealed when protected)
        case manifest = 0x6D  // 'm' manifest (sealed when protected)
        // 'w' a blob this device is fetching: [32] manifest hash · u64 size · u32 chunk size · u64 since
        case wanted = 0x77
        case complete = 0x6B  // 'k' every chunk of this manifest is here: [32] manifest hash · u64 size
        var sealed: UInt8 { rawValue - 0x20 }
    }
    static let pin: UInt8 = 0x70  // 'p' [16] write id -> u64 heartbeat (Unix ms)
    /// A pin whose writer has not written for this long is from a dead process.
    static let pinLifetime: UInt64 = 3_600_000
    /// Chunks written per transaction.
    static let chunksPerTransaction = 4
}

extension Store {
    // MARK: - keys and sealing (caller holds the lock)

    func blobKey(_ kind: BlobFormat.Kind, _ hash: [UInt8]) -> [UInt8] {
        guard let box else { return [BlobFormat.family, kind.rawValue] + hash }
        return [BlobFormat.family, kind.sealed] + box.nameTag([0xB1, kind.rawValue] + hash)
    }

    /// The plaintext of a 'B' entry (nil if absent).
    func blobGet(_ kind: BlobFormat.Kind, _ hash: [UInt8]) throws(MasqError) -> [UInt8]? {
        let key = blobKey(kind, hash)
        let box = self.box
        return try key.withBytes { (k) throws(MasqError) -> [UInt8]? in
            try engine.get(k) { (stored) throws(MasqError) -> [UInt8] in
                guard let box else { return Array(stored) }
                return try box.open(stored, ad: k)
            }
        }
    }

    func blobExists(_ kind: BlobFormat.Kind, _ hash: [UInt8]) throws(MasqError) -> Bool {
        try blobKey(kind, hash).withBytes { (k) throws(MasqError) in try engine.get(k) { _ in true } ?? false }
    }

    func blobPut(_ kind: BlobFormat.Kind, _ hash: [UInt8], _ plain: UnsafeRawBufferPointer) throws(MasqError) {
        let key = blobKey(kind, hash)
        try key.withBytes { (k) throws(MasqError) in
            guard let box else { return try engine.put(k, plain) }
            try withUnsafeTemporaryAllocation(byteCount: plain.count + SecretBox.overhead, alignment: 8) {
                (out) throws(MasqError) in
                try box.seal(plain, ad: k, into: out)
                try engine.put(k, UnsafeRawBufferPointer(out))
            }
        }
    }

    func blobDelete(_ kind: BlobFormat.Kind, _ hash: [UInt8]) throws(MasqError) {
        try blobKey(kind, hash).withBytes { (k) throws(MasqError) in try engine.delete(k) }
    }

    // MARK: - writing

    /// Write a blob from `read` (which fills the buffer it is given and
    /// returns how many bytes it put there; 0 at the end) and reference it
    /// from `key`. Only 1 MiB or so is held in memory, whatever the size.
    /// A failure of `read` (or of the store) leaves the key as it was:
    /// chunks already written stay unreferenced until collected.
    public func writeBlob(
        _ ns: NamespaceName, key: [UInt8], contentType: String = "", name: String = "",
        _ read: (UnsafeMutableRawBufferPointer) throws(MasqError) -> Int
    ) throws(MasqError) -> BlobInfo {
        let writer = try BlobWriter(store: self)
        do throws(MasqError) {
            try writer.fill(from: read)
            return try writer.finish(ns, key: key, contentType: contentType, name: name)
        } catch {
            writer.abort()
            throw error
        }
    }

    /// Write the file at `path` as a blob (its base name is the blob's name unless given).
    public func writeBlob(
        _ ns: NamespaceName, key: [UInt8], path: String, contentType: String = "", name: String? = nil
    ) throws(MasqError) -> BlobInfo {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw MasqError(.io, "cannot open \(path): \(FileSystem.errnoText())") }
        defer { Glibc.close(fd) }
        var info = stat()
        if fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR {
            throw MasqError(.io, "\(path) is a directory")
        }
        var offset: UInt64 = 0
        return try writeBlob(ns, key: key, contentType: contentType, name: name ?? FileSystem.baseName(path)) {
            (buffer) throws(MasqError) -> Int in
            while true {
                let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else {
                    throw MasqError(
                        .io,
                        "cannot read \(path) at byte \(offset): \(FileSystem.errnoText()); nothing was stored under the key"
                    )
                }
                offset += UInt64(n)
                return n
            }
        }
    }

    // MARK: - reading

    /// The blob reference `key` holds: MASQ_E_NOT_FOUND if absent,
    /// MASQ_E_INVALID if it holds an ordinary value.
    public func blobReference(_ ns: NamespaceName, key: [UInt8]) throws(MasqError) -> BlobReference {
        guard let value = try get(ns, key: key) else {
            throw MasqError(.notFound, "no key \(describeKey(key)) in namespace '\(ns.string)'")
        }
        guard let reference = try BlobReference.parse(value) else {
            throw MasqError(
                .invalid, "key \(describeKey(key)) in namespace '\(ns.string)' holds an ordinary value, not a blob")
        }
        return reference
    }

    /// Pass bytes [offset, offset + length) of the blob `key` references to
    /// `sink`, chunk by chunk (length nil: to the end). Every chunk in the
    /// range is checked present before the first byte goes out: a blob whose
    /// chunks are not all on this device yet is MASQ_E_UNAVAILABLE (and the
    /// read asks the running sync to fetch them). Each chunk's SHA-256 is
    /// checked as it is read (MASQ_E_CORRUPT if it does not match).
    public func readBlob(
        _ ns: NamespaceName, key: [UInt8], offset: UInt64 = 0, length: UInt64? = nil,
        _ sink: (UnsafeRawBufferPointer) throws(MasqError) -> Void
    ) throws(MasqError) {
        let reference = try blobReference(ns, key: key)
        try readBlob(reference, offset: offset, length: length, sink)
    }

    public func readBlob(
        _ reference: BlobReference, offset: UInt64 = 0, length: UInt64? = nil,
        _ sink: (UnsafeRawBufferPointer) throws(MasqError) -> Void
    ) throws(MasqError) {
        guard offset <= reference.size else {
            throw MasqError(.invalid, "offset \(offset) is past the end of the blob (\(reference.size) bytes)")
        }
        let end =
            length.map { min(reference.size, offset &+ $0 < offset ? reference.size : offset + $0) } ?? reference.size
        let manifest = try lock.withLock { () throws(MasqError) -> BlobManifest? in
            try ensureUsable()
            return try loadManifestLocked(reference)
        }
        guard let manifest else {
            try requestFetch(reference)
            throw MasqError(
                .unavailable,
                "blob \(reference.id.prefix(12)) (\(reference.size) bytes) is not on this device yet: "
                    + "its manifest has not arrived; \(fetchAdvice)")
        }
        guard end > offset else { return }
        let first = Int(offset / UInt64(manifest.chunkSize)), last = Int((end - 1) / UInt64(manifest.chunkSize))
        // Everything in the range must be here before anything is written out.
        let missing = try lock.withLock { () throws(MasqError) -> (count: Int, bytes: UInt64) in
            try ensureUsable()
            var count = 0, bytes: UInt64 = 0
            let whole = try blobExists(.complete, reference.manifest)
            for i in first...last where !whole {
                guard try !blobExists(.chunk, manifest.hash(i)) else { continue }
                count += 1
                bytes += UInt64(manifest.length(i))
            }
            if count == 0 { blobState.lock.withLock { blobState.reading[reference.manifest, default: 0] += 1 } }
            return (count, bytes)
        }
        guard missing.count == 0 else {
            try requestFetch(reference)
            throw MasqError(
                .unavailable,
                "\(missing.count) of \(last - first + 1) chunks (\(missing.bytes) bytes) of blob \(reference.id.prefix(12)) "
                    + "are not on this device yet; \(fetchAdvice)")
        }
        defer {
            blobState.lock.withLock {
                let n = (blobState.reading[reference.manifest] ?? 1) - 1
                blobState.reading[reference.manifest] = n == 0 ? nil : n
            }
        }
        for i in first...last {
            let hash = manifest.hash(i)
            guard
                let chunk = try lock.withLock({ () throws(MasqError) -> [UInt8]? in
                    try ensureUsable()
                    return try blobGet(.chunk, hash)
                })
            else {
                throw MasqError(
                    .unavailable,
                    "chunk \(i) of blob \(reference.id.prefix(12)) went away while it was read (the key was deleted?)")
            }
            guard chunk.count == manifest.length(i), Hash.sha256(chunk) == hash else {
                throw MasqError(
                    .corrupt,
                    "chunk \(i) of blob \(reference.id.prefix(12)) is damaged on this device (its SHA-256 does not match)"
                )
            }
            let chunkStart = UInt64(i) * UInt64(manifest.chunkSize)
            let from = Int(max(offset, chunkStart) - chunkStart),
                to = Int(min(end, chunkStart + UInt64(chunk.count)) - chunkStart)
            try chunk.withBytes { (c) throws(MasqError) in try sink(UnsafeRawBufferPointer(rebasing: c[from..<to])) }
        }
    }

    /// Read the blob into the file at `path`: written to a temporary file
    /// beside it and renamed once whole, so a failure leaves `path` untouched.
    public func readBlob(
        _ ns: NamespaceName, key: [UInt8], toFile path: String, offset: UInt64 = 0, length: UInt64? = nil
    ) throws(MasqError) {
        let reference = try blobReference(ns, key: key)
        let temporary = path + ".masq-partial-\(getpid())-\(SecureRandom.uint64() & 0xFFFFFF)"
        let fd = Glibc.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw MasqError(.io, "cannot create \(temporary): \(FileSystem.errnoText())") }
        var done = false
        defer {
            Glibc.close(fd)
            if !done { unlink(temporary) }
        }
        var written: UInt64 = 0
        try readBlob(reference, offset: offset, length: length) { (bytes) throws(MasqError) in
            var at = 0
            while at < bytes.count {
                let n = write(fd, bytes.baseAddress! + at, bytes.count - at)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    throw MasqError(
                        .io,
                        "cannot write \(path) at byte \(written + UInt64(at)): \(FileSystem.errnoText()); the file was left as it was"
                    )
                }
                at += n
            }
            written += UInt64(bytes.count)
        }
        guard fsync(fd) == 0 else { throw MasqError(.io, "cannot write \(path): \(FileSystem.errnoText())") }
        guard rename(temporary, path) == 0 else {
            throw MasqError(.io, "cannot rename \(temporary) to \(path): \(FileSystem.errnoText())")
        }
        done = true
    }

    private var fetchAdvice: String {
        syncSlot.running != nil
            ? "they are being fetched from your other devices (masq_sync_status shows progress)"
            : "start sync (masq_sync_start, `masq sync`) to fetch them from your other devices"
    }

    private func describeKey(_ key: [UInt8]) -> String {
        String(validating: key, as: UTF8.self).map { "'\($0.prefix(80))'" } ?? "0x" + hex(Array(key.prefix(40)))
    }

    // MARK: - info and fetching

    public func blobInfo(_ ns: NamespaceName, key: [UInt8]) throws(MasqError) -> BlobInfo {
        try blobInfo(try blobReference(ns, key: key))
    }

    /// What this device holds of the blob `reference` names.
    public func blobInfo(_ reference: BlobReference) throws(MasqError) -> BlobInfo {
        try lock.withLock { () throws(MasqError) -> BlobInfo in
            try ensureUsable()
            var info = BlobInfo(reference: reference, manifestPresent: false, presentChunks: 0, presentBytes: 0)
            info.wantedSince = try wantedEntryLocked(reference.manifest)?.since ?? 0
            guard let manifest = try loadManifestLocked(reference) else { return info }
            info.manifestPresent = true
            if try blobExists(.complete, reference.manifest) {
                info.presentChunks = manifest.count
                info.presentBytes = manifest.size
                return info
            }
            // Being fetched: the running transfer knows (reading each chunk to count it would be slow).
            if let live = blobState.lock.withLock({ blobState.fetched[reference.manifest] }) {
                info.presentChunks = live.chunks
                info.presentBytes = live.bytes
                return info
            }
            for i in 0..<manifest.count where try blobExists(.chunk, manifest.hash(i)) {
                info.presentChunks += 1
                info.presentBytes += UInt64(manifest.length(i))
            }
            return info
        }
    }

    /// Ask the running sync (now, or when it next runs) to fetch the blob
    /// `key` references from the other devices. A complete blob: nothing to do.
    public func fetchBlob(_ ns: NamespaceName, key: [UInt8]) throws(MasqError) {
        try requestFetch(try blobReference(ns, key: key))
    }

    /// Record that this device wants the blob's contents (kept across restarts).
    func requestFetch(_ reference: BlobReference) throws(MasqError) {
        let added = try localTransaction { () throws(MasqError) -> Bool in
            if try blobExists(.complete, reference.manifest) { return false }
            if try wantedEntryLocked(reference.manifest) != nil { return true }
            var value = reference.manifest
            value.appendBigEndian(reference.size)
            value.appendBigEndian32(reference.chunkSize)
            value.appendBigEndian(Clock.unixMilliseconds())
            try value.withBytes { (v) throws(MasqError) in try blobPut(.wanted, reference.manifest, v) }
            return true
        }
        if added { blobState.lock.withLock { blobState.fetchEpoch += 1 } }
    }

    struct WantedBlob: Equatable {
        var manifest: [UInt8]
        var size: UInt64
        var chunkSize: UInt32
        var since: UInt64
        var reference: BlobReference {
            BlobReference(manifest: manifest, size: size, chunkSize: chunkSize, contentType: "", name: "")
        }
    }

    static func decodeWanted(_ v: [UInt8]) throws(MasqError) -> WantedBlob {
        guard v.count == 52 else { throw .corrupt("malformed blob fetch entry") }
        return v.withUnsafeBytes { b in
            WantedBlob(
                manifest: Array(v[0..<32]), size: b.loadBigEndian(at: 32), chunkSize: b.loadBigEndian32(at: 40),
                since: b.loadBigEndian(at: 44))
        }
    }

    func wantedEntryLocked(_ manifest: [UInt8]) throws(MasqError) -> WantedBlob? {
        guard let v = try blobGet(.wanted, manifest) else { return nil }
        return try Store.decodeWanted(v)
    }

    /// Every blob this device is fetching, oldest request first.
    func wantedBlobs() throws(MasqError) -> [WantedBlob] {
        try lock.withLock { () throws(MasqError) -> [WantedBlob] in
            try ensureUsable()
            let prefix: [UInt8] = [
                BlobFormat.family, box == nil ? BlobFormat.Kind.wanted.rawValue : BlobFormat.Kind.wanted.sealed
            ]
            let box = self.box
            var out: [WantedBlob] = []
            try engine.scan(from: prefix, to: RecordFormat.successor(ofPrefix: prefix)) {
                (key, value) throws(MasqError) -> Bool in
                let plain = try box.map { (b) throws(MasqError) in try b.open(value, ad: key) } ?? Array(value)
                out.append(try Store.decodeWanted(plain))
                return true
            }
            return out.sorted {
                $0.since != $1.since ? $0.since < $1.since : $0.manifest.lexicographicallyPrecedes($1.manifest)
            }
        }
    }

    /// A blob is whole: forget the fetch, remember it complete.
    func markBlobComplete(_ manifest: [UInt8], size: UInt64) throws(MasqError) {
        try localTransaction { () throws(MasqError) in try markCompleteLocked(manifest, size: size) }
    }

    func markCompleteLocked(_ manifest: [UInt8], size: UInt64) throws(MasqError) {
        var value = manifest
        value.appendBigEndian(size)
        try value.withBytes { (v) throws(MasqError) in try blobPut(.complete, manifest, v) }
        try blobDelete(.wanted, manifest)
    }

    func loadManifestLocked(_ reference: BlobReference) throws(MasqError) -> BlobManifest? {
        guard let bytes = try blobGet(.manifest, reference.manifest) else { return nil }
        let manifest = try bytes.withBytes { (b) throws(MasqError) in try BlobManifest(decoding: b) }
        guard manifest.matches(reference) else {
            throw .corrupt("the manifest of blob \(reference.id.prefix(12)) does not match its reference")
        }
        return manifest
    }

    // MARK: - for the transfer (BlobTransfer.swift)

    /// The stored plaintext of a chunk or manifest (nil if not here).
    func blobContent(manifest: Bool, _ hash: [UInt8]) throws(MasqError) -> [UInt8]? {
        try lock.withLock { () throws(MasqError) in
            try ensureUsable()
            return try blobGet(manifest ? .manifest : .chunk, hash)
        }
    }

    /// Store chunks (or a manifest) received from another device; the caller
    /// checked each one's SHA-256. `complete`: manifests now whole.
    func storeReceived(
        _ items: [(manifest: Bool, hash: [UInt8], data: [UInt8])], complete: [(manifest: [UInt8], size: UInt64)]
    ) throws(MasqError) {
        try localTransaction { () throws(MasqError) in
            for item in items {
                try item.data.withBytes { (d) throws(MasqError) in
                    try blobPut(item.manifest ? .manifest : .chunk, item.hash, d)
                }
            }
            for c in complete { try markCompleteLocked(c.manifest, size: c.size) }
        }
    }

    /// The manifest of a wanted blob, and which of its chunks are missing here.
    func blobFetchPlan(_ wanted: WantedBlob) throws(MasqError) -> (manifest: BlobManifest, missing: [Int])? {
        try lock.withLock { () throws(MasqError) -> (manifest: BlobManifest, missing: [Int])? in
            try ensureUsable()
            guard let manifest = try loadManifestLocked(wanted.reference) else { return nil }
            var missing: [Int] = []
            for i in 0..<manifest.count where try !blobExists(.chunk, manifest.hash(i)) { missing.append(i) }
            return (manifest, missing)
        }
    }

    /// Eager fetching: every blob referenced from a kept namespace whose
    /// contents are not all here is marked wanted. Returns how many were.
    @discardableResult
    func wantReferencedBlobs(filter: NamespaceFilter) throws(MasqError) -> Int {
        var found: [BlobReference] = []
        for name in try namespaces() where filter.keeps(name) {
            let ns = try NamespaceName(name, limits: limits)
            try list(ns) { (_, value) throws(MasqError) -> Bool in
                if let value, let reference = try? BlobReference.parse(value) { found.append(reference) }
                return true
            }
        }
        var wanted = 0
        for reference in found
        where try !lock.withLock({ () throws(MasqError) -> Bool in
            try ensureUsable(); return try blobExists(.complete, reference.manifest)
        }) {
            try requestFetch(reference)
            wanted += 1
        }
        return wanted
    }

    // MARK: - collection

    /// Delete every chunk and manifest no live value references — never
    /// those of a blob being written or read, nor of one being fetched while
    /// a key still references it. One transaction, under the lock.
    @discardableResult
    public func collectBlobs() throws(MasqError) -> BlobCollection {
        try lock.withLock { () throws(MasqError) -> BlobCollection in
            try ensureUsable()
            var report = BlobCollection()
            let box = self.box
            // Live manifests: every reference a live record holds.
            var live = Set<[UInt8]>()
            try engine.scan(from: [RecordFormat.record], to: [RecordFormat.record + 1]) {
                (key, record) throws(MasqError) -> Bool in
                let header = try RecordHeader.read(record, key: key)
                guard !header.tombstone, !header.counter else { return true }
                let stored = RecordHeader.value(in: record, header: header)
                if let box {
                    // Sealed: only values long enough to be a reference are opened.
                    guard stored.count >= BlobReference.magic.count + 1 + 32 + 14 + SecretBox.overhead else {
                        return true
                    }
                    let value = try openValue(box, key, record, header)
                    if let reference = try? BlobReference.parse(value) { live.insert(reference.manifest) }
                } else if let reference = try? BlobReference.parse(stored) {
                    live.insert(reference.manifest)
                }
                return true
            }
            let (pinned, reading) = blobState.lock.withLock { (blobState.writing, blobState.reading) }
            for hashes in pinned.values { live.formUnion(hashes) }
            live.formUnion(reading.keys)
            // Pins of writers in other processes: their chunks cannot be told apart.
            let now = Clock.unixMilliseconds()
            var stalePins: [[UInt8]] = []
            try engine.scan(from: [BlobFormat.family, BlobFormat.pin], to: [BlobFormat.family, BlobFormat.pin + 1]) {
                (key, value) throws(MasqError) -> Bool in
                let id = Array(key[2...])
                guard pinned[id] == nil else { return true }
                let heartbeat = value.count == 8 ? value.loadBigEndian(at: 0) : 0
                if heartbeat + BlobFormat.pinLifetime < now {
                    stalePins.append(Array(key))
                } else {
                    report.deferred = true
                }
                return true
            }
            try engine.transaction { (_) throws(MasqError) in
                for key in stalePins { try key.withBytes { (k) throws(MasqError) in try engine.delete(k) } }
                // Fetches of blobs nothing references any more.
                let wantedPrefix: [UInt8] = [
                    BlobFormat.family, box == nil ? BlobFormat.Kind.wanted.rawValue : BlobFormat.Kind.wanted.sealed
                ]
                var dropped: [[UInt8]] = []
                try engine.scan(from: wantedPrefix, to: RecordFormat.successor(ofPrefix: wantedPrefix)) {
                    (key, value) throws(MasqError) -> Bool in
                    let wanted = try Store.decodeWanted(
                        try box.map { (b) throws(MasqError) in try b.open(value, ad: key) } ?? Array(value))
                    if !live.contains(wanted.manifest) { dropped.append(wanted.manifest) }
                    return true
                }
                for manifest in dropped { try blobDelete(.wanted, manifest) }
                report.fetchesDropped = dropped.count
                // Chunks of live manifests (as engine keys).
                var liveKeys = Set<[UInt8]>()
                var manifestKeys = Set<[UInt8]>()
                for manifest in live {
                    manifestKeys.insert(blobKey(.manifest, manifest))
                    if let bytes = try blobGet(.manifest, manifest) {
                        let m = try bytes.withBytes { (b) throws(MasqError) in try BlobManifest(decoding: b) }
                        for i in 0..<m.count { liveKeys.insert(blobKey(.chunk, m.hash(i))) }
                    } else {
                        liveKeys.insert(blobKey(.chunk, manifest))  // a pinned chunk hash (writes in progress)
                    }
                }
                for hashes in pinned.values { for h in hashes { liveKeys.insert(blobKey(.chunk, h)) } }
                let overhead = box == nil ? 0 : SecretBox.overhead
                // Chunks: kept when a live manifest lists them (or a write in progress holds them).
                let chunkPrefix: [UInt8] = [
                    BlobFormat.family, box == nil ? BlobFormat.Kind.chunk.rawValue : BlobFormat.Kind.chunk.sealed
                ]
                var doomed: [[UInt8]] = []
                try engine.scan(from: chunkPrefix, to: RecordFormat.successor(ofPrefix: chunkPrefix)) {
                    (key, value) throws(MasqError) -> Bool in
                    let k = Array(key)
                    if report.deferred || liveKeys.contains(k) {
                        report.chunksKept += 1
                        report.bytesKept += UInt64(max(0, value.count - overhead))
                    } else {
                        report.chunksDeleted += 1
                        report.bytesDeleted += UInt64(max(0, value.count - overhead))
                        doomed.append(k)
                    }
                    return true
                }
                // Manifests, and the marks saying a manifest's chunks are all here.
                let manifestPrefix: [UInt8] = [
                    BlobFormat.family, box == nil ? BlobFormat.Kind.manifest.rawValue : BlobFormat.Kind.manifest.sealed
                ]
                try engine.scan(from: manifestPrefix, to: RecordFormat.successor(ofPrefix: manifestPrefix)) {
                    (key, _) throws(MasqError) -> Bool in
                    let k = Array(key)
                    if report.deferred || manifestKeys.contains(k) {
                        report.manifestsKept += 1
                    } else {
                        report.manifestsDeleted += 1
                        doomed.append(k)
                    }
                    return true
                }
                let completePrefix: [UInt8] = [
                    BlobFormat.family, box == nil ? BlobFormat.Kind.complete.rawValue : BlobFormat.Kind.complete.sealed
                ]
                try engine.scan(from: completePrefix, to: RecordFormat.successor(ofPrefix: completePrefix)) {
                    (key, value) throws(MasqError) -> Bool in
                    let plain = try box.map { (b) throws(MasqError) in try b.open(value, ad: key) } ?? Array(value)
                    if !report.deferred && (plain.count < 32 || !live.contains(Array(plain[0..<32]))) {
                        doomed.append(Array(key))
                    }
                    return true
                }
                for key in doomed { try key.withBytes { (k) throws(MasqError) in try engine.delete(k) } }
            }
            if report.fetchesDropped > 0 { blobState.lock.withLock { blobState.fetchEpoch += 1 } }
            if report.chunksDeleted > 0 || report.manifestsDeleted > 0 {
                Log.info(
                    "kernel",
                    "blob collection: \(report.chunksDeleted) chunk(s), \(report.bytesDeleted) bytes, \(report.manifestsDeleted) manifest(s) deleted"
                )
            }
            return report
        }
    }

    // MARK: - passphrase changes (Store+Protection.migrate)

    /// Re-encode every 'B' entry from `from` to `to` (nil: clear), inside the
    /// caller's transaction: clear entries live under lowercase kinds and the
    /// SHA-256, sealed ones under uppercase kinds and a keyed hash, so the two
    /// ranges never mix while entries move between them.
    func migrateBlobs(from: SecretBox?, to: SecretBox?) throws(MasqError) {
        for kind in BlobFormat.Kind.allCases {
            let source: [UInt8] = [BlobFormat.family, from == nil ? kind.rawValue : kind.sealed]
            while true {
                var batch: [(key: [UInt8], plain: [UInt8])] = []
                try engine.scan(from: source, to: RecordFormat.successor(ofPrefix: source)) {
                    (key, value) throws(MasqError) -> Bool in
                    batch.append(
                        (
                            Array(key),
                            try from.map { (b) throws(MasqError) in try b.open(value, ad: key) } ?? Array(value)
                        ))
                    return batch.count < 8
                }
                if batch.isEmpty { break }
                for (oldKey, plain) in batch {
                    let hash: [UInt8]
                    switch kind {
                    case .chunk, .manifest: hash = Hash.sha256(plain)
                    case .wanted, .complete:
                        guard plain.count >= 32 else { throw .corrupt("malformed blob entry") }
                        hash = Array(plain[0..<32])
                    }
                    let newKey =
                        to.map { [BlobFormat.family, kind.sealed] + $0.nameTag([0xB1, kind.rawValue] + hash) } ?? [
                            BlobFormat.family, kind.rawValue
                        ] + hash
                    let stored = try to.map { (b) throws(MasqError) in try b.seal(plain, ad: newKey) } ?? plain
                    try oldKey.withBytes { (k) throws(MasqError) in try engine.delete(k) }
                    try Store.putMeta(engine, newKey, stored)
                }
            }
        }
    }
}

/// Writes one blob: fills 1 MiB chunks, stores each once (a chunk already in
/// the store is not written again), then the manifest, then the reference —
/// the only step other devices and readers see. Until then a pin keeps the
/// chunks from being collected (in memory for this process; `'B' 'p'` with a
/// heartbeat for collections run by other processes).
public final class BlobWriter: @unchecked Sendable {
    let store: Store
    let pin: [UInt8]
    let chunkSize = Int(BlobManifest.defaultChunkSize)
    private var buffer: UnsafeMutableRawBufferPointer
    private var filled = 0
    private var hashes: [UInt8] = []
    private var pending: [(hash: [UInt8], data: [UInt8])] = []
    private(set) public var size: UInt64 = 0
    private var newChunks = 0
    private var newBytes: UInt64 = 0
    private var done = false

    public init(store: Store) throws(MasqError) {
        self.store = store
        pin = Random.bytes(16)
        buffer = .allocate(byteCount: chunkSize, alignment: 16)
        try store.lock.withLock { () throws(MasqError) in try store.ensureUsable() }
        store.blobState.lock.withLock { store.blobState.writing[pin] = [] }
        try heartbeat()
    }

    deinit {
        if !done { abort() }
        buffer.deallocate()
    }

    /// Append bytes (any amount, any number of calls).
    public func append(_ bytes: UnsafeRawBufferPointer) throws(MasqError) {
        guard !done else { throw MasqError(.invalid, "this blob write is over") }
        var at = 0
        while at < bytes.count {
            let n = min(chunkSize - filled, bytes.count - at)
            UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<(filled + n)]).copyMemory(
                from: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + n)]))
            filled += n
            at += n
            if filled == chunkSize { try cutChunk() }
        }
    }

    public func append(_ bytes: [UInt8]) throws(MasqError) {
        try bytes.withBytes { (b) throws(MasqError) in try append(b) }
    }

    /// Pull everything `read` gives (0: the end) straight into the chunk buffer.
    func fill(from read: (UnsafeMutableRawBufferPointer) throws(MasqError) -> Int) throws(MasqError) {
        while true {
            let space = UnsafeMutableRawBufferPointer(rebasing: buffer[filled...])
            let n = try read(space)
            guard n >= 0 && n <= space.count else {
                throw MasqError(.invalid, "the read callback returned \(n) for a buffer of \(space.count) bytes")
            }
            if n == 0 { return }
            filled += n
            if filled == chunkSize { try cutChunk() }
        }
    }

    private func cutChunk() throws(MasqError) {
        guard filled > 0 else { return }
        guard size + UInt64(filled) <= BlobManifest.maxBlobBytes else {
            throw .tooLarge("a blob is at most \(BlobManifest.maxBlobBytes >> 30) GiB")
        }
        let data = Array(UnsafeRawBufferPointer(rebasing: buffer[0..<filled]))
        let hash = Hash.sha256(data)
        hashes += hash
        size += UInt64(filled)
        filled = 0
        store.blobState.lock.withLock { _ = store.blobState.writing[pin]?.insert(hash) }
        pending.append((hash, data))
        if pending.count >= BlobFormat.chunksPerTransaction { try flush() }
    }

    private func flush() throws(MasqError) {
        let batch = pending
        pending = []
        try store.localTransaction { () throws(MasqError) in
            for (hash, data) in batch {
                if try store.blobExists(.chunk, hash) { continue }
                try data.withBytes { (d) throws(MasqError) in try store.blobPut(.chunk, hash, d) }
                newChunks += 1
                newBytes += UInt64(data.count)
            }
            try Store.putMeta(
                store.engine, [BlobFormat.family, BlobFormat.pin] + pin, bigEndianBytes(Clock.unixMilliseconds()))
        }
    }

    private func heartbeat() throws(MasqError) {
        try store.localTransaction { () throws(MasqError) in
            try Store.putMeta(
                store.engine, [BlobFormat.family, BlobFormat.pin] + pin, bigEndianBytes(Clock.unixMilliseconds()))
        }
    }

    /// Store the last chunk and the manifest, and reference the blob from
    /// `key` (an ordinary put: one commit, synced like any value).
    public func finish(_ ns: NamespaceName, key: [UInt8], contentType: String = "", name: String = "") throws(MasqError)
        -> BlobInfo
    {
        guard !done else { throw MasqError(.invalid, "this blob write is over") }
        guard contentType.utf8.count <= 255, name.utf8.count <= 255,
            !contentType.unicodeScalars.contains(where: { $0.value < 0x20 }),
            !name.unicodeScalars.contains(where: { $0.value < 0x20 })
        else {
            throw .invalid("a blob's content type and name are at most 255 bytes of text without control characters")
        }
        try cutChunk()
        try flush()
        let manifest = BlobManifest(
            chunkSize: UInt32(chunkSize), size: size, contentType: contentType, name: name, hashes: hashes)
        let encoded = manifest.encoded
        let manifestHash = Hash.sha256(encoded)
        store.blobState.lock.withLock { _ = store.blobState.writing[pin]?.insert(manifestHash) }
        try store.localTransaction { () throws(MasqError) in
            if try !store.blobExists(.manifest, manifestHash) {
                try encoded.withBytes { (m) throws(MasqError) in try store.blobPut(.manifest, manifestHash, m) }
            }
            try store.markCompleteLocked(manifestHash, size: size)
        }
        let reference = BlobReference(
            manifest: manifestHash, size: size, chunkSize: UInt32(chunkSize), contentType: contentType, name: name)
        try store.put(ns, key: key, value: reference.encoded)
        release()
        var info = BlobInfo(
            reference: reference, manifestPresent: true, presentChunks: manifest.count, presentBytes: size)
        info.newChunks = newChunks
        info.newBytes = newBytes
        return info
    }

    /// Give up: nothing is referenced; chunks written so far are collected later.
    public func abort() {
        guard !done else { return }
        release()
    }

    private func release() {
        done = true
        pending = []
        store.blobState.lock.withLock { store.blobState.writing[pin] = nil }
        _ = try? store.localTransaction { () throws(MasqError) in
            try ([BlobFormat.family, BlobFormat.pin] + pin).withBytes { (k) throws(MasqError) in
                try store.engine.delete(k)
            }
        }
    }
}
