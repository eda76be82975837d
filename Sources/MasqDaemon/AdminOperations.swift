import Dispatch
import MasqKernel
import MasqCrypto

/// The manager's API (the page served by masqd, and `masq apps`): profiles,
/// apps and grants, devices and pairing, a data browser, sync status. Only
/// connections that presented the admin secret from the daemon's own origin
/// (or from no origin: a native client such as the CLI) get here.
extension Daemon {
    /// Returns the answer, or nil when the answer comes later (pairing).
    func performAdmin(_ c: Connection, _ r: Request) throws(DaemonError) -> JSON? {
        func required(_ value: String?, _ name: String) throws(DaemonError) -> String {
            guard let value, !value.isEmpty else { throw DaemonError(.badRequest, "missing \"\(name)\"") }
            return value
        }
        func profile() throws(DaemonError) -> Profile { try profiles.profile(r.profile ?? active) }
        func unlocked() throws(DaemonError) -> Profile {
            let p = try profile()
            guard !p.store.isLocked else { throw DaemonError(.locked, "profile \(p.name) is locked") }
            return p
        }
        func run<T>(_ body: () throws(MasqError) -> T) throws(DaemonError) -> T {
            do throws(MasqError) { return try body() } catch { throw DaemonError(error) }
        }
        let now = DaemonClock.unixMilliseconds()

        switch r.op {
        case "manager.status", "profiles.list":
            return .object([
                ("active", .string(active)), ("url", .string(url)),
                (
                    "profiles",
                    .array(
                        profiles.names.map { name in
                            let p = profiles.profiles[name]!
                            return .object([
                                ("name", .string(name)), ("protected", .bool(p.store.isProtected)),
                                ("locked", .bool(p.store.isLocked)), ("active", .bool(name == active)),
                                ("pending_apps", .int(Int64(p.apps.apps.filter { $0.state == .pending }.count))),
                                ("syncing", .bool(p.sync != nil))
                            ])
                        })
                )
            ])

        case "profiles.create":
            let name = try required(r.profile, "profile")
            var passphrase = r.passphrase.map { Array($0.utf8) }
            defer { if passphrase != nil { wipe(&passphrase!) } }
            let created = try profiles.create(name, passphrase: passphrase)
            created.startSync()
            return .object([("profile", .string(created.name)), ("protected", .bool(created.store.isProtected))])

        case "profiles.unlock":
            let p = try profile()
            var passphrase = Array(try required(r.passphrase, "passphrase").utf8)
            defer { wipe(&passphrase) }
            try run { () throws(MasqError) in try p.store.unlock(passphrase) }
            p.startSync()
            return .object([("profile", .string(p.name)), ("locked", .bool(false))])

        case "profiles.lock":
            let p = try profile()
            guard p.store.isProtected else {
                throw DaemonError(.invalid, "profile \(p.name) has no passphrase to lock with")
            }
            p.stopSync()
            cutOff(
                { $0.profile == p.name && !$0.admin }, event: .object([("event", .string("locked"))]),
                reason: "profile locked")
            p.store.relock()
            return .object([("profile", .string(p.name)), ("locked", .bool(true))])

        case "profiles.switch":
            let p = try profiles.profile(try required(r.profile, "profile"))
            guard p.name != active else { return .object([("active", .string(active))]) }
            active = p.name
            try? FileSystem.writeFile(options.home + "/active-profile", Array(p.name.utf8))
            // Apps were authenticated against the other profile: they reconnect and say hello again.
            cutOff(
                { !$0.admin }, event: .object([("event", .string("profile_changed")), ("profile", .string(p.name))]),
                reason: "profile switched")
            notifyAdmins(.object([("event", .string("profile")), ("active", .string(p.name))]))
            return .object([("active", .string(p.name))])

        case "profiles.passphrase":
            let p = try unlocked()
            var old = r.passphrase.map { Array($0.utf8) }, new = r.new_passphrase.map { Array($0.utf8) }
            defer {
                if old != nil { wipe(&old!) }
                if new != nil { wipe(&new!) }
            }
            try run { () throws(MasqError) in try p.store.setPassphrase(old: old, new: new) }
            return .object([("profile", .string(p.name)), ("protected", .bool(p.store.isProtected))])

        case "apps.list":
            let p = try profile()
            return .object([
                ("profile", .string(p.name)),
                (
                    "apps",
                    .array(
                        p.apps.apps.map { app in
                            let live = connections.values.filter { $0.appID == app.id && $0.profile == p.name }
                            let asking = requests(of: app.id, in: p.name).map { q in
                                JSON.object([
                                    ("request", .string(q.id)), ("since", .uint(q.at)),
                                    ("remote", q.remote.map(JSON.string) ?? .null)
                                ])
                            }
                            return .object([
                                ("id", .string(app.id)), ("name", .string(app.name)),
                                ("description", .string(app.description)),
                                ("icon", .string(app.icon)), ("state", .string(app.state.rawValue)),
                                ("kind", .string(app.isWeb ? "web" : "native")), ("created_at", .uint(app.createdAt)),
                                ("connections", .int(Int64(live.count))),
                                ("instances", .int(Int64(app.tokenHashes.count))),
                                ("requests", .array(asking))
                            ])
                        })
                ),
                (
                    "grants",
                    .array(
                        p.apps.grants.map {
                            .object([
                                ("app", .string($0.app)), ("target", .string($0.target)),
                                ("access", .string($0.access.rawValue))
                            ])
                        })
                )
            ])

        case "apps.approve":
            // The user approves the request they saw: its connection alone gets
            // the token (another connection claiming the same identity gets nothing).
            let p = try profile()
            let id = try required(r.app, "app")
            let request = try chosenRequest(id, in: p.name, r.request)
            guard let asker = connections[request.peer], asker.appID == id else {
                requests[request.id] = nil
                throw DaemonError(.notFound, "the app that asked has gone; it asks again when it reconnects")
            }
            let token = try p.apps.approve(id, now: now)
            requests[request.id] = nil
            asker.approved = true
            asker.waitingForApproval = false
            send(
                asker.peer,
                .object([
                    ("event", .string("approved")), ("app", .string(id)), ("token", .string(token)),
                    ("namespace", .string(id))
                ]))
            notifyAdmins(.object([("event", .string("apps")), ("profile", .string(p.name)), ("app", .string(id))]))
            return .object([("app", .string(id)), ("state", .string("approved")), ("request", .string(request.id))])

        case "apps.deny" where r.request != nil || isApproved(r.app, in: r.profile ?? active):
            // One request of an app that stays approved for its other instances.
            let p = try profile()
            let id = try required(r.app, "app")
            let request = try chosenRequest(id, in: p.name, r.request)
            requests[request.id] = nil
            cutOff(
                { $0.peer == request.peer }, event: .object([("event", .string("denied")), ("app", .string(id))]),
                reason: "denied by the user")
            notifyAdmins(.object([("event", .string("apps")), ("profile", .string(p.name)), ("app", .string(id))]))
            return .object([("app", .string(id)), ("request", .string(request.id))])

        case "apps.deny", "apps.revoke", "apps.remove":
            let p = try profile()
            let id = try required(r.app, "app")
            if r.op == "apps.remove" {
                try p.apps.remove(id)
            } else {
                try p.apps.decide(id, r.op == "apps.deny" ? .denied : .revoked, now: now)
            }
            for request in requests(of: id, in: p.name) { requests[request.id] = nil }
            let event = JSON.object([
                ("event", .string(r.op == "apps.deny" ? "denied" : "revoked")), ("app", .string(id))
            ])
            // Every connection of that identity, approved or waiting, is closed.
            cutOff({ $0.appID == id && $0.profile == p.name }, event: event, reason: "access revoked by the user")
            notifyAdmins(.object([("event", .string("apps")), ("profile", .string(p.name)), ("app", .string(id))]))
            return .object([("app", .string(id))])

        case "apps.grant":
            let p = try profile()
            guard let access = Grant.Access(rawValue: r.access ?? "read") else {
                throw DaemonError(.badRequest, "\"access\" is \"read\" or \"write\"")
            }
            try p.apps.grant(
                Grant(app: try required(r.app, "app"), target: try required(r.target, "target"), access: access))
            return .object([])

        case "apps.ungrant":
            let p = try profile()
            let app = try required(r.app, "app"), target = try required(r.target, "target")
            try p.apps.ungrant(app: app, target: target)
            // Watches on that namespace end with the grant.
            for conn in connections.values where conn.appID == app && conn.profile == p.name {
                for (id, watch) in conn.watches where watch.namespace == target {
                    try? p.store.unwatch(watch.storeID)
                    conn.watches[id] = nil
                }
            }
            return .object([])

        case "devices.list":
            let p = try unlocked()
            let me = try run { () throws(MasqError) in try p.store.requireIdentity().publicKeys }
            let paired = try run { () throws(MasqError) in try p.store.devices() }
            return .object([
                ("this", device(me.deviceID, p.store.deviceName, me.fingerprint, 0)),
                ("paired", .array(paired.map { device($0.deviceID, $0.name, $0.keys.fingerprint, $0.pairedAt) }))
            ])

        case "devices.remove":
            let p = try unlocked()
            let device = try required(r.device, "device")
            try run { () throws(MasqError) in try p.store.removeDevice(device) }
            return .object([])

        case "devices.pair", "devices.join":
            let p = try unlocked()
            guard !pairing else { throw DaemonError(.busy, "a pairing is under way") }
            var link: PairingLink?
            if r.op == "devices.join" {
                let text = try required(r.link, "link")
                link = try run { () throws(MasqError) in try PairingLink(parsing: text) }
            }
            guard let (reference, relayURL) = p.store.config.relayTransport(explicit: link?.via ?? r.relay) else {
                throw DaemonError(.badRequest, "which relay? give \"relay\": \"ws://HOST:PORT/\"")
            }
            pairing = true
            startPairing(p, reference: reference, relay: relayURL, joining: link, peer: c.peer, requestID: r.id?.json)
            return nil

        case "data.namespaces":
            let p = try unlocked()
            return .object([
                ("namespaces", .array(try run { () throws(MasqError) in try p.store.namespaces() }.map(JSON.string)))
            ])

        case "data.list":
            let p = try unlocked()
            let nsText = try required(r.ns, "ns")
            let ns = try run { () throws(MasqError) in try NamespaceName(nsText, limits: p.store.limits) }
            let limit = min(max(r.limit ?? 200, 1), Self.maxListEntries)
            var entries: [JSON] = []
            var more = false
            try run { () throws(MasqError) in
                try p.store.list(ns, prefix: Array((r.prefix ?? "").utf8)) { k, v in
                    if entries.count == limit { more = true; return false }
                    entries.append(.object([keyField(k), ValueEncoding.utf8.field("value", v ?? [])]))
                    return true
                }
            }
            return .object([("entries", .array(entries)), ("more", .bool(more))])

        case "sync.status":
            let p = try unlocked()
            guard let sync = p.sync else {
                return .object([
                    ("running", .bool(false)),
                    ("relay", p.store.config.relayTransport(explicit: nil).map { .string($0.url) } ?? .null)
                ])
            }
            let status = try run { () throws(MasqError) in try sync.status() }
            return .object([
                ("running", .bool(true)), ("connected", .bool(status.connected)), ("pending", .uint(status.pending)),
                (
                    "devices",
                    .array(
                        status.devices.map { d in
                            .object([
                                ("device_id", .string(d.deviceID)), ("name", .string(d.name)),
                                ("present", .bool(d.present)),
                                ("they_lack", .uint(d.theyLack)), ("we_lack", .uint(d.weLack)),
                                ("last_seen", .uint(d.lastSeen))
                            ])
                        })
                )
            ])

        case let op where op.hasPrefix("backup."):
            return try performBackup(c, r)  // BackupOperations.swift

        default:
            throw DaemonError(.unknownOp, "unknown op \"\(r.op.prefix(40))\"")
        }
    }

