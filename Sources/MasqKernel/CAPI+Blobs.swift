import CMasq
import CMasqSupport
#if canImport(Glibc)
    import Glibc
#endif

// The blob part of include/masq.h ("Blobs"), on Store+Blobs.swift. Same
// conventions as CAPI.swift: arguments are checked before anything is
// stored, a thrown MasqError becomes a status and the thread's message, and
// outputs are NULL on failure.

// MARK: - plumbing

private func blobKey(_ key: UnsafePointer<UInt8>?, _ length: Int, _ s: Store) throws(MasqError) -> [UInt8] {
    let k = Array(try bytes(key, length, "key"))
    guard !k.isEmpty else { throw .invalid("key must not be empty") }
    guard k.count <= s.limits.maxKeyBytes else {
        throw .tooLarge("key is \(k.count) bytes; the limit is \(s.limits.maxKeyBytes) (limits.max_key_bytes)")
    }
    return k
}

private func optionalText(_ pointer: UnsafePointer<CChar>?, _ what: String) throws(MasqError) -> String {
    guard let pointer else { return "" }
    let s = try text(pointer, what)
    guard s.utf8.count <= 255, !s.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
        throw .invalid("\(what) is at most 255 bytes of text without control characters")
    }
    return s
}

private func range(_ length: UInt64) -> UInt64? { length == UInt64.max ? nil : length }

private struct BlobCallback<F>: @unchecked Sendable {
    let function: F
    let context: UnsafeMutableRawPointer?
}

/// The "namespaces" and "blobs" members of masq_sync_status.
func blobSyncStatusJSON(_ s: Store, _ live: SyncService.Status?) throws(MasqError) -> String {
    let fetching: [BlobFetchStatus]
    if let live {
        fetching = live.blobs
    } else {
        fetching = try s.wantedBlobs().map { (w) throws(MasqError) -> BlobFetchStatus in
            let info = try s.blobInfo(w.reference)
            return BlobFetchStatus(
                id: hex(w.manifest), size: w.size, fetched: info.presentBytes,
                missingChunks: info.reference.chunkCount - info.presentChunks, since: w.since,
                manifest: info.manifestPresent, problem: "sync is not running")
        }
    }
    let c = live?.blobCounters ?? BlobTransferCounters()
    return
        "\"namespaces\": \(s.config.sync.filter.json), \"blobs\": {\"mode\": \(jsonString(s.config.sync.blobs.rawValue)), "
        + "\"fetching\": [\(fetching.map(\.json).joined(separator: ", "))], "
        + "\"chunks_received\": \(c.chunksReceived), \"bytes_received\": \(c.bytesReceived), \"chunks_sent\": \(c.chunksSent), "
        + "\"bytes_sent\": \(c.bytesSent), \"chunks_rejected\": \(c.rejected), \"resent\": \(c.resent)}"
}

// MARK: - writing

@c @implementation
public func masq_blob_put_file(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ key: UnsafePointer<UInt8>?, _ keyLen: Int,
    _ path: UnsafePointer<CChar>?, _ contentType: UnsafePointer<CChar>?,
    _ infoOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    infoOut?.pointee = nil
    return api { () throws(MasqError) in
        let s = try store(handle)
        let name = try namespace(ns, s)
        let k = try blobKey(key, keyLen, s)
        let file = try text(path, "path")
        let type = try optionalText(contentType, "content_type")
        let base = FileSystem.baseName(file)
        let info = try s.writeBlob(
            name, key: k, path: file, contentType: type,
            name: String(decoding: Array(base.utf8.prefix(255)), as: UTF8.self))
        if let infoOut { try giveText(info.json, infoOut) }
    }
}

@c @implementation
public func masq_blob_put_stream(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ key: UnsafePointer<UInt8>?, _ keyLen: Int,
    _ fn: masq_blob_read_fn?, _ ctx: UnsafeMutableRawPointer?, _ contentType: UnsafePointer<CChar>?,
    _ blobName: UnsafePointer<CChar>?, _ infoOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    infoOut?.pointee = nil
    return api { () throws(MasqError) in
        let s = try store(handle)
        let name = try namespace(ns, s)
        let k = try blobKey(key, keyLen, s)
        let callback = try required(fn, "fn")
        let type = try optionalText(contentType, "content_type")
        let title = try optionalText(blobName, "name")
        var total: UInt64 = 0
        let info = try s.writeBlob(name, key: k, contentType: type, name: title) { (buffer) throws(MasqError) -> Int in
            let n = callback(ctx, buffer.baseAddress?.assumingMemoryBound(to: UInt8.self), buffer.count)
            guard n >= 0 else {
                throw MasqError(
                    .io, "the read callback failed (returned \(n)) after \(total) bytes; the key was left as it was")
            }
            guard n <= Int64(buffer.count) else {
                throw MasqError(.invalid, "the read callback returned \(n) for a buffer of \(buffer.count) bytes")
            }
            total += UInt64(n)
            return Int(n)
        }
        if let infoOut { try giveText(info.json, infoOut) }
    }
}

