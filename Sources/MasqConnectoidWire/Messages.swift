/// The service's JSON, as the draft names it. `pub` and `ext` are the link's
/// PUB and EXT parts verbatim; `data`, `question` and `answer` are base64url
/// (no padding); `at` is an integer cursor below 2^53 (exact in JavaScript).
public struct ConnectoidRequest: Codable, Sendable {
    public var pub: String?
    public var ext: String?
    public var action: String?
    public var data: String?
    public var at: Int64?
    public var answer: String?
    public var limit: Int?

    public init(
        pub: String, ext: String, action: String, data: String? = nil, at: Int64? = nil, answer: String? = nil,
        limit: Int? = nil
    ) {
        self.pub = pub
        self.ext = ext
        self.action = action
        self.data = data
        self.at = at
        self.answer = answer
        self.limit = limit
    }
}

/// One stored message in a `receive` answer. `id` is the hex SHA-256 of the
/// message bytes, the same on every service, so a client polling several
/// services keeps one copy.
public struct ConnectoidMessage: Codable, Sendable, Equatable {
    public var at: Int64
    public var id: String
    public var data: String

    public init(at: Int64, id: String, data: String) {
        self.at = at
        self.id = id
        self.data = data
    }
}

public struct ConnectoidResponse: Codable, Sendable {
    public var ok: Bool
    public var error: String?
    public var code: String?
    public var found: Bool?
    public var question: String?
    public var at: Int64?
    /// The first message's data (the draft's single-message answer).
    public var data: String?
    public var messages: [ConnectoidMessage]?
    /// More messages wait after `at`.
    public var more: Bool?

    public init(
        ok: Bool, error: String? = nil, code: String? = nil, found: Bool? = nil, question: String? = nil,
        at: Int64? = nil, data: String? = nil, messages: [ConnectoidMessage]? = nil, more: Bool? = nil
    ) {
        self.ok = ok
        self.error = error
        self.code = code
        self.found = found
        self.question = question
        self.at = at
        self.data = data
        self.messages = messages
        self.more = more
    }

    public init(_ error: ConnectoidError) {
        self.init(ok: false, error: error.message, code: error.code.rawValue)
    }
}

/// What `GET <service URL>` publishes: the limits a client must respect.
public struct ConnectoidLimits: Codable, Sendable, Equatable {
    public var service = "connectoid"
    public var version = 1
    public var maxMessageBytes = 65_536 + 4_096
    public var maxMessagesPerMailbox = 1_000
    /// Bytes one mailbox may hold (beside the message count).
    public var maxBytesPerMailbox = 16 << 20
    public var maxReceiveLimit = 100
    public var retentionSeconds: Int64 = 3_600
    public var mailboxIdleSeconds: Int64 = 30 * 86_400
    public var challengeSeconds: Int64 = 60
    public var sendsPerMailboxPerMinute = 120
    public var requestsPerClientPerSecond = 50
    public var sealing = "p384-hkdf-sha256-chacha20poly1305-v1"
    /// How questions are sealed: a construction of their own (never a message's).
    public var challengeSealing = "p384-hkdf-sha256-chacha20poly1305-challenge-v2"

    public init() {}
}
