import CMasq
import CMasqSupport
#if canImport(Glibc)
    import Glibc
#endif

// The C API of include/masq.h. `@c @implementation` makes the compiler check
// every signature against the header's declaration, so the two cannot drift.
// Each function converts C arguments to checked Swift values, calls the
// Store, and turns a thrown MasqError into a status code plus the per-thread
// message masq_last_error() returns. Nothing here may trap on bad input.

// MARK: - plumbing

/// Run `body`, record success or the error for masq_last_error, return the status.
@inline(__always)
package func api(_ body: () throws(MasqError) -> Void) -> Int32 {
    do throws(MasqError) {
        try body()
        masqsupport_clear_error()
        return MASQ_OK
    } catch {
        masqsupport_set_error(error.status.rawValue, error.message)
        return error.status.rawValue
    }
}

package func store(_ handle: OpaquePointer?) throws(MasqError) -> Store {
    guard let handle else { throw .invalid("store handle is NULL") }
    return Unmanaged<Store>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
}

package func namespace(_ ns: UnsafePointer<CChar>?, _ store: Store) throws(MasqError) -> NamespaceName {
    guard let ns else { throw .invalid("namespace is NULL") }
    let length = strnlen(ns, store.limits.maxNamespaceBytes + 1)
    return try NamespaceName(utf8: Array(UnsafeRawBufferPointer(start: ns, count: length)), limits: store.limits)
}

/// A caller's buffer viewed in place (no copy).
func bytes(_ pointer: UnsafePointer<UInt8>?, _ length: Int, _ what: String) throws(MasqError) -> UnsafeRawBufferPointer
{
    if length == 0 { return UnsafeRawBufferPointer(start: nil, count: 0) }
    guard let pointer else { throw .invalid("\(what) is NULL but its length is \(length)") }
    return UnsafeRawBufferPointer(start: pointer, count: length)
}

package func required<T>(_ pointer: T?, _ what: String) throws(MasqError) -> T {
    guard let pointer else { throw .invalid("\(what) is NULL") }
    return pointer
}

package func text(_ pointer: UnsafePointer<CChar>?, _ what: String) throws(MasqError) -> String {
    guard let pointer else { throw .invalid("\(what) is NULL") }
    guard let s = String(validatingCString: pointer) else { throw .invalid("\(what) is not valid UTF-8") }
    return s
}

private let statusNames: [StaticString] = [
    "MASQ_OK", "MASQ_E_INVALID", "MASQ_E_NOT_FOUND", "MASQ_E_TOO_LARGE", "MASQ_E_CONFIG", "MASQ_E_PLUGIN",
    "MASQ_E_ABI", "MASQ_E_IO", "MASQ_E_CORRUPT", "MASQ_E_CLOSED", "MASQ_E_BUSY", "MASQ_E_NOMEM",
    "MASQ_E_UNSUPPORTED", "MASQ_E_DENIED", "MASQ_E_BAD_SIGNATURE", "MASQ_E_FUNDS", "MASQ_E_UNAVAILABLE",
    "MASQ_E_TIMEOUT", "MASQ_E_INTERNAL"
]

