#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import MasqCrypto
import MasqKernel

/// Blobs from apps (docs/APP-PROTOCOL.md, "Blobs"). A message is at most
/// 1 MiB of JSON, so a blob goes up in base64 parts of at most 512 KiB
/// between `blob.begin` and `blob.commit` — straight into the store's
/// chunks, never held whole — and comes back with `blob.read` by ranges of
/// at most 512 KiB. The key changes only at `blob.commit`.
enum BlobOperation: String {
    case begin = "blob.begin"
    case part = "blob.part"
    case commit = "blob.commit"
    case abort = "blob.abort"
    case read = "blob.read"
    case info = "blob.info"
    case fetch = "blob.fetch"

    var writes: Bool {
        switch self {
        case .begin, .part, .commit, .abort: true
        case .read, .info, .fetch: false
        }
    }
}

/// Uploads in progress: bound to the connection that began them (they go
/// with it), at most `perConnection` each and `total` in all, dropped after
/// `idleSeconds` without a part.
final class BlobUploads {
    static let maxPartBytes = 512 << 10
    static let perConnection = 4
    static let total = 64
    static let idleSeconds: Double = 600

    final class Upload {
        let id: String
        let peer: String
        let profile: String
        let app: String
        let namespace: String
        let key: [UInt8]
        let contentType: String
        let name: String
        let writer: BlobWriter
        var received: UInt64 = 0
        var touched = DaemonClock.now()

        init(
            id: String, peer: String, profile: String, app: String, namespace: String, key: [UInt8],
            contentType: String, name: String, writer: BlobWriter
        ) {
            self.id = id
            self.peer = peer
            self.profile = profile
            self.app = app
            self.namespace = namespace
            self.key = key
            self.contentType = contentType
            self.name = name
            self.writer = writer
        }
    }

    private(set) var uploads: [String: Upload] = [:]
    /// The answers of recent commits, so a commit retried after a lost answer gets it again.
    private var committed: [String: (JSON, Double)] = [:]

    func add(_ upload: Upload) throws(DaemonError) {
        expire()
        guard uploads.values.filter({ $0.peer == upload.peer }).count < Self.perConnection else {
            throw DaemonError(
                .busy, "at most \(Self.perConnection) blob uploads at once per connection: commit or abort one")
        }
        guard uploads.count < Self.total else {
            throw DaemonError(.busy, "too many blob uploads in progress; try again later")
        }
        uploads[upload.id] = upload
    }

    func get(_ id: String?, peer: String) throws(DaemonError) -> Upload {
        guard let id else { throw DaemonError(.badRequest, "missing \"upload\"") }
        guard let upload = uploads[id], upload.peer == peer else {
            throw DaemonError(.notFound, "no blob upload \(id.prefix(40)) on this connection")
        }
        return upload
    }

    func remove(_ id: String, result: JSON? = nil) {
        uploads.removeValue(forKey: id)?.writer.abort()
        if let result { committed[id] = (result, DaemonClock.now()) }
    }

    func committedResult(_ id: String?) -> JSON? {
        guard let id, let (json, at) = committed[id], DaemonClock.now() - at < Self.idleSeconds else { return nil }
        return json
    }

    /// The connection went away: its uploads end, nothing referenced.
    func drop(peer: String) {
        for (id, upload) in uploads where upload.peer == peer { remove(id) }
    }

    private func expire() {
        let now = DaemonClock.now()
        for (id, upload) in uploads where now - upload.touched > Self.idleSeconds { remove(id) }
        committed = committed.filter { now - $0.value.1 < Self.idleSeconds }
    }
}

