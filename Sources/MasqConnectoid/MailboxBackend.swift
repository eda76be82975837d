import MasqConnectoidWire

/// A question sealed to a mailbox key, pending until answered or expired.
public struct MailboxQuestion: Sendable {
    public var sealed: [UInt8]
    public var expires: Int64
    public init(sealed: [UInt8], expires: Int64) {
        self.sealed = sealed
        self.expires = expires
    }
}

/// What spending an answer found.
public enum MailboxVerdict: Equatable, Sendable { case ok, noChallenge, wrong, expired, reused }

/// What a collection did: nil fields when another instance of the fleet ran
/// it (or ran it recently), so it was skipped here.
public struct MailboxCollection: Sendable {
    public var messages: Int
    public var mailboxes: Int
    public var ran: Bool
    public init(messages: Int, mailboxes: Int, ran: Bool) {
        self.messages = messages
        self.mailboxes = mailboxes
        self.ran = ran
    }
}

/// Sizes for /metrics.
public struct MailboxCounts: Sendable {
    public var mailboxes: Int64
    public var messages: Int64
    /// Message bytes held (the payloads, as the per-mailbox quota counts them).
    public var messageBytes: Int64
    /// What the store occupies on disk (file, or tables and indexes), -1 if unknown.
    public var storeBytes: Int64
    public init(mailboxes: Int64, messages: Int64, messageBytes: Int64, storeBytes: Int64) {
        self.mailboxes = mailboxes
        self.messages = messages
        self.messageBytes = messageBytes
        self.storeBytes = storeBytes
    }
}

/// Where a service keeps mailboxes and messages: the SQLite file of one
/// instance (`MailboxStore`), or a PostgreSQL database shared by a fleet
/// (MasqConnectoidPostgres). Every operation is one transaction; limits
/// checked here (per-mailbox message and byte quotas, single use of an
/// answer) hold for every instance that shares the store. Times in
/// milliseconds.
public protocol MailboxBackend: AnyObject, Sendable {
    /// Calls may wait on the network: the HTTP front runs them on a thread
    /// pool, never on an event loop.
    var blocking: Bool { get }
    /// Store a message; a resend of the same bytes is stored once. False
    /// when the mailbox already holds `maxMessages` or would hold more than
    /// `maxBytes`.
    func send(
        pub: [UInt8], ext: String, id: String, data: [UInt8], now: Int64, maxMessages: Int, maxBytes: Int,
        retention: Int64
    ) throws(ConnectoidError) -> Bool
    /// Note a check (keeps the mailbox alive) and tell whether messages wait after `at`.
    func check(pub: [UInt8], ext: String, at: Int64, now: Int64, retention: Int64) throws(ConnectoidError) -> Bool
    /// The pending question if it is unused and valid at least until `validUntil`.
    func pendingQuestion(pub: [UInt8], ext: String, validUntil: Int64) throws(ConnectoidError) -> MailboxQuestion?
    func setQuestion(pub: [UInt8], ext: String, sealed: [UInt8], answerHash: [UInt8], expires: Int64)
        throws(ConnectoidError)
    /// Check an answer's hash and spend the question (single use, across the fleet).
    func spend(pub: [UInt8], ext: String, answerHash: [UInt8], now: Int64) throws(ConnectoidError) -> MailboxVerdict
    /// Up to `limit` messages after `at`, oldest first, and whether more wait.
    func messages(
        pub: [UInt8], ext: String, after at: Int64, limit: Int, now: Int64,
        retention: Int64
    ) throws(ConnectoidError) -> ([(at: Int64, id: String, data: [UInt8])], Bool)
    /// Delete messages older than `retention` and mailboxes unchecked for
    /// `idle`. A shared store runs this once across the fleet per
    /// `interval` (the others skip it).
    func collect(now: Int64, retention: Int64, idle: Int64, interval: Int64) throws(ConnectoidError)
        -> MailboxCollection
    func counts() throws(ConnectoidError) -> MailboxCounts
    /// Test hook: does the store still hold this mailbox?
    func hasMailbox(pub: [UInt8], ext: String) throws(ConnectoidError) -> Bool
    /// Release connections (the service is stopping).
    func close()
}

/// Constant-time comparison of two hashes.
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for i in 0..<a.count { diff |= a[i] ^ b[i] }
    return diff == 0
}
