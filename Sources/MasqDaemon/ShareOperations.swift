#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import MasqCrypto
import MasqKernel
import MasqSharing

/// Sharing with other people from apps (docs/APP-PROTOCOL.md, "Sharing with
/// other people"). An approved app asks to share its own namespace, or to
/// accept another person's link; nothing happens until the user approves
/// *that request* in the manager, exactly as for app approval: a request is
/// bound to the connection that made it, goes away with it, and its answer
/// (the link and its QR code, or the accepted share) reaches that connection
/// alone. The app then follows its shares (`share` events) and may end them.
enum ShareOperation: String {
    case create = "share.create"
    case accept = "share.accept"
    case list = "share.list"
    case remove = "share.remove"
}

/// A share the user has to answer.
struct ShareRequest {
    enum Kind: String { case create, accept }
    let id: String
    let kind: Kind
    let app: String
    let profile: String
    let peer: String
    let remote: String?
    /// create: the app's namespace.
    let namespace: String?
    let nickname: String
    let readOnly: Bool
    /// create: the page the link opens (nil: masq://share/).
    let base: String?
    /// accept: the link, the share's id and the services it names.
    let link: String?
    let shareID: String?
    let services: [String]
    let at: UInt64
}

/// Which app made or accepted each share (per profile, `shares.json` beside
/// `apps.json`, 0600, never synced): the app sees and ends only its own,
/// and keeps the namespace of a share it accepted after the share ends.
final class ShareOwners {
    struct Entry: Codable, Equatable {
        var app: String
        /// The local namespace (for a link accepted here: once the owner answered).
        var namespace: String?
    }

    let path: String
    private(set) var entries: [String: Entry] = [:]

    init(path: String) {
        self.path = path
        if let bytes = try? FileSystem.readFile(path),
            let decoded = try? JSONDecoder().decode([String: Entry].self, from: Data(bytes))
        {
            entries = decoded
        }
    }

    func set(_ share: String, _ entry: Entry) {
        guard entries[share] != entry else { return }
        entries[share] = entry
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try FileSystem.writeFile(path, Array(try encoder.encode(entries)))
        } catch {
            Log.warn("masqd", "cannot save \(path): \(error)")
        }
    }
}

/// The daemon's sharing state: requests waiting for the user, who owns
/// which share, and what each app was last told about its shares.
final class ShareDesk {
    static let maxRequests = 64
    static let maxRequestsPerConnection = 4

    var requests: [String: ShareRequest] = [:]
    private var owners: [String: ShareOwners] = [:]
    /// Per profile: share id -> (what apps were told, the state it came from).
    var seen: [String: [String: (signature: String, state: ShareState)]] = [:]

    func owners(_ profile: Profile) -> ShareOwners {
        if let known = owners[profile.name] { return known }
        let loaded = ShareOwners(path: profile.directory + "/shares.json")
        owners[profile.name] = loaded
        return loaded
    }

    /// What, when it changes, an app hears of: not every message heard.
    static func signature(_ s: ShareState) -> String {
        [
            s.status.rawValue, s.namespace, s.access.rawValue, s.fingerprint ?? "", s.nickname ?? "",
            String(s.warnings.count), String(s.rejected)
        ].joined(separator: "\u{0}")
    }
}

extension Daemon {
    // MARK: - the app's side