// MARK: - reading

@c @implementation
public func masq_blob_get_file(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ key: UnsafePointer<UInt8>?, _ keyLen: Int,
    _ path: UnsafePointer<CChar>?, _ offset: UInt64, _ length: UInt64
) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        let name = try namespace(ns, s)
        let k = try blobKey(key, keyLen, s)
        try s.readBlob(name, key: k, toFile: try text(path, "path"), offset: offset, length: range(length))
    }
}

@c @implementation
public func masq_blob_get_stream(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ key: UnsafePointer<UInt8>?, _ keyLen: Int,
    _ offset: UInt64, _ length: UInt64, _ fn: masq_blob_write_fn?, _ ctx: UnsafeMutableRawPointer?
) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        let name = try namespace(ns, s)
        let k = try blobKey(key, keyLen, s)
        let callback = try required(fn, "fn")
        var total: UInt64 = 0
        try s.readBlob(name, key: k, offset: offset, length: range(length)) { (bytes) throws(MasqError) in
            let status = callback(
                ctx, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(bitPattern: 1), bytes.count
            )
            guard status == 0 else {
                throw MasqError(.io, "the write callback stopped the read (returned \(status)) after \(total) bytes")
            }
            total += UInt64(bytes.count)
        }
    }
}

// MARK: - info, fetch, collection

@c @implementation
public func masq_blob_info(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ key: UnsafePointer<UInt8>?, _ keyLen: Int,
    _ jsonOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    jsonOut?.pointee = nil
    return api { () throws(MasqError) in
        let s = try store(handle)
        let out = try required(jsonOut, "json_out")
        let info = try s.blobInfo(try namespace(ns, s), key: try blobKey(key, keyLen, s))
        try giveText(info.json, out)
    }
}

@c @implementation
public func masq_blob_parse(
    _ value: UnsafePointer<UInt8>?, _ valueLen: Int, _ jsonOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    jsonOut?.pointee = nil
    return api { () throws(MasqError) in
        let out = try required(jsonOut, "json_out")
        guard let r = try BlobReference.parse(try bytes(value, valueLen, "value")) else {
            throw .invalid("the value is not a blob reference")
        }
        try giveText(
            "{\"id\": \(jsonString(r.id)), \"size\": \(r.size), \"chunk_size\": \(r.chunkSize), \"chunks\": \(r.chunkCount), "
                + "\"content_type\": \(r.contentType.isEmpty ? "null" : jsonString(r.contentType)), \"name\": \(r.name.isEmpty ? "null" : jsonString(r.name))}",
            out)
    }
}

@c @implementation
public func masq_blob_fetch(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ key: UnsafePointer<UInt8>?, _ keyLen: Int
) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        try s.fetchBlob(try namespace(ns, s), key: try blobKey(key, keyLen, s))
    }
}

@c @implementation
public func masq_blob_gc(_ handle: OpaquePointer?, _ reportOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?)
    -> Int32
{
    reportOut?.pointee = nil
    return api { () throws(MasqError) in
        let report = try store(handle).collectBlobs()
        if let reportOut { try giveText(report.json, reportOut) }
    }
}

@c @implementation
public func masq_blob_set_progress(
    _ handle: OpaquePointer?, _ fn: masq_blob_progress_fn?, _ ctx: UnsafeMutableRawPointer?
) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        let progress: (@Sendable (String, UInt64, UInt64) -> Void)?
        if let fn {
            let callback = BlobCallback(function: fn, context: ctx)
            progress = { id, fetched, size in id.withCString { callback.function(callback.context, $0, fetched, size) }
            }
        } else {
            progress = nil
        }
        s.blobState.lock.withLock { s.blobState.progress = progress }
    }
}
