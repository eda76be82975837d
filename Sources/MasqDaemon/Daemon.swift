#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import Dispatch
#if canImport(Glibc)
    import Glibc
#endif
import MasqCrypto
import MasqKernel

/// What masqd is started with.
public struct DaemonOptions: Sendable {
    /// Profiles, the app registries and the runtime file live here.
    public var home: String
    /// Loopback endpoint for apps and the manager: localhost:PORT (both
    /// 127.0.0.1 and ::1), 127.0.0.1:PORT or [::1]:PORT.
    public var listen = "localhost:7071"
    /// Where the manager page and masq.js are served from, in order.
    public var staticDirectories: [String] = []
    /// Extra plugin search directories (the transports and storage).
    public var pluginPath: [String] = []
    /// Big enough for a value of the store's default maximum (1 MiB) as base64 in JSON.
    public var maxMessageBytes = 2 << 20
    public var maxConnections = 256
    /// Connections still in their HTTP request or upgrade (localws max_handshakes).
    public var maxHandshakes = 64
    /// Requests per second one connection may make (bursts up to twice that).
    public var requestsPerSecond = 1_000
    /// Watches one connection may hold.
    public var maxWatches = 64
    /// Requests read but not yet answered: per connection and in all (Backlog).
    public var maxWaitingRequests = 256
    public var maxWaitingBytesPerConnection = 16 << 20
    public var maxWaitingBytes = 64 << 20
    public var storage = "sqlite"
    /// Connectoid services new share links name when a profile's config has none.
    public var shareServices: [String] = []
    /// Serve programs of this OS user only (Linux: the owner of the client's
    /// TCP socket, from /proc/net/tcp). nil: anyone who reaches the port.
    public var allowedUser: UInt32? = getuid()

    public init(home: String) { self.home = home }
}

/// One WebSocket connection: an app (once identified), or the manager.
final class Connection {
    let peer: String
    /// The page's Origin header; nil for a native program.
    let origin: String?
    /// The client's address (for the manager to tell requests apart).
    let remote: String?
    /// The identity the connection claimed with its first hello or register,
    /// for its whole life, and whether it proved it with the app's token.
    var appID: String?
    var approved = false
    var waitingForApproval = false
    var admin = false
    /// The profile the app was authenticated against.
    var profile: String?
    /// Connection watch id -> store watch id.
    var watches: [UInt64: (storeID: UInt64, namespace: String)] = [:]
    var nextWatch: UInt64 = 1
    var tokens: Double
    var lastRefill = DaemonClock.now()

    init(peer: String, origin: String?, remote: String?, rate: Int) {
        self.peer = peer
        self.origin = origin
        self.remote = remote
        tokens = Double(rate) * 2
    }
}

/// A registration the user has to answer: bound to the connection that made
/// it, which alone receives the token if the user approves this request.
struct ApprovalRequest {
    let id: String
    let app: String
    let profile: String
    let peer: String
    let remote: String?
    let at: UInt64
}

/// Seconds on a monotonic clock, for rate limits.
enum DaemonClock {
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    static func unixMilliseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }
}

/// The local store daemon: profiles, app consent, the app protocol
/// (docs/APP-PROTOCOL.md) and the manager's API, over the localws
/// transport plugin. All state lives on one serial queue.
public final class Daemon: @unchecked Sendable {
    public let options: DaemonOptions
    let queue = DispatchQueue(label: "masqd")
    let profiles: ProfileManager
    var active: String
    var connections: [String: Connection] = [:]
    /// Live approval requests by request id (dropped with their connection).
    var requests: [String: ApprovalRequest] = [:]
    /// Answers of recent writes by request id (AppOperations).
    /// Requests read but not yet handled (bounded; see Backlog).
    let backlog: Backlog
    var transport: TransportPluginInstance?
    /// The manager's secret for this run (in the URL fragment and the runtime file).
    public let adminSecret = base64url(Random.bytes(24))
    /// Origins the manager page may have: this daemon's own.
    var ownOrigins: Set<String> = []
    public private(set) var url = ""
    var pairing: Bool = false
    /// Share requests waiting for the user, share owners (ShareOperations.swift).
    let shareDesk = ShareDesk()
    /// Blob uploads in progress (BlobOperations.swift).
    let blobUploads = BlobUploads()