    func performShare(_ op: ShareOperation, _ c: Connection, _ appID: String, _ r: Request) throws(DaemonError) -> JSON
    {
        let profile = try activeProfile()
        guard c.profile == profile.name else {
            throw DaemonError(.unauthorized, "the user switched profiles: say hello again")
        }
        switch op {
        case .create:
            let ns = r.ns ?? appID
            guard ns == appID else {
                throw DaemonError(
                    .denied, "an app shares only its own namespace (\(appID.prefix(80))), not \(ns.prefix(80))")
            }
            let nickname = try nicknameField(r.nickname)
            if let base = r.base {
                try shareRun { () throws(MasqError) in try ShareService.checkLinkBase(base) }
                // A page's links open that page's site, not another's.
                if appID.hasPrefix("web:"), !base.hasPrefix(String(appID.dropFirst(4)) + "/") {
                    throw DaemonError(
                        .denied, "a page's share links start with its own origin (\(appID.dropFirst(4).prefix(80))/)")
                }
            }
            guard !shareServices(profile).isEmpty || !profile.store.config.sharing.services.isEmpty else {
                throw DaemonError(
                    .unavailable,
                    "no Connectoid service to share through: the user adds one (masqd --share-service URL, or \"sharing\" in the profile's config)"
                )
            }
            return try askUser(
                .create, c, appID, profile, nickname: nickname, readOnly: r.read_only ?? false, base: r.base,
                link: nil, share: nil, services: [])
        case .accept:
            guard let link = r.link, !link.isEmpty else { throw DaemonError(.badRequest, "missing \"link\"") }
            let nickname = try nicknameField(r.nickname)
            let checked = try shareRun { () throws(MasqError) in
                try (profile.sharing ?? ShareService(store: profile.store)).checkLink(link)
            }
            if let waiting = shareDesk.requests.values.first(where: {
                $0.shareID == checked.id && $0.profile == profile.name
            }) {
                guard waiting.peer == c.peer else {
                    throw DaemonError(.busy, "this link already waits for the user's answer")
                }
                return .object([("state", .string("pending")), ("request", .string(waiting.id))])
            }
            return try askUser(
                .accept, c, appID, profile, nickname: nickname, readOnly: false, base: nil,
                link: link, share: checked.id, services: checked.services)
        case .list:
            let owners = shareDesk.owners(profile)
            let states = try shareRun { () throws(MasqError) in try profile.store.shares() }
            let mine = states.filter { owners.entries[$0.id]?.app == appID }
            let asked = shareDesk.requests.values.filter {
                $0.app == appID && $0.profile == profile.name && $0.peer == c.peer
            }
            .sorted { $0.at < $1.at }
            return .object([
                ("shares", .array(mine.map { shareObject($0) })),
                (
                    "requests",
                    .array(
                        asked.map { q in
                            .object([
                                ("request", .string(q.id)), ("kind", .string(q.kind.rawValue)),
                                ("nickname", .string(q.nickname))
                            ])
                        })
                )
            ])
        case .remove:
            guard let id = r.share, !id.isEmpty else { throw DaemonError(.badRequest, "missing \"share\"") }
            guard shareDesk.owners(profile).entries[id]?.app == appID,
                (try shareRun { () throws(MasqError) in try profile.store.share(id) }) != nil
            else {
                throw DaemonError(.notFound, "no share \(id.prefix(80)) of this app")
            }
            try endShare(profile, id)
            return .object([])
        }
    }

    private func nicknameField(_ value: String?) throws(DaemonError) -> String {
        guard let value else {
            throw DaemonError(.badRequest, "missing \"nickname\": what the user calls the other person")
        }
        return try shareRun { () throws(MasqError) in try ShareState.checkedNickname(value) }
    }

    /// Services new links name when the profile's config has none.
    private func shareServices(_ profile: Profile) -> [String] {
        profile.store.config.sharing.services.isEmpty ? options.shareServices : []
    }

    private func askUser(
        _ kind: ShareRequest.Kind, _ c: Connection, _ appID: String, _ profile: Profile, nickname: String,
        readOnly: Bool,
        base: String?, link: String?, share: String?, services: [String]
    ) throws(DaemonError) -> JSON {
        guard shareDesk.requests.values.filter({ $0.peer == c.peer }).count < ShareDesk.maxRequestsPerConnection else {
            throw DaemonError(
                .busy, "at most \(ShareDesk.maxRequestsPerConnection) share requests per connection wait for the user")
        }
        guard shareDesk.requests.count < ShareDesk.maxRequests else {
            throw DaemonError(.busy, "too many share requests wait for the user; they must answer some first")
        }
        let request = ShareRequest(
            id: Hex.encode(Random.bytes(8)), kind: kind, app: appID, profile: profile.name, peer: c.peer,
            remote: c.remote, namespace: kind == .create ? appID : nil, nickname: nickname, readOnly: readOnly,
            base: base, link: link, shareID: share, services: services, at: DaemonClock.unixMilliseconds())
        shareDesk.requests[request.id] = request
        notifyAdmins(.object([("event", .string("shares")), ("profile", .string(profile.name))]))
        return .object([("state", .string("pending")), ("request", .string(request.id))])
    }