extension Daemon {
    func performBlob(_ op: BlobOperation, _ c: Connection, _ appID: String, _ r: Request) throws(DaemonError) -> JSON {
        let profile = try activeProfile()
        guard c.profile == profile.name else {
            throw DaemonError(.unauthorized, "the user switched profiles: say hello again")
        }
        let store = profile.store
        func run<T>(_ body: () throws(MasqError) -> T) throws(DaemonError) -> T {
            do throws(MasqError) { return try body() } catch { throw DaemonError(error) }
        }
        // Parts and commits name their upload, which the connection began with its access checked.
        switch op {
        case .part:
            let upload = try blobUploads.get(r.upload, peer: c.peer)
            guard let text = r.data, let data = Data(base64Encoded: text) else {
                throw DaemonError(.badRequest, "\"data\" must be base64")
            }
            guard data.count <= BlobUploads.maxPartBytes else {
                throw DaemonError(.tooLarge, "a part is at most \(BlobUploads.maxPartBytes) bytes")
            }
            guard let offset = r.offset else {
                throw DaemonError(.badRequest, "missing \"offset\" (the part's first byte in the blob)")
            }
            upload.touched = DaemonClock.now()
            if offset + UInt64(data.count) <= upload.received {
                return .object([("received", .uint(upload.received))])  // a part sent again: taken already
            }
            guard offset == upload.received else {
                throw DaemonError(
                    .invalid, "part at byte \(offset), but \(upload.received) bytes were received: send from there")
            }
            do throws(MasqError) { try upload.writer.append(Array(data)) } catch {
                blobUploads.remove(upload.id)
                throw DaemonError(error)
            }
            upload.received += UInt64(data.count)
            return .object([("received", .uint(upload.received))])
        case .commit:
            if let done = blobUploads.committedResult(r.upload) { return done }
            let upload = try blobUploads.get(r.upload, peer: c.peer)
            let ns = try run { () throws(MasqError) in try NamespaceName(upload.namespace, limits: store.limits) }
            do throws(MasqError) {
                let info = try upload.writer.finish(
                    ns, key: upload.key, contentType: upload.contentType, name: upload.name)
                let result = JSON.raw(info.json)
                blobUploads.remove(upload.id, result: result)
                return result
            } catch {
                blobUploads.remove(upload.id)
                throw DaemonError(error)
            }
        case .abort:
            if let id = r.upload, (try? blobUploads.get(id, peer: c.peer)) != nil { blobUploads.remove(id) }
            return .object([])
        default:
            break
        }
        let namespaceText = r.ns ?? appID
        guard let access = profile.apps.access(appID, to: namespaceText) ?? shareAccess(profile, appID, namespaceText),
            !op.writes || access == .write
        else {
            throw DaemonError(
                .denied, op.writes ? "no write access to \(namespaceText)" : "no access to \(namespaceText)")
        }
        let ns = try run { () throws(MasqError) in try NamespaceName(namespaceText, limits: store.limits) }
        guard let keyText = r.key, !keyText.isEmpty else { throw DaemonError(.badRequest, "missing \"key\"") }
        let key = Array(keyText.utf8)
        switch op {
        case .begin:
            let writer = try run { () throws(MasqError) in try BlobWriter(store: store) }
            let id = Hex.encode(Random.bytes(12))
            try blobUploads.add(
                BlobUploads.Upload(
                    id: id, peer: c.peer, profile: profile.name, app: appID, namespace: namespaceText, key: key,
                    contentType: r.content_type ?? "", name: r.name ?? "", writer: writer))
            return .object([("upload", .string(id)), ("max_part_bytes", .int(Int64(BlobUploads.maxPartBytes)))])
        case .read:
            let offset = r.offset ?? 0
            let length = min(r.length ?? UInt64(BlobUploads.maxPartBytes), UInt64(BlobUploads.maxPartBytes))
            var bytes: [UInt8] = []
            let info = try run { () throws(MasqError) -> BlobInfo in
                let info = try store.blobInfo(ns, key: key)
                try store.readBlob(ns, key: key, offset: offset, length: length) { bytes += $0 }
                return info
            }
            return .object([
                ("data", .string(Data(bytes).base64EncodedString())), ("offset", .uint(offset)),
                ("size", .uint(info.reference.size)),
                ("eof", .bool(offset + UInt64(bytes.count) >= info.reference.size))
            ])
        case .info:
            return .raw(try run { () throws(MasqError) in try store.blobInfo(ns, key: key) }.json)
        case .fetch:
            try run { () throws(MasqError) in try store.fetchBlob(ns, key: key) }
            return .object([])
        case .part, .commit, .abort:
            return .object([])
        }
    }
}
