import Dispatch
import MasqConnectoidProtocol
import MasqCrypto
import MasqKernel
#if canImport(Glibc)
    import Glibc
#endif

/// Sharing a namespace with another person through Connectoid mailboxes
/// (docs/CONNECTOID.md). The owner makes a link naming a fresh mailbox and
/// carrying a single-use secret; the guest claims it with a signed, sealed
/// CLAIM; the owner locks the share to the first valid claimant and answers
/// WELCOME from a new mailbox; the guest moves to a new mailbox too. From
/// then on RECORDS and ACK envelopes carry the namespace both ways (or only
/// from the owner, read-only), and UNSHARE ends it on both sides.
/// Everything runs on one serial queue; state is saved after every change.
public final class ShareService: @unchecked Sendable {
    public let store: Store
    private let queue = DispatchQueue(label: "masq.share")
    private var transport: TransportPluginInstance?
    private var joined: Set<String> = []
    private var timer: DispatchSourceTimer?
    private var watchID: UInt64?
    private var stopped = false
    /// Mailbox keys by mailbox name, for challenges (read from the transport's threads).
    private let keys = Lock()
    private var mailboxKeys: [String: (SecureBytes, [UInt8])] = [:]
    /// Envelopes that did not open, verify or fit (counted, never applied).
    public private(set) var rejected = 0
    public private(set) var received = 0
    /// Called on the service's queue with a line worth telling the user.
    public var onEvent: (@Sendable (String) -> Void)?
    /// Called on the service's queue after a message from the other side
    /// changed a share and the change was saved (or the share deleted).
    public var onChange: (@Sendable () -> Void)?
    /// How often to look for work (sends, resends) besides the transport's polling.
    public var tickSeconds = 0.25
    /// Largest records payload per envelope: mailbox messages are small.
    public var maxRecordBytes = 40_000
    /// Largest records frame sent at all: a bigger one (a value of several
    /// MiB) goes as "part" envelopes of `maxRecordBytes`, which must fit the
    /// peer's mailbox quota (by default 1,000 messages and 16 MiB) with room
    /// to spare. Records beyond it are not shared (a warning says so).
    public var maxFrameBytes = 8 << 20
    /// Frames being rebuilt from parts, by share id (one each, in memory: a
    /// restart loses it and the sender resends after resend_ms).
    private var assemblies: [String: (digest: String, count: Int, parts: [Int: [UInt8]], bytes: Int)] = [:]

    public init(store: Store) {
        self.store = store
    }

    var resendMilliseconds: UInt64 { UInt64(store.config.sharing.resendMilliseconds) }

    // MARK: - making and accepting links (no transport needed to make one)

    /// Share namespace `ns`: a new link (with a fresh mailbox key pair, a
    /// signing key pair and a single-use secret) naming `services`.
    /// `nickname`: what this side calls the other person (kept with the share).
    public func create(
        namespace ns: NamespaceName, readOnly: Bool, services: [String]? = nil,
        base: String = ConnectoidLink.defaultBase,
        nickname: String? = nil
    ) throws(MasqError) -> ConnectoidLink {
        let nickname = try nickname.map { (n) throws(MasqError) in try ShareState.checkedNickname(n) }
        try Self.checkLinkBase(base)
        let services = services ?? store.config.sharing.services
        guard !services.isEmpty else {
            throw .config(
                "no Connectoid service: pass --service URL or add \"sharing\": {\"services\": [\"https://…\"]} to the config"
            )
        }
        for url in services {
            do { try ConnectoidLink.checkServiceURL(url) } catch { throw .invalid(error.message) }
        }
        let inbox = Self.newInbox(services)
        let signing = P384.keyPair()
        let signingPub = try Self.compressed(signing.publicKey)
        let secret = Random.bytes(16)
        var state = ShareState(
            id: Base64URL.encode(inbox.pub), role: .owner, namespace: ns.string,
            access: readOnly ? .readOnly : .readWrite,
            status: .offered, created: Clock.unixMilliseconds(), signingKey: SecretKey(signing.privateKey),
            signingPub: signingPub,
            secret: SecretKey(secret), ownerKeyHash: Array(Hash.sha256(signingPub).prefix(16)), inboxes: [inbox])
        state.nickname = nickname
        try store.saveShare(state.id, state)
        queue.sync { if transport != nil { try? join(state) } }
        Log.info("share", "offered namespace \(ns.string) as share \(state.shortID)")
        return ConnectoidLink(
            pub: inbox.pub, services: services, ext: inbox.ext, secret: secret + state.ownerKeyHash, base: base)
    }

