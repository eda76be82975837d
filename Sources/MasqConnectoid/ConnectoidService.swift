import FoundationEssentials
import MasqConnectoidProtocol
import MasqCrypto
import NIOConcurrencyHelpers
#if canImport(Glibc)
    import Glibc
#endif

/// Limits and policies of a service. Every one is explicit and configurable.
public struct ConnectoidConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 7080
    /// SQLite file holding mailboxes and messages.
    public var databasePath = "connectoid.sqlite3"
    /// PRAGMA synchronous of the file (messages live an hour; NORMAL by default).
    public var synchronous = "NORMAL"
    public var limits = ConnectoidLimits()
    /// Bursts allowed above the per-second and per-minute rates.
    public var clientBurst = 100
    public var mailboxBurst = 30
    /// Client rate limits apply per address prefix: an IPv6 subscriber usually
    /// holds a whole /64 (keying by address would give it 2^64 buckets).
    public var ipv4Prefix = 32
    public var ipv6Prefix = 64
    /// Keys the rate limiters hold before evicting their least recently used half.
    public var maxLimiterKeys = 100_000
    /// Connections open at once (more are closed at once).
    public var maxConnections = 10_000
    /// Connections open at once from one client key (the address, or its
    /// prefix as set by `ipv4Prefix`/`ipv6Prefix`, as for the rate limits);
    /// more are closed at once, so one address cannot hold every slot. Behind
    /// a reverse proxy every client has the proxy's address: raise it there.
    public var maxConnectionsPerAddress = 32
    /// Requests a connection may have sent and not had answered (HTTP
    /// pipelining): at this many the service stops reading from it until it
    /// answers them (it may hold one read more, see `readChunkBytes`).
    public var maxPipelinedRequests = 16
    /// Answers written to a connection and not yet taken by the client: past
    /// `writeBufferHighBytes` the service stops answering and reading it until
    /// they drop below `writeBufferLowBytes`. One answer may pass it alone.
    public var writeBufferLowBytes = 32 * 1_024
    public var writeBufferHighBytes = 64 * 1_024
    /// The most bytes read from one connection per turn of its event loop.
    public var readChunkBytes = 16 * 1_024
    /// A connection must complete each request (its first, or the next after a
    /// response) within this many seconds, or it is closed: slow headers and
    /// idle keep-alive connections cannot hold slots.
    public var requestTimeoutSeconds: Int64 = 20
    /// Seconds between garbage collections (across the fleet when the
    /// store is shared: one instance runs each).
    public var collectEverySeconds: Int64 = 60
    /// Addresses of reverse proxies (HAProxy) whose X-Forwarded-For names
    /// the client: rate limits then count the client, not the proxy.
    /// (The connection caps still see the proxy: raise
    /// `maxConnectionsPerAddress` for it.)
    public var trustedProxies: Set<String> = []
    /// Threads that run requests against a blocking store (PostgreSQL),
    /// each with its own database connection.
    public var storeThreads = 16
    /// On SIGTERM: seconds open connections get to finish what they asked
    /// before they are closed (no new connection is accepted meanwhile).
    public var drainSeconds: Int64 = 10
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    /// Event loop threads (the store is shared behind its lock; HTTP, JSON
    /// and P-384 work run in parallel). Default: one per core.
    public var threads = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))

    public init() {}
}

/// The protocol, apart from HTTP: one JSON request in, one JSON response out.
/// The clock is injectable so retention and expiry are tested without waiting.
public final class ConnectoidService: @unchecked Sendable {
    public let configuration: ConnectoidConfiguration
    let store: any MailboxBackend
    let clock: @Sendable () -> Int64
    let clientLimiter: RateLimiter
    let mailboxLimiter: RateLimiter
    let metrics = ServiceMetrics()
    private let lastCollect = NIOLockedValueBox<Int64>(0)
    /// Keys already validated (decompressing a P-384 point costs a modular
    /// square root); bounded, emptied when full.
    private let knownKeys = NIOLockedValueBox<[String: [UInt8]]>([:])
    static let knownKeysLimit = 65_536

    /// Draining (SIGTERM): /healthz answers 503 and every answer closes its connection.
    let draining = NIOLockedValueBox(false)

