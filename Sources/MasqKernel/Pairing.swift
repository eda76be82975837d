import MasqCrypto

/// A pairing link: `masq://pair/<room>?via=<endpoint>#<secret>`.
///
/// The secret (16 random bytes, base64url) sits in the URL fragment, which
/// browsers and most link handlers never send anywhere. The room is derived
/// from the secret by HKDF (a relay sees it, never the secret); `via` names
/// where the offering device waits (a relay endpoint, or a direct address).
public struct PairingLink: Sendable, Equatable {
    public static let secretLength = 16
    public let secret: [UInt8]
    public let via: String?

    public init(secret: [UInt8], via: String?) {
        self.secret = secret
        self.via = via
    }

    /// The room id both devices meet in: HKDF(secret, "masq pairing room v1"), 16 bytes.
    public var room: [UInt8] {
        (try? Hash.hkdfSHA256(salt: [], ikm: secret, info: Array("masq pairing room v1".utf8), length: 16).bytes) ?? []
    }

    /// The 32-byte Noise PSK: HKDF(secret, "masq pairing psk v1").
    var psk: SecureBytes {
        get throws(MasqError) {
            try crypto { () throws(CryptoError) in
                try Hash.hkdfSHA256(salt: [], ikm: secret, info: Array("masq pairing psk v1".utf8), length: 32)
            }
        }
    }

    public var string: String {
        let query = via.map { "?via=" + PairingLink.percentEncode($0) } ?? ""
        return "masq://pair/\(Base64URL.encode(room))\(query)#\(Base64URL.encode(secret))"
    }

    /// The same link as an https URL of a web app that speaks Masq (a page
    /// running the peer mode of bindings/js): `<base>#masq-pair=<base64url of
    /// the masq:// link>`. Everything after `#` stays in the browser (never
    /// sent to the web server), so the secret does too. Opening it on a phone
    /// (a QR code scanned by its camera) starts the join there.
    public func webURL(base: String) throws(MasqError) -> String {
        guard base.hasPrefix("https://") || base.hasPrefix("http://"), !base.contains("#"), base.utf8.count <= 512
        else {
            throw .invalid("the web app's address must be an http(s) URL without a fragment")
        }
        return base + PairingLink.webFragment + Base64URL.encode(Array(string.utf8))
    }

    static let webFragment = "#masq-pair="

    public init(parsing text: String) throws(MasqError) {
        if text.hasPrefix("https://") || text.hasPrefix("http://") {
            guard text.utf8.count <= 4096, let hash = text.firstIndex(of: "#"),
                text[hash...].hasPrefix(PairingLink.webFragment)
            else {
                throw .invalid("not a Masq pairing link (a web link carries #masq-pair=… after the page's address)")
            }
            guard let inner = Base64URL.decode(String(text[hash...].dropFirst(PairingLink.webFragment.count))),
                let decoded = String(validating: inner, as: UTF8.self),
                decoded.hasPrefix("masq://pair/")
            else {
                throw .invalid("the pairing link is damaged (its #masq-pair= part does not decode)")
            }
            try self.init(parsing: decoded)
            return
        }
        let prefix = "masq://pair/"
        guard text.count <= 2048, text.hasPrefix(prefix) else {
            throw .invalid("not a Masq pairing link (it starts with masq://pair/)")
        }
        var rest = Substring(text.dropFirst(prefix.count))
        guard let hash = rest.firstIndex(of: "#") else {
            throw .invalid("the pairing link has no secret (the part after #)")
        }
        let fragment = String(rest[rest.index(after: hash)...])
        rest = rest[..<hash]
        var via: String?
        if let question = rest.firstIndex(of: "?") {
            let query = rest[rest.index(after: question)...]
            rest = rest[..<question]
            for pair in query.split(separator: "&") where pair.hasPrefix("via=") {
                guard let decoded = PairingLink.percentDecode(String(pair.dropFirst(4))), !decoded.isEmpty else {
                    throw .invalid("the pairing link's via= is not valid")
                }
                via = decoded
            }
        }
        guard let secret = Base64URL.decode(fragment), secret.count == PairingLink.secretLength else {
            throw .invalid(
                "the pairing link's secret is damaged (expected \(PairingLink.secretLength) bytes of base64url)")
        }
        self.init(secret: secret, via: via)
        guard Base64URL.decode(String(rest)) == room else {
            throw .invalid("the pairing link is damaged: its room does not match its secret")
        }
    }