    /// Accept a link: a guest share and a CLAIM to the link's mailbox. The
    /// guest alone names the local namespace: `ns` if given, else (once the
    /// WELCOME arrives) "shared:" + the owner's suggestion, in a namespace
    /// that does not exist here yet. Records never merge into an existing
    /// namespace unless `merge` says so (the user asked for it explicitly).
    /// The service must be running.
    public func accept(
        _ text: String, as ns: NamespaceName? = nil, merge: Bool = false, services: [String]? = nil,
        nickname: String? = nil
    ) throws(MasqError) -> ShareState {
        let nickname = try nickname.map { (n) throws(MasqError) in try ShareState.checkedNickname(n) }
        let (link, fragment) = try Self.parsedLink(text)
        try checkUnused(link)
        guard ns != nil || !merge else { throw .invalid("--merge needs the namespace to merge into (--as NAME)") }
        if let ns, !merge, try store.namespaceExists(ns) {
            throw .invalid(
                "namespace \(ns.string) already exists here: accepting would merge the other person's records into it; choose a new name, or pass --merge if that is what you want"
            )
        }
        if let ns { try checkNotShared(ns, except: link.pubText) }
        let id = link.pubText
        let signing = P384.keyPair()
        let inbox = Self.newInbox(
            services ?? (store.config.sharing.services.isEmpty ? link.services : store.config.sharing.services))
        var state = ShareState(
            id: id, role: .guest, namespace: ns?.string ?? "", access: .readOnly, status: .claimed,
            created: Clock.unixMilliseconds(), signingKey: SecretKey(signing.privateKey),
            signingPub: try Self.compressed(signing.publicKey),
            secret: SecretKey(Array(fragment.prefix(16))), ownerKeyHash: Array(fragment.suffix(16)), inboxes: [inbox])
        state.peerInbox = link.mailbox
        state.merge = merge
        state.nickname = nickname
        // Checked again and saved under one lock: of two accepts of one link at once, one wins.
        try Self.acceptLock.withLock { () throws(MasqError) in
            try checkUnused(link)
            try store.saveShare(id, state)
        }
        try onQueue { () throws(MasqError) in
            guard transport != nil else { return }
            try join(state)
            sendClaim(&state)
            try store.saveShare(id, state)
        }
        return state
    }

    private static let acceptLock = Lock()

    /// A share link with its secret (MASQ_E_INVALID otherwise, naming what is wrong).
    private static func parsedLink(_ text: String) throws(MasqError) -> (ConnectoidLink, [UInt8]) {
        let link: ConnectoidLink
        do { link = try ConnectoidLink.parse(text) } catch { throw .invalid("not a share link: \(error.message)") }
        guard let fragment = link.secret, fragment.count == 32 else {
            throw .invalid("the link lacks its secret (the part after #): copy the whole link")
        }
        return (link, fragment)
    }

    /// Neither this store's own link nor one accepted here already.
    private func checkUnused(_ link: ConnectoidLink) throws(MasqError) {
        if let existing = try store.share(link.pubText) {
            throw MasqError(
                existing.role == .owner ? .invalid : .denied,
                existing.role == .owner
                    ? "this is your own share link"
                    : "this link was already accepted (share \(existing.shortID)); a link works once")
        }
    }

    /// What accept checks of a link before anything is stored (for a caller
    /// that asks the user first): the share's id and the link's services.
    public func checkLink(_ text: String) throws(MasqError) -> (id: String, services: [String]) {
        let (link, _) = try Self.parsedLink(text)
        try checkUnused(link)
        return (link.pubText, link.services)
    }

