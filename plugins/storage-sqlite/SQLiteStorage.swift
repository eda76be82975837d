// The default Masq storage plugin: an ordered key/value table in one SQLite
// database file, in WAL mode, with every statement prepared once and reused.
//
// Layout: `kv(k BLOB PRIMARY KEY, value BLOB NOT NULL, ext INTEGER) WITHOUT ROWID`
// holds every key in order; a value longer than `inlineValueBytes` lives in
// `big(id INTEGER PRIMARY KEY, v BLOB NOT NULL)` and its kv row holds an
// empty value and ext = its id. Why: a WITHOUT ROWID b-tree compares whole
// rows when it seeks, and a row that overflows its page is read in full for
// each comparison -- with 1 MiB blob chunks inline, one lookup read several
// MiB (bench/blobs: half the sender's CPU). A rowid table is reached by id,
// with no comparison of contents. Files of the earlier layout (`kv(k, v)`,
// every value inline) are migrated at open (`createOrMigrateTables`); their
// long values stay inline (still read correctly) until rewritten.
// It sees nothing of Masq but include/masq_plugin.h (module CMasqPlugin).
import CMasqPlugin
import MasqPluginSupport
import CSQLite
import CMasqSQLiteChecksum
#if canImport(Glibc)
    import Glibc
#endif

private let pluginName: StaticString = "sqlite"
private let pluginVersion: StaticString = "1.0.0"
private let pluginSummary: StaticString = "SQLite file in WAL mode (default storage)"

/// SQLITE_STATIC: the bound bytes outlive the statement step.
private let staticBytes: sqlite3_destructor_type? = nil

/// One open database: the connection, its prepared statements, its host.
final class SQLiteDatabase {
    let host: UnsafePointer<masq_host>
    private var db: OpaquePointer?
    /// For the message of a write that waited too long.
    private let busyTimeoutSeconds: Int32
    /// Whether this file's pages carry checksums (new files; older ones after compact).
    private(set) var checksummed = false
    private var statements: [OpaquePointer] = []
    private var getStatement: OpaquePointer!
    private var putStatement: OpaquePointer!
    private var deleteStatement: OpaquePointer!
    private var scanFromStatement: OpaquePointer!
    private var scanRangeStatement: OpaquePointer!
    private var deleteFromStatement: OpaquePointer!
    private var deleteRangeStatement: OpaquePointer!
    private var beginStatement: OpaquePointer!
    private var commitStatement: OpaquePointer!
    private var rollbackStatement: OpaquePointer!
    private var bigInsertStatement: OpaquePointer!
    private var hasBigStatement: OpaquePointer!
    /// One for get and one for scan: a scan's visitor may call get.
    private var bigGetStatement: OpaquePointer!
    private var bigScanStatement: OpaquePointer!
    private var bigDeleteForKeyStatement: OpaquePointer!
    private var bigDeleteFromStatement: OpaquePointer!
    private var bigDeleteRangeStatement: OpaquePointer!
    /// Whether `big` may hold rows (false: puts and deletes skip it).
    private var hasBig = false
    /// Values longer than this go to the `big` table (see the top of the file).
    static let inlineValueBytes = 512

    /// Options this plugin understands (docs: plugins/storage-sqlite/README.md).
    struct Options {
        var dataDir = "."
        var file = "masq.db"
        var synchronous = "full"
        /// How long a write waits for another process's transaction (a sync
        /// applying a batch, an import) before it fails with MASQ_E_BUSY.
        var busyTimeoutMilliseconds: Int32 = 30_000
        var cacheSizeKiB: Int = 8192
        /// Page size of a new file (512…65536, a power of two); an existing file keeps its own.
        var pageSize: Int?
        var secureDelete = true
    }

