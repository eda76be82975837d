#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import MasqCrypto
import MasqKernel

/// An app as the user sees it: who it claims to be, what the user decided.
struct AppRecord: Codable, Equatable {
    enum State: String, Codable { case pending, approved, denied, revoked }

    /// "web:<origin>" for a page (the browser's Origin header), or
    /// "native:<app id>" for a local program. Also the app's namespace.
    var id: String
    var name: String
    var description: String
    /// A data: URL of an image (shown in the manager), or "".
    var icon: String
    var state: State
    /// SHA-256 (hex) of each token the user approved for this app — one per
    /// approved instance (a second browser, another copy of the program):
    /// tokens themselves are never stored.
    var tokenHashes: [String]
    var createdAt: UInt64
    var decidedAt: UInt64?

    var namespace: String { id }
    var isWeb: Bool { id.hasPrefix("web:") }

    init(id: String, name: String, description: String, icon: String, state: State, createdAt: UInt64) {
        self.id = id
        self.name = name
        self.description = description
        self.icon = icon
        self.state = state
        tokenHashes = []
        self.createdAt = createdAt
    }

    private enum CodingKeys: String, CodingKey {
        case id, name, description, icon, state, tokenHashes, tokenHash, createdAt, decidedAt
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        name = try c.decode(String.self, forKey: .name)
        description = try c.decode(String.self, forKey: .description)
        icon = try c.decode(String.self, forKey: .icon)
        state = try c.decode(State.self, forKey: .state)
        // Registries written before several tokens per app kept one.
        tokenHashes =
            try c.decodeIfPresent([String].self, forKey: .tokenHashes)
            ?? (try c.decodeIfPresent(String.self, forKey: .tokenHash)).map { [$0] } ?? []
        createdAt = try c.decode(UInt64.self, forKey: .createdAt)
        decidedAt = try c.decodeIfPresent(UInt64.self, forKey: .decidedAt)
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(name, forKey: .name)
        try c.encode(description, forKey: .description)
        try c.encode(icon, forKey: .icon)
        try c.encode(state, forKey: .state)
        try c.encode(tokenHashes, forKey: .tokenHashes)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encodeIfPresent(decidedAt, forKey: .decidedAt)
    }
}

/// A grant: app `app` may read (or read and write) app `target`'s namespace.
struct Grant: Codable, Equatable {
    enum Access: String, Codable { case read, write }
    var app: String
    var target: String
    var access: Access
}

/// A profile's apps and grants, kept in `apps.json` beside the profile's
/// store (0600). Local to this device on purpose: consent and tokens are
/// decisions about this computer's programs, so they never sync.
final class AppRegistry: @unchecked Sendable {
    private struct File: Codable {
        var apps: [AppRecord] = []
        var grants: [Grant] = []
    }

    let path: String
    private var file: File

    /// Limits on what an app may claim about itself.
    static let maxNameBytes = 80
    static let maxDescriptionBytes = 500
    static let maxIconBytes = 64 * 1024
    static let maxIDBytes = 120
    static let maxPendingApps = 64
    /// Approved instances (tokens) one app may hold.
    static let maxInstances = 16

    init(path: String) throws(MasqError) {
        self.path = path
        if FileSystem.exists(path) {
            let bytes = try FileSystem.readFile(path)
            do { file = try JSONDecoder().decode(File.self, from: Data(bytes)) } catch {
                throw MasqError(.corrupt, "\(path) is not a valid app registry: \(error)")
            }
        } else {
            file = File()
        }
    }

    var apps: [AppRecord] { file.apps }
    var grants: [Grant] { file.grants }

    func app(_ id: String) -> AppRecord? { file.apps.first { $0.id == id } }

    /// Record a registration. An unknown app becomes pending; a denied or
    /// revoked one asks again; a pending one keeps what it first claimed (a
    /// later registration cannot rename it). An approved app stays approved:
    /// the daemon turns the registration into a request for one more
    /// instance, which gets a token of its own only if the user approves it.
    func register(id: String, name: String, description: String, icon: String, now: UInt64) throws(DaemonError)
        -> AppRecord
    {
        if let index = file.apps.firstIndex(where: { $0.id == id }) {
            switch file.apps[index].state {
            case .approved, .pending:
                return file.apps[index]
            case .denied, .revoked:
                file.apps[index].state = .pending
                file.apps[index].name = name
                file.apps[index].description = description
                file.apps[index].icon = icon
                file.apps[index].tokenHashes = []
                file.apps[index].decidedAt = nil
                try save()
                return file.apps[index]
            }
        }
        guard file.apps.filter({ $0.state == .pending }).count < Self.maxPendingApps else {
            throw DaemonError(.busy, "too many apps wait for approval; the user must answer some first")
        }
        let record = AppRecord(
            id: id, name: name, description: description, icon: icon, state: .pending, createdAt: now)
        file.apps.append(record)
        try save()
        return record
    }