    /// The local namespace for a share the guest accepted: the name it chose,
    /// else "shared:" + the owner's suggestion + ":" + the share's id; never
    /// an existing namespace (unless the guest asked to merge) and never one
    /// another share uses — so the owner cannot point a share at the guest's
    /// own data, and two shares never mix (the id in the automatic name also
    /// keeps shares accepted on the guest's other devices apart).
    private func localNamespace(_ state: ShareState, suggested: String) throws(MasqError) -> (
        name: String, created: Bool
    ) {
        if !state.namespace.isEmpty {
            let chosen = try NamespaceName(state.namespace, limits: store.limits)
            try checkNotShared(chosen, except: state.id)
            if state.merge == true { return (chosen.string, !(try store.namespaceExists(chosen))) }
            if !(try store.namespaceExists(chosen)) { return (chosen.string, true) }
        }
        let automatic = try NamespaceName(
            "shared:" + Self.sanitized(suggested) + ":" + state.shortID, limits: store.limits)
        try checkNotShared(automatic, except: state.id)
        guard !(try store.namespaceExists(automatic)) else {
            throw MasqError(.busy, "namespace \(automatic.string) exists already: accept the link again with --as NAME")
        }
        return (automatic.string, true)
    }

    /// MASQ_E_BUSY when another share (but `id`) keeps its records in `ns`. Names compare byte for byte.
    private func checkNotShared(_ ns: NamespaceName, except id: String) throws(MasqError) {
        let other = try store.shares().first {
            $0.id != id && $0.status != .ended && $0.namespace.utf8.elementsEqual(ns.bytes)
        }
        if let other {
            throw MasqError(
                .busy,
                "namespace \(ns.string) holds share \(other.shortID): two shares never share a namespace; choose another name"
            )
        }
    }

    /// An owner's suggestion as part of a local name: no control, format
    /// (bidi overrides, zero-width), private-use or unassigned characters, at
    /// most 64 bytes.
    static func sanitized(_ suggested: String) -> String {
        var out = ""
        var bytes = 0
        for scalar in suggested.unicodeScalars {
            switch scalar.properties.generalCategory {
            case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator: continue
            default: break
            }
            let size = String(scalar).utf8.count
            guard bytes + size <= 64 else { break }
            out.unicodeScalars.append(scalar)
            bytes += size
        }
        return out.isEmpty ? "share" : out
    }

    /// End a share: tell the other side (best effort) and delete the keys.
    public func unshare(_ idOrPrefix: String) throws(MasqError) -> ShareState {
        let matches = try store.shares().filter { $0.id.hasPrefix(idOrPrefix) }
        guard matches.count == 1, var state = matches.first else {
            throw MasqError(
                matches.isEmpty ? .notFound : .invalid,
                matches.isEmpty ? "no share \(idOrPrefix)" : "\(idOrPrefix) names several shares; give more of the id")
        }
        // On the queue, so that no tick saves the share again after it is gone.
        try onQueue { () throws(MasqError) in
            if transport != nil, state.peerInbox != nil, state.status == .active || state.status == .claimed {
                send(&state, type: "unshare", reason: "ended by the other side")
            }
            for inbox in state.inboxes { leave(inbox.mailbox) }
            try store.saveShare(state.id, nil)
        }
        Log.info("share", "ended share \(state.shortID)")
        return state
    }

    /// Rename the other person of share `id` (exact id). On the queue, so a
    /// tick saving the share at the same time cannot undo it.
    public func setNickname(_ id: String, _ nickname: String) throws(MasqError) -> ShareState {
        let nickname = try ShareState.checkedNickname(nickname)
        var result: ShareState?
        try onQueue { () throws(MasqError) in
            guard var state = try store.share(id) else { throw MasqError(.notFound, "no share \(id.prefix(80))") }
            state.nickname = nickname
            try store.saveShare(id, state)
            result = state
        }
        return result!
    }

    /// The page a link opens: http(s) or another scheme's URL, at most 2048
    /// bytes, without a fragment, spaces or control characters.
    public static func checkLinkBase(_ base: String) throws(MasqError) {
        guard (1...2_048).contains(base.utf8.count), base.contains("://"), !base.contains("#"),
            !base.unicodeScalars.contains(where: {
                $0.properties.isWhitespace || $0.properties.generalCategory == .control
            })
        else {
            throw .invalid(
                "the link's base must be a URL such as https://app.example/share (at most 2048 bytes, no # or spaces)")
        }
    }

    // MARK: - running