private func cString(_ s: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// Carries a C callback and its context into Swift closures. The caller
/// promised (masq.h) that ctx stays valid while the callback may run.
private struct CCallback<F>: @unchecked Sendable {
    let function: F
    let context: UnsafeMutableRawPointer?
}

// MARK: - version and errors

@c @implementation
public func masq_version() -> UnsafePointer<CChar>! {
    cString(MasqVersion.string)
}

@c @implementation
public func masq_version_number() -> Int32 {
    Int32(MasqVersion.number)
}

@c @implementation
public func masq_last_error() -> UnsafePointer<CChar>! {
    masqsupport_error_message()
}

@c @implementation
public func masq_last_error_code() -> Int32 {
    masqsupport_error_code()
}

@c @implementation
public func masq_status_name(_ status: Int32) -> UnsafePointer<CChar>! {
    guard status >= 0 && Int(status) < statusNames.count else { return cString("MASQ_E_UNKNOWN") }
    return cString(statusNames[Int(status)])
}

@c @implementation
public func masq_free(_ ptr: UnsafeMutableRawPointer?) {
    free(ptr)
}

@c @implementation
public func masq_set_log_callback(_ maxLevel: Int32, _ fn: masq_log_fn?, _ ctx: UnsafeMutableRawPointer?) -> Int32 {
    api { () throws(MasqError) in
        guard let level = LogLevel(rawValue: maxLevel) else {
            throw .invalid("log level \(maxLevel) is not MASQ_LOG_ERROR..MASQ_LOG_DEBUG")
        }
        Log.install(maxLevel: level, callback: fn, context: ctx)
    }
}

// MARK: - open and close

private func publish(_ store: Store, _ out: UnsafeMutablePointer<OpaquePointer?>) {
    out.pointee = OpaquePointer(Unmanaged.passRetained(store).toOpaque())
}

@c @implementation
public func masq_open(_ configPath: UnsafePointer<CChar>?, _ storeOut: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    storeOut?.pointee = nil
    return api { () throws(MasqError) in
        let out = try required(storeOut, "store_out")
        let path = try text(configPath, "config_path")
        publish(try Store(configPath: path), out)
    }
}

@c @implementation
public func masq_open_config(
    _ configJSON: UnsafePointer<CChar>?, _ baseDir: UnsafePointer<CChar>?,
    _ storeOut: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    storeOut?.pointee = nil
    return api { () throws(MasqError) in
        let out = try required(storeOut, "store_out")
        let json = try text(configJSON, "config_json")
        let cwd = FileSystem.currentDirectory()
        let base = baseDir == nil ? cwd : FileSystem.absolute(try text(baseDir, "base_dir"), base: cwd)
        publish(try Store(config: MasqConfig.parse(json, baseDir: base, source: "config")), out)
    }
}

@c @implementation
public func masq_close(_ handle: OpaquePointer?) -> Int32 {
    guard let handle else {
        masqsupport_clear_error()
        return MASQ_OK
    }
    let unmanaged = Unmanaged<Store>.fromOpaque(UnsafeRawPointer(handle))
    return api { () throws(MasqError) in
        guard masqsupport_in_callback() != unmanaged.takeUnretainedValue().hub.tag | 1 else {
            throw MasqError(.busy, "cannot close a store from inside its own sync progress callback")
        }
        try unmanaged.takeUnretainedValue().close()
        unmanaged.release()
    }
}

@c @implementation
public func masq_replica_id(_ handle: OpaquePointer?, _ replicaOut: UnsafeMutablePointer<UInt64>?) -> Int32 {
    api { () throws(MasqError) in
        let out = try required(replicaOut, "replica_out")
        out.pointee = try store(handle).replicaID
    }
}

// MARK: - reads and writes

@c @implementation
public func masq_put(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ key: UnsafePointer<UInt8>?, _ keyLen: Int,
    _ value: UnsafePointer<UInt8>?, _ valueLen: Int
) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        try s.put(try namespace(ns, s), key: try bytes(key, keyLen, "key"), value: try bytes(value, valueLen, "value"))
    }
}

@c @implementation
public func masq_get(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ key: UnsafePointer<UInt8>?, _ keyLen: Int,
    _ valueOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, _ valueLenOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    valueOut?.pointee = nil
    valueLenOut?.pointee = 0
    return api { () throws(MasqError) in
        let s = try store(handle)
        let out = try required(valueOut, "value_out")
        let lengthOut = try required(valueLenOut, "value_len_out")
        let name = try namespace(ns, s)
        let found = try s.read(name, key: try bytes(key, keyLen, "key")) { (value) throws(MasqError) -> Bool in
            out.pointee = try copyOut(value)
            lengthOut.pointee = value.count
            return true
        }
        if found == nil { throw MasqError(.notFound, "no such key in namespace '\(name)'") }
    }
}