    public init(options: DaemonOptions) throws(MasqError) {
        self.options = options
        backlog = Backlog(
            .init(
                requestsPerConnection: options.maxWaitingRequests,
                bytesPerConnection: options.maxWaitingBytesPerConnection, totalBytes: options.maxWaitingBytes))
        try FileSystem.makeDirectories(options.home)
        let manager = try ProfileManager(home: options.home, storage: options.storage)
        let remembered = (try? FileSystem.readFile(options.home + "/active-profile")).map {
            String(decoding: $0, as: UTF8.self)
        }
        if manager.profiles.isEmpty {
            // A first start works out of the box: one profile, no passphrase.
            _ = try Self.guarded { () throws(DaemonError) in try manager.create("default", passphrase: nil) }
        }
        profiles = manager
        active = remembered.flatMap { manager.profiles[$0] != nil ? $0 : nil } ?? manager.names[0]
        for profile in profiles.profiles.values {
            watchShares(profile)
            profile.startSync()
            if profile.sharing != nil { sharesChanged(profile.name, quiet: true) }
        }
    }

    /// Listen and serve. Returns the manager's base URL (http://host:port/).
    public func start() throws(MasqError) -> String {
        var config = MasqConfig.defaults(dataDir: options.home)
        config.pluginPath = options.pluginPath
        var pluginOptions: [(key: String, value: String)] = [
            ("max_message_bytes", String(options.maxMessageBytes)),
            ("max_connections", String(options.maxConnections)),
            ("max_handshakes", String(options.maxHandshakes))
        ]
        if !options.staticDirectories.isEmpty {
            pluginOptions.append(("static_dir", options.staticDirectories.joined(separator: ":")))
        }
        if let user = options.allowedUser { pluginOptions.append(("allowed_uid", String(user))) }
        let engine = try TransportPluginInstance.open(
            PluginReference(name: "localws", options: pluginOptions), config: config,
            // Requests are handled on the daemon's queue, one at a time, while
            // the transport's threads go on reading and writing (measured:
            // handling them on the transport's thread instead costs 3x the
            // throughput with 50 apps for a quarter less latency with one).
            onFrame: { [weak self] peer, _, frame in
                guard let daemon = self else { return }
                let (queue, close) = daemon.backlog.arrive(peer, bytes: frame.count)
                if queue {
                    daemon.queue.async {
                        guard daemon.backlog.depart(peer, bytes: frame.count) else { return }
                        daemon.received(peer, frame)
                    }
                }
                if let close {
                    daemon.queue.async { try? daemon.transport?.disconnect(close.peer, reason: close.reason) }
                }
            },
            onPeerEvent: { [weak self] peer, event in
                guard let daemon = self else { return }
                if event != TransportPluginInstance.peerUp { daemon.backlog.closed(peer) }
                daemon.queue.async { daemon.peerEvent(peer, event, info: nil) }
            },
            onPeerInfo: { [weak self] peer, info in
                guard let daemon = self else { return }
                daemon.queue.async { daemon.peerEvent(peer, TransportPluginInstance.peerUp, info: info) }
            })
        try engine.start()
        let bound = try engine.listen(options.listen)
        transport = engine
        let endpoints = bound.split(separator: ",").map(String.init)
        guard let first = endpoints.first, let port = first.split(separator: ":").last else {
            throw MasqError(.internal, "the localws transport did not say where it listens")
        }
        ownOrigins = ["http://127.0.0.1:\(port)", "http://localhost:\(port)", "http://[::1]:\(port)"]
        url = "http://\(first.hasPrefix("[") ? "localhost:\(port)" : first)/"
        if options.listen.hasPrefix("localhost") { url = "http://localhost:\(port)/" }
        return url
    }

    public func stop() {
        transport?.close()
        transport = nil
        queue.sync {
            profiles.closeAll()
        }
    }

    static func guarded<T>(_ body: () throws(DaemonError) -> T) throws(MasqError) -> T {
        do throws(DaemonError) { return try body() } catch { throw MasqError(.invalid, error.message) }
    }

    // MARK: - transport events (queue)

    private func peerEvent(_ peer: String, _ event: Int32, info: String?) {
        if event == TransportPluginInstance.peerUp {
            var fields: [String: String] = [:]
            if let info, let decoded = try? JSONDecoder().decode([String: String].self, from: Data(info.utf8)) {
                fields = decoded
            }
            connections[peer] = Connection(
                peer: peer, origin: fields["origin"], remote: fields["remote"], rate: options.requestsPerSecond)
        } else {
            if let connection = connections.removeValue(forKey: peer) { dropWatches(connection) }
            // A request whose asker is gone cannot be approved: the app asks again.
            dropShareRequests(of: peer)
            blobUploads.drop(peer: peer)
            let gone = requests.values.filter { $0.peer == peer }
            for request in gone { requests[request.id] = nil }
            if !gone.isEmpty {
                notifyAdmins(.object([("event", .string("apps")), ("app", .string(gone[0].app))]))
            }
        }
    }

    private func received(_ peer: String, _ frame: [UInt8]) {
        guard let connection = connections[peer] else { return }
        var requestID: String?
        do throws(DaemonError) {
            guard takeToken(connection) else {
                throw DaemonError(.rateLimited, "more than \(options.requestsPerSecond) requests per second")
            }
            let request = try Request.decode(frame)
            requestID = request.id?.json
            if let result = try handle(connection, request) { reply(peer, requestID, ok: result) }
        } catch {
            reply(peer, requestID, error: error)
        }
    }

    private func takeToken(_ c: Connection) -> Bool {
        let now = DaemonClock.now()
        let rate = Double(options.requestsPerSecond)
        c.tokens = min(rate * 2, c.tokens + (now - c.lastRefill) * rate)
        c.lastRefill = now
        guard c.tokens >= 1 else { return false }
        c.tokens -= 1
        return true
    }

    // MARK: - dispatch

    /// The answer to a request; nil when it comes later (pairing waits for the other device).
    private func handle(_ c: Connection, _ r: Request) throws(DaemonError) -> JSON? {
        switch r.op {
        case "ping": return .object([("pong", .bool(true))])
        case "hello": return try hello(c, r)
        case "register": return try register(c, r)
        case "admin": return try adminHello(c, r)
        default: break
        }
        if let operation = AppOperation(rawValue: r.op) {
            guard c.approved, let appID = c.appID else {
                throw DaemonError(
                    .unauthorized, "approved apps only: say hello with your token, or register and wait for the user")
            }
            return try perform(operation, c, appID, r)
        }
        if let operation = BlobOperation(rawValue: r.op) {
            guard c.approved, let appID = c.appID else {
                throw DaemonError(
                    .unauthorized, "approved apps only: say hello with your token, or register and wait for the user")
            }
            return try performBlob(operation, c, appID, r)
        }
        if let operation = ShareOperation(rawValue: r.op) {
            guard c.approved, let appID = c.appID else {
                throw DaemonError(
                    .unauthorized, "approved apps only: say hello with your token, or register and wait for the user")
            }
            return try performShare(operation, c, appID, r)
        }
        if r.op.hasPrefix("shares.") {
            guard c.admin else { throw DaemonError(.unauthorized, "the manager's operations need the admin secret") }
            return try performShareAdmin(c, r)
        }
        if r.op.contains(".") {
            guard c.admin else { throw DaemonError(.unauthorized, "the manager's operations need the admin secret") }
            return try performAdmin(c, r)
        }
        throw DaemonError(.unknownOp, "unknown op \"\(r.op.prefix(40))\"")
    }

    /// Who the connection is: a page is its Origin (the browser sets it; a
    /// page cannot), a native program names itself with app_id.
    func identity(_ c: Connection, _ r: Request) throws(DaemonError) -> String {
        if let origin = c.origin {
            guard !ownOrigins.contains(origin) else { throw DaemonError(.denied, "the manager page is not an app") }
            guard origin != "null", origin.utf8.count + 4 <= AppRegistry.maxIDBytes,
                origin.hasPrefix("http://") || origin.hasPrefix("https://")
            else {
                throw DaemonError(.denied, "pages from origin \(origin.prefix(60)) cannot use Masq")
            }
            return "web:" + origin
        }
        guard let appID = r.app_id, (1...64).contains(appID.utf8.count),
            appID.utf8.allSatisfy({ c in
                (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 46 || c == 45 || c == 95
            })
        else {
            throw DaemonError(
                .badRequest, "a native app (no Origin header) names itself with \"app_id\": 1-64 of A-Z a-z 0-9 . - _")
        }
        return "native:" + appID
    }

    func activeProfile() throws(DaemonError) -> Profile {
        let profile = try profiles.profile(active)
        guard !profile.store.isLocked else {
            throw DaemonError(.locked, "profile \(active) is locked: the user unlocks it in the manager")
        }
        return profile
    }

    /// A connection speaks for one identity, the one of its first hello or
    /// register, for its whole life: a second identity needs a new connection.
    private func bind(_ c: Connection, _ id: String) throws(DaemonError) {
        if let bound = c.appID, bound != id {
            throw DaemonError(
                .denied, "this connection speaks for \(bound.prefix(80)); open another connection for another app")
        }
        guard !c.admin else { throw DaemonError(.denied, "the manager's connection is not an app") }
    }

    private func hello(_ c: Connection, _ r: Request) throws(DaemonError) -> JSON {
        let id = try identity(c, r)
        guard c.appID == nil else {
            throw DaemonError(
                .badRequest, "one hello per connection (this one already said hello as \(c.appID!.prefix(80)))")
        }
        try bind(c, id)
        let profile = try profiles.profile(active)
        c.appID = id
        c.profile = profile.name
        if let token = r.token, let app = profile.apps.authenticate(id, token: token) {
            c.approved = true
            c.waitingForApproval = false
            return .object([
                ("state", .string("approved")), ("app", .string(app.id)), ("namespace", .string(app.namespace)),
                ("profile", .string(profile.name)), ("locked", .bool(profile.store.isLocked))
            ])
        }
        // Approved, but not proven: "token_required" (none given) or "bad_token".
        var state = profile.apps.app(id)?.state.rawValue ?? "unregistered"
        if state == "approved" { state = r.token == nil ? "token_required" : "bad_token" }
        c.waitingForApproval = state == "pending"
        return .object([("state", .string(state)), ("app", .string(id))])
    }

    private func register(_ c: Connection, _ r: Request) throws(DaemonError) -> JSON {
        let id = try identity(c, r)
        guard let name = r.name, (1...AppRegistry.maxNameBytes).contains(name.utf8.count) else {
            throw DaemonError(.badRequest, "\"name\" is 1-\(AppRegistry.maxNameBytes) bytes")
        }
        let description = r.description ?? ""
        guard description.utf8.count <= AppRegistry.maxDescriptionBytes else {
            throw DaemonError(.badRequest, "\"description\" is at most \(AppRegistry.maxDescriptionBytes) bytes")
        }
        let icon = r.icon ?? ""
        guard icon.isEmpty || (icon.hasPrefix("data:image/") && icon.utf8.count <= AppRegistry.maxIconBytes) else {
            throw DaemonError(
                .badRequest, "\"icon\" is a data:image/... URL of at most \(AppRegistry.maxIconBytes) bytes")
        }
        try bind(c, id)
        guard !c.approved else {
            throw DaemonError(.badRequest, "this connection is already approved as \(id.prefix(80))")
        }
        let profile = try profiles.profile(active)
        if let existing = requests.values.first(where: { $0.peer == c.peer }) {
            return .object([
                ("state", .string("pending")), ("app", .string(existing.app)), ("request", .string(existing.id))
            ])
        }
        guard requests.count < AppRegistry.maxPendingApps else {
            throw DaemonError(.busy, "too many apps wait for approval; the user must answer some first")
        }
        let now = DaemonClock.unixMilliseconds()
        let record = try profile.apps.register(id: id, name: name, description: description, icon: icon, now: now)
        let request = ApprovalRequest(
            id: Hex.encode(Random.bytes(8)), app: record.id, profile: profile.name, peer: c.peer, remote: c.remote,
            at: now)
        requests[request.id] = request
        c.appID = id
        c.profile = profile.name
        c.approved = false
        c.waitingForApproval = true
        notifyAdmins(
            .object([("event", .string("apps")), ("profile", .string(profile.name)), ("app", .string(record.id))]))
        // "pending" even for an approved app: this instance waits for the user.
        return .object([("state", .string("pending")), ("app", .string(record.id)), ("request", .string(request.id))])
    }

    /// The live requests of `app` in `profile`, oldest first.
    func requests(of app: String, in profile: String) -> [ApprovalRequest] {
        requests.values.filter { $0.app == app && $0.profile == profile }.sorted { $0.at < $1.at }
    }

    private func adminHello(_ c: Connection, _ r: Request) throws(DaemonError) -> JSON {
        // A page from any other origin is refused even with the secret; a
        // native client (no Origin: the CLI) proves itself with the secret alone.
        if let origin = c.origin, !ownOrigins.contains(origin) {
            throw DaemonError(.denied, "the manager's API is only for this daemon's own page")
        }
        guard let secret = r.secret, constantTimeEqual(Array(secret.utf8), Array(adminSecret.utf8)) else {
            throw DaemonError(.unauthorized, "wrong admin secret")
        }
        guard c.appID == nil else { throw DaemonError(.denied, "an app's connection cannot become the manager") }
        c.admin = true
        return .object([("admin", .bool(true)), ("profile", .string(active))])
    }

    // MARK: - sending

    func reply(_ peer: String, _ id: String?, ok result: JSON) {
        send(peer, .object([("id", id.map(JSON.raw) ?? .null), ("ok", .bool(true)), ("result", result)]))
    }

    func reply(_ peer: String, _ id: String?, error: DaemonError) {
        send(
            peer,
            .object([
                ("id", id.map(JSON.raw) ?? .null), ("ok", .bool(false)),
                ("error", .object([("code", .string(error.code.rawValue)), ("message", .string(error.message))]))
            ]))
    }

    func send(_ peer: String, _ message: JSON) {
        var text = message.text
        if text.utf8.count > options.maxMessageBytes {
            text =
                JSON.object([
                    ("ok", .bool(false)),
                    (
                        "error",
                        .object([
                            ("code", .string("too_large")),
                            (
                                "message",
                                .string(
                                    "the answer exceeds \(options.maxMessageBytes) bytes: ask for less (list with a prefix and a limit)"
                                )
                            )
                        ])
                    )
                ]).text
        }
        try? transport?.send(peer, Array(text.utf8))
    }

    func notifyAdmins(_ event: JSON) {
        for c in connections.values where c.admin { send(c.peer, event) }
    }

    /// Close every connection of `app` (after a revocation or a profile switch).
    func cutOff(_ predicate: (Connection) -> Bool, event: JSON, reason: String) {
        for c in connections.values where predicate(c) {
            send(c.peer, event)
            dropWatches(c)
            c.approved = false
            try? transport?.disconnect(c.peer, reason: reason)
        }
    }

    func dropWatches(_ c: Connection) {
        guard let name = c.profile, let profile = profiles.profiles[name] else { return }
        for (_, watch) in c.watches { try? profile.store.unwatch(watch.storeID) }
        c.watches = [:]
    }
}