    public func start() throws(MasqError) {
        let reference = store.config.sharing.transport
        let transport = try store.openTransport(
            reference,
            onFrame: { [weak self] _, room, frame in
                guard let self, let room else { return }
                self.queue.async { self.receive(room, frame) }
            }, onPeerEvent: { _, _ in },
            onChallenge: { [weak self] mailbox, question throws(MasqError) -> [UInt8] in
                guard let self else { throw MasqError(.closed, "sharing stopped") }
                return try self.answer(mailbox, question)
            })
        try transport.start()
        try onQueue { () throws(MasqError) in
            self.transport = transport
            for state in try store.shares() where state.status != .ended && state.status != .intercepted {
                try join(state)
            }
        }
        watchID = try store.watch(namespace: nil) { [weak self] change in
            guard change.origin == .local, let self else { return }
            self.queue.async { self.tick() }
        }
        let source = DispatchSource.makeTimerSource(queue: queue)
        source.schedule(deadline: .now() + tickSeconds, repeating: tickSeconds)
        source.setEventHandler { [weak self] in self?.tick() }
        source.resume()
        timer = source
        queue.async { self.tick() }
    }

    public func stop() {
        queue.sync {
            stopped = true
            timer?.cancel()
            timer = nil
        }
        if let watchID { try? store.unwatch(watchID) }
        transport?.close()
        queue.sync { transport = nil }
    }

    /// True when no share waits for an answer: every claim welcomed, every
    /// batch acknowledged, nothing new to send.
    public func settled() -> Bool {
        queue.sync {
            guard let shares = try? store.shares() else { return false }
            return shares.allSatisfy { s in
                switch s.status {
                case .offered, .ended, .intercepted: return true
                case .claimed: return false
                case .active: return s.inflightThrough == nil && s.toAck == nil && !hasWork(s)
                }
            }
        }
    }

    // MARK: - internals (on the queue)

    private func onQueue(_ body: () throws(MasqError) -> Void) throws(MasqError) {
        let result: Result<Void, MasqError> = queue.sync {
            do throws(MasqError) { try body(); return .success(()) } catch { return .failure(error) }
        }
        try result.get()
    }

    private static func newInbox(_ services: [String]) -> ShareState.Inbox {
        let pair = P384.keyPair()
        return ShareState.Inbox(
            privateKey: SecretKey(pair.privateKey), pub: (try? P384.compress(pair.publicKey)) ?? [], ext: "masq1",
            services: services)
    }

    private static func compressed(_ point: [UInt8]) throws(MasqError) -> [UInt8] {
        do { return try P384.compress(point) } catch { throw MasqError(.internal, "P-384 key encoding failed") }
    }

    private func join(_ state: ShareState) throws(MasqError) {
        for inbox in state.inboxes where !joined.contains(inbox.mailbox) {
            keys.withLock { mailboxKeys[inbox.mailbox] = (inbox.privateKey.secure, inbox.pub) }
            try transport?.join(inbox.mailbox)
            joined.insert(inbox.mailbox)
        }
    }

    private func leave(_ mailbox: String) {
        guard joined.contains(mailbox) else { return }
        try? transport?.leave(mailbox)
        joined.remove(mailbox)
        keys.withLock { mailboxKeys[mailbox] = nil }
    }

    /// Open a service's challenge (transport thread). Only a well-formed
    /// question (`ChallengeBox`: exact size, version, its own key derivation)
    /// is answered, never a message: a service that hands out a stored
    /// envelope as a question gets a refusal, not its plaintext.
    private func answer(_ mailbox: String, _ question: [UInt8]) throws(MasqError) -> [UInt8] {
        guard let (key, pub) = keys.withLock({ mailboxKeys[mailbox] }) else {
            throw MasqError(.notFound, "no key for this mailbox")
        }
        do { return try ChallengeBox.open(question, privateKey: key, publicKey: pub) } catch {
            Log.warn("share", "refused to answer a malformed challenge (\(question.count) bytes) for a mailbox")
            throw .invalid("not a well-formed challenge for this mailbox")
        }
    }

    private func event(_ line: String) {
        Log.info("share", line)
        onEvent?(line)
    }

    private func reject(_ why: String) {
        rejected += 1
        Log.warn("share", "refused a message: \(why)")
    }