    /// A connection went away: its requests cannot be answered any more.
    func dropShareRequests(of peer: String) {
        let gone = shareDesk.requests.values.filter { $0.peer == peer }
        for request in gone { shareDesk.requests[request.id] = nil }
        if let first = gone.first {
            notifyAdmins(.object([("event", .string("shares")), ("profile", .string(first.profile))]))
        }
    }

    // MARK: - the manager's side

    func performShareAdmin(_ c: Connection, _ r: Request) throws(DaemonError) -> JSON {
        switch r.op {
        case "shares.list":
            let p = try profiles.profile(r.profile ?? active)
            guard !p.store.isLocked else { throw DaemonError(.locked, "profile \(p.name) is locked") }
            let owners = shareDesk.owners(p)
            let states = try shareRun { () throws(MasqError) in try p.store.shares() }
            let asking = shareDesk.requests.values.filter { $0.profile == p.name }.sorted { $0.at < $1.at }
            return .object([
                ("profile", .string(p.name)),
                (
                    "shares",
                    .array(
                        states.map { s in
                            let app = owners.entries[s.id]?.app
                            return shareObject(
                                s,
                                extra: [
                                    ("app", app.map(JSON.string) ?? .null),
                                    ("app_name", (app.flatMap { p.apps.app($0)?.name }).map(JSON.string) ?? .null)
                                ])
                        })
                ),
                (
                    "requests",
                    .array(
                        asking.map { q in
                            let name = p.apps.app(q.app)?.name ?? q.app
                            var fields: [(String, JSON)] = [
                                ("request", .string(q.id)), ("kind", .string(q.kind.rawValue)), ("app", .string(q.app)),
                                ("app_name", .string(name)), ("nickname", .string(q.nickname)), ("since", .uint(q.at)),
                                ("remote", q.remote.map(JSON.string) ?? .null)
                            ]
                            if q.kind == .create {
                                fields += [
                                    ("namespace", .string(q.namespace ?? "")),
                                    ("access", .string(q.readOnly ? "read-only" : "read-write"))
                                ]
                            } else {
                                fields += [
                                    ("share", .string(q.shareID ?? "")),
                                    ("services", .array(q.services.map(JSON.string)))
                                ]
                            }
                            return .object(fields)
                        })
                )
            ])

        case "shares.approve":
            guard let id = r.request, let q = shareDesk.requests[id] else {
                throw DaemonError(.notFound, "no share request \(r.request?.prefix(40) ?? ""): the app may have gone")
            }
            guard let asker = connections[q.peer], asker.approved, asker.appID == q.app, asker.profile == q.profile
            else {
                shareDesk.requests[id] = nil
                throw DaemonError(.notFound, "the app that asked has gone; it asks again when it reconnects")
            }
            let p = try profiles.profile(q.profile)
            guard !p.store.isLocked else { throw DaemonError(.locked, "profile \(p.name) is locked") }
            shareDesk.requests[id] = nil
            do throws(DaemonError) {
                let (state, link) = try carryOut(q, p)
                let object = shareObject(state)
                var event: [(String, JSON)] = [
                    ("event", .string("share_approved")), ("request", .string(id)), ("share", object)
                ]
                if let link {
                    event += [("link", .string(link)), ("qr_svg", .string((try? QRCode(link).svg()) ?? ""))]
                }
                send(asker.peer, .object(event))
                sharesChanged(p.name)
                notifyAdmins(.object([("event", .string("shares")), ("profile", .string(p.name))]))
                return .object([("request", .string(id)), ("share", object)])
            } catch {
                send(
                    asker.peer,
                    .object([
                        ("event", .string("share_failed")), ("request", .string(id)),
                        (
                            "error",
                            .object([("code", .string(error.code.rawValue)), ("message", .string(error.message))])
                        )
                    ]))
                notifyAdmins(.object([("event", .string("shares")), ("profile", .string(p.name))]))
                throw error
            }

        case "shares.deny":
            guard let id = r.request, let q = shareDesk.requests.removeValue(forKey: id) else {
                throw DaemonError(.notFound, "no share request \(r.request?.prefix(40) ?? "")")
            }
            if let asker = connections[q.peer] {
                send(asker.peer, .object([("event", .string("share_denied")), ("request", .string(id))]))
            }
            notifyAdmins(.object([("event", .string("shares")), ("profile", .string(q.profile))]))
            return .object([("request", .string(id))])

        case "shares.remove":
            let p = try profiles.profile(r.profile ?? active)
            guard !p.store.isLocked else { throw DaemonError(.locked, "profile \(p.name) is locked") }
            guard let id = r.share, !id.isEmpty else { throw DaemonError(.badRequest, "missing \"share\"") }
            guard (try shareRun { () throws(MasqError) in try p.store.share(id) }) != nil else {
                throw DaemonError(.notFound, "no share \(id.prefix(80))")
            }
            try endShare(p, id)
            return .object([])

        default:
            throw DaemonError(.unknownOp, "unknown op \"\(r.op.prefix(40))\"")
        }
    }