    init(host: UnsafePointer<masq_host>, options: Options) throws(PluginFailure) {
        self.host = host
        busyTimeoutSeconds = options.busyTimeoutMilliseconds / 1000
        let path =
            options.file.hasPrefix("/") || options.file == ":memory:"
            ? options.file : options.dataDir + "/" + options.file
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        // Files on disk go through the page-checksum shim (Sources/CMasqSQLiteChecksum):
        // a page whose bytes changed fails its read instead of answering wrong.
        let onDisk = path != ":memory:"
        if onDisk { _ = masq_cksum_register() }
        let rc = sqlite3_open_v2(path, &handle, flags, onDisk ? "masq-cksum" : nil)
        db = handle
        guard rc == SQLITE_OK else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(handle)
            db = nil
            throw PluginFailure(Self.status(rc), "cannot open \(path): \(message)")
        }
        do throws(PluginFailure) {
            sqlite3_busy_timeout(db, options.busyTimeoutMilliseconds)
            // Before WAL mode and the first table: a new file reserves 8 bytes per
            // page for its checksum; an older file runs unverified until compact
            // (VACUUM) or `masq check --repair` rewrites it.
            if onDisk { checksummed = masq_cksum_enable(db) == 1 }
            // Only a new, empty file takes it (before WAL mode and the first table).
            if let pageSize = options.pageSize { try execute("PRAGMA page_size=\(pageSize)") }
            let mode = try queryText("PRAGMA journal_mode=WAL")
            if mode.lowercased() != "wal" && path != ":memory:" {
                throw PluginFailure(MASQ_E_IO, "\(path): cannot switch to WAL mode (journal_mode is \(mode))")
            }
            try execute("PRAGMA synchronous=\(options.synchronous)")
            try execute("PRAGMA cache_size=-\(options.cacheSizeKiB)")
            // Zero freed content, so deleted or overwritten values do not linger in free pages.
            try execute("PRAGMA secure_delete=\(options.secureDelete ? "ON" : "OFF")")
            try createOrMigrateTables()
            // A damaged page under `big` must not keep the store from opening (`masq check --repair`
            // opens it to save what reads): then long values are assumed, and each read reports its own damage.
            hasBig = (try? queryText("SELECT EXISTS(SELECT 1 FROM big)")).map { $0 != "0" } ?? true
            getStatement = try prepare("SELECT value, ext FROM kv WHERE k = ?1")
            bigGetStatement = try prepare("SELECT v FROM big WHERE id = ?1")
            bigScanStatement = try prepare("SELECT v FROM big WHERE id = ?1")
            putStatement = try prepare("INSERT OR REPLACE INTO kv(k, value, ext) VALUES (?1, ?2, ?3)")
            deleteStatement = try prepare("DELETE FROM kv WHERE k = ?1")
            scanFromStatement = try prepare("SELECT k, value, ext FROM kv WHERE k >= ?1 ORDER BY k")
            scanRangeStatement = try prepare("SELECT k, value, ext FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k")
            deleteFromStatement = try prepare("DELETE FROM kv WHERE k >= ?1")
            deleteRangeStatement = try prepare("DELETE FROM kv WHERE k >= ?1 AND k < ?2")
            bigInsertStatement = try prepare("INSERT INTO big(v) VALUES (?1)")
            hasBigStatement = try prepare("SELECT EXISTS(SELECT 1 FROM big)")
            bigDeleteForKeyStatement = try prepare("DELETE FROM big WHERE id = (SELECT ext FROM kv WHERE k = ?1)")
            bigDeleteFromStatement = try prepare(
                "DELETE FROM big WHERE id IN (SELECT ext FROM kv WHERE k >= ?1 AND ext IS NOT NULL)")
            bigDeleteRangeStatement = try prepare(
                "DELETE FROM big WHERE id IN (SELECT ext FROM kv WHERE k >= ?1 AND k < ?2 AND ext IS NOT NULL)")
            beginStatement = try prepare("BEGIN IMMEDIATE")
            commitStatement = try prepare("COMMIT")
            rollbackStatement = try prepare("ROLLBACK")
        } catch {
            close()
            throw error
        }
    }

    func close() {
        guard let db else { return }
        if sqlite3_get_autocommit(db) == 0 { sqlite3_exec(db, "ROLLBACK", nil, nil, nil) }
        statements.forEach { sqlite3_finalize($0) }
        statements = []
        sqlite3_close_v2(db)
        self.db = nil
    }

    // MARK: operations (each returns a masq status)

    /// BEGIN IMMEDIATE, and (holding the write lock) whether another process
    /// has written a long value since this one last looked: a stale `hasBig`
    /// would skip deleting a replaced value's big row.
    func begin() -> Int32 {
        let rc = step(beginStatement, "begin")
        if rc == MASQ_OK && !hasBig {
            let s = hasBigStatement!
            if sqlite3_step(s) == SQLITE_ROW { hasBig = sqlite3_column_int(s, 0) != 0 }
            sqlite3_reset(s)
        }
        return rc
    }
    func commit() -> Int32 { step(commitStatement, "commit") }
    func rollback() -> Int32 { sqlite3_get_autocommit(db) != 0 ? MASQ_OK : step(rollbackStatement, "rollback") }

    func get(
        _ key: UnsafePointer<UInt8>?, _ keyLength: Int, _ sink: masq_bytes_sink, _ context: UnsafeMutableRawPointer?
    ) -> Int32 {
        let s = getStatement!
        defer { sqlite3_reset(s); sqlite3_clear_bindings(s) }
        bind(s, 1, key, keyLength)
        switch sqlite3_step(s) {
        case SQLITE_ROW:
            return withValue(of: s, bigGetStatement, "get") { value, length in sink(context, value, length) }
        case SQLITE_DONE:
            return MASQ_E_NOT_FOUND
        case let rc:
            return fail(rc, "get")
        }
    }

    /// The value of the kv row `s` stands on (columns `v, ext` after any
    /// others): inline, or the `big` row `ext` names. A kv row naming a big
    /// row that is not there is damage (MASQ_E_CORRUPT), never an empty value.
    private func withValue(
        of s: OpaquePointer, _ b: OpaquePointer, _ operation: String, _ body: (UnsafePointer<UInt8>?, Int) -> Int32
    ) -> Int32 {
        let columns = sqlite3_column_count(s)
        let v = columns - 2, ext = columns - 1
        guard sqlite3_column_type(s, ext) != SQLITE_NULL else {
            return body(sqlite3_column_blob(s, v)?.assumingMemoryBound(to: UInt8.self), Int(sqlite3_column_bytes(s, v)))
        }
        defer { sqlite3_reset(b) }
        sqlite3_bind_int64(b, 1, sqlite3_column_int64(s, ext))
        switch sqlite3_step(b) {
        case SQLITE_ROW:
            return body(sqlite3_column_blob(b, 0)?.assumingMemoryBound(to: UInt8.self), Int(sqlite3_column_bytes(b, 0)))
        case SQLITE_DONE:
            return host.pointee.error(host, MASQ_E_CORRUPT, "\(operation): a long value's row is missing (table big)")
        case let rc:
            return fail(rc, operation)
        }
    }

    /// A put of a long value writes two rows (big, then kv): the kernel wraps
    /// its writes in a transaction; a put outside one takes its own, so the
    /// pair is atomic either way (and `hasBig` is fresh: see `begin`).
    func put(_ key: UnsafePointer<UInt8>?, _ keyLength: Int, _ value: UnsafePointer<UInt8>?, _ valueLength: Int)
        -> Int32
    {
        let long = valueLength > Self.inlineValueBytes
        return atomically("put") { () -> Int32 in
            var rc = dropBig(key, keyLength)
            guard rc == MASQ_OK else { return rc }
            guard long else { return putRow(key, keyLength, value, valueLength, ext: nil) }
            bind(bigInsertStatement, 1, value, valueLength)
            rc = step(bigInsertStatement, "put")
            guard rc == MASQ_OK else { return rc }
            hasBig = true
            return putRow(key, keyLength, nil, 0, ext: sqlite3_last_insert_rowid(db))
        }
    }

    private func putRow(
        _ key: UnsafePointer<UInt8>?, _ keyLength: Int, _ value: UnsafePointer<UInt8>?, _ valueLength: Int,
        ext: Int64?
    ) -> Int32 {
        let s = putStatement!
        bind(s, 1, key, keyLength)
        bind(s, 2, value, valueLength)
        if let ext { sqlite3_bind_int64(s, 3, ext) } else { sqlite3_bind_null(s, 3) }
        return step(s, "put")
    }

    /// Delete the `big` row a key's value lives in, if any.
    private func dropBig(_ key: UnsafePointer<UInt8>?, _ keyLength: Int) -> Int32 {
        guard hasBig else { return MASQ_OK }
        bind(bigDeleteForKeyStatement, 1, key, keyLength)
        return step(bigDeleteForKeyStatement, "del")
    }

    /// Run `body` in a transaction of its own unless one is open already.
    private func atomically(_ operation: String, _ body: () -> Int32) -> Int32 {
        guard sqlite3_get_autocommit(db) != 0 else { return body() }
        var rc = begin()
        guard rc == MASQ_OK else { return rc }
        rc = body()
        guard rc == MASQ_OK else {
            _ = rollback()
            return rc
        }
        return commit()
    }

    func delete(_ key: UnsafePointer<UInt8>?, _ keyLength: Int) -> Int32 {
        atomically("del") { () -> Int32 in
            let rc = dropBig(key, keyLength)
            guard rc == MASQ_OK else { return rc }
            let s = deleteStatement!
            bind(s, 1, key, keyLength)
            return step(s, "del")
        }
    }

    func scan(
        _ start: UnsafePointer<UInt8>?, _ startLength: Int, _ end: UnsafePointer<UInt8>?, _ endLength: Int,
        _ visitor: masq_scan_visitor, _ context: UnsafeMutableRawPointer?
    ) -> Int32 {
        let s: OpaquePointer = end == nil ? scanFromStatement : scanRangeStatement
        defer { sqlite3_reset(s); sqlite3_clear_bindings(s) }
        bind(s, 1, start, startLength)
        if end != nil { bind(s, 2, end, endLength) }
        while true {
            switch sqlite3_step(s) {
            case SQLITE_ROW:
                let result = withValue(of: s, bigScanStatement, "scan") { value, length in
                    visitor(
                        context,
                        sqlite3_column_blob(s, 0)?.assumingMemoryBound(to: UInt8.self), Int(sqlite3_column_bytes(s, 0)),
                        value, length)
                }
                if result == MASQ_SCAN_STOP { return MASQ_OK }
                if result != MASQ_OK { return result }
            case SQLITE_DONE:
                return MASQ_OK
            case let rc:
                return fail(rc, "scan")
            }
        }
    }

    func deleteRange(_ start: UnsafePointer<UInt8>?, _ startLength: Int, _ end: UnsafePointer<UInt8>?, _ endLength: Int)
        -> Int32
    {
        atomically("delete_range") { () -> Int32 in
            if hasBig {
                let b: OpaquePointer = end == nil ? bigDeleteFromStatement : bigDeleteRangeStatement
                bind(b, 1, start, startLength)
                if end != nil { bind(b, 2, end, endLength) }
                let rc = step(b, "delete_range")
                guard rc == MASQ_OK else { return rc }
            }
            let s: OpaquePointer = end == nil ? deleteFromStatement : deleteRangeStatement
            bind(s, 1, start, startLength)
            if end != nil { bind(s, 2, end, endLength) }
            return step(s, "delete_range")
        }
    }

    /// VACUUM rebuilds the file without free pages; the checkpoint then
    /// empties the WAL, so no copy of overwritten data remains.
    func compact() -> Int32 {
        for sql in ["VACUUM", "PRAGMA wal_checkpoint(TRUNCATE)"] {
            let rc = sqlite3_exec(db, sql, nil, nil, nil)
            if rc != SQLITE_OK { return fail(rc, "compact") }
        }
        return MASQ_OK
    }

    // MARK: plumbing

    /// Bind bytes; SQLite turns a NULL pointer into SQL NULL, so an empty
    /// byte string is bound as a zero-length blob instead.
    private func bind(_ s: OpaquePointer, _ index: Int32, _ bytes: UnsafePointer<UInt8>?, _ length: Int) {
        if length == 0 || bytes == nil {
            sqlite3_bind_zeroblob(s, index, 0)
        } else {
            sqlite3_bind_blob64(s, index, bytes, sqlite3_uint64(length), staticBytes)
        }
    }

    /// Run a statement that returns no rows, then reset it.
    private func step(_ s: OpaquePointer, _ operation: String) -> Int32 {
        let rc = sqlite3_step(s)
        sqlite3_reset(s)
        sqlite3_clear_bindings(s)
        return rc == SQLITE_DONE || rc == SQLITE_OK ? MASQ_OK : fail(rc, operation)
    }

    private func fail(_ rc: Int32, _ operation: String) -> Int32 {
        var message = "\(operation): \(String(cString: sqlite3_errstr(rc))) (\(String(cString: sqlite3_errmsg(db))))"
        if rc & 0xFF == SQLITE_BUSY || rc & 0xFF == SQLITE_LOCKED {
            message =
                "\(operation): another process has been writing to this store for \(busyTimeoutSeconds) s "
                + "(or is suspended in the middle of a write, e.g. with Ctrl-Z); try again, or raise the storage option busy_timeout_ms"
        }
        return host.pointee.error(host, Self.status(rc), message)
    }

    static func status(_ rc: Int32) -> Int32 {
        // A page that failed its checksum is damage, not an I/O error (a full disk is).
        if rc == SQLITE_IOERR | (32 << 8) { return MASQ_E_CORRUPT }  // SQLITE_IOERR_DATA
        return switch rc & 0xFF {
        case SQLITE_BUSY, SQLITE_LOCKED: MASQ_E_BUSY
        case SQLITE_NOMEM: MASQ_E_NOMEM
        case SQLITE_CORRUPT, SQLITE_NOTADB: MASQ_E_CORRUPT
        case SQLITE_TOOBIG: MASQ_E_TOO_LARGE
        case SQLITE_MISUSE: MASQ_E_INTERNAL
        default: MASQ_E_IO
        }
    }

    private func prepare(_ sql: String) throws(PluginFailure) -> OpaquePointer {
        var s: OpaquePointer?
        let rc = sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &s, nil)
        guard rc == SQLITE_OK, let s else {
            throw PluginFailure(Self.status(rc), "prepare: \(String(cString: sqlite3_errmsg(db)))")
        }
        statements.append(s)
        return s
    }

    private func execute(_ sql: String) throws(PluginFailure) {
        let rc = sqlite3_exec(db, sql, nil, nil, nil)
        guard rc == SQLITE_OK else {
            throw PluginFailure(Self.status(rc), "\(sql): \(String(cString: sqlite3_errmsg(db)))")
        }
    }

    /// The tables of today's layout (see the top of the file). A file of the
    /// earlier layout, `kv(k, v)` with every value inline, is migrated in one
    /// write transaction (so two processes opening it at once cannot both try):
    /// `v` is renamed `value` -- so a plugin of the earlier layout refuses to
    /// open the file ("no such column: v") instead of reading a long value as
    /// empty -- and `ext` is added; its inline values stay where they are.
    private func createOrMigrateTables() throws(PluginFailure) {
        func current() throws(PluginFailure) -> Bool {
            let value = try hasColumn("kv", "value"), ext = try hasColumn("kv", "ext"), big = try hasTable("big")
            return value && ext && big
        }
        guard try !current() else { return }
        try execute("BEGIN IMMEDIATE")
        do throws(PluginFailure) {
            try execute(
                "CREATE TABLE IF NOT EXISTS kv(k BLOB PRIMARY KEY, value BLOB NOT NULL, ext INTEGER) WITHOUT ROWID")
            if try hasColumn("kv", "v") { try execute("ALTER TABLE kv RENAME COLUMN v TO value") }
            if try !hasColumn("kv", "ext") { try execute("ALTER TABLE kv ADD COLUMN ext INTEGER") }
            try execute("CREATE TABLE IF NOT EXISTS big(id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
            try execute("COMMIT")
        } catch {
            sqlite3_exec(db, "ROLLBACK", nil, nil, nil)
            throw error
        }
    }

    private func hasTable(_ table: String) throws(PluginFailure) -> Bool {
        try queryText("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '\(table)'") != "0"
    }

    private func hasColumn(_ table: String, _ column: String) throws(PluginFailure) -> Bool {
        try queryText("SELECT count(*) FROM pragma_table_info('\(table)') WHERE name = '\(column)'") != "0"
    }

    private func queryText(_ sql: String) throws(PluginFailure) -> String {
        var s: OpaquePointer?
        let rc = sqlite3_prepare_v2(db, sql, -1, &s, nil)
        guard rc == SQLITE_OK, let s else {
            throw PluginFailure(Self.status(rc), "\(sql): \(String(cString: sqlite3_errmsg(db)))")
        }
        defer { sqlite3_finalize(s) }
        let step = sqlite3_step(s)
        guard step == SQLITE_ROW, let text = sqlite3_column_text(s, 0) else {
            throw PluginFailure(Self.status(step), "\(sql): \(String(cString: sqlite3_errmsg(db)))")
        }
        return String(cString: text)
    }
}