    private func receive(_ mailbox: String, _ box: [UInt8]) {
        guard !stopped else { return }
        received += 1
        guard var state = (try? store.shares())?.first(where: { $0.inboxes.contains { $0.mailbox == mailbox } }),
            let inbox = state.inboxes.first(where: { $0.mailbox == mailbox })
        else { return reject("no share polls this mailbox") }
        let envelope: ShareEnvelope
        do { envelope = try ShareEnvelope.open(box, privateKey: inbox.privateKey.secure, pub: inbox.pub) } catch {
            state.rejected += 1
            try? store.saveShare(state.id, state)
            return reject(error.message)
        }
        let body = envelope.body
        guard body.share == state.id, Mailbox.isValid(body.inbox) else {
            return reject("an envelope for another share or with a bad reply mailbox")
        }
        do throws(MasqError) {
            switch (state.role, body.type) {
            case (.owner, "claim"): try claimed(&state, envelope, inbox: inbox)
            case (.guest, "welcome"), (.guest, "intercepted"): try welcomed(&state, envelope)
            default:
                guard let peer = state.peerSigningPub, constantTimeEqual(peer, envelope.signer) else {
                    return reject("\(body.type) from a key that is not this share's peer")
                }
                try fromPeer(&state, envelope, mailbox: mailbox)
            }
        } catch {
            state.rejected += 1
            reject(error.message)
        }
        if state.status == .ended {
            for inbox in state.inboxes { leave(inbox.mailbox) }
            try? store.saveShare(state.id, nil)
            onChange?()
            return
        }
        do { try store.saveShare(state.id, state) } catch {
            Log.error("share", "cannot save share \(state.shortID): \(error.message)")
        }
        onChange?()
        tick()
    }

    /// Owner: a CLAIM at the link's mailbox. The first valid claimant wins;
    /// any later one is told the link was used and the owner is warned.
    private func claimed(_ state: inout ShareState, _ envelope: ShareEnvelope, inbox: ShareState.Inbox)
        throws(MasqError)
    {
        let body = envelope.body
        guard inbox.mailbox == state.inboxes.first?.mailbox else {
            throw .invalid("a claim outside the link's mailbox")
        }
        guard
            ShareProof.matches(
                body.proof, ShareProof.claim(secret: state.secret.secure, guest: envelope.signer, inbox: body.inbox))
        else {
            throw MasqError(.denied, "a claim without the link's secret")
        }
        if let peer = state.peerSigningPub {
            if constantTimeEqual(peer, envelope.signer) {
                // A new claim means the welcome was lost: again. A replayed one changes nothing.
                guard body.seq > state.peerSeq else { throw MasqError(.denied, "a replayed claim") }
                state.peerSeq = body.seq
                send(&state, type: "welcome")
                return
            }
            let warning =
                "a second person used the link at \(Clock.unixMilliseconds() / 1000) (Unix time): someone else saw it; compare the fingerprint with your contact"
            if !state.warnings.contains(where: { $0.hasPrefix("a second person") }) { state.warnings.append(warning) }
            event("share \(state.shortID): \(warning)")
            sendSigned(
                state, to: body.inbox,
                body: .init(
                    type: "intercepted", share: state.id, seq: 0, inbox: state.inboxes.last!.mailbox,
                    reason: "this link was already used by someone else"))
            return
        }
        state.peerSigningPub = envelope.signer
        state.peerInbox = body.inbox
        state.peerSeq = body.seq
        state.status = .active
        state.lastHeard = Clock.unixMilliseconds()
        let fresh = Self.newInbox(state.inboxes[0].services)
        state.inboxes.append(fresh)
        try join(state)
        send(&state, type: "welcome")
        event(
            "share \(state.shortID): claimed; namespace \(state.namespace) is now shared \(state.access.rawValue); fingerprint \(state.fingerprint ?? "")"
        )
    }

