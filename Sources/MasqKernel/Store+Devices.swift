import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// A device this one is paired with.
public struct PairedDevice: Sendable, Equatable {
    public let deviceID: String
    public let name: String
    public let keys: DevicePublicKeys
    public let pairedAt: UInt64  // Unix ms
    /// The cipher suite chosen when the two devices paired: their ratchet and renewals use it.
    public let suite: CipherSuite

    /// Version 1 (ChaChaPoly pairs, as before suites existed) or 2 (a suite byte follows the keys).
    var encoded: [UInt8] {
        let name = Array(self.name.utf8.prefix(255))
        var out: [UInt8] = [suite == .chaChaPoly ? 1 : 2]
        out.appendBigEndian(pairedAt)
        return out + [UInt8(name.count)] + name + keys.signing + keys.agreement
            + (suite == .chaChaPoly ? [] : [suite.rawValue])
    }

    init(name: String, keys: DevicePublicKeys, pairedAt: UInt64, suite: CipherSuite = .chaChaPoly) {
        deviceID = keys.deviceID
        self.name = name
        self.keys = keys
        self.pairedAt = pairedAt
        self.suite = suite
    }

    init(decoding b: [UInt8]) throws(MasqError) {
        guard b.count >= 10, b[0] == 1 || b[0] == 2, b.count == 10 + Int(b[9]) + 64 + (b[0] == 2 ? 1 : 0) else {
            throw .corrupt("malformed device record")
        }
        let n = Int(b[9])
        pairedAt = b.withUnsafeBytes { $0.loadBigEndian(at: 1) }
        name = String(decoding: b[10..<(10 + n)], as: UTF8.self)
        keys = DevicePublicKeys(signing: Array(b[(10 + n)..<(42 + n)]), agreement: Array(b[(42 + n)..<(74 + n)]))
        deviceID = keys.deviceID
        if b[0] == 2 {
            guard let suite = CipherSuite(rawValue: b[74 + n]) else {
                throw .corrupt("device record names an unknown cipher suite")
            }
            self.suite = suite
        } else {
            suite = .chaChaPoly
        }
    }
}

/// Pairing offers, paired devices and their sessions. All are local state
/// (not synced data), sealed when the store is protected.
///
/// Sending to the user's other devices uses one Double Ratchet session per
/// pair of devices (docs/SECURITY.md): a message to "all devices" is N-1
/// ciphertexts. Removing a device deletes its session, so nothing sealed
/// afterwards is sealed for it, and its own sessions never held other pairs' keys.
extension Store {
    static let metaDeviceName: [UInt8] = [RecordFormat.meta] + Array("devicename".utf8)
    static let metaGroupRoom: [UInt8] = [RecordFormat.meta] + Array("room".utf8)
    public static let defaultPairingTTL: UInt64 = 600  // seconds

    /// This device's identity, or MASQ_E_DENIED while the store is locked.
    public func requireIdentity() throws(MasqError) -> DeviceIdentity {
        try lock.withLock { () throws(MasqError) -> DeviceIdentity in
            try ensureUsable()
            guard let identity else { throw MasqError(.internal, "the store has no device identity") }
            return identity
        }
    }