// MARK: - options

/// Parse the options the kernel passes; unknown keys and bad values are errors.
private func parseOptions(_ list: UnsafePointer<masq_plugin_option>?, _ count: Int) throws(PluginFailure)
    -> SQLiteDatabase.Options
{
    var options = SQLiteDatabase.Options()
    for (key, value) in try pluginOptions(list, count) {
        switch key {
        case "data_dir":
            options.dataDir = value
        case "file":
            guard !value.isEmpty else { throw .init(MASQ_E_CONFIG, "option file must not be empty") }
            options.file = value
        case "synchronous":
            let allowed = ["off", "normal", "full", "extra"]
            guard allowed.contains(value.lowercased()) else {
                throw .init(
                    MASQ_E_CONFIG,
                    "option synchronous must be one of \(allowed.joined(separator: ", ")), not \"\(value)\"")
            }
            options.synchronous = value.lowercased()
        case "busy_timeout_ms":
            options.busyTimeoutMilliseconds = Int32(try optionNumber(key, value, 0...Int(Int32.max)))
        case "secure_delete":
            guard value == "true" || value == "false" else {
                throw .init(MASQ_E_CONFIG, "option secure_delete must be true or false, not \"\(value)\"")
            }
            options.secureDelete = value == "true"
        case "page_size":
            guard let size = Int(value), (512...65_536).contains(size), size & (size - 1) == 0 else {
                throw .init(MASQ_E_CONFIG, "option page_size must be a power of two in 512...65536, not \"\(value)\"")
            }
            options.pageSize = size
        case "cache_size_kib":
            options.cacheSizeKiB = try optionNumber(key, value, 1...(16 << 20))
        default:
            throw .init(
                MASQ_E_CONFIG,
                "unknown option \"\(key)\" (known: file, synchronous, busy_timeout_ms, cache_size_kib, page_size, secure_delete)"
            )
        }
    }
    return options
}