    /// Guest: WELCOME (or INTERCEPTED) from the owner, checked against the
    /// owner key hash the link carried.
    private func welcomed(_ state: inout ShareState, _ envelope: ShareEnvelope) throws(MasqError) {
        guard constantTimeEqual(Array(Hash.sha256(envelope.signer).prefix(16)), state.ownerKeyHash) else {
            throw MasqError(.badSignature, "\(envelope.body.type) not signed by the key the link names")
        }
        let body = envelope.body
        if body.type == "intercepted" {
            guard state.status == .claimed else { return }
            state.status = .intercepted
            state.warnings.append("intercepted: someone used the link before you; ask for a new link")
            event(
                "share \(state.shortID): INTERCEPTED — someone used this link before you did; ask your contact for a new one"
            )
            for inbox in state.inboxes { leave(inbox.mailbox) }
            return
        }
        guard
            ShareProof.matches(
                body.proof,
                ShareProof.welcome(secret: state.secret.secure, owner: envelope.signer, guest: state.signingPub))
        else {
            throw MasqError(.denied, "a welcome without the link's secret")
        }
        guard state.status == .claimed else { return }
        guard let name = body.namespace, let access = body.access.flatMap(ShareState.Access.init(rawValue:)) else {
            throw .invalid("a welcome without namespace or access")
        }
        let local = try localNamespace(state, suggested: name)
        if !state.namespace.isEmpty && local.name != state.namespace {
            state.warnings.append(
                "namespace \(state.namespace) was created here after you accepted; the share went to \(local.name) instead"
            )
        }
        state.namespace = local.name
        state.ownsNamespace = local.created
        state.access = access
        state.peerSigningPub = envelope.signer
        state.peerInbox = body.inbox
        state.peerSeq = body.seq
        state.status = .active
        state.lastHeard = Clock.unixMilliseconds()
        // Rotate: the first mailbox was named in a message to the link's mailbox.
        state.inboxes.append(Self.newInbox(state.inboxes[0].services))
        try join(state)
        event(
            "share \(state.shortID): welcomed into namespace \(state.namespace) (\(access.rawValue)); fingerprint \(state.fingerprint ?? "")"
        )
    }

    private func fromPeer(_ state: inout ShareState, _ envelope: ShareEnvelope, mailbox: String) throws(MasqError) {
        let body = envelope.body
        // Each envelope number is accepted once (a sliding window, kept with the
        // share): a replayed envelope — from a service, or after the hour it
        // keeps messages — changes nothing.
        var window = ReplayWindow(highest: state.peerSeq, seen: state.peerSeen ?? 1)
        guard window.accept(body.seq) else {
            throw MasqError(.denied, "a replayed \(body.type.prefix(20)) (envelope \(body.seq))")
        }
        let newest = body.seq > state.peerSeq
        state.peerSeq = window.highest
        state.peerSeen = window.seen
        state.lastHeard = Clock.unixMilliseconds()
        if newest { state.peerInbox = body.inbox }
        // A message at our newest mailbox: the peer has moved; the older ones can go.
        if mailbox == state.inboxes.last?.mailbox && state.inboxes.count > 1 && state.role == .guest {
            for old in state.inboxes.dropLast() { leave(old.mailbox) }
            state.inboxes = [state.inboxes.last!]
        }
        switch body.type {
        case "records", "part":
            if state.role == .owner && state.access == .readOnly {
                if !state.warnings.contains(where: { $0.hasPrefix("the guest sent changes") }) {
                    state.warnings.append("the guest sent changes to a read-only share; they were refused")
                }
                throw MasqError(.denied, "records from the guest of a read-only share")
            }
            guard let text = body.records, let slice = Base64URL.decode(text) else {
                throw .invalid("records that are not base64url")
            }
            guard let bytes = body.type == "records" ? slice : try assemble(slice, body, share: state.id) else { break }
            guard case .snapshot(var records, let through?) = try SyncFrame.decode(bytes) else {
                throw .invalid("records in an unexpected frame")
            }
            // The sender's namespace, whatever its name there, is this share's namespace here.
            for i in records.indices { records[i].namespace = state.namespace }
            do { try store.applySnapshotRecords(records) } catch {
                if let ahead = Store.futureSkew(records.map(\.version.timestamp)) {
                    let warning =
                        "the other person's records were refused: stamped \(ahead / 60_000) minute(s) in the future (their clock is ahead)"
                    if !state.warnings.contains(where: { $0.hasPrefix("the other person's records were refused") }) {
                        state.warnings.append(warning)
                    }
                }
                throw error
            }
            state.recordsReceived += 1
            var ack = VersionVector(state.toAck ?? [:])
            ack.merge(through)
            state.toAck = ack.entries
        case "ack":
            guard let entries = body.ack else { throw .invalid("an ack without a vector") }
            let ack = try VersionVector(hexEntries: entries)
            var acked = VersionVector(state.acked)
            acked.merge(ack)
            state.acked = acked.entries
            if let inflight = state.inflightThrough, inflight.allSatisfy({ acked[$0.key] >= $0.value }) {
                state.inflightThrough = nil
                // The whole namespace went over once: from now on, only what changes.
                if state.snapshotFinalSent == true { state.initialSent = true; state.snapshotFinalSent = nil }
            }
        case "unshare":
            state.status = .ended
            event("share \(state.shortID): the other side ended the share of \(state.namespace)")
        default:
            throw .invalid("an envelope of unknown type \(body.type.prefix(20))")
        }
        if let ack = body.ack, body.type != "ack" {
            var acked = VersionVector(state.acked)
            acked.merge(try VersionVector(hexEntries: ack))
            state.acked = acked.entries
        }
    }

