// A Connectoid mailbox store on PostgreSQL (postgres-nio), shared by every
// instance of a service fleet: the instances behind a load balancer answer
// for the same mailboxes, and what must hold fleet-wide holds in the
// database:
// - per-mailbox quotas (messages, bytes): counted on the mailbox row, under
//   its row lock (SELECT ... FOR UPDATE), in the transaction that stores;
// - cursors: a mailbox's messages are numbered while its row is locked, so
//   one mailbox's numbers are committed in order and a reader's cursor never
//   passes a message still being stored by another instance;
// - single use of an answer: spent under the same row lock;
// - retention and idle-mailbox collection: run by one instance at a time
//   (transaction-level advisory lock) and at most once per period across
//   the fleet (the time of the last run is kept in the database).
// Requests run on the HTTP front's thread pool (`blocking`), each taking
// one connection of a small pool for its transaction.
import Logging
import MasqConnectoid
import MasqConnectoidWire
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO
#if canImport(Glibc)
    import Glibc
#endif

/// Where the database is: `postgres://user[:password]@host[:port]/database[?sslmode=disable|prefer|require]`.
public struct PostgresLocation: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String?
    public var database: String
    public var sslmode: String

    /// True for `postgres://` and `postgresql://` URLs (the `--store` option's other values are SQLite paths).
    public static func matches(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
    }

    public init(_ text: String) throws(ConnectoidError) {
        guard Self.matches(text) else {
            throw .init(.badRequest, "a PostgreSQL store is postgres://user@host:port/database")
        }
        var rest = Substring(text[text.index(after: text.firstIndex(of: ":")!)...].dropFirst(2))
        var query = ""
        if let q = rest.firstIndex(of: "?") {
            query = String(rest[rest.index(after: q)...])
            rest = rest[..<q]
        }
        var database = ""
        if let slash = rest.firstIndex(of: "/") {
            database = String(rest[rest.index(after: slash)...])
            rest = rest[..<slash]
        }
        var user = "postgres"
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                user = Self.unescape(credentials[..<colon])
                password = Self.unescape(credentials[credentials.index(after: colon)...])
            } else {
                user = Self.unescape(credentials)
            }
        }
        var host = String(rest)
        var port = 5432
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(p) else {
                throw .init(.badRequest, "bad port in the PostgreSQL URL")
            }
            port = p
            host = String(rest[..<colon])
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw .init(.badRequest, "no host in the PostgreSQL URL") }
        var sslmode = "prefer"
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "sslmode":
                guard ["disable", "prefer", "require"].contains(parts[1]) else {
                    throw .init(.badRequest, "sslmode must be disable, prefer or require")
                }
                sslmode = parts[1]
            default:
                throw .init(.badRequest, "unknown PostgreSQL URL parameter \(parts[0]) (sslmode only)")
            }
        }
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.database = database.isEmpty ? user : Self.unescape(Substring(database))
        self.sslmode = sslmode
    }

    /// The URL without its password (for logs).
    public var redacted: String { "postgres://\(user)@\(host):\(port)/\(database)?sslmode=\(sslmode)" }

    private static func unescape(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var i = text.utf8.startIndex
        let utf8 = text.utf8
        while i < utf8.endIndex {
            let c = utf8[i]
            if c == UInt8(ascii: "%"), let a = utf8.index(i, offsetBy: 1, limitedBy: utf8.endIndex), a < utf8.endIndex,
                let b = utf8.index(a, offsetBy: 1, limitedBy: utf8.endIndex), b < utf8.endIndex,
                let value = UInt8(String(decoding: [utf8[a], utf8[b]], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                i = utf8.index(after: b)
            } else {
                bytes.append(c)
                i = utf8.index(after: i)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

public final class PostgresMailboxStore: MailboxBackend, @unchecked Sendable {
    public var blocking: Bool { true }

    let location: PostgresLocation
    let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let configuration: PostgresConnection.Configuration
    private let maxConnections: Int
    /// Idle connections, how many exist, and whether the store is closed.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let available = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var idle: [PostgresConnection] = []
    private var total = 0
    private var closed = false
    private var nextID = 0
    /// /metrics asks often; sizes are read at most this often (milliseconds).
    static let countsCacheMilliseconds: Int64 = 10_000
    private let cachedCounts = NIOLockedValueBox<(at: Int64, counts: MailboxCounts)?>(nil)

    /// Advisory lock keys (one namespace of 64-bit keys per database).
    static let schemaLock: Int64 = 0x6d61_7371_0001  // "masq" 1
    static let collectLock: Int64 = 0x6d61_7371_0002

    /// Connect (one connection now, to create the schema; more as requests need them, up to `maxConnections`).
    public init(
        location: PostgresLocation, maxConnections: Int = 16, logger: Logger = Logger(label: "masq.connectoid.postgres")
    ) throws(ConnectoidError) {
        self.location = location
        self.logger = logger
        self.maxConnections = max(1, maxConnections)
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let tls: PostgresConnection.Configuration.TLS
        switch location.sslmode {
        case "disable":
            tls = .disable
        default:
            do {
                let context = try NIOSSLContext(configuration: .makeClientConfiguration())
                tls = location.sslmode == "require" ? .require(context) : .prefer(context)
            } catch {
                throw .init(.unavailable, "TLS setup for PostgreSQL failed: \(error)")
            }
        }
        var configuration = PostgresConnection.Configuration(
            host: location.host, port: location.port, username: location.user,
            password: location.password, database: location.database, tls: tls)
        configuration.options.connectTimeout = .seconds(10)
        self.configuration = configuration
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(available, nil)
        try migrate()
    }

    deinit {
        close()
        pthread_cond_destroy(available)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        available.deallocate()
        try? group.syncShutdownGracefully()
    }

    public func close() {
        pthread_mutex_lock(mutex)
        closed = true
        let connections = idle
        idle = []
        pthread_cond_broadcast(available)
        pthread_mutex_unlock(mutex)
        for connection in connections { try? connection.close().wait() }
    }

    // MARK: schema

    private func migrate() throws(ConnectoidError) {
        try transaction { (c) throws(ConnectoidError) in
            // Instances starting together: one creates the schema, the others wait for it.
            try run(c, "SELECT pg_advisory_xact_lock($1)", [.int(Self.schemaLock)])
            for statement in [
                """
                CREATE TABLE IF NOT EXISTS connectoid_mailbox(
                    pub BYTEA NOT NULL, ext TEXT NOT NULL,
                    created BIGINT NOT NULL, checked BIGINT NOT NULL,
                    question BYTEA, answer_hash BYTEA, expires BIGINT, used_hash BYTEA,
                    held BIGINT NOT NULL DEFAULT 0, held_bytes BIGINT NOT NULL DEFAULT 0,
                    PRIMARY KEY(pub, ext))
                """,
                """
                CREATE TABLE IF NOT EXISTS connectoid_message(
                    at BIGSERIAL PRIMARY KEY,
                    pub BYTEA NOT NULL, ext TEXT NOT NULL, arrived BIGINT NOT NULL,
                    id TEXT NOT NULL, data BYTEA NOT NULL)
                """,
                "CREATE UNIQUE INDEX IF NOT EXISTS connectoid_message_box ON connectoid_message(pub, ext, id)",
                "CREATE INDEX IF NOT EXISTS connectoid_message_cursor ON connectoid_message(pub, ext, at)",
                "CREATE INDEX IF NOT EXISTS connectoid_message_arrived ON connectoid_message(arrived)",
                "CREATE INDEX IF NOT EXISTS connectoid_mailbox_checked ON connectoid_mailbox(checked)",
                "CREATE TABLE IF NOT EXISTS connectoid_collection(id INTEGER PRIMARY KEY, last_run BIGINT NOT NULL)",
                "INSERT INTO connectoid_collection(id, last_run) VALUES (1, 0) ON CONFLICT DO NOTHING"
            ] {
                try run(c, statement, [])
            }
        }
    }

    // MARK: operations

    public func send(
        pub: [UInt8], ext: String, id: String, data: [UInt8], now: Int64, maxMessages: Int, maxBytes: Int,
        retention: Int64
    ) throws(ConnectoidError) -> Bool {
        try transaction { (c) throws(ConnectoidError) -> Bool in
            try run(
                c,
                "INSERT INTO connectoid_mailbox(pub, ext, created, checked) VALUES($1, $2, $3, $3) ON CONFLICT DO NOTHING",
                [.blob(pub), .text(ext), .int(now)])
            // The row lock serialises this mailbox's sends across the fleet: quotas and cursor order.
            let rows = try query(
                c, "SELECT held, held_bytes FROM connectoid_mailbox WHERE pub = $1 AND ext = $2 FOR UPDATE",
                [.blob(pub), .text(ext)])
            guard let row = rows.first else { throw .init(.unavailable, "storage: the mailbox vanished") }
            let (held, heldBytes) = try decode { try row.decode((Int64, Int64).self) }
            let existing = try query(
                c, "SELECT arrived FROM connectoid_message WHERE pub = $1 AND ext = $2 AND id = $3",
                [.blob(pub), .text(ext), .text(id)])
            if let row = existing.first {
                // The same bytes are stored already: a retry. An expired copy not yet
                // collected must not hide the new one: store it again at a new cursor.
                let arrived = try decode { try row.decode(Int64.self) }
                if arrived <= now - retention {
                    try run(
                        c, "DELETE FROM connectoid_message WHERE pub = $1 AND ext = $2 AND id = $3",
                        [.blob(pub), .text(ext), .text(id)])
                    try run(
                        c, "INSERT INTO connectoid_message(pub, ext, arrived, id, data) VALUES($1, $2, $3, $4, $5)",
                        [.blob(pub), .text(ext), .int(now), .text(id), .blob(data)])
                }
                return true
            }
            guard held < Int64(maxMessages), heldBytes + Int64(data.count) <= Int64(maxBytes) else { return false }
            try run(
                c, "INSERT INTO connectoid_message(pub, ext, arrived, id, data) VALUES($1, $2, $3, $4, $5)",
                [.blob(pub), .text(ext), .int(now), .text(id), .blob(data)])
            try run(
                c,
                "UPDATE connectoid_mailbox SET held = held + 1, held_bytes = held_bytes + $3 WHERE pub = $1 AND ext = $2",
                [.blob(pub), .text(ext), .int(Int64(data.count))])
            return true
        }
    }

    public func check(pub: [UInt8], ext: String, at: Int64, now: Int64, retention: Int64) throws(ConnectoidError)
        -> Bool
    {
        try withConnection { (c) throws(ConnectoidError) -> Bool in
            let rows = try query(
                c,
                """
                WITH touched AS (UPDATE connectoid_mailbox SET checked = $3 WHERE pub = $1 AND ext = $2 RETURNING 1)
                SELECT EXISTS(SELECT 1 FROM connectoid_message WHERE pub = $1 AND ext = $2 AND at > $4 AND arrived > $5),
                       (SELECT count(*) FROM touched)
                """, [.blob(pub), .text(ext), .int(now), .int(at), .int(now - retention)])
            guard let row = rows.first else { return false }
            let (found, _) = try decode { try row.decode((Bool, Int64).self) }
            return found
        }
    }

    public func pendingQuestion(pub: [UInt8], ext: String, validUntil: Int64) throws(ConnectoidError)
        -> MailboxQuestion?
    {
        try withConnection { (c) throws(ConnectoidError) -> MailboxQuestion? in
            let rows = try query(
                c,
                """
                SELECT question, expires FROM connectoid_mailbox
                WHERE pub = $1 AND ext = $2 AND question IS NOT NULL AND expires >= $3
                """, [.blob(pub), .text(ext), .int(validUntil)])
            guard let row = rows.first else { return nil }
            let (question, expires) = try decode { try row.decode((ByteBuffer, Int64).self) }
            return MailboxQuestion(sealed: Array(question.readableBytesView), expires: expires)
        }
    }

    public func setQuestion(pub: [UInt8], ext: String, sealed: [UInt8], answerHash: [UInt8], expires: Int64)
        throws(ConnectoidError)
    {
        try withConnection { (c) throws(ConnectoidError) in
            try run(
                c,
                "UPDATE connectoid_mailbox SET question = $3, answer_hash = $4, expires = $5 WHERE pub = $1 AND ext = $2",
                [.blob(pub), .text(ext), .blob(sealed), .blob(answerHash), .int(expires)])
        }
    }

    public func spend(pub: [UInt8], ext: String, answerHash: [UInt8], now: Int64) throws(ConnectoidError)
        -> MailboxVerdict
    {
        try transaction { (c) throws(ConnectoidError) -> MailboxVerdict in
            // Locked: two instances handed the same answer spend it once.
            let rows = try query(
                c,
                "SELECT answer_hash, expires, used_hash FROM connectoid_mailbox WHERE pub = $1 AND ext = $2 FOR UPDATE",
                [.blob(pub), .text(ext)])
            guard let row = rows.first else { return .noChallenge }
            let (expectedBuffer, expiresValue, usedBuffer) = try decode {
                try row.decode((ByteBuffer?, Int64?, ByteBuffer?).self)
            }
            let expected = expectedBuffer.map { Array($0.readableBytesView) }
            let used = usedBuffer.map { Array($0.readableBytesView) }
            guard let expected else {
                if let used, constantTimeEqual(used, answerHash) { return .reused }
                return .noChallenge
            }
            guard constantTimeEqual(expected, answerHash) else {
                if let used, constantTimeEqual(used, answerHash) { return .reused }
                return .wrong
            }
            try run(
                c,
                """
                UPDATE connectoid_mailbox SET question = NULL, answer_hash = NULL, expires = NULL, used_hash = $3
                WHERE pub = $1 AND ext = $2
                """, [.blob(pub), .text(ext), .blob(answerHash)])
            return (expiresValue ?? 0) < now ? .expired : .ok
        }
    }

    public func messages(
        pub: [UInt8], ext: String, after at: Int64, limit: Int, now: Int64,
        retention: Int64
    ) throws(ConnectoidError) -> ([(at: Int64, id: String, data: [UInt8])], Bool) {
        try withConnection { (c) throws(ConnectoidError) in
            let rows = try query(
                c,
                """
                SELECT at, id, data FROM connectoid_message
                WHERE pub = $1 AND ext = $2 AND at > $3 AND arrived > $4 ORDER BY at LIMIT $5
                """, [.blob(pub), .text(ext), .int(at), .int(now - retention), .int(Int64(limit + 1))])
            var out: [(at: Int64, id: String, data: [UInt8])] = []
            for row in rows {
                let (at, id, data) = try decode { try row.decode((Int64, String, ByteBuffer).self) }
                out.append((at, id, Array(data.readableBytesView)))
            }
            let more = out.count > limit
            if more { out.removeLast() }
            return (out, more)
        }
    }

    /// One instance at a time (advisory lock held for the transaction), and
    /// not again within `interval` of the last run by any instance.
    public func collect(now: Int64, retention: Int64, idle: Int64, interval: Int64) throws(ConnectoidError)
        -> MailboxCollection
    {
        try transaction { (c) throws(ConnectoidError) -> MailboxCollection in
            let skipped = MailboxCollection(messages: 0, mailboxes: 0, ran: false)
            guard let got = try query(c, "SELECT pg_try_advisory_xact_lock($1)", [.int(Self.collectLock)]).first else {
                return skipped
            }
            let locked = try decode { try got.decode(Bool.self) }
            guard locked else { return skipped }
            guard let last = try query(c, "SELECT last_run FROM connectoid_collection WHERE id = 1", []).first else {
                return skipped
            }
            if interval > 0, now - (try decode { try last.decode(Int64.self) }) < interval { return skipped }
            // Messages past retention; their mailboxes' counts drop by what went.
            let expired = try query(
                c,
                """
                WITH gone AS (DELETE FROM connectoid_message WHERE arrived <= $1 RETURNING pub, ext, octet_length(data) AS n),
                     per AS (SELECT pub, ext, count(*) AS c, sum(n) AS b FROM gone GROUP BY pub, ext),
                     fixed AS (UPDATE connectoid_mailbox m SET held = greatest(0, m.held - per.c), held_bytes = greatest(0, m.held_bytes - per.b)
                               FROM per WHERE m.pub = per.pub AND m.ext = per.ext RETURNING 1)
                SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM fixed)
                """, [.int(now - retention)])
            var messages: Int64 = 0
            if let row = expired.first {
                let (gone, _) = try decode { try row.decode((Int64, Int64).self) }
                messages = gone
            }
            // Mailboxes nobody checked for `idle`, with what they still hold.
            try run(
                c,
                """
                DELETE FROM connectoid_message WHERE (pub, ext) IN (SELECT pub, ext FROM connectoid_mailbox WHERE checked <= $1)
                """, [.int(now - idle)])
            let boxes = try query(
                c,
                "WITH gone AS (DELETE FROM connectoid_mailbox WHERE checked <= $1 RETURNING 1) SELECT count(*) FROM gone",
                [.int(now - idle)])
            let mailboxes =
                try boxes.first.map { row throws(ConnectoidError) in try decode { try row.decode(Int64.self) } } ?? 0
            try run(c, "UPDATE connectoid_collection SET last_run = $1 WHERE id = 1", [.int(now)])
            return MailboxCollection(messages: Int(messages), mailboxes: Int(mailboxes), ran: true)
        }
    }

    public func counts() throws(ConnectoidError) -> MailboxCounts {
        let now = ConnectoidService.wallClock()
        if let cached = cachedCounts.withLockedValue({ $0 }), now - cached.at < Self.countsCacheMilliseconds {
            return cached.counts
        }
        let counts = try withConnection { (c) throws(ConnectoidError) -> MailboxCounts in
            let rows = try query(
                c,
                """
                SELECT count(*), coalesce(sum(held), 0)::bigint, coalesce(sum(held_bytes), 0)::bigint,
                       (pg_total_relation_size('connectoid_mailbox') + pg_total_relation_size('connectoid_message'))::bigint
                FROM connectoid_mailbox
                """, [])
            guard let row = rows.first else {
                return MailboxCounts(mailboxes: -1, messages: -1, messageBytes: -1, storeBytes: -1)
            }
            let (mailboxes, messages, bytes, size) = try decode { try row.decode((Int64, Int64, Int64, Int64).self) }
            return MailboxCounts(mailboxes: mailboxes, messages: messages, messageBytes: bytes, storeBytes: size)
        }
        cachedCounts.withLockedValue { $0 = (now, counts) }
        return counts
    }

    public func hasMailbox(pub: [UInt8], ext: String) throws(ConnectoidError) -> Bool {
        try withConnection { (c) throws(ConnectoidError) -> Bool in
            !(try query(c, "SELECT 1 FROM connectoid_mailbox WHERE pub = $1 AND ext = $2", [.blob(pub), .text(ext)]))
                .isEmpty
        }
    }

    // MARK: plumbing

    enum Value { case blob([UInt8]), text(String), int(Int64) }

    private func transaction<T>(_ body: (PostgresConnection) throws(ConnectoidError) -> T) throws(ConnectoidError) -> T
    {
        try withConnection { (c) throws(ConnectoidError) -> T in
            try run(c, "BEGIN", [])
            do throws(ConnectoidError) {
                let result = try body(c)
                try run(c, "COMMIT", [])
                return result
            } catch {
                try? run(c, "ROLLBACK", [])
                throw error
            }
        }
    }

    /// Run `body` with a connection of the pool (opened when none is idle
    /// and fewer than `maxConnections` exist; otherwise wait for one). A
    /// connection found closed is dropped, so the store recovers from a
    /// database restart on the next request.
    private func withConnection<T>(_ body: (PostgresConnection) throws(ConnectoidError) -> T) throws(ConnectoidError)
        -> T
    {
        let connection = try acquire()
        do throws(ConnectoidError) {
            let result = try body(connection)
            release(connection)
            return result
        } catch {
            release(connection)
            throw error
        }
    }

    private func acquire() throws(ConnectoidError) -> PostgresConnection {
        pthread_mutex_lock(mutex)
        while true {
            if closed {
                pthread_mutex_unlock(mutex)
                throw .init(.unavailable, "storage: closed")
            }
            if let connection = idle.popLast() {
                pthread_mutex_unlock(mutex)
                if connection.isClosed {
                    forget()
                    pthread_mutex_lock(mutex)
                    continue
                }
                return connection
            }
            if total < maxConnections {
                total += 1
                nextID += 1
                let id = nextID
                pthread_mutex_unlock(mutex)
                do {
                    return try PostgresConnection.connect(
                        on: group.next(), configuration: configuration, id: id, logger: logger
                    ).wait()
                } catch {
                    forget()
                    throw .init(
                        .unavailable,
                        "storage: cannot reach PostgreSQL at \(location.host):\(location.port): \(Self.describe(error))"
                    )
                }
            }
            pthread_cond_wait(available, mutex)
        }
    }

    private func release(_ connection: PostgresConnection) {
        if connection.isClosed {
            forget()
            return
        }
        pthread_mutex_lock(mutex)
        if closed {
            pthread_mutex_unlock(mutex)
            try? connection.close().wait()
            return
        }
        idle.append(connection)
        pthread_cond_signal(available)
        pthread_mutex_unlock(mutex)
    }

    /// A connection is gone: room for a new one.
    private func forget() {
        pthread_mutex_lock(mutex)
        total -= 1
        pthread_cond_signal(available)
        pthread_mutex_unlock(mutex)
    }

    private func query(_ c: PostgresConnection, _ sql: String, _ values: [Value]) throws(ConnectoidError)
        -> [PostgresRow]
    {
        var bindings = PostgresBindings(capacity: values.count)
        for value in values {
            switch value {
            case .blob(let bytes): bindings.append(ByteBuffer(bytes: bytes))
            case .text(let text): bindings.append(text)
            case .int(let n): bindings.append(n)
            }
        }
        do {
            return try c.query(PostgresQuery(unsafeSQL: sql, binds: bindings), logger: logger).wait().rows
        } catch {
            throw .init(.unavailable, "storage: \(Self.describe(error))")
        }
    }

    private func run(_ c: PostgresConnection, _ sql: String, _ values: [Value]) throws(ConnectoidError) {
        _ = try query(c, sql, values)
    }

    private func decode<T>(_ body: () throws -> T) throws(ConnectoidError) -> T {
        do {
            return try body()
        } catch {
            throw .init(.unavailable, "storage: unexpected row: \(error)")
        }
    }

    /// PSQLError hides the server's message from `description` (it may hold
    /// data); its SQLSTATE and message are what an operator needs.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let server = error.serverInfo {
                return "\(server[.sqlState] ?? "?") \(server[.message] ?? "")"
            }
            return "\(error.code)"
        }
        return "\(error)"
    }
}