    /// Approve one instance: a new token (returned once, stored only as a
    /// hash) beside those of instances approved before.
    func approve(_ id: String, now: UInt64) throws(DaemonError) -> String {
        guard let index = file.apps.firstIndex(where: { $0.id == id }) else {
            throw DaemonError(.notFound, "no app \(id)")
        }
        guard file.apps[index].tokenHashes.count < Self.maxInstances else {
            throw DaemonError(
                .busy, "\(id) already has \(Self.maxInstances) approved instances: revoke it to start again")
        }
        let token = base64url(Random.bytes(32))
        file.apps[index].state = .approved
        file.apps[index].tokenHashes.append(Self.hash(token))
        file.apps[index].decidedAt = now
        try save()
        return token
    }

    /// Deny a pending app or revoke an approved one: every token stops working.
    func decide(_ id: String, _ state: AppRecord.State, now: UInt64) throws(DaemonError) {
        guard let index = file.apps.firstIndex(where: { $0.id == id }) else {
            throw DaemonError(.notFound, "no app \(id)")
        }
        file.apps[index].state = state
        file.apps[index].tokenHashes = []
        file.apps[index].decidedAt = now
        if state == .revoked { file.grants.removeAll { $0.app == id } }
        try save()
    }

    /// Forget an app entirely (its data stays in its namespace).
    func remove(_ id: String) throws(DaemonError) {
        guard file.apps.contains(where: { $0.id == id }) else { throw DaemonError(.notFound, "no app \(id)") }
        file.apps.removeAll { $0.id == id }
        file.grants.removeAll { $0.app == id || $0.target == id }
        try save()
    }

    /// The approved app whose token this is, if the token matches one of its instances'.
    func authenticate(_ id: String, token: String) -> AppRecord? {
        guard let app = app(id), app.state == .approved else { return nil }
        let presented = Array(Self.hash(token).utf8)
        var match = false
        for stored in app.tokenHashes where constantTimeEqual(Array(stored.utf8), presented) { match = true }
        return match ? app : nil
    }

    func grant(_ grant: Grant) throws(DaemonError) {
        guard grant.app != grant.target else { throw DaemonError(.invalid, "an app always has its own namespace") }
        guard app(grant.app)?.state == .approved else {
            throw DaemonError(.invalid, "\(grant.app) is not an approved app")
        }
        guard app(grant.target) != nil else { throw DaemonError(.notFound, "no app \(grant.target)") }
        file.grants.removeAll { $0.app == grant.app && $0.target == grant.target }
        file.grants.append(grant)
        try save()
    }

    func ungrant(app: String, target: String) throws(DaemonError) {
        guard file.grants.contains(where: { $0.app == app && $0.target == target }) else {
            throw DaemonError(.notFound, "no such grant")
        }
        file.grants.removeAll { $0.app == app && $0.target == target }
        try save()
    }

    /// What `app` may do in `namespace`: its own is read-write.
    func access(_ app: String, to namespace: String) -> Grant.Access? {
        if app == namespace { return .write }
        return file.grants.first { $0.app == app && $0.target == namespace }?.access
    }

    private func save() throws(DaemonError) {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(file)
            try FileSystem.writeFile(path, Array(data))
        } catch let error as MasqError {
            throw DaemonError(error)
        } catch {
            throw DaemonError(.failed, "cannot save the app registry: \(error)")
        }
    }

    static func hash(_ token: String) -> String {
        let digits = Array("0123456789abcdef")
        return String(Hash.sha256(Array(token.utf8)).flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] })
    }
}

/// Base64url without padding (RFC 4648 section 5): tokens and secrets that
/// travel in URLs and JSON unescaped.
func base64url(_ bytes: [UInt8]) -> String {
    String(
        Data(bytes).base64EncodedString().compactMap { c -> Character? in
            switch c {
            case "+": "-"
            case "/": "_"
            case "=": nil
            default: c
            }
        })
}

func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for i in 0..<a.count { difference |= a[i] ^ b[i] }
    return difference == 0
}