    private func device(
        _ id: String, _ name: String, _ fingerprint: (digits: String, emoji: String), _ pairedAt: UInt64
    ) -> JSON {
        .object([
            ("device_id", .string(id)), ("name", .string(name)), ("fingerprint", .string(fingerprint.digits)),
            ("emoji", .string(fingerprint.emoji)), ("paired_at", .uint(pairedAt))
        ])
    }

    /// Pair through a relay off the daemon's queue (it waits for the other
    /// device): the answer to the request is the link and its QR code (when
    /// offering) or the device (when joining); "paired" or "pairing_failed"
    /// events follow for the offer.
    private func startPairing(
        _ p: Profile, reference: PluginReference, relay: String, joining: PairingLink?, peer: String, requestID: String?
    ) {
        let worker = DispatchQueue(label: "masqd.pairing")
        let answered = Flag()
        worker.async { [self] in
            let result: Result<PairedDevice, MasqError>
            do throws(MasqError) {
                if let joining {
                    result = .success(try PairingRendezvous.join(store: p.store, link: joining, transport: reference))
                } else {
                    result = .success(
                        try PairingRendezvous.offer(
                            store: p.store, transport: reference, url: relay,
                            onLink: { link in
                                let svg = (try? QRCode(link.string).svg()) ?? ""
                                answered.value = true
                                queue.async {
                                    self.reply(
                                        peer, requestID,
                                        ok: .object([("link", .string(link.string)), ("qr_svg", .string(svg))]))
                                }
                            }))
                }
            } catch {
                result = .failure(error)
            }
            queue.async { [self] in
                pairing = false
                switch result {
                case .success(let device):
                    // Sync from now on through the relay the devices met on.
                    if let config = p.store.config.rememberingRelay(relay) {
                        try? FileSystem.writeFile(p.configPath, Array(config.json().utf8))
                    }
                    if p.sync == nil, !p.store.isLocked {
                        let transports = p.store.config.rememberingRelay(relay)?.transports ?? p.store.config.transports
                        do throws(MasqError) {
                            let service = try SyncService(store: p.store, transports: transports)
                            try service.start()
                            p.sync = service
                        } catch {
                            Log.warn("masqd", "sync does not start after pairing: \(error.message)")
                        }
                    }
                    let json = JSON.object([
                        ("event", .string("paired")), ("device_id", .string(device.deviceID)),
                        ("name", .string(device.name)),
                        ("fingerprint", .string(device.keys.fingerprint.digits))
                    ])
                    if answered.value { notifyAdmins(json) } else { reply(peer, requestID, ok: json) }
                case .failure(let error):
                    let failure = DaemonError(error)
                    if answered.value {
                        notifyAdmins(
                            .object([("event", .string("pairing_failed")), ("message", .string(failure.message))]))
                    } else {
                        reply(peer, requestID, error: failure)
                    }
                }
            }
        }
    }
}

extension Daemon {
    /// The request the user answers: the one named, or the app's only live one.
    func chosenRequest(_ app: String, in profile: String, _ named: String?) throws(DaemonError) -> ApprovalRequest {
        let live = requests(of: app, in: profile)
        if let named {
            guard let request = live.first(where: { $0.id == named }) else {
                throw DaemonError(
                    .notFound,
                    "no request \(named.prefix(40)) of \(app.prefix(80)) waits (it was answered, or its app went away)")
            }
            return request
        }
        guard let only = live.first else {
            throw DaemonError(.notFound, "\(app.prefix(80)) is not asking now; it asks again when it connects")
        }
        guard live.count == 1 else {
            throw DaemonError(
                .invalid, "\(live.count) connections ask as \(app.prefix(80)): name the one to answer with \"request\"")
        }
        return only
    }

    func isApproved(_ app: String?, in profile: String) -> Bool {
        guard let app, let p = try? profiles.profile(profile) else { return false }
        return p.apps.app(app)?.state == .approved
    }
}

/// Set on the pairing worker, read on the daemon's queue after it (the
/// queue hop orders the two).
private final class Flag: @unchecked Sendable {
    var value = false
}