    /// A "part" envelope's slice into its frame: the whole frame once every
    /// part arrived and its digest matches, nil meanwhile. Bounded: parts no
    /// bigger than a records envelope, frames no bigger than `maxFrameBytes`.
    private func assemble(_ slice: [UInt8], _ body: ShareEnvelope.Body, share: String) throws(MasqError) -> [UInt8]? {
        guard let index = body.part, let count = body.parts, let digest = body.digest, digest.utf8.count == 43,
            count >= 2, count <= maxFrameBytes / 1_024, index >= 0, index < count, slice.count <= maxRecordBytes
        else {
            throw .invalid("a malformed part envelope")
        }
        var assembly: (digest: String, count: Int, parts: [Int: [UInt8]], bytes: Int) =
            assemblies[share].flatMap { $0.digest == digest && $0.count == count ? $0 : nil } ?? (digest, count, [:], 0)
        guard assembly.parts[index] == nil else { return nil }  // a resent part
        guard assembly.bytes + slice.count <= maxFrameBytes else {
            assemblies[share] = nil
            throw .tooLarge("parts rebuilding a frame over \(maxFrameBytes) bytes")
        }
        assembly.parts[index] = slice
        assembly.bytes += slice.count
        guard assembly.parts.count == count else {
            assemblies[share] = assembly
            return nil
        }
        assemblies[share] = nil
        var frame: [UInt8] = []
        frame.reserveCapacity(assembly.bytes)
        for i in 0..<count { frame += assembly.parts[i]! }
        guard Base64URL.encode(Hash.sha256(frame)) == digest else {
            throw .invalid("parts that do not rebuild the frame they announce")
        }
        return frame
    }

    /// Whether this side has records the peer has not acknowledged.
    private func hasWork(_ state: ShareState) -> Bool {
        guard state.status == .active, state.role == .owner || state.access == .readWrite else { return false }
        if state.snapshotCursor != nil || state.snapshotVector != nil { return true }
        guard let mine = try? store.syncVectors().applied else { return false }
        let acked = VersionVector(state.acked)
        return mine.entries.contains { acked[$0.key] < $0.value }
    }

    /// Periodic work: resend claims, send records and acks.
    private func tick() {
        guard !stopped, transport != nil, let shares = try? store.shares() else { return }
        let now = Clock.unixMilliseconds()
        // Shares made or ended by another process (the CLI) since the last tick.
        let live = shares.filter { $0.status != .ended && $0.status != .intercepted }
        let wanted = Set(live.flatMap { $0.inboxes.map(\.mailbox) })
        for mailbox in joined.subtracting(wanted) { leave(mailbox) }
        for state in live { try? join(state) }
        for var state in shares {
            let before = state
            switch state.status {
            case .claimed:
                if now - state.lastSent >= resendMilliseconds { sendClaim(&state) }
            case .active:
                pushRecords(&state, now: now)
                if state.toAck != nil { send(&state, type: "ack") }
            default: break
            }
            if state != before { try? store.saveShare(state.id, state) }
        }
    }

    private func sendClaim(_ state: inout ShareState) {
        guard let inbox = state.inboxes.last?.mailbox else { return }
        send(
            &state, type: "claim",
            proof: ShareProof.claim(secret: state.secret.secure, guest: state.signingPub, inbox: inbox))
    }