    /// Make or accept the share the user approved: the share, and the link for a new one.
    private func carryOut(_ q: ShareRequest, _ p: Profile) throws(DaemonError) -> (ShareState, String?) {
        let service = try ensureSharing(p)
        let owners = shareDesk.owners(p)
        switch q.kind {
        case .create:
            let text = q.namespace ?? q.app
            let link = try shareRun { () throws(MasqError) in
                let ns = try NamespaceName(text, limits: p.store.limits)
                let services = shareServices(p)
                return try service.create(
                    namespace: ns, readOnly: q.readOnly, services: services.isEmpty ? nil : services,
                    base: q.base ?? "masq://share/", nickname: q.nickname)
            }
            owners.set(link.pubText, .init(app: q.app, namespace: text))
            guard let state = try shareRun({ () throws(MasqError) in try p.store.share(link.pubText) }) else {
                throw DaemonError(.failed, "the new share vanished")
            }
            return (state, link.text)
        case .accept:
            let state = try shareRun { () throws(MasqError) in try service.accept(q.link ?? "", nickname: q.nickname) }
            owners.set(state.id, .init(app: q.app, namespace: nil))
            return (state, nil)
        }
    }

    /// The profile's running sharing service, started if need be.
    private func ensureSharing(_ p: Profile) throws(DaemonError) -> ShareService {
        if let running = p.sharing { return running }
        watchShares(p)
        do throws(MasqError) { try p.startSharing() } catch {
            throw DaemonError(.unavailable, "sharing cannot start: \(error.message)")
        }
        sharesChanged(p.name, quiet: true)
        return p.sharing!
    }

    /// End a share (tell the other side, delete its keys): the app's
    /// record stays, so the app keeps the namespace's data.
    private func endShare(_ p: Profile, _ id: String) throws(DaemonError) {
        if let running = p.sharing {
            _ = try shareRun { () throws(MasqError) in try running.unshare(id) }
        } else {
            let service = ShareService(store: p.store)
            do throws(MasqError) { try service.start() } catch {
                Log.warn(
                    "masqd", "share \(id.prefix(10)): the other side is not told (\(error.message)); ending it here")
            }
            defer { service.stop() }
            _ = try shareRun { () throws(MasqError) in try service.unshare(id) }
        }
        sharesChanged(p.name)
        notifyAdmins(.object([("event", .string("shares")), ("profile", .string(p.name))]))
    }

    // MARK: - following shares