// MARK: - the vtable and descriptor

@inline(__always)
private func database(_ raw: UnsafeMutableRawPointer?) -> SQLiteDatabase? {
    raw.map { Unmanaged<SQLiteDatabase>.fromOpaque($0).takeUnretainedValue() }
}

nonisolated(unsafe) private let vtable: UnsafeMutablePointer<masq_storage_vtable> = {
    let v = UnsafeMutablePointer<masq_storage_vtable>.allocate(capacity: 1)
    var t = masq_storage_vtable()
    t.struct_size = UInt32(MemoryLayout<masq_storage_vtable>.size)
    t.flags = MASQ_STORAGE_PERSISTENT
    t.open = { host, options, count, out in
        guard let host, let out else { return MASQ_E_INVALID }
        // The host functions this plugin calls must be present in the host's table.
        guard hostHas(host, \.log), hostHas(host, \.error), hostHas(host, \.random_bytes) else {
            return MASQ_E_ABI
        }
        return handOver(host, out) { () throws(PluginFailure) in
            try SQLiteDatabase(host: host, options: try parseOptions(options, count))
        }
    }
    t.close = { raw in
        guard let raw else { return }
        let unmanaged = Unmanaged<SQLiteDatabase>.fromOpaque(raw)
        unmanaged.takeUnretainedValue().close()
        unmanaged.release()
    }
    t.begin = { raw in database(raw)?.begin() ?? MASQ_E_INVALID }
    t.commit = { raw in database(raw)?.commit() ?? MASQ_E_INVALID }
    t.rollback = { raw in database(raw)?.rollback() ?? MASQ_E_INVALID }
    t.get = { raw, key, length, sink, context in
        guard let db = database(raw), let sink else { return MASQ_E_INVALID }
        return db.get(key, length, sink, context)
    }
    t.put = { raw, key, keyLength, value, valueLength in
        database(raw)?.put(key, keyLength, value, valueLength) ?? MASQ_E_INVALID
    }
    t.del = { raw, key, length in database(raw)?.delete(key, length) ?? MASQ_E_INVALID }
    t.scan = { raw, start, startLength, end, endLength, flags, visitor, context in
        guard let db = database(raw), let visitor, flags == 0 else { return MASQ_E_INVALID }
        return db.scan(start, startLength, end, endLength, visitor, context)
    }
    t.delete_range = { raw, start, startLength, end, endLength in
        database(raw)?.deleteRange(start, startLength, end, endLength) ?? MASQ_E_INVALID
    }
    t.compact = { raw in database(raw)?.compact() ?? MASQ_E_INVALID }
    v.initialize(to: t)
    return v
}()

nonisolated(unsafe) private let descriptor = pluginDescriptor(
    kind: MASQ_PLUGIN_STORAGE, name: pluginName, version: pluginVersion,
    summary: pluginSummary, vtable: UnsafeRawPointer(vtable))

@c @implementation
public func masq_plugin_entry() -> UnsafePointer<masq_plugin_descriptor>! {
    UnsafePointer(descriptor)
}