    /// A service on `backend`, or on the SQLite file `configuration.databasePath`.
    public init(
        configuration: ConnectoidConfiguration, backend: (any MailboxBackend)? = nil,
        clock: @escaping @Sendable () -> Int64 = ConnectoidService.wallClock
    ) throws(ConnectoidError) {
        self.configuration = configuration
        self.clock = clock
        if let backend {
            store = backend
        } else {
            store = try MailboxStore(path: configuration.databasePath, synchronous: configuration.synchronous)
        }
        metrics.maxConnections.set(Int64(configuration.maxConnections))
        clientLimiter = RateLimiter(
            perSecond: Double(configuration.limits.requestsPerClientPerSecond),
            burst: Double(configuration.clientBurst),
            maxKeys: configuration.maxLimiterKeys)
        mailboxLimiter = RateLimiter(
            perSecond: Double(configuration.limits.sendsPerMailboxPerMinute) / 60,
            burst: Double(configuration.mailboxBurst),
            maxKeys: configuration.maxLimiterKeys)
    }

    @Sendable public static func wallClock() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// Largest request body accepted: the largest message in base64 plus the JSON around it.
    public var maxBodyBytes: Int { configuration.limits.maxMessageBytes * 4 / 3 + 2_048 }

    /// Answer one request body from `client` (its address, for rate limits).
    public func handle(body: [UInt8], client: String) -> ConnectoidResponse {
        let now = clock()
        collectIfDue(now)
        guard clientLimiter.take(client, now: now) else { return fail(.tooOften) }
        let request: ConnectoidRequest
        do { request = try JSONDecoder().decode(ConnectoidRequest.self, from: Data(body)) } catch {
            return fail(.badRequest("the body is not a JSON request object"))
        }
        do {
            let response = try answer(request, now: now)
            metrics.count(request.action ?? "", ok: true)
            return response
        } catch {
            return fail(error, action: request.action)
        }
    }

    private func fail(_ error: ConnectoidError, action: String? = nil) -> ConnectoidResponse {
        metrics.count(action ?? "", ok: false, code: error.code)
        if error.code == .unavailable { metrics.storeErrors.increment() }
        return ConnectoidResponse(error)
    }

    func answer(_ request: ConnectoidRequest, now: Int64) throws(ConnectoidError) -> ConnectoidResponse {
        guard let pubText = request.pub else { throw .badRequest("pub is missing") }
        let ext = request.ext ?? ""
        try ConnectoidLink.checkExt(ext)
        guard let action = request.action else { throw .badRequest("action is missing") }
        guard ["send", "check", "receive"].contains(action) else {
            throw .init(.unknownAction, "unknown action \"\(action.prefix(32))\" (send, check or receive)")
        }
        let pub = try key(pubText)
        let limits = configuration.limits
        let retention = limits.retentionSeconds * 1_000
        switch action {
        case "send":
            guard let text = request.data else { throw .badRequest("data is missing") }
            guard text.utf8.count <= (limits.maxMessageBytes * 4 + 2) / 3 else { throw .tooBig }
            guard let data = Base64URL.decode(text) else { throw .badRequest("data is not base64url") }
            guard !data.isEmpty else { throw .badRequest("data is empty") }
            guard data.count <= limits.maxMessageBytes else { throw .tooBig }
            guard mailboxLimiter.take(pubText + "." + ext, now: now) else { throw .tooOften }
            let id = Hex.encode(Hash.sha256(data))
            guard
                try store.send(
                    pub: pub, ext: ext, id: id, data: data, now: now, maxMessages: limits.maxMessagesPerMailbox,
                    maxBytes: limits.maxBytesPerMailbox, retention: retention)
            else {
                throw .init(.mailboxFull, "Mailbox full")
            }
            metrics.bytesIn.add(data.count)
            return ConnectoidResponse(ok: true)
        case "check":
            let at = try cursor(request.at)
            guard try store.check(pub: pub, ext: ext, at: at, now: now, retention: retention) else {
                return ConnectoidResponse(ok: true, found: false)
            }
            return ConnectoidResponse(
                ok: true, found: true, question: Base64URL.encode(try question(pub: pub, ext: ext, now: now)))
        default:
            guard let answerText = request.answer else { throw .badRequest("answer is missing") }
            guard answerText.utf8.count <= 200, let answer = Base64URL.decode(answerText) else {
                throw .badRequest("answer is not base64url")
            }
            let at = try cursor(request.at)
            let limit = request.limit ?? 1
            guard (1...limits.maxReceiveLimit).contains(limit) else {
                throw .badRequest("limit must be 1...\(limits.maxReceiveLimit)")
            }
            switch try store.spend(pub: pub, ext: ext, answerHash: Hash.sha256(answer), now: now) {
            case .ok: break
            case .noChallenge: throw .init(.noChallenge, "No question pending: check first")
            case .wrong: throw .init(.wrongAnswer, "Wrong answer")
            case .expired: throw .init(.expiredAnswer, "Question expired: check again")
            case .reused: throw .init(.reusedAnswer, "Answer already used: check again")
            }
            let (found, more) = try store.messages(
                pub: pub, ext: ext, after: at, limit: limit, now: now, retention: retention)
            let messages = found.map { ConnectoidMessage(at: $0.at, id: $0.id, data: Base64URL.encode($0.data)) }
            return ConnectoidResponse(
                ok: true, at: found.last?.at ?? at, data: messages.first?.data, messages: messages, more: more)
        }
    }

