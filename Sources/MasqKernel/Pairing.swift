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
            try crypto { () throws(CryptoError) in try Hash.hkdfSHA256(salt: [], ikm: secret, info: Array("masq pairing psk v1".utf8), length: 32) }
        }
    }

    public var string: String {
        let query = via.map { "?via=" + PairingLink.percentEncode($0) } ?? ""
        return "masq://pair/\(Base64URL.encode(room))\(query)#\(Base64URL.encode(secret))"
    }

    public init(parsing text: String) throws(MasqError) {
        let prefix = "masq://pair/"
        guard text.count <= 2048, text.hasPrefix(prefix) else { throw .invalid("not a Masq pairing link (it starts with masq://pair/)") }
        var rest = Substring(text.dropFirst(prefix.count))
        guard let hash = rest.firstIndex(of: "#") else { throw .invalid("the pairing link has no secret (the part after #)") }
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
            throw .invalid("the pairing link's secret is damaged (expected \(PairingLink.secretLength) bytes of base64url)")
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
            if c.isASCII && (c.isLetter || c.isNumber || "-._~:/".contains(c)) { out.append(c) } else {
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
                guard it.count >= 2, let v = UInt8(String(decoding: it.prefix(2), as: UTF8.self), radix: 16) else { return nil }
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
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
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
        return [1, UInt8(nameBytes.count)] + nameBytes + identity.signingPublicKey + identity.agreementPublicKey + signature
    }

    static func message(_ hash: [UInt8], _ keys: DevicePublicKeys, _ name: [UInt8]) -> [UInt8] {
        Array("masq pairing v1".utf8) + hash + keys.agreement + keys.signing + name
    }

    /// Parse and verify; `expectedAgreementKey` is the key the handshake authenticated.
    static func verify(_ bytes: [UInt8], handshakeHash: [UInt8], expectedAgreementKey: [UInt8]?) throws(MasqError) -> DeviceCard {
        guard bytes.count >= 2, bytes[0] == 1, bytes.count == 2 + Int(bytes[1]) + 128 else { throw .invalid("malformed device card") }
        let n = Int(bytes[1])
        let nameBytes = Array(bytes[2..<(2 + n)])
        guard let name = String(validating: nameBytes, as: UTF8.self) else { throw .invalid("device name is not UTF-8") }
        let keys = DevicePublicKeys(signing: Array(bytes[(2 + n)..<(34 + n)]), agreement: Array(bytes[(34 + n)..<(66 + n)]))
        let signature = Array(bytes[(66 + n)...])
        guard keys.agreement == expectedAgreementKey else { throw MasqError(.badSignature, "device card names another key than the handshake authenticated") }
        guard Ed25519.verify(signature, message: message(handshakeHash, keys, nameBytes), publicKey: keys.signing) else {
            throw MasqError(.badSignature, "device card signature is invalid")
        }
        return DeviceCard(name: name, keys: keys)
    }
}

