import CSQLite
import MasqConnectoidWire
import NIOConcurrencyHelpers
#if canImport(Glibc)
    import Glibc
#endif

/// The service's SQLite file: mailboxes (with their pending challenge) and
/// messages. Only what the protocol needs is kept: the mailbox key, its
/// extension, timestamps, the challenge's hash and the sealed messages.
/// One connection behind a lock; every statement is prepared once. The
/// service owns the file (exclusive locking: no file lock per transaction).
final class MailboxStore: MailboxBackend, @unchecked Sendable {
    typealias Question = MailboxQuestion
    typealias Verdict = MailboxVerdict

    var blocking: Bool { false }
    private let path: String

    private var db: OpaquePointer?
    private let lock = NIOLock()
    private var statements: [String: OpaquePointer] = [:]

    init(path: String, synchronous: String = "NORMAL") throws(ConnectoidError) {
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        guard rc == SQLITE_OK, let handle else {
            sqlite3_close(handle)
            throw .init(.unavailable, "cannot open \(path): \(String(cString: sqlite3_errstr(rc)))")
        }
        db = handle
        self.path = path
        sqlite3_busy_timeout(handle, 5_000)
        try execute(
            """
            PRAGMA locking_mode=EXCLUSIVE;
            PRAGMA journal_mode=WAL;
            PRAGMA synchronous=\(synchronous);
            PRAGMA secure_delete=ON;
            CREATE TABLE IF NOT EXISTS mailbox(
                pub BLOB NOT NULL, ext TEXT NOT NULL,
                created INTEGER NOT NULL, checked INTEGER NOT NULL,
                question BLOB, answer_hash BLOB, expires INTEGER, used_hash BLOB,
                held INTEGER NOT NULL DEFAULT 0,
                held_bytes INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY(pub, ext)) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS message(
                at INTEGER PRIMARY KEY AUTOINCREMENT,
                pub BLOB NOT NULL, ext TEXT NOT NULL, arrived INTEGER NOT NULL,
                id TEXT NOT NULL, data BLOB NOT NULL);
            CREATE UNIQUE INDEX IF NOT EXISTS message_box ON message(pub, ext, id);
            CREATE INDEX IF NOT EXISTS message_cursor ON message(pub, ext, at);
            CREATE INDEX IF NOT EXISTS message_arrived ON message(arrived);
            """)
        // Files made before the per-mailbox byte cap lack its column (an error here means it exists).
        try? execute("ALTER TABLE mailbox ADD COLUMN held_bytes INTEGER NOT NULL DEFAULT 0")
    }

    deinit {
        for s in statements.values { sqlite3_finalize(s) }
        sqlite3_close(db)
    }

    // MARK: operations (times in milliseconds)

    /// Store a message; a resend of the same bytes is stored once.
    /// Returns false when the mailbox already holds `maxMessages` or would
    /// hold more than `maxBytes`.
    func send(
        pub: [UInt8], ext: String, id: String, data: [UInt8], now: Int64, maxMessages: Int, maxBytes: Int,
        retention: Int64
    ) throws(ConnectoidError) -> Bool {
        try locked { () throws(ConnectoidError) -> Bool in
            try begin()
            do throws(ConnectoidError) {
                try run(
                    "INSERT OR IGNORE INTO mailbox(pub, ext, created, checked) VALUES(?1, ?2, ?3, ?3)",
                    [.blob(pub), .text(ext), .int(now)])
                // `held` and `held_bytes` count stored messages (expired ones until the next collection).
                let held =
                    try scalar("SELECT held FROM mailbox WHERE pub = ?1 AND ext = ?2", [.blob(pub), .text(ext)]) ?? 0
                let heldBytes =
                    try scalar("SELECT held_bytes FROM mailbox WHERE pub = ?1 AND ext = ?2", [.blob(pub), .text(ext)])
                    ?? 0
                try run(
                    "INSERT OR IGNORE INTO message(pub, ext, arrived, id, data) VALUES(?1, ?2, ?3, ?4, ?5)",
                    [.blob(pub), .text(ext), .int(now), .text(id), .blob(data)])
                if sqlite3_changes(db) == 1 {
                    guard held < maxMessages, heldBytes + Int64(data.count) <= Int64(maxBytes) else {
                        try run("ROLLBACK", []); return false
                    }
                    try run(
                        "UPDATE mailbox SET held = held + 1, held_bytes = held_bytes + ?3 WHERE pub = ?1 AND ext = ?2",
                        [.blob(pub), .text(ext), .int(Int64(data.count))])
                } else {
                    // The same bytes are stored already: a retry. An expired copy not yet
                    // collected must not hide the new one: store it again at a new cursor.
                    try run(
                        "DELETE FROM message WHERE pub = ?1 AND ext = ?2 AND id = ?3 AND arrived <= ?4",
                        [.blob(pub), .text(ext), .text(id), .int(now - retention)])
                    if sqlite3_changes(db) == 1 {
                        try run(
                            "INSERT INTO message(pub, ext, arrived, id, data) VALUES(?1, ?2, ?3, ?4, ?5)",
                            [.blob(pub), .text(ext), .int(now), .text(id), .blob(data)])
                    }
                }
                try run("COMMIT", [])
                return true
            } catch {
                try? run("ROLLBACK", [])
                throw error
            }
        }
    }