    /// The name other devices see (default: the host name).
    public var deviceName: String {
        let stored = lock.withLock { () -> [UInt8]? in try? Store.getMeta(engine, Store.metaDeviceName) }
        if let stored, let name = String(validating: stored, as: UTF8.self) { return name }
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count - 1)
        let host = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return host.isEmpty ? "masq device" : host
    }

    public func setDeviceName(_ name: String) throws(MasqError) {
        guard !name.isEmpty, name.utf8.count <= 64, !name.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw .invalid("a device name is 1 to 64 bytes of text without control characters")
        }
        try localTransaction { () throws(MasqError) in try Store.putMeta(engine, Store.metaDeviceName, Array(name.utf8))
        }
    }

    /// The room this device's group meets in on a relay: 16 random bytes made
    /// by the first device, handed to each device that pairs with it.
    public func groupRoom() throws(MasqError) -> [UInt8] {
        try localTransaction { () throws(MasqError) -> [UInt8] in
            if let room = try getSecret(Store.metaGroupRoom), room.count == 16 { return room }
            let room = Random.bytes(16)
            try Store.putMeta(engine, Store.metaGroupRoom, try sealSecret(Store.metaGroupRoom, room))
            return room
        }
    }

    // MARK: - pairing offers

    /// A single-use pairing link valid for `ttl` seconds; `via` is where this device will wait.
    public func createPairingOffer(via: String?, ttl: UInt64 = Store.defaultPairingTTL) throws(MasqError) -> PairingLink
    {
        guard ttl > 0 && ttl <= 7 * 24 * 3600 else { throw .invalid("a pairing link lives 1 second to 7 days") }
        let link = PairingLink(secret: Random.bytes(PairingLink.secretLength), via: via)
        var record: [UInt8] = [1]
        record.appendBigEndian(Clock.unixMilliseconds() + ttl * 1000)
        record += link.secret
        let key = [RecordFormat.pairing] + link.room
        try localTransaction { () throws(MasqError) in try Store.putMeta(engine, key, try sealSecret(key, record)) }
        return link
    }

    /// MASQ_E_DENIED unless `link` is a live, unused offer of this store.
    public func checkPairingOffer(_ link: PairingLink) throws(MasqError) {
        try lock.withLock { () throws(MasqError) in
            try ensureUsable()
            try validOffer(link)
        }
    }

    private func validOffer(_ link: PairingLink) throws(MasqError) {
        let key = [RecordFormat.pairing] + link.room
        guard let record = try getSecret(key), record.count == 9 + PairingLink.secretLength, record[0] == 1 else {
            throw MasqError(.denied, "this pairing link was already used, or was not made by this device")
        }
        let expires = record.withUnsafeBytes { $0.loadBigEndian(at: 1) }
        guard constantTimeEqual(Array(record[9...]), link.secret) else {
            throw MasqError(.denied, "this pairing link's secret is wrong")
        }
        guard Clock.unixMilliseconds() < expires else {
            throw MasqError(.denied, "this pairing link has expired; make a new one with `masq pair`")
        }
    }

    /// Pending offers past their expiry are deleted.
    public func purgeExpiredOffers() throws(MasqError) {
        try localTransaction { () throws(MasqError) in
            var expired: [[UInt8]] = []
            try engine.scan(from: [RecordFormat.pairing], to: [RecordFormat.pairing + 1]) {
                (key, _) throws(MasqError) -> Bool in
                if let record = try getSecret(Array(key)), record.count > 9,
                    record.withUnsafeBytes({ $0.loadBigEndian(at: 1) }) <= Clock.unixMilliseconds()
                {
                    expired.append(Array(key))
                }
                return true
            }
            for key in expired { try key.withBytes { (k) throws(MasqError) in try engine.delete(k) } }
        }
    }

    /// Record a successful pairing in one transaction: consume the offer (on
    /// the offering side, re-checked so two joiners cannot both use it), store
    /// the device and its session.
    func completePairing(offer: PairingLink?, card: DeviceCard, session: SecureSession, groupRoom: [UInt8]? = nil)
        throws(MasqError) -> PairedDevice
    {
        let device = PairedDevice(
            name: card.name, keys: card.keys, pairedAt: Clock.unixMilliseconds(), suite: session.suite)
        guard device.deviceID != identity?.publicKeys.deviceID else {
            throw .invalid("a device cannot pair with itself")
        }
        let state = try crypto { () throws(CryptoError) in try session.serialized() }
        try localTransaction { () throws(MasqError) in
            if let offer {
                try validOffer(offer)
                try ([RecordFormat.pairing] + offer.room).withBytes { (k) throws(MasqError) in try engine.delete(k) }
            }
            let deviceKey = [RecordFormat.device] + Array(device.deviceID.utf8)
            let sessionKey = [RecordFormat.session] + Array(device.deviceID.utf8)
            try Store.putMeta(engine, deviceKey, try sealSecret(deviceKey, device.encoded))
            try Store.putMeta(engine, sessionKey, try sealSecret(sessionKey, state))
            if let groupRoom {
                try Store.putMeta(engine, Store.metaGroupRoom, try sealSecret(Store.metaGroupRoom, groupRoom))
            }
        }
        freshSessions.withLock { _ = $0.insert(device.deviceID) }
        Log.info("kernel", "paired with device \(device.deviceID)")
        return device
    }

    // MARK: - devices

    public func devices() throws(MasqError) -> [PairedDevice] {
        try lock.withLock { () throws(MasqError) -> [PairedDevice] in
            try ensureUsable()
            var keys: [[UInt8]] = []
            try engine.scan(from: [RecordFormat.device], to: [RecordFormat.device + 1]) {
                (key, _) throws(MasqError) -> Bool in
                keys.append(Array(key))
                return true
            }
            var out: [PairedDevice] = []
            for key in keys { if let record = try getSecret(key) { out.append(try PairedDevice(decoding: record)) } }
            return out.sorted { $0.pairedAt < $1.pairedAt }
        }
    }

    /// Forget a device and its session (MASQ_E_NOT_FOUND if unknown), and
    /// record the removal so sync tells the rest of the group (Store+Removals).
    public func removeDevice(_ deviceID: String) throws(MasqError) {
        let me = try requireIdentity().publicKeys.deviceID
        try localTransaction { () throws(MasqError) in
            let deviceKey = [RecordFormat.device] + Array(deviceID.utf8)
            guard try Store.getMeta(engine, deviceKey) != nil else {
                throw MasqError(.notFound, "no paired device \(deviceID)")
            }
            try forgetDeviceLocked(deviceID)
            try recordRemovalLocked(DeviceRemoval(removed: deviceID, remover: me, at: Clock.unixMilliseconds()))
        }
        removalChanges.withLock { $0 += 1 }
        Log.info("kernel", "removed device \(deviceID)")
    }

    // MARK: - sessions with paired devices

    /// Seal `plaintext` for every paired device: one ciphertext each, from its
    /// own session (each renewed since the store was opened, as `seal`).
    public func sealForDevices(_ plaintext: [UInt8], associatedData: [UInt8] = []) throws(MasqError) -> [(
        deviceID: String, message: [UInt8]
    )] {
        var out: [(deviceID: String, message: [UInt8])] = []
        for device in try devices() {
            out.append((device.deviceID, try seal(for: device.deviceID, plaintext, associatedData: associatedData)))
        }
        return out
    }

    /// Seal for one paired device. Only with a session made or renewed since
    /// this store was opened (MASQ_E_DENIED otherwise): the stored one may be
    /// older than the last message sealed — a data directory restored from a
    /// copy — and sealing with it would reuse a message key.
    public func seal(for deviceID: String, _ plaintext: [UInt8], associatedData: [UInt8] = []) throws(MasqError)
        -> [UInt8]
    {
        let fresh = freshSessions.withLock { $0.contains(deviceID) }
        let exists = try lock.withLock { () throws(MasqError) -> Bool in
            try ensureUsable()
            return try Store.getMeta(engine, [RecordFormat.session] + Array(deviceID.utf8)) != nil
        }
        // (An unknown device is MASQ_E_NOT_FOUND, from withSession.)
        guard fresh || !exists else {
            throw MasqError(
                .denied,
                "the session with \(deviceID) has not been renewed since this store was opened: renew it first (a store restored from a copy must never reuse a message key)"
            )
        }
        return try withSession(deviceID) { (s) throws(CryptoError) in
            try s.seal(plaintext, associatedData: associatedData)
        }
    }

    /// Open a message from a paired device; its session advances only if it authenticates.
    public func open(from deviceID: String, _ message: [UInt8], associatedData: [UInt8] = []) throws(MasqError)
        -> [UInt8]
    {
        try withSession(deviceID) { (s) throws(CryptoError) in try s.open(message, associatedData: associatedData) }
    }

    /// Load the session, run `body`, save the advanced state — one transaction,
    /// so a crash never leaves a used message key behind or loses the ratchet.
    private func withSession<T>(_ deviceID: String, _ body: (SecureSession) throws(CryptoError) -> T) throws(MasqError)
        -> T
    {
        try localTransaction { () throws(MasqError) -> T in
            let key = [RecordFormat.session] + Array(deviceID.utf8)
            guard let state = try getSecret(key) else {
                throw MasqError(.notFound, "no session with device \(deviceID) (not paired, or removed)")
            }
            let session = try crypto { () throws(CryptoError) in try SecureSession(serialized: state) }
            let result = try crypto { () throws(CryptoError) in try body(session) }
            let saved = try crypto { () throws(CryptoError) in try session.serialized() }
            try Store.putMeta(engine, key, try sealSecret(key, saved))
            return result
        }
    }

    // MARK: - renewing a session (docs/PROTOCOL.md, "RESET")

    /// 'Z' device id -> u64 last renewal counter sent · u64 last one accepted.
    static let renewalFamily: UInt8 = 0x5A
    /// How far ahead of this clock a renewal's counter (the initiator's Unix ms) may be.
    static let renewalCounterSlack: UInt64 = 10 * 60_000

    /// Start renewing the session with a paired device: a Noise KK handshake
    /// between the two devices' long-term X25519 keys, whose first message
    /// carries a counter the responder has never accepted (so a recorded
    /// message cannot be replayed). The stored session is not touched until
    /// the handshake completes. Returns the handshake and its first message.
    public func beginSessionRenewal(with deviceID: String, prologue: [UInt8]) throws(MasqError) -> (
        SessionRenewal, [UInt8]
    ) {
        let identity = try requireIdentity()
        guard let device = try devices().first(where: { $0.deviceID == deviceID }) else {
            throw MasqError(.notFound, "no paired device \(deviceID)")
        }
        return try localTransaction { () throws(MasqError) -> (SessionRenewal, [UInt8]) in
            let counters = try renewalCounters(deviceID)
            // Wall-clock based, so a store restored from a copy still sends a fresh one.
            // A counter sent while this clock ran more than the slack ahead was refused
            // by the other device (never accepted): once the clock is set right, do
            // not continue from it, or every renewal stays in the future.
            let now = Clock.unixMilliseconds()
            let last = counters.sent > now &+ Store.renewalCounterSlack ? 0 : counters.sent
            let counter = max(now, last &+ 1)
            let session = try crypto { () throws(CryptoError) in
                try SecureSession(
                    pattern: .KK, role: .initiator, prologue: prologue, staticKey: identity.agreementKey,
                    remoteStatic: device.keys.agreement,
                    suite: device.suite)
            }
            let message = try crypto { () throws(CryptoError) in
                try session.writeHandshake(payload: bigEndianBytes(counter))
            }
            try saveRenewalCounters(deviceID, sent: counter, accepted: counters.accepted)
            return (SessionRenewal(deviceID: deviceID, session: session, firstMessage: message), message)
        }
    }

    /// Answer a device's renewal: check its first message (authenticated by
    /// both device keys, with a counter above any accepted before), and
    /// replace the stored session with the new one in the same transaction.
    /// Returns the second message. MASQ_E_DENIED for a replayed message.
    public func answerSessionRenewal(from deviceID: String, _ message: [UInt8], prologue: [UInt8]) throws(MasqError)
        -> [UInt8]
    {
        switch try answerOrRefuseSessionRenewal(from: deviceID, message, prologue: prologue) {
        case .answer(let answer): return answer
        case .clockAhead(let by, _):
            throw MasqError(
                .denied,
                "a session renewal from \(deviceID) whose counter is \(by / 60_000) minute(s) ahead of this device's clock"
            )
        }
    }

    /// What answering a renewal gave: the second message, or a refusal
    /// because the initiator's clock is ahead — signed by this device, so
    /// the initiator can tell its user (`checkRenewalRefusal`).
    public enum RenewalAnswer {
        case answer([UInt8])
        case clockAhead(by: UInt64, signedRefusal: [UInt8])
    }

    /// Answer a renewal, or refuse it with a signed statement of this clock.
    public func answerOrRefuseSessionRenewal(from deviceID: String, _ message: [UInt8], prologue: [UInt8])
        throws(MasqError) -> RenewalAnswer
    {
        let identity = try requireIdentity()
        guard let device = try devices().first(where: { $0.deviceID == deviceID }) else {
            throw MasqError(.notFound, "no paired device \(deviceID)")
        }
        return try localTransaction { () throws(MasqError) -> RenewalAnswer in
            let session = try crypto { () throws(CryptoError) in
                try SecureSession(
                    pattern: .KK, role: .responder, prologue: prologue, staticKey: identity.agreementKey,
                    remoteStatic: device.keys.agreement,
                    suite: device.suite)
            }
            let payload = try crypto { () throws(CryptoError) in try session.readHandshake(message) }
            guard payload.count == 8 else { throw .invalid("a session renewal without its counter") }
            let counter = payload.withUnsafeBytes { $0.loadBigEndian(at: 0) as UInt64 }
            let counters = try renewalCounters(deviceID)
            guard counter > counters.accepted else {
                throw MasqError(.denied, "a replayed session renewal from \(deviceID)")
            }
            // A renewal refused for its clock is not accepted later either (a relay could
            // keep it until this clock caught up with its counter, and replay it then).
            let refused = try refusedRenewals(deviceID)
            let digest = Array(Hash.sha256(message).prefix(16))
            guard
                !stride(from: 0, to: refused.count, by: 16).contains(where: { Array(refused[$0..<($0 + 16)]) == digest }
                )
            else {
                throw MasqError(.denied, "a session renewal from \(deviceID) refused before, replayed")
            }
            // A counter far ahead of this clock is refused, not remembered: stored, it would
            // refuse the device's honest renewals until real time caught up with it.
            let now = Clock.unixMilliseconds()
            guard counter <= now + Store.renewalCounterSlack else {
                // Authenticated by both device keys (the handshake read), so the
                // counter is the device's own clock: say so, signed, once.
                let time = bigEndianBytes(now)
                let signature = try crypto { () throws(CryptoError) in
                    try Ed25519.sign(
                        Store.renewalRefusalMessage(prologue, message, time), privateKey: identity.signingKey)
                }
                try saveRefusedRenewals(deviceID, Array((refused + digest).suffix(16 * Store.maxRefusedRenewals)))
                return .clockAhead(by: counter - now, signedRefusal: time + signature)
            }
            let answer = try crypto { () throws(CryptoError) in try session.writeHandshake() }
            try storeSession(deviceID, session)
            try saveRenewalCounters(deviceID, sent: counters.sent, accepted: counter)
            freshSessions.withLock { _ = $0.insert(deviceID) }
            return .answer(answer)
        }
    }

    /// What a renewal refusal signs: the renewal it answers and the refuser's clock.
    static func renewalRefusalMessage(_ prologue: [UInt8], _ firstMessage: [UInt8], _ time: [UInt8]) -> [UInt8] {
        Array("masq renewal refusal v1".utf8) + prologue + Hash.sha256(firstMessage) + time
    }

    /// Check a refusal of `renewal` signed by its device (u64 its Unix ms ·
    /// [64] Ed25519 signature); returns how far this clock is ahead of the
    /// other device's, in ms (MASQ_E_BAD_SIGNATURE for anything else).
    public func checkRenewalRefusal(_ renewal: SessionRenewal, prologue: [UInt8], _ bytes: [UInt8]) throws(MasqError)
        -> UInt64
    {
        guard bytes.count == 72 else { throw MasqError(.invalid, "a malformed renewal refusal") }
        guard let device = try devices().first(where: { $0.deviceID == renewal.deviceID }) else {
            throw MasqError(.notFound, "no paired device \(renewal.deviceID)")
        }
        let time = Array(bytes[0..<8])
        guard
            Ed25519.verify(
                Array(bytes[8...]), message: Store.renewalRefusalMessage(prologue, renewal.firstMessage, time),
                publicKey: device.keys.signing)
        else {
            throw MasqError(.badSignature, "a renewal refusal not signed by \(renewal.deviceID)")
        }
        let theirs = time.withUnsafeBytes { $0.loadBigEndian(at: 0) as UInt64 }
        let now = Clock.unixMilliseconds()
        return now > theirs ? now - theirs : 0
    }

    /// Finish a renewal this device started: the stored session becomes the new one.
    public func completeSessionRenewal(_ renewal: SessionRenewal, _ message: [UInt8]) throws(MasqError) {
        try localTransaction { () throws(MasqError) in
            guard try getSecret([RecordFormat.device] + Array(renewal.deviceID.utf8)) != nil else {
                throw MasqError(.notFound, "no paired device \(renewal.deviceID)")
            }
            // Tentatively: a forged answer leaves the renewal able to read the genuine one.
            _ = try crypto { () throws(CryptoError) in try renewal.session.readHandshake(message, tentative: true) }
            guard renewal.session.isEstablished else { throw .invalid("the session renewal did not complete") }
            try storeSession(renewal.deviceID, renewal.session)
            freshSessions.withLock { _ = $0.insert(renewal.deviceID) }
        }
    }

    /// The prologue both sides of a renewal bind it to: the group's room and
    /// both device ids (as sync uses it).
    public func renewalPrologue(initiator: String, responder: String) throws(MasqError) -> [UInt8] {
        Array("masq session renewal v1".utf8) + (try groupRoom()) + (try SyncService.idBytes(initiator))
            + (try SyncService.idBytes(responder))
    }

    /// Renewal for embedders that carry frames themselves (the C API): the
    /// renewal in progress is kept here until the answer arrives.
    public func beginSessionRenewal(with deviceID: String) throws(MasqError) -> [UInt8] {
        let me = try requireIdentity().publicKeys.deviceID
        let (renewal, message) = try beginSessionRenewal(
            with: deviceID, prologue: try renewalPrologue(initiator: me, responder: deviceID))
        pendingRenewals.withLock { $0[deviceID] = renewal }
        return message
    }

    public func answerSessionRenewal(from deviceID: String, _ message: [UInt8]) throws(MasqError) -> [UInt8] {
        let me = try requireIdentity().publicKeys.deviceID
        return try answerSessionRenewal(
            from: deviceID, message, prologue: try renewalPrologue(initiator: deviceID, responder: me))
    }

    public func completeSessionRenewal(from deviceID: String, _ message: [UInt8]) throws(MasqError) {
        guard let renewal = pendingRenewals.withLock({ $0[deviceID] }) else {
            throw MasqError(.notFound, "no renewal with \(deviceID) is waiting for an answer")
        }
        try completeSessionRenewal(renewal, message)
        pendingRenewals.withLock { $0[deviceID] = nil }
    }

    /// Whether this device may send on its session with `deviceID` yet (the
    /// side that started a renewal must first hear from the other).
    public func canSend(to deviceID: String) -> Bool {
        (try? localTransaction { () throws(MasqError) -> Bool in
            guard let state = try getSecret([RecordFormat.session] + Array(deviceID.utf8)) else { return false }
            return try crypto { () throws(CryptoError) in try SecureSession(serialized: state).canSend }
        }) ?? false
    }

    private func storeSession(_ deviceID: String, _ session: SecureSession) throws(MasqError) {
        let key = [RecordFormat.session] + Array(deviceID.utf8)
        let state = try crypto { () throws(CryptoError) in try session.serialized() }
        try Store.putMeta(engine, key, try sealSecret(key, state))
    }

    private func renewalCounters(_ deviceID: String) throws(MasqError) -> (sent: UInt64, accepted: UInt64) {
        guard let bytes = try Store.getMeta(engine, [Store.renewalFamily] + Array(deviceID.utf8)), bytes.count == 16
        else { return (0, 0) }
        return bytes.withUnsafeBytes { ($0.loadBigEndian(at: 0), $0.loadBigEndian(at: 8)) }
    }

    /// Renewals refused for a clock ahead, remembered (by the first 16 bytes of
    /// their SHA-256) so a recorded one cannot be replayed once this clock has
    /// caught up with its counter. The latest `maxRefusedRenewals` per device.
    static let maxRefusedRenewals = 64

    private func refusedRenewals(_ deviceID: String) throws(MasqError) -> [UInt8] {
        let bytes = try Store.getMeta(engine, [Store.renewalFamily, 0] + Array(deviceID.utf8)) ?? []
        return bytes.count % 16 == 0 ? bytes : []
    }

    private func saveRefusedRenewals(_ deviceID: String, _ digests: [UInt8]) throws(MasqError) {
        try Store.putMeta(engine, [Store.renewalFamily, 0] + Array(deviceID.utf8), digests)
    }

    private func saveRenewalCounters(_ deviceID: String, sent: UInt64, accepted: UInt64) throws(MasqError) {
        try Store.putMeta(
            engine, [Store.renewalFamily] + Array(deviceID.utf8), bigEndianBytes(sent) + bigEndianBytes(accepted))
    }

    /// `transaction` for the kernel's own local state, whose code reaches the engine directly.
    func localTransaction<T>(_ body: () throws(MasqError) -> T) throws(MasqError) -> T {
        try transaction { (_) throws(MasqError) -> T in try body() }
    }
}

/// A session renewal this device started, waiting for the other's answer
/// (kept in memory only: a restart starts a new one).
public final class SessionRenewal: @unchecked Sendable {
    public let deviceID: String
    let session: SecureSession
    /// The handshake message sent (a refusal names it by its hash).
    let firstMessage: [UInt8]

    init(deviceID: String, session: SecureSession, firstMessage: [UInt8]) {
        self.deviceID = deviceID
        self.session = session
        self.firstMessage = firstMessage
    }
}