    static func percentEncode(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            let c = Character(Unicode.Scalar(b))
            if c.isASCII && (c.isLetter || c.isNumber || "-._~:/".contains(c)) {
                out.append(c)
            } else {
                out += "%" + String(b, radix: 16, uppercase: true).leftPadded(2)
            }
        }
        return out
    }

    static func percentDecode(_ s: String) -> String? {
        var bytes: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let b = it.first {
            it = it.dropFirst()
            if b == UInt8(ascii: "%") {
                guard it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) else {
                    return nil
                }
                bytes.append(v)
                it = it.dropFirst(2)
            } else {
                bytes.append(b)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// What each device tells the other at the end of pairing, signed with its
/// Ed25519 key over the Noise handshake hash (binding the signing key to the
/// X25519 key the handshake authenticated):
///
///   u8 version(1), u8 nameLength, name, [32] Ed25519 key, [32] X25519 key, [64] signature
///   signature = Ed25519("masq pairing v1" || handshake hash || X25519 key || Ed25519 key || name)
struct DeviceCard {
    let name: String
    let keys: DevicePublicKeys

    static func signed(identity: DeviceIdentity, name: String, handshakeHash: [UInt8]) throws(MasqError) -> [UInt8] {
        let nameBytes = Array(name.utf8.prefix(255))
        let signature = try crypto { () throws(CryptoError) in
            try Ed25519.sign(message(handshakeHash, identity.publicKeys, nameBytes), privateKey: identity.signingKey)
        }
        return [1, UInt8(nameBytes.count)] + nameBytes + identity.signingPublicKey + identity.agreementPublicKey
            + signature
    }

    static func message(_ hash: [UInt8], _ keys: DevicePublicKeys, _ name: [UInt8]) -> [UInt8] {
        Array("masq pairing v1".utf8) + hash + keys.agreement + keys.signing + name
    }

    /// Parse and verify; `expectedAgreementKey` is the key the handshake authenticated.
    static func verify(_ bytes: [UInt8], handshakeHash: [UInt8], expectedAgreementKey: [UInt8]?) throws(MasqError)
        -> DeviceCard
    {
        guard bytes.count >= 2, bytes[0] == 1, bytes.count == 2 + Int(bytes[1]) + 128 else {
            throw .invalid("malformed device card")
        }
        let n = Int(bytes[1])
        let nameBytes = Array(bytes[2..<(2 + n)])
        guard let name = String(validating: nameBytes, as: UTF8.self) else {
            throw .invalid("device name is not UTF-8")
        }
        let keys = DevicePublicKeys(
            signing: Array(bytes[(2 + n)..<(34 + n)]), agreement: Array(bytes[(34 + n)..<(66 + n)]))
        let signature = Array(bytes[(66 + n)...])
        guard keys.agreement == expectedAgreementKey else {
            throw MasqError(.badSignature, "device card names another key than the handshake authenticated")
        }
        guard Ed25519.verify(signature, message: message(handshakeHash, keys, nameBytes), publicKey: keys.signing)
        else {
            throw MasqError(.badSignature, "device card signature is invalid")
        }
        return DeviceCard(name: name, keys: keys)
    }
}

/// One side of pairing, driven message by message over any transport.
///
///   joiner (Noise initiator)                    offerer (Noise responder)
///   1 ── SUITES: XXpsk3 message 1 per suite ───▶  picks a suite it speaks
///   2 ◀── CHOSEN: suite + XXpsk3 message 2 (payload: SHA-256 of frame 1)
///   3 ── XXpsk3 message 3 + joiner's card ─────▶  PSK proven: store joiner, consume offer
///   4 ◀── ratchet message: offerer's card + group room   store offerer, join its group
///
/// Each frame is u8 type then body: 1 = protocol message, 2 = refusal (UTF-8
/// reason), 3 = the joiner's suites (`u8 n · n × (u8 suite · u16 length ·
/// message 1)`), 4 = the offerer's choice (`u8 suite · message 2`). The cipher
/// suite (CipherSuite) is the pair's from then on: its handshakes, its
/// ratchet, its renewals. The handshake's prologue names every suite the
/// joiner offered, so a carrier that strips one fails the handshake. A joiner
/// of an earlier version starts with a plain MESSAGE (suite ChaChaPoly, the
/// prologue without suites), which the offerer still answers.
/// A device stores nothing unless the other proved it knew the secret.
public final class PairingFlow: @unchecked Sendable {
    public enum Role: Sendable { case offerer, joiner }
    public enum Step: Sendable {
        /// Send this frame to the peer, then wait for its answer.
        case send([UInt8])
        /// Send this last frame (if any); pairing succeeded with `device`.
        case paired(PairedDevice, finalFrame: [UInt8]?)
    }

    static let messageFrame: UInt8 = 1
    static let refusalFrame: UInt8 = 2
    static let suitesFrame: UInt8 = 3
    static let chosenFrame: UInt8 = 4
    public static let maxFrame = Noise.maxMessageLength + 1
    /// The suites this library speaks, in its order of preference as an offerer.
    public static let supportedSuites: [CipherSuite] = [.chaChaPoly, .aesGCM]

    public let role: Role
    let store: Store
    let link: PairingLink
    /// What the joiner offers / what the offerer accepts, in order of preference.
    let suites: [CipherSuite]
    /// The handshake, once the suite is known (the joiner holds one per suite until the offerer picks).
    private(set) var session: SecureSession?
    private var candidates: [CipherSuite: SecureSession] = [:]
    private var prologue: [UInt8] = []
    /// SHA-256 of the SUITES frame this joiner sent (the offerer echoes it in message 2).
    private var offeredFrame: [UInt8] = []
    private var finished = false
    /// The transcript after message 2: the joiner's card (inside message 3) is signed over it.
    private var transcriptAtMessage2: [UInt8] = []
    private let identity: DeviceIdentity
    private let psk: SecureBytes

    /// The suite the pair speaks, once chosen.
    public var suite: CipherSuite? { session?.suite }

    /// The offering side, for an offer created with `Store.createPairingOffer`.
    public convenience init(
        offering link: PairingLink, store: Store, suites: [CipherSuite] = PairingFlow.supportedSuites
    ) throws(MasqError) {
        try self.init(role: .offerer, link: link, store: store, suites: suites)
    }

    /// The joining side, from a link the user scanned or pasted.
    public convenience init(
        joining link: PairingLink, store: Store, suites: [CipherSuite] = PairingFlow.supportedSuites
    ) throws(MasqError) {
        try self.init(role: .joiner, link: link, store: store, suites: suites)
    }

    private init(role: Role, link: PairingLink, store: Store, suites: [CipherSuite]) throws(MasqError) {
        guard !suites.isEmpty, Set(suites).count == suites.count else {
            throw .invalid("pairing needs at least one cipher suite, each once")
        }
        self.role = role
        self.store = store
        self.link = link
        self.suites = suites
        identity = try store.requireIdentity()
        psk = try link.psk
    }

    /// The prologue of an earlier version's pairing (no suite negotiation).
    static func prologue(_ link: PairingLink) -> [UInt8] { Array("masq pairing v1".utf8) + link.room }

    /// The prologue of a negotiated pairing: it names every suite the joiner offered.
    static func prologue(_ link: PairingLink, offered: [UInt8]) -> [UInt8] {
        prologue(link) + [UInt8(offered.count)] + offered
    }

    private func makeSession(_ suite: CipherSuite, prologue: [UInt8]) throws(MasqError) -> SecureSession {
        try crypto { () throws(CryptoError) in
            try SecureSession(
                pattern: .XXpsk3, role: role == .joiner ? .initiator : .responder, prologue: prologue,
                staticKey: identity.agreementKey, psk: psk, suite: suite)
        }
    }

    /// The joiner's first frame: message 1 once per suite it offers.
    public func start() throws(MasqError) -> [UInt8] {
        guard role == .joiner else { throw .invalid("only the joining device starts") }
        guard candidates.isEmpty && session == nil else { throw .invalid("pairing already started") }
        prologue = Self.prologue(link, offered: suites.map(\.rawValue))
        var frame: [UInt8] = [PairingFlow.suitesFrame, UInt8(suites.count)]
        for suite in suites {
            let s = try makeSession(suite, prologue: prologue)
            let message = try crypto { () throws(CryptoError) in try s.writeHandshake() }
            candidates[suite] = s
            frame += [suite.rawValue, UInt8(message.count >> 8), UInt8(message.count & 0xFF)] + message
        }
        offeredFrame = Hash.sha256(frame)
        return frame
    }

    /// A frame telling the peer why pairing stopped.
    public static func refusal(_ reason: String) -> [UInt8] { [refusalFrame] + Array(reason.utf8.prefix(200)) }

    /// The offered suites and their first messages, from a SUITES frame body.
    static func parseSuites(_ body: [UInt8]) throws(MasqError) -> [(id: UInt8, message: [UInt8])] {
        guard let n = body.first, n >= 1, n <= 8 else { throw .invalid("a pairing offer of suites must name 1 to 8") }
        var out: [(id: UInt8, message: [UInt8])] = []
        var at = 1
        for _ in 0..<n {
            guard body.count >= at + 3 else { throw .invalid("truncated list of suites") }
            let id = body[at], length = Int(body[at + 1]) << 8 | Int(body[at + 2])
            at += 3
            guard body.count >= at + length else { throw .invalid("truncated list of suites") }
            guard !out.contains(where: { $0.id == id }) else { throw .invalid("a suite offered twice") }
            out.append((id, Array(body[at..<(at + length)])))
            at += length
        }
        guard at == body.count else { throw .invalid("trailing bytes after the suites") }
        return out
    }

    /// Handle the peer's frame; the step says what to send next. Any error ends the pairing.
    public func receive(_ frame: [UInt8]) throws(MasqError) -> Step {
        guard !finished else { throw .invalid("pairing already finished") }
        guard frame.count <= PairingFlow.maxFrame, let type = frame.first else {
            throw .invalid("empty or oversized pairing frame")
        }
        let body = Array(frame.dropFirst())
        if type == PairingFlow.refusalFrame {
            finished = true
            throw MasqError(.denied, "the other device refused: \(String(decoding: body.prefix(200), as: UTF8.self))")
        }
        do throws(MasqError) {
            switch (role, session?.isEstablished ?? false) {
            case (.offerer, false):
                try store.checkPairingOffer(link)
                let payload: [UInt8]
                if session == nil {
                    // Message 1: with the joiner's suites, or (an earlier version) alone, in ChaChaPoly.
                    let first: [UInt8]
                    switch type {
                    case PairingFlow.suitesFrame:
                        let offered = try Self.parseSuites(body)
                        guard let suite = suites.first(where: { s in offered.contains { $0.id == s.rawValue } }) else {
                            throw MasqError(
                                .unsupported,
                                "no cipher suite in common (offered: \(offered.map { String($0.id) }.joined(separator: ", ")))"
                            )
                        }
                        prologue = Self.prologue(link, offered: offered.map(\.id))
                        first = offered.first { $0.id == suite.rawValue }!.message
                        session = try makeSession(suite, prologue: prologue)
                    case PairingFlow.messageFrame:
                        guard suites.contains(.chaChaPoly) else {
                            throw MasqError(
                                .unsupported, "this device does not speak the ChaChaPoly suite the other one offers")
                        }
                        prologue = Self.prologue(link)
                        first = body
                        session = try makeSession(.chaChaPoly, prologue: prologue)
                    default:
                        throw .invalid("unknown pairing frame type \(type)")
                    }
                    let s = session!
                    payload = try crypto { () throws(CryptoError) in try s.readHandshake(first) }
                    guard payload.isEmpty else { throw .invalid("unexpected handshake payload") }
                    // Message 2 carries SHA-256 of the SUITES frame as received: the
                    // joiner checks that nothing of what it offered was altered.
                    let echo = type == PairingFlow.suitesFrame ? Hash.sha256(frame) : []
                    let message2 = try crypto { () throws(CryptoError) in try s.writeHandshake(payload: echo) }
                    transcriptAtMessage2 = s.transcriptHash
                    return .send(
                        type == PairingFlow.suitesFrame
                            ? [PairingFlow.chosenFrame, s.suite.rawValue] + message2
                            : [PairingFlow.messageFrame] + message2)
                }
                guard type == PairingFlow.messageFrame, let s = session else {
                    throw .invalid("unexpected pairing frame type \(type)")
                }
                payload = try crypto { () throws(CryptoError) in try s.readHandshake(body) }
                guard s.isEstablished else { throw .invalid("the handshake did not complete") }
                // Message 3 authenticated under the PSK: the joiner knew the secret.
                let card = try DeviceCard.verify(
                    payload, handshakeHash: transcriptAtMessage2, expectedAgreementKey: s.peerStaticKey)
                // The offerer's card, then the room its group meets in (the joiner adopts it).
                let mine =
                    try DeviceCard.signed(identity: identity, name: store.deviceName, handshakeHash: s.handshakeHash)
                    + store.groupRoom()
                let prologue = self.prologue
                let final =
                    [PairingFlow.messageFrame]
                    + (try crypto { () throws(CryptoError) in try s.seal(mine, associatedData: prologue) })
                // Saved after sealing, so the stored ratchet has moved past the final frame's key.
                let device = try store.completePairing(offer: link, card: card, session: s)
                finished = true
                return .paired(device, finalFrame: final)
            case (.joiner, false):
                if session == nil {
                    guard !candidates.isEmpty else { throw .invalid("pairing not started") }
                    let message: [UInt8]
                    switch type {
                    case PairingFlow.chosenFrame:
                        guard let id = body.first, let suite = CipherSuite(rawValue: id), let s = candidates[suite]
                        else {
                            throw .invalid("the other device chose a suite this one did not offer")
                        }
                        session = s
                        message = Array(body.dropFirst())
                    default:
                        throw .invalid(
                            "unexpected pairing frame type \(type) (expected the other device's choice of suite)")
                    }
                    candidates = [:]
                    let s = session!
                    let echo = try crypto { () throws(CryptoError) in try s.readHandshake(message) }
                    guard echo == offeredFrame else {
                        throw .invalid("the suites this device offered were altered on the way")
                    }
                    let card = try DeviceCard.signed(
                        identity: identity, name: store.deviceName, handshakeHash: s.transcriptHash)
                    return .send(
                        [PairingFlow.messageFrame]
                            + (try crypto { () throws(CryptoError) in try s.writeHandshake(payload: card) }))
                }
                throw .invalid("unexpected frame while the handshake is incomplete")
            case (.joiner, true):
                guard type == PairingFlow.messageFrame, let s = session else {
                    throw .invalid("unexpected pairing frame type \(type)")
                }
                let prologue = self.prologue
                let payload = try crypto { () throws(CryptoError) in try s.open(body, associatedData: prologue) }
                guard payload.count > 16 else { throw .invalid("the final pairing message is too short") }
                let card = try DeviceCard.verify(
                    Array(payload.dropLast(16)), handshakeHash: s.handshakeHash, expectedAgreementKey: s.peerStaticKey)
                let device = try store.completePairing(
                    offer: nil, card: card, session: s, groupRoom: Array(payload.suffix(16)))
                finished = true
                return .paired(device, finalFrame: nil)
            case (.offerer, true):
                throw .invalid("unexpected frame after pairing")
            }
        } catch {
            finished = true
            if error.status == .badSignature || error.status == .invalid {
                throw MasqError(
                    .denied,
                    "pairing failed: the other device does not hold this link's secret, or the link is damaged (\(error.message))"
                )
            }
            throw error
        }
    }
}