@c @implementation
public func masq_delete(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ key: UnsafePointer<UInt8>?, _ keyLen: Int
) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        try s.delete(try namespace(ns, s), key: try bytes(key, keyLen, "key"))
    }
}

@c @implementation
public func masq_list(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ prefix: UnsafePointer<UInt8>?, _ prefixLen: Int,
    _ flags: UInt32, _ fn: masq_list_fn?, _ ctx: UnsafeMutableRawPointer?
) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        let name = try namespace(ns, s)
        let start = Array(try bytes(prefix, prefixLen, "prefix"))
        let callback = try required(fn, "fn")
        guard flags & ~MASQ_LIST_KEYS_ONLY == 0 else { throw .invalid("unknown masq_list flags \(flags)") }
        try s.list(name, prefix: start, keysOnly: flags & MASQ_LIST_KEYS_ONLY != 0) { key, value in
            key.withUnsafeBufferPointer { k in
                guard let value else { return callback(ctx, k.baseAddress, k.count, nil, 0) == 0 }
                return value.withUnsafeBufferPointer { v in
                    callback(
                        ctx, k.baseAddress, k.count, v.count == 0 ? UnsafePointer(k.baseAddress) : v.baseAddress,
                        v.count) == 0
                }
            }
        }
    }
}

@c @implementation
public func masq_get_all(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?,
    _ entriesOut: UnsafeMutablePointer<UnsafeMutablePointer<masq_entry>?>?, _ countOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    entriesOut?.pointee = nil
    countOut?.pointee = 0
    return api { () throws(MasqError) in
        let s = try store(handle)
        let out = try required(entriesOut, "entries_out")
        let count = try required(countOut, "count_out")
        try s.withAllEntries(try namespace(ns, s)) { (entries) throws(MasqError) in
            guard !entries.isEmpty else { return }
            // One allocation: the entry array, then every key and value.
            let header = entries.count * MemoryLayout<masq_entry>.stride
            let total = header + entries.reduce(0) { $0 + $1.key.count + $1.value.count }
            guard let block = malloc(total) else { throw MasqError(.noMemory, "out of memory for \(total) bytes") }
            let array = block.bindMemory(to: masq_entry.self, capacity: entries.count)
            var cursor = block.assumingMemoryBound(to: UInt8.self) + header
            for (i, entry) in entries.enumerated() {
                let key = cursor
                if entry.key.count > 0 { memcpy(cursor, entry.key.baseAddress!, entry.key.count) }
                cursor += entry.key.count
                let value = cursor
                if entry.value.count > 0 { memcpy(cursor, entry.value.baseAddress!, entry.value.count) }
                cursor += entry.value.count
                array[i] = masq_entry(key: key, key_len: entry.key.count, value: value, value_len: entry.value.count)
            }
            out.pointee = array
            count.pointee = entries.count
        }
    }
}

@c @implementation
public func masq_set_all(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ entries: UnsafePointer<masq_entry>?,
    _ count: Int, _ flags: UInt32
) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        let name = try namespace(ns, s)
        guard flags & ~MASQ_SET_ALL_REPLACE == 0 else { throw .invalid("unknown masq_set_all flags \(flags)") }
        guard count >= 0 else { throw .invalid("count is negative") }
        guard count <= s.limits.maxBatchEntries else {
            throw .tooLarge("\(count) entries; the limit is \(s.limits.maxBatchEntries) (limits.max_batch_entries)")
        }
        guard count == 0 || entries != nil else { throw .invalid("entries is NULL but count is \(count)") }
        var batch: [(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer?)] = []
        batch.reserveCapacity(count)
        for i in 0..<count {
            let e = entries![i]
            do throws(MasqError) {
                let key = try bytes(e.key, e.key_len, "key")
                if e.value == nil && e.value_len != 0 {
                    throw MasqError.invalid("value is NULL but value_len is \(e.value_len)")
                }
                let value: UnsafeRawBufferPointer? =
                    e.value == nil ? nil : UnsafeRawBufferPointer(start: e.value, count: e.value_len)
                batch.append((key, value))
            } catch {
                throw MasqError(error.status, "entry \(i): \(error.message)")
            }
        }
        try s.setAll(name, batch, replace: flags & MASQ_SET_ALL_REPLACE != 0)
    }
}