    /// A challenge: 32 random bytes sealed to the mailbox key (`ChallengeBox`,
    /// never the message construction); the store keeps
    /// its hash. An unused question with at least half its life left is
    /// handed out again, so repeated checks cost no P-384 operation.
    private func question(pub: [UInt8], ext: String, now: Int64) throws(ConnectoidError) -> [UInt8] {
        let life = configuration.limits.challengeSeconds * 1_000
        if let pending = try store.pendingQuestion(pub: pub, ext: ext, validUntil: now + life / 2) {
            metrics.questionsReused.increment()
            return pending.sealed
        }
        let secret = Random.bytes(32)
        let sealed = try ChallengeBox.seal(secret, to: pub)
        try store.setQuestion(pub: pub, ext: ext, sealed: sealed, answerHash: Hash.sha256(secret), expires: now + life)
        metrics.questionsSealed.increment()
        return sealed
    }

    private func key(_ text: String) throws(ConnectoidError) -> [UInt8] {
        if let known = knownKeys.withLockedValue({ $0[text] }) { return known }
        let pub = try ConnectoidLink.checkedPublicKey(text)
        knownKeys.withLockedValue { keys in
            if keys.count >= Self.knownKeysLimit { keys.removeAll(keepingCapacity: true) }
            keys[text] = pub
        }
        return pub
    }

    private func cursor(_ at: Int64?) throws(ConnectoidError) -> Int64 {
        let at = at ?? 0
        guard at >= 0, at < 1 << 53 else { throw .badRequest("at must be an integer 0...2^53-1") }
        return at
    }

    /// Run the retention rules now (also run every `collectEverySeconds`).
    /// With a shared store one instance of the fleet runs each collection
    /// (the others skip it: `ran` is false).
    @discardableResult
    public func collectGarbage(now: Int64? = nil, interval: Int64 = 0) throws(ConnectoidError) -> (
        messages: Int, mailboxes: Int, ran: Bool
    ) {
        let now = now ?? clock()
        let limits = configuration.limits
        let done = try store.collect(
            now: now, retention: limits.retentionSeconds * 1_000, idle: limits.mailboxIdleSeconds * 1_000,
            interval: interval)
        if done.ran {
            metrics.collections.increment()
            metrics.collectedMessages.add(done.messages)
            metrics.collectedMailboxes.add(done.mailboxes)
        } else {
            metrics.collectionsSkipped.increment()
        }
        return (done.messages, done.mailboxes, done.ran)
    }

    private func collectIfDue(_ now: Int64) {
        let due = lastCollect.withLockedValue { last -> Bool in
            guard now - last >= configuration.collectEverySeconds * 1_000 else { return false }
            last = now
            return true
        }
        // Slightly under the period: the fleet's instances race for each run.
        if due { _ = try? collectGarbage(now: now, interval: configuration.collectEverySeconds * 1_000 * 9 / 10) }
    }

    public func hasMailbox(pub: [UInt8], ext: String) throws(ConnectoidError) -> Bool {
        try store.hasMailbox(pub: pub, ext: ext)
    }

    public func metricsText() -> String {
        let counts =
            (try? store.counts()) ?? MailboxCounts(mailboxes: -1, messages: -1, messageBytes: -1, storeBytes: -1)
        return metrics.text(counts, draining: draining.withLockedValue { $0 })
    }

    /// Whether the store's calls must run off the event loops.
    public var storeBlocks: Bool { store.blocking }

    public var isDraining: Bool { draining.withLockedValue { $0 } }

    /// What `GET` of the service URL answers.
    public func limitsJSON() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(configuration.limits)) ?? Data("{}".utf8))
    }
}