    /// Send the next batch when nothing is in flight (or it waited too long).
    private func pushRecords(_ state: inout ShareState, now: UInt64) {
        guard state.role == .owner || state.access == .readWrite else { return }
        if state.inflightThrough != nil && now - state.inflightAt < resendMilliseconds { return }
        guard let ns = try? NamespaceName(state.namespace, limits: store.limits) else { return }
        let acked = VersionVector(state.acked)
        var records: [SyncRecord] = []
        var through = acked
        do throws(MasqError) {
            // A new share starts with the whole namespace; then only what changed.
            // (Not "nothing acknowledged yet": a side with an empty change log is
            // acknowledged an empty vector and would send its namespace forever.)
            var snapshot = state.initialSent != true || state.snapshotVector != nil
            if !snapshot {
                // Skip over commits to other namespaces in one go (bounded).
                for _ in 0..<50 {
                    guard let batch = try store.namespaceExport(ns, after: through, maxBytes: maxRecordBytes) else {
                        snapshot = true; break
                    }
                    if batch.through == through { break }
                    records += batch.records
                    through = batch.through
                    if records.reduce(0, { $0 + $1.key.count + $1.value.count + 48 }) >= maxRecordBytes / 2 { break }
                }
            }
            if snapshot {
                records = []
                let chunk = try store.namespaceChunk(ns, after: state.snapshotCursor, maxBytes: maxRecordBytes)
                let vector = state.snapshotVector.map { VersionVector($0) } ?? chunk.vector
                records = chunk.records
                state.snapshotCursor = chunk.next
                state.snapshotVector = chunk.next == nil ? nil : vector.entries
                if chunk.next == nil { state.snapshotFinalSent = true }
                through = chunk.next == nil ? vector : acked
            }
        } catch {
            Log.warn("share", "share \(state.shortID): cannot read namespace \(state.namespace): \(error.message)")
            return
        }
        if records.isEmpty && through == acked && state.snapshotCursor == nil { return }
        let limit = maxFrameBytes - 64 * 1_024
        let oversized = records.filter { $0.value.count + $0.key.count > limit }
        if !oversized.isEmpty {
            records.removeAll { $0.value.count + $0.key.count > limit }
            let warning = "values over \(limit) bytes are not shared through mailboxes"
            if !state.warnings.contains(warning) { state.warnings.append(warning) }
        }
        let frame = SyncFrame.snapshot(records: records, final: through).encoded()
        state.inflightThrough = through.entries
        state.inflightAt = now
        guard frame.count > maxRecordBytes else {
            return send(&state, type: "records", records: Base64URL.encode(frame))
        }
        // Too big for one message: slices, all sent now (the peer's mailbox
        // holds them); the acknowledgement of the whole frame ends them.
        let digest = Base64URL.encode(Hash.sha256(frame))
        let count = (frame.count + maxRecordBytes - 1) / maxRecordBytes
        for index in 0..<count {
            let slice = Array(frame[(index * maxRecordBytes)..<min(frame.count, (index + 1) * maxRecordBytes)])
            send(&state, type: "part", records: Base64URL.encode(slice), part: (index, count, digest))
        }
    }

    private func send(
        _ state: inout ShareState, type: String, proof: String? = nil, records: String? = nil, reason: String? = nil,
        part: (index: Int, count: Int, digest: String)? = nil
    ) {
        guard let peer = state.peerInbox, let inbox = state.inboxes.last?.mailbox else { return }
        var body = ShareEnvelope.Body(
            type: type, share: state.id, seq: state.nextSeq, inbox: inbox, proof: proof, reason: reason)
        switch type {
        case "welcome":
            body.proof = ShareProof.welcome(
                secret: state.secret.secure, owner: state.signingPub, guest: state.peerSigningPub ?? [])
            body.namespace = state.namespace
            body.access = state.access.rawValue
        case "records": body.records = records
        case "part":
            body.records = records
            body.part = part?.index
            body.parts = part?.count
            body.digest = part?.digest
        default: break
        }
        if let toAck = state.toAck {
            body.ack = VersionVector(toAck).hexEntries
            state.toAck = nil
        }
        state.nextSeq += 1
        state.lastSent = Clock.unixMilliseconds()
        sendSigned(state, to: peer, body: body)
    }

    private func sendSigned(_ state: ShareState, to mailbox: String, body: ShareEnvelope.Body) {
        guard let transport else { return }
        do throws(MasqError) {
            guard let pub = Mailbox.pub(mailbox) else { throw .invalid("the peer's mailbox is malformed") }
            let box = try ShareEnvelope.seal(
                body, signingKey: state.signingKey.secure, signingPub: state.signingPub, to: pub)
            try transport.send(mailbox, box)
        } catch {
            Log.warn("share", "share \(state.shortID): cannot send \(body.type): \(error.message)")
        }
    }
}

/// Mailbox names (PUB.URL.EXT) as envelopes carry them.
enum Mailbox {
    static func isValid(_ name: String) -> Bool { name.utf8.count <= 4_096 && (try? ConnectoidLink.parse(name)) != nil }
    static func pub(_ name: String) -> [UInt8]? { try? ConnectoidLink.parse(name).pub }
}