@c @implementation
public func masq_clear(_ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        try s.clear(try namespace(ns, s))
    }
}

@c @implementation
public func masq_list_namespaces(_ handle: OpaquePointer?, _ fn: masq_namespace_fn?, _ ctx: UnsafeMutableRawPointer?)
    -> Int32
{
    api { () throws(MasqError) in
        let s = try store(handle)
        let callback = try required(fn, "fn")
        for name in try s.namespaces() {
            if name.withCString({ callback(ctx, $0) }) != 0 { break }
        }
    }
}

// MARK: - watch

@c @implementation
public func masq_watch(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ prefix: UnsafePointer<UInt8>?, _ prefixLen: Int,
    _ fn: masq_watch_fn?, _ ctx: UnsafeMutableRawPointer?, _ watchIDOut: UnsafeMutablePointer<UInt64>?
) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        let name = ns == nil ? nil : try namespace(ns, s)
        let start = Array(try bytes(prefix, prefixLen, "prefix"))
        let callback = CCallback(function: try required(fn, "fn"), context: ctx)
        let out = try required(watchIDOut, "watch_id_out")
        out.pointee = try s.watch(namespace: name, prefix: start) { change in
            change.namespace.withCString { nsText in
                change.key.withUnsafeBufferPointer { key in
                    withOptionalBuffer(change.value) { value in
                        var c = masq_change()
                        c.struct_size = UInt32(MemoryLayout<masq_change>.size)
                        c.kind = change.kind.rawValue
                        c.origin = change.origin.rawValue
                        c.ns = nsText
                        c.key = key.baseAddress
                        c.key_len = key.count
                        // A present but empty value still gets a non-NULL pointer.
                        c.value = value.map { $0.baseAddress ?? key.baseAddress } ?? nil
                        c.value_len = value?.count ?? 0
                        c.timestamp = change.version.timestamp
                        c.replica = change.version.replica
                        c.lost_was_deleted = change.lostWasDeleted ? 1 : 0
                        withOptionalBuffer(change.lostValue) { lost in
                            c.lost_value = lost.map { $0.baseAddress ?? key.baseAddress } ?? nil
                            c.lost_value_len = lost?.count ?? 0
                            callback.function(callback.context, &c)
                        }
                    }
                }
            }
        }
    }
}

@c @implementation
public func masq_unwatch(_ handle: OpaquePointer?, _ watchID: UInt64) -> Int32 {
    api { () throws(MasqError) in try store(handle).unwatch(watchID) }
}

// MARK: - plugins

@c @implementation
public func masq_plugins_scan(
    _ configPath: UnsafePointer<CChar>?, _ fn: masq_plugin_info_fn?, _ ctx: UnsafeMutableRawPointer?
) -> Int32 {
    api { () throws(MasqError) in
        let callback = try required(fn, "fn")
        let config = configPath == nil ? nil : try MasqConfig.load(path: try text(configPath, "config_path"))
        for report in PluginLoader.scan(searchPath: PluginLoader.searchPath(config: config)) {
            let stop = withOptionalCString(report.name) { name in
                withOptionalCString(report.version) { version in
                    withOptionalCString(report.summary) { summary in
                        report.path.withCString { path in
                            report.message.withCString { message in
                                var info = masq_plugin_info()
                                info.struct_size = UInt32(MemoryLayout<masq_plugin_info>.size)
                                info.status = report.status.rawValue
                                info.path = path
                                info.kind = Int32(report.kind?.rawValue ?? 0)
                                info.name = name
                                info.version = version
                                info.description = summary
                                info.abi_version = report.abiVersion
                                info.message = message
                                return callback(ctx, &info) != 0
                            }
                        }
                    }
                }
            }
            if stop { break }
        }
    }
}