    /// Note a check (keeps the mailbox alive) and tell whether messages wait after `at`.
    func check(pub: [UInt8], ext: String, at: Int64, now: Int64, retention: Int64) throws(ConnectoidError) -> Bool {
        try locked { () throws(ConnectoidError) -> Bool in
            try run("UPDATE mailbox SET checked = ?3 WHERE pub = ?1 AND ext = ?2", [.blob(pub), .text(ext), .int(now)])
            return try scalar(
                "SELECT 1 FROM message WHERE pub = ?1 AND ext = ?2 AND at > ?3 AND arrived > ?4 LIMIT 1",
                [.blob(pub), .text(ext), .int(at), .int(now - retention)]) != nil
        }
    }

    /// The pending question if it is unused and valid at least until `validUntil`.
    func pendingQuestion(pub: [UInt8], ext: String, validUntil: Int64) throws(ConnectoidError) -> Question? {
        try locked { () throws(ConnectoidError) -> Question? in
            let s = try statement(
                "SELECT question, expires FROM mailbox WHERE pub = ?1 AND ext = ?2 AND question IS NOT NULL AND expires >= ?3"
            )
            defer { sqlite3_reset(s); sqlite3_clear_bindings(s) }
            try bind(s, [.blob(pub), .text(ext), .int(validUntil)])
            guard sqlite3_step(s) == SQLITE_ROW else { return nil }
            return Question(sealed: blob(s, 0), expires: sqlite3_column_int64(s, 1))
        }
    }

    func setQuestion(pub: [UInt8], ext: String, sealed: [UInt8], answerHash: [UInt8], expires: Int64)
        throws(ConnectoidError)
    {
        try locked { () throws(ConnectoidError) in
            try run(
                "UPDATE mailbox SET question = ?3, answer_hash = ?4, expires = ?5 WHERE pub = ?1 AND ext = ?2",
                [.blob(pub), .text(ext), .blob(sealed), .blob(answerHash), .int(expires)])
        }
    }

    /// Check an answer's hash and spend the question (single use).
    func spend(pub: [UInt8], ext: String, answerHash: [UInt8], now: Int64) throws(ConnectoidError) -> Verdict {
        try locked { () throws(ConnectoidError) -> Verdict in
            let s = try statement("SELECT answer_hash, expires, used_hash FROM mailbox WHERE pub = ?1 AND ext = ?2")
            try bind(s, [.blob(pub), .text(ext)])
            guard sqlite3_step(s) == SQLITE_ROW else {
                sqlite3_reset(s); sqlite3_clear_bindings(s); return .noChallenge
            }
            let expected = sqlite3_column_type(s, 0) == SQLITE_NULL ? nil : blob(s, 0)
            let expires = sqlite3_column_int64(s, 1)
            let used = sqlite3_column_type(s, 2) == SQLITE_NULL ? nil : blob(s, 2)
            sqlite3_reset(s); sqlite3_clear_bindings(s)
            guard let expected else {
                if let used, constantTime(used, answerHash) { return .reused }
                return .noChallenge
            }
            guard constantTime(expected, answerHash) else {
                if let used, constantTime(used, answerHash) { return .reused }
                return .wrong
            }
            try run(
                "UPDATE mailbox SET question = NULL, answer_hash = NULL, expires = NULL, used_hash = ?3 WHERE pub = ?1 AND ext = ?2",
                [.blob(pub), .text(ext), .blob(answerHash)])
            return expires < now ? .expired : .ok
        }
    }

    /// Up to `limit` messages after `at`, oldest first, and whether more wait.
    func messages(pub: [UInt8], ext: String, after at: Int64, limit: Int, now: Int64, retention: Int64)
        throws(ConnectoidError) -> ([(at: Int64, id: String, data: [UInt8])], Bool)
    {
        try locked { () throws(ConnectoidError) in
            let s = try statement(
                "SELECT at, id, data FROM message WHERE pub = ?1 AND ext = ?2 AND at > ?3 AND arrived > ?4 ORDER BY at LIMIT ?5"
            )
            defer { sqlite3_reset(s); sqlite3_clear_bindings(s) }
            try bind(s, [.blob(pub), .text(ext), .int(at), .int(now - retention), .int(Int64(limit + 1))])
            var out: [(at: Int64, id: String, data: [UInt8])] = []
            while sqlite3_step(s) == SQLITE_ROW {
                out.append((sqlite3_column_int64(s, 0), String(cString: sqlite3_column_text(s, 1)), blob(s, 2)))
            }
            let more = out.count > limit
            if more { out.removeLast() }
            return (out, more)
        }
    }

    /// One instance owns the file: every collection runs.
    func collect(now: Int64, retention: Int64, idle: Int64, interval: Int64) throws(ConnectoidError)
        -> MailboxCollection
    {
        let (messages, mailboxes) = try collect(now: now, retention: retention, idle: idle)
        return MailboxCollection(messages: messages, mailboxes: mailboxes, ran: true)
    }