/// One side of pairing, driven message by message over any transport.
///
///   joiner (Noise initiator)                    offerer (Noise responder)
///   1 ── XXpsk3 message 1 ─────────────────────▶
///   2 ◀──────────────────── XXpsk3 message 2 ──
///   3 ── XXpsk3 message 3 + joiner's card ─────▶  PSK proven: store joiner, consume offer
///   4 ◀── ratchet message: offerer's card + group room   store offerer, join its group
///
/// Each frame is u8 type then body: 1 = protocol message, 2 = refusal (UTF-8
/// reason). A device stores nothing unless the other proved it knew the secret.
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
    public static let maxFrame = Noise.maxMessageLength + 1

    public let role: Role
    let store: Store
    let link: PairingLink
    let session: SecureSession
    private var finished = false
    /// The transcript after message 2: the joiner's card (inside message 3) is signed over it.
    private var transcriptAtMessage2: [UInt8] = []

    /// The offering side, for an offer created with `Store.createPairingOffer`.
    public convenience init(offering link: PairingLink, store: Store) throws(MasqError) {
        try self.init(role: .offerer, link: link, store: store)
    }

    /// The joining side, from a link the user scanned or pasted.
    public convenience init(joining link: PairingLink, store: Store) throws(MasqError) {
        try self.init(role: .joiner, link: link, store: store)
    }

    private init(role: Role, link: PairingLink, store: Store) throws(MasqError) {
        self.role = role
        self.store = store
        self.link = link
        let identity = try store.requireIdentity()
        let psk = try link.psk
        session = try crypto { () throws(CryptoError) in
            try SecureSession(pattern: .XXpsk3, role: role == .joiner ? .initiator : .responder, prologue: PairingFlow.prologue(link),
                              staticKey: identity.agreementKey, psk: psk)
        }
    }

    static func prologue(_ link: PairingLink) -> [UInt8] { Array("masq pairing v1".utf8) + link.room }

    /// The joiner's first frame.
    public func start() throws(MasqError) -> [UInt8] {
        guard role == .joiner else { throw .invalid("only the joining device starts") }
        return [PairingFlow.messageFrame] + (try crypto { () throws(CryptoError) in try session.writeHandshake() })
    }

    /// A frame telling the peer why pairing stopped.
    public static func refusal(_ reason: String) -> [UInt8] { [refusalFrame] + Array(reason.utf8.prefix(200)) }

    /// Handle the peer's frame; the step says what to send next. Any error ends the pairing.
    public func receive(_ frame: [UInt8]) throws(MasqError) -> Step {
        guard !finished else { throw .invalid("pairing already finished") }
        guard frame.count <= PairingFlow.maxFrame, let type = frame.first else { throw .invalid("empty or oversized pairing frame") }
        let body = Array(frame.dropFirst())
        if type == PairingFlow.refusalFrame {
            finished = true
            throw MasqError(.denied, "the other device refused: \(String(decoding: body.prefix(200), as: UTF8.self))")
        }
        guard type == PairingFlow.messageFrame else { throw .invalid("unknown pairing frame type \(type)") }
        do throws(MasqError) {
            switch (role, session.isEstablished) {
            case (.offerer, false):
                try store.checkPairingOffer(link)
                let payload = try crypto { () throws(CryptoError) in try session.readHandshake(body) }
                if !session.isEstablished {
                    guard payload.isEmpty else { throw .invalid("unexpected handshake payload") }
                    let message2 = try crypto { () throws(CryptoError) in try session.writeHandshake() }
                    transcriptAtMessage2 = session.transcriptHash
                    return .send([PairingFlow.messageFrame] + message2)
                }
                // Message 3 authenticated under the PSK: the joiner knew the secret.
                let card = try DeviceCard.verify(payload, handshakeHash: transcriptAtMessage2, expectedAgreementKey: session.peerStaticKey)
                // The offerer's card, then the room its group meets in (the joiner adopts it).
                let mine = try DeviceCard.signed(identity: store.requireIdentity(), name: store.deviceName, handshakeHash: session.handshakeHash)
                    + store.groupRoom()
                let final = [PairingFlow.messageFrame] + (try crypto { () throws(CryptoError) in try session.seal(mine, associatedData: PairingFlow.prologue(link)) })
                // Saved after sealing, so the stored ratchet has moved past the final frame's key.
                let device = try store.completePairing(offer: link, card: card, session: session)
                finished = true
                return .paired(device, finalFrame: final)
            case (.joiner, false):
                _ = try crypto { () throws(CryptoError) in try session.readHandshake(body) }
                let card = try DeviceCard.signed(identity: store.requireIdentity(), name: store.deviceName, handshakeHash: session.transcriptHash)
                return .send([PairingFlow.messageFrame] + (try crypto { () throws(CryptoError) in try session.writeHandshake(payload: card) }))
            case (.joiner, true):
                let payload = try crypto { () throws(CryptoError) in try session.open(body, associatedData: PairingFlow.prologue(link)) }
                guard payload.count > 16 else { throw .invalid("the final pairing message is too short") }
                let card = try DeviceCard.verify(Array(payload.dropLast(16)), handshakeHash: session.handshakeHash, expectedAgreementKey: session.peerStaticKey)
                let device = try store.completePairing(offer: nil, card: card, session: session, groupRoom: Array(payload.suffix(16)))
                finished = true
                return .paired(device, finalFrame: nil)
            case (.offerer, true):
                throw .invalid("unexpected frame after pairing")
            }
        } catch {
            finished = true
            if error.status == .badSignature || error.status == .invalid {
                throw MasqError(.denied, "pairing failed: the other device does not hold this link's secret, or the link is damaged (\(error.message))")
            }
            throw error
        }
    }
}
