import FoundationEssentials
import MasqConnectoidProtocol
import MasqCrypto
import MasqKernel

/// What two people's stores say to each other through mailboxes. Each
/// envelope is signed with the sender's per-share P-384 key and sealed to the
/// recipient's mailbox key (`SealedBox`):
///
///     envelope = u8 version(1) · u8 signerLen · signer (49, compressed)
///              · u16 sigLen · ECDSA-P384-SHA384 signature · body (JSON)
///     signed   = "masq share v1" · signer · recipient mailbox key · body
///
/// Signing over the recipient's key stops an envelope from being replayed
/// into another mailbox; the mailbox seal keeps it private from the service.
struct ShareEnvelope: Sendable {
    struct Body: Codable, Sendable {
        var type: String
        var share: String
        var seq: UInt64
        /// The sender's current mailbox (PUB.URL.EXT): replies go there.
        var inbox: String
        var proof: String?
        var namespace: String?
        var access: String?
        /// Records, as a sync SNAPSHOT frame whose vector is where they bring the receiver.
        /// In a "part" envelope: one slice of such a frame, too big for one message.
        var records: String?
        /// "part" envelopes: this slice's index, how many slices, and the
        /// SHA-256 (base64url) of the whole frame they rebuild.
        var part: Int?
        var parts: Int?
        var digest: String?
        /// The receiver's log the sender has applied (hex replica → seq).
        var ack: [String: UInt64]?
        var reason: String?
    }

    static let version: UInt8 = 1
    static let context = Array("masq share v1".utf8)
    /// Largest body accepted (records are bounded well below it).
    static let maxBodyBytes = 1 << 20

    var signer: [UInt8]
    var body: Body

    static func seal(_ body: Body, signingKey: SecureBytes, signingPub: [UInt8], to recipient: [UInt8])
        throws(MasqError) -> [UInt8]
    {
        let json: [UInt8]
        do { json = Array(try JSONEncoder().encode(body)) } catch {
            throw MasqError(.internal, "cannot encode an envelope")
        }
        let signature: [UInt8]
        do { signature = try P384.sign(context + signingPub + recipient + json, privateKey: signingKey) } catch {
            throw MasqError(.internal, "signing failed")
        }
        var out: [UInt8] = [version, UInt8(signingPub.count)] + signingPub
        out += [UInt8(signature.count >> 8), UInt8(signature.count & 0xff)] + signature + json
        do { return try SealedBox.seal(out, to: recipient) } catch {
            throw MasqError(.invalid, "cannot seal to the peer's mailbox: \(error.message)")
        }
    }

    /// Open a box received in the mailbox (`privateKey`, `pub`) and check its signature.
    static func open(_ box: [UInt8], privateKey: SecureBytes, pub: [UInt8]) throws(MasqError) -> ShareEnvelope {
        let bytes: [UInt8]
        do { bytes = try SealedBox.open(box, privateKey: privateKey, publicKey: pub) } catch {
            throw .invalid("a message that does not open: \(error.message)")
        }
        return try parse(bytes, recipient: pub)
    }

    /// An opened envelope's bytes: layout, signature (over `recipient`, the
    /// mailbox it was sealed to) and body, each checked (fuzzed: Tests/fuzz).
    static func parse(_ bytes: [UInt8], recipient pub: [UInt8]) throws(MasqError) -> ShareEnvelope {
        guard bytes.count > 4, bytes[0] == version else { throw .invalid("an envelope of an unknown version") }
        let signerLength = Int(bytes[1])
        guard signerLength == 49, bytes.count > 2 + signerLength + 2 else { throw .invalid("a truncated envelope") }
        let signer = Array(bytes[2..<(2 + signerLength)])
        let at = 2 + signerLength
        let signatureLength = Int(bytes[at]) << 8 | Int(bytes[at + 1])
        guard signatureLength <= 120, bytes.count >= at + 2 + signatureLength else {
            throw .invalid("a truncated envelope")
        }
        let signature = Array(bytes[(at + 2)..<(at + 2 + signatureLength)])
        let json = Array(bytes[(at + 2 + signatureLength)...])
        guard json.count <= maxBodyBytes else { throw .tooLarge("an envelope body over \(maxBodyBytes) bytes") }
        guard P384.verify(signature, message: context + signer + pub + json, publicKey: signer) else {
            throw MasqError(.badSignature, "an envelope whose signature does not verify")
        }
        do { return ShareEnvelope(signer: signer, body: try JSONDecoder().decode(Body.self, from: Data(json))) } catch {
            throw .invalid("an envelope with a malformed body")
        }
    }
}

/// HMAC proofs of the link's secret.
enum ShareProof {
    static func claim(secret: SecureBytes, guest: [UInt8], inbox: String) -> String {
        mac(secret, Array("masq share claim v1".utf8) + guest + Array(inbox.utf8))
    }

    static func welcome(secret: SecureBytes, owner: [UInt8], guest: [UInt8]) -> String {
        mac(secret, Array("masq share welcome v1".utf8) + owner + guest)
    }

    private static func mac(_ key: SecureBytes, _ data: [UInt8]) -> String {
        Base64URL.encode(key.withUnsafeBytes { k in data.withUnsafeBytes { d in Hash.hmacSHA256(key: k, data: d) } })
    }

    static func matches(_ a: String?, _ b: String) -> Bool {
        guard let a else { return false }
        return constantTimeEqual(Array(a.utf8), Array(b.utf8))
    }
}

extension VersionVector {
    var hexEntries: [String: UInt64] {
        Dictionary(uniqueKeysWithValues: entries.map { (String($0.key, radix: 16), $0.value) })
    }

    init(hexEntries: [String: UInt64]) throws(MasqError) {
        self.init()
        guard hexEntries.count <= 4_096 else { throw .invalid("a vector with too many entries") }
        for (key, value) in hexEntries {
            guard let replica = UInt64(key, radix: 16) else { throw .invalid("a vector with a malformed replica id") }
            self[replica] = value
        }
    }
}