    /// Delete messages older than `retention` and mailboxes unchecked for
    /// `idle` (with anything they still hold). Returns (messages, mailboxes).
    func collect(now: Int64, retention: Int64, idle: Int64) throws(ConnectoidError) -> (Int, Int) {
        try locked { () throws(ConnectoidError) -> (Int, Int) in
            try run("DELETE FROM message WHERE arrived <= ?1", [.int(now - retention)])
            let messages = Int(sqlite3_changes(db))
            try run(
                "DELETE FROM message WHERE (pub, ext) IN (SELECT pub, ext FROM mailbox WHERE checked <= ?1)",
                [.int(now - idle)])
            try run("DELETE FROM mailbox WHERE checked <= ?1", [.int(now - idle)])
            let mailboxes = Int(sqlite3_changes(db))
            if messages > 0 {
                try run(
                    """
                    UPDATE mailbox SET held = (SELECT count(*) FROM message m WHERE m.pub = mailbox.pub AND m.ext = mailbox.ext),
                                       held_bytes = (SELECT coalesce(sum(length(m.data)), 0) FROM message m WHERE m.pub = mailbox.pub AND m.ext = mailbox.ext)
                    """, [])
            }
            return (messages, mailboxes)
        }
    }

    func counts() throws(ConnectoidError) -> MailboxCounts {
        try locked { () throws(ConnectoidError) in
            var size: Int64 = -1
            var st = stat()
            if stat(path, &st) == 0 { size = Int64(st.st_size) }
            if stat(path + "-wal", &st) == 0 { size += Int64(st.st_size) }
            return MailboxCounts(
                mailboxes: try scalar("SELECT count(*) FROM mailbox", []) ?? 0,
                messages: try scalar("SELECT count(*) FROM message", []) ?? 0,
                messageBytes: try scalar("SELECT coalesce(sum(held_bytes), 0) FROM mailbox", []) ?? 0,
                storeBytes: size)
        }
    }

    func close() {}

    /// Test hook: does the store still hold this mailbox?
    func hasMailbox(pub: [UInt8], ext: String) throws(ConnectoidError) -> Bool {
        try locked { () throws(ConnectoidError) in
            try scalar("SELECT 1 FROM mailbox WHERE pub = ?1 AND ext = ?2", [.blob(pub), .text(ext)]) != nil
        }
    }

    // MARK: plumbing (caller holds the lock)

    private func locked<T>(_ body: () throws(ConnectoidError) -> T) throws(ConnectoidError) -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    enum Value { case blob([UInt8]), text(String), int(Int64) }

    private func statement(_ sql: String) throws(ConnectoidError) -> OpaquePointer {
        if let s = statements[sql] { return s }
        var s: OpaquePointer?
        guard sqlite3_prepare_v3(db, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &s, nil) == SQLITE_OK, let s else {
            throw failure("prepare")
        }
        statements[sql] = s
        return s
    }

    private func bind(_ s: OpaquePointer, _ values: [Value]) throws(ConnectoidError) {
        for (i, value) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch value {
            case .blob(let bytes):
                rc =
                    bytes.isEmpty
                    ? sqlite3_bind_zeroblob(s, index, 0)
                    : bytes.withUnsafeBytes {
                        sqlite3_bind_blob64(s, index, $0.baseAddress, sqlite3_uint64($0.count), transient)
                    }
            case .text(let text): rc = sqlite3_bind_text(s, index, text, -1, transient)
            case .int(let n): rc = sqlite3_bind_int64(s, index, n)
            }
            guard rc == SQLITE_OK else { throw failure("bind") }
        }
    }

    private func run(_ sql: String, _ values: [Value]) throws(ConnectoidError) {
        let s = try statement(sql)
        defer { sqlite3_reset(s); sqlite3_clear_bindings(s) }
        try bind(s, values)
        let rc = sqlite3_step(s)
        guard rc == SQLITE_DONE || rc == SQLITE_ROW else { throw failure(sql) }
    }

    private func scalar(_ sql: String, _ values: [Value]) throws(ConnectoidError) -> Int64? {
        let s = try statement(sql)
        defer { sqlite3_reset(s); sqlite3_clear_bindings(s) }
        try bind(s, values)
        let rc = sqlite3_step(s)
        if rc == SQLITE_DONE { return nil }
        guard rc == SQLITE_ROW else { throw failure(sql) }
        return sqlite3_column_int64(s, 0)
    }

    private func begin() throws(ConnectoidError) { try run("BEGIN IMMEDIATE", []) }

    private func execute(_ sql: String) throws(ConnectoidError) {
        guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { throw failure("schema") }
    }

    private func blob(_ s: OpaquePointer, _ column: Int32) -> [UInt8] {
        let n = Int(sqlite3_column_bytes(s, column))
        guard n > 0, let p = sqlite3_column_blob(s, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }

    private func failure(_ what: String) -> ConnectoidError {
        .init(.unavailable, "storage: \(what): \(String(cString: sqlite3_errmsg(db)))")
    }
}

private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

private func constantTime(_ a: [UInt8], _ b: [UInt8]) -> Bool { constantTimeEqual(a, b) }
