import CMasq
import CMasqSupport
#if canImport(Glibc)
    import Glibc
#endif

/// One open instance of a storage plugin, wrapped so the kernel can call it
/// with Swift closures and get MasqErrors back. Not thread-safe: the Store
/// serializes every call (the contract masq_plugin.h promises plugins).
final class StoragePluginInstance {
    let plugin: LoadedPlugin
    private let host: PluginHost
    private let v: masq_storage_vtable
    private var db: UnsafeMutableRawPointer?

    var component: String { host.component }
    var isPersistent: Bool { v.flags & MASQ_STORAGE_PERSISTENT != 0 }

    init(plugin: LoadedPlugin, options: [(key: String, value: String)]) throws(MasqError) {
        precondition(plugin.kind == .storage)
        self.plugin = plugin
        host = PluginHost(component: "storage:\(plugin.name)")
        v = plugin.vtable(as: masq_storage_vtable.self, zero: masq_storage_vtable())
        let open = v.open!  // present: LoadedPlugin checked the vtable
        db = try host.makeInstance(options, label: host.component, operation: "open") { open($0, $1, $2, $3) }
    }

    deinit { close() }

    func close() {
        if let db { v.close(db) }
        db = nil
    }

    func begin() throws(MasqError) { try check(call { v.begin(db) }, "begin") }
    func commit() throws(MasqError) { try check(call { v.commit(db) }, "commit") }

    func rollback() {
        let status = call { v.rollback(db) }
        if status != MASQ_OK { Log.error(component, "rollback failed: \(pluginMessage(status, "rollback"))") }
    }

    /// Run `body` in one transaction: commit when it returns with `commit`
    /// still true, roll back when it sets it false or throws (a failed commit
    /// rolls back too). The kernel's only begin/commit/rollback path.
    func transaction<T>(_ body: (_ commit: inout Bool) throws(MasqError) -> T) throws(MasqError) -> T {
        try begin()
        var commit = true
        do throws(MasqError) {
            let result = try body(&commit)
            if commit { try self.commit() } else { rollback() }
            return result
        } catch {
            rollback()
            throw error
        }
    }

    func put(_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws(MasqError) {
        try check(
            call {
                v.put(
                    db, key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count,
                    value.baseAddress?.assumingMemoryBound(to: UInt8.self), value.count)
            }, "put")
    }

    func delete(_ key: UnsafeRawBufferPointer) throws(MasqError) {
        try check(call { v.del(db, key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count) }, "del")
    }

    /// Look `key` up; `body` sees the value (valid only during the call).
    /// Returns nil on a miss, else what `body` returned.
    func get<T>(_ key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) throws(MasqError) -> T)
        throws(MasqError) -> T?
    {
        var result: Result<T, MasqError>?
        let status = withoutActuallyEscaping(body) { body in
            var context = SinkContext(sink: { bytes in
                do throws(MasqError) { result = .success(try body(bytes)) } catch { result = .failure(error) }
            })
            return withUnsafeMutablePointer(to: &context) { ctx in
                call {
                    v.get(
                        db, key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count,
                        { raw, data, length in
                            let context = raw!.assumingMemoryBound(to: SinkContext.self)
                            context.pointee.sink(UnsafeRawBufferPointer(start: data, count: length))
                            return MASQ_OK
                        }, ctx)
                }
            }
        }
        if status == MASQ_E_NOT_FOUND { return nil }
        try check(status, "get")
        guard let result else { throw MasqError(.internal, "\(component): get() reported a hit without a value") }
        return try result.get()
    }

    /// Visit keys in [start, end) in order; `visitor` returns false to stop.
    func scan(
        from start: [UInt8], to end: [UInt8]?,
        _ visitor: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws(MasqError) -> Bool
    ) throws(MasqError) {
        var failure: MasqError?
        let status = withoutActuallyEscaping(visitor) { visitor in
            var context = ScanContext(visit: { key, value in
                do throws(MasqError) { return try visitor(key, value) ? MASQ_OK : MASQ_SCAN_STOP } catch {
                    failure = error
                    return error.status.rawValue
                }
            })
            return withUnsafeMutablePointer(to: &context) { ctx in
                start.withUnsafeBufferPointer { s in
                    withOptionalBuffer(end) { e in
                        call {
                            v.scan(
                                db, s.baseAddress, s.count, e?.baseAddress, e?.count ?? 0, 0,
                                { raw, k, kl, val, vl in
                                    let context = raw!.assumingMemoryBound(to: ScanContext.self)
                                    return context.pointee.visit(
                                        UnsafeRawBufferPointer(start: k, count: kl),
                                        UnsafeRawBufferPointer(start: val, count: vl))
                                }, ctx)
                        }
                    }
                }
            }
        }
        if let failure { throw failure }
        try check(status, "scan")
    }

    /// Remove every key in [start, end), natively when the plugin can.
    func deleteRange(from start: [UInt8], to end: [UInt8]?) throws(MasqError) {
        if let deleteRange = v.delete_range {
            let status = start.withUnsafeBufferPointer { s in
                withOptionalBuffer(end) { e in
                    call { deleteRange(db, s.baseAddress, s.count, e?.baseAddress, e?.count ?? 0) }
                }
            }
            try check(status, "delete_range")
            return
        }
        var keys: [[UInt8]] = []
        try scan(from: start, to: end) { key, _ in
            keys.append(Array(key)); return true
        }
        for key in keys { try key.withBytes { (k) throws(MasqError) in try delete(k) } }
    }

    /// Ask the engine to drop lingering copies of old data, if it can.
    func compact() throws(MasqError) {
        guard let compact = v.compact else { return }
        try check(call { compact(db) }, "compact")
    }

    // MARK: - plumbing

    private struct SinkContext { var sink: (UnsafeRawBufferPointer) -> Void }
    private struct ScanContext { var visit: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Int32 }

    @inline(__always)
    private func call(_ body: () -> Int32) -> Int32 {
        guard db != nil else { return MASQ_E_CLOSED }
        return body()
    }

    @inline(__always)
    private func check(_ status: Int32, _ operation: String) throws(MasqError) {
        if status == MASQ_OK { return }
        throw MasqError(MasqStatus(rawValue: status) ?? .internal, pluginMessage(status, operation))
    }

    /// The plugin's own explanation (host->error) if it gave one.
    private func pluginMessage(_ status: Int32, _ operation: String) -> String {
        if status == MASQ_E_CLOSED && db == nil { return "\(component): the store is closed" }
        return MasqKernel.pluginMessage(status, label: component, operation: operation)
    }
}

/// Calls `body` with a C array of masq_plugin_option built from `options`.
func withOptions<R>(_ options: [(key: String, value: String)], _ body: (UnsafePointer<masq_plugin_option>?, Int) -> R)
    -> R
{
    let strings = options.flatMap { [strdup($0.key)!, strdup($0.value)!] }
    defer { strings.forEach { free($0) } }
    var list: [masq_plugin_option] = []
    for i in stride(from: 0, to: strings.count, by: 2) {
        list.append(masq_plugin_option(key: UnsafePointer(strings[i]), value: UnsafePointer(strings[i + 1])))
    }
    return list.withUnsafeBufferPointer { body($0.baseAddress, $0.count) }
}

@inline(__always)
func withOptionalBuffer<R>(_ bytes: [UInt8]?, _ body: (UnsafeBufferPointer<UInt8>?) -> R) -> R {
    guard let bytes else { return body(nil) }
    return bytes.withUnsafeBufferPointer { body($0) }
}