    /// Have `p`'s sharing service report changes to this daemon.
    func watchShares(_ p: Profile) {
        let name = p.name
        p.onShareEvent = { [weak self] in
            guard let daemon = self else { return }
            daemon.queue.async { daemon.sharesChanged(name) }
        }
    }

    /// Tell each app what changed in its shares since it was last told (a
    /// `share` event; an ended share comes with status "ended"), and the
    /// manager that something did. `quiet`: only take note.
    func sharesChanged(_ name: String, quiet: Bool = false) {
        guard let p = profiles.profiles[name], !p.store.isLocked, let states = try? p.store.shares() else { return }
        let owners = shareDesk.owners(p)
        let before = shareDesk.seen[name] ?? [:]
        var now: [String: (signature: String, state: ShareState)] = [:]
        var told: [(app: String?, state: ShareState)] = []
        for state in states {
            let signature = ShareDesk.signature(state)
            now[state.id] = (signature, state)
            if var entry = owners.entries[state.id], entry.namespace == nil, !state.namespace.isEmpty {
                entry.namespace = state.namespace
                owners.set(state.id, entry)
            }
            if before[state.id]?.signature != signature { told.append((owners.entries[state.id]?.app, state)) }
        }
        for (id, gone) in before where now[id] == nil {
            var ended = gone.state
            ended.status = .ended
            told.append((owners.entries[id]?.app, ended))
        }
        shareDesk.seen[name] = now
        guard !quiet, !told.isEmpty else { return }
        for (app, state) in told {
            guard let app else { continue }
            let event = JSON.object([("event", .string("share")), ("share", shareObject(state))])
            for c in connections.values where c.approved && c.appID == app && c.profile == name { send(c.peer, event) }
        }
        notifyAdmins(.object([("event", .string("shares")), ("profile", .string(name))]))
    }

    /// What an app may do in the namespace of a share it accepted: read, or
    /// read and write (nil: it accepted no share landing there). Once the
    /// share ends, its namespace is the app's own.
    func shareAccess(_ p: Profile, _ app: String, _ namespace: String) -> Grant.Access? {
        let owners = shareDesk.owners(p)
        for (id, entry) in owners.entries where entry.app == app && entry.namespace != app {
            let state: ShareState? = (try? p.store.share(id)) ?? nil
            let name = entry.namespace ?? state?.namespace
            guard let name, !name.isEmpty, name.utf8.elementsEqual(namespace.utf8) else { continue }
            if let state, state.role == .guest, state.access == .readOnly { return .read }
            return .write
        }
        return nil
    }

    // MARK: - answers

    func shareObject(_ s: ShareState, extra: [(String, JSON)] = []) -> JSON {
        .object(
            [
                ("id", .string(s.id)),
                ("namespace", s.namespace.isEmpty ? .null : .string(s.namespace)),
                ("role", .string(s.role.rawValue)),
                ("access", .string(s.access.rawValue)),
                ("status", .string(s.status.rawValue)),
                ("nickname", s.nickname.map(JSON.string) ?? .null),
                ("fingerprint", s.fingerprint.map(JSON.string) ?? .null),
                ("fingerprint_emoji", s.fingerprintEmoji.map(JSON.string) ?? .null),
                ("created_at", .uint(s.created)),
                ("last_heard_at", .uint(s.lastHeard)),
                ("refused", .uint(s.rejected)),
                ("warnings", .array(s.warnings.map(JSON.string)))
            ] + extra)
    }

    /// Kernel errors of share operations as the app protocol's codes: here a
    /// refusal is "denied" (the profile is known to be unlocked), and a
    /// transport that cannot load is "unavailable".
    func shareRun<T>(_ body: () throws(MasqError) -> T) throws(DaemonError) -> T {
        do throws(MasqError) { return try body() } catch {
            switch error.status {
            case .denied: throw DaemonError(.denied, error.message)
            case .plugin, .abi, .config, .unavailable: throw DaemonError(.unavailable, error.message)
            default: throw DaemonError(error)
            }
        }
    }
}
