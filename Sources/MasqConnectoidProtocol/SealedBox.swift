import MasqCrypto

/// Encryption to a P-384 public key, HPKE-like and versioned:
///
///     box = 0x01 ‖ E (49, compressed ephemeral point) ‖ AEAD ciphertext+tag
///     ikm = ECDH(e, R)       (48-byte x-coordinate)
///     key = HKDF-SHA256(salt: "connectoid seal v1", ikm, info: E ‖ R, 32)
///     AEAD = ChaCha20-Poly1305, nonce 12 zero bytes (the key is single use),
///            associated data 0x01 ‖ E ‖ R
///
/// R is the recipient's compressed point: binding both points stops a box
/// from being re-targeted. The plaintext is padded (`Padding`) so sizes fall
/// into buckets. Used for every message; the service's challenges use
/// `ChallengeBox`, a construction of their own, so that an answer to a
/// challenge can never be the plaintext of a message.
public enum SealedBox {
    public static let version: UInt8 = 1
    public static let overhead = 1 + 49 + 16
    static let salt = Array("connectoid seal v1".utf8)

    public static func seal(_ plaintext: [UInt8], to recipient: [UInt8], pad: Bool = true) throws(ConnectoidError)
        -> [UInt8]
    {
        guard let r = try? P384.compress(recipient) else { throw .badKey("recipient is not a P-384 public key") }
        let ephemeral = P384.keyPair()
        let e: [UInt8]
        let key: SecureBytes
        do {
            e = try P384.compress(ephemeral.publicKey)
            key = try derive(ephemeral.privateKey, peer: r, e: e, r: r)
        } catch { throw .badKey("P-384 ECDH failed") }
        let ad = [version] + e + r
        let body = pad ? Padding.pad(plaintext) : plaintext
        guard
            let sealed = try? AEAD.seal(
                .chacha20Poly1305, key: key, nonce: [UInt8](repeating: 0, count: 12), ad: ad, plaintext: body)
        else {
            throw .init(.unavailable, "sealing failed")
        }
        return [version] + e + sealed
    }

    /// Open a box sealed to the key pair (`privateKey`, `publicKey`).
    public static func open(_ box: [UInt8], privateKey: SecureBytes, publicKey: [UInt8], padded: Bool = true)
        throws(ConnectoidError) -> [UInt8]
    {
        guard box.count >= overhead, box[0] == version else { throw .badRequest("not a version-1 sealed box") }
        guard let r = try? P384.compress(publicKey) else { throw .badKey("not a P-384 public key") }
        let e = Array(box[1..<50])
        let key: SecureBytes
        do { key = try derive(privateKey, peer: e, e: e, r: r) } catch {
            throw .badRequest("the box's ephemeral key is not a P-384 point")
        }
        let ad = [version] + e + r
        guard
            let body = try? AEAD.open(
                .chacha20Poly1305, key: key, nonce: [UInt8](repeating: 0, count: 12), ad: ad,
                ciphertext: Array(box[50...]))
        else {
            throw .badRequest("the box does not open with this key")
        }
        return padded ? try Padding.unpad(body) : body
    }

    private static func derive(_ privateKey: SecureBytes, peer: [UInt8], e: [UInt8], r: [UInt8]) throws(CryptoError)
        -> SecureBytes
    {
        let shared = try P384.sharedSecret(privateKey: privateKey, peerPublicKey: peer)
        return try Hash.hkdfSHA256(salt: SecureBytes(salt), ikm: shared, info: e + r, length: 32)
    }
}

/// A service's challenge: 32 random bytes sealed to a mailbox key, in a
/// construction separated from messages' (`SealedBox`) by its version byte,
/// its HKDF salt and info label and its exact size:
///
///     question = 0x02 ‖ E (49) ‖ ChaCha20-Poly1305(key, nonce 0^12, ad = 0x02 ‖ E ‖ R, 32 bytes)   (98 bytes)
///     key      = HKDF-SHA256(salt: "connectoid challenge v1", ikm = ECDH(e, R),
///                            info: "connectoid challenge v1" ‖ E ‖ R, 32)
///
/// A message box opened with this derivation yields a different key, so it
/// fails authentication: whoever answers challenges with `open` cannot be
/// made to decrypt a message for the service (the oracle of issue 13).
public enum ChallengeBox {
    public static let version: UInt8 = 2
    public static let secretLength = 32
    public static let length = 1 + 49 + secretLength + 16
    static let label = Array("connectoid challenge v1".utf8)

    /// Seal `secret` (exactly 32 bytes) to the mailbox key `recipient`.
    public static func seal(_ secret: [UInt8], to recipient: [UInt8]) throws(ConnectoidError) -> [UInt8] {
        guard secret.count == secretLength else { throw .badRequest("a challenge is \(secretLength) bytes") }
        guard let r = try? P384.compress(recipient) else { throw .badKey("recipient is not a P-384 public key") }
        let ephemeral = P384.keyPair()
        let e: [UInt8]
        let key: SecureBytes
        do {
            e = try P384.compress(ephemeral.publicKey)
            key = try derive(ephemeral.privateKey, peer: r, e: e, r: r)
        } catch { throw .badKey("P-384 ECDH failed") }
        guard
            let sealed = try? AEAD.seal(
                .chacha20Poly1305, key: key, nonce: [UInt8](repeating: 0, count: 12), ad: [version] + e + r,
                plaintext: secret)
        else {
            throw .init(.unavailable, "sealing failed")
        }
        return [version] + e + sealed
    }

    /// Open a question sealed to (`privateKey`, `publicKey`): only a box of
    /// exactly this construction's size and version, which must authenticate.
    public static func open(_ box: [UInt8], privateKey: SecureBytes, publicKey: [UInt8]) throws(ConnectoidError)
        -> [UInt8]
    {
        guard box.count == length, box[0] == version else {
            throw .badRequest("not a challenge (\(length) bytes, version \(version))")
        }
        guard let r = try? P384.compress(publicKey) else { throw .badKey("not a P-384 public key") }
        let e = Array(box[1..<50])
        let key: SecureBytes
        do { key = try derive(privateKey, peer: e, e: e, r: r) } catch {
            throw .badRequest("the challenge's ephemeral key is not a P-384 point")
        }
        guard
            let secret = try? AEAD.open(
                .chacha20Poly1305, key: key, nonce: [UInt8](repeating: 0, count: 12), ad: [version] + e + r,
                ciphertext: Array(box[50...])),
            secret.count == secretLength
        else {
            throw .badRequest("the challenge does not open with this key")
        }
        return secret
    }

    private static func derive(_ privateKey: SecureBytes, peer: [UInt8], e: [UInt8], r: [UInt8]) throws(CryptoError)
        -> SecureBytes
    {
        let shared = try P384.sharedSecret(privateKey: privateKey, peerPublicKey: peer)
        return try Hash.hkdfSHA256(salt: SecureBytes(label), ikm: shared, info: label + e + r, length: 32)
    }
}

/// Padding to size buckets: u32 length ‖ message ‖ zeros up to 64, 256, 1 KiB,
/// 4 KiB, 16 KiB, 64 KiB, then whole multiples of 64 KiB. An observer of the
/// service learns a message's bucket, not its length.
public enum Padding {
    public static let buckets = [64, 256, 1_024, 4_096, 16_384, 65_536]

    public static func paddedSize(_ length: Int) -> Int {
        let needed = length + 4
        if let bucket = buckets.first(where: { $0 >= needed }) { return bucket }
        return (needed + 65_535) / 65_536 * 65_536
    }

    public static func pad(_ message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: paddedSize(message.count))
        let n = UInt32(message.count)
        out[0] = UInt8(n >> 24); out[1] = UInt8(n >> 16 & 0xff); out[2] = UInt8(n >> 8 & 0xff); out[3] = UInt8(n & 0xff)
        out.replaceSubrange(4..<(4 + message.count), with: message)
        return out
    }

    public static func unpad(_ padded: [UInt8]) throws(ConnectoidError) -> [UInt8] {
        guard padded.count >= 4 else { throw .badRequest("padded message shorter than its length field") }
        let n = Int(padded[0]) << 24 | Int(padded[1]) << 16 | Int(padded[2]) << 8 | Int(padded[3])
        guard n <= padded.count - 4 else { throw .badRequest("padded message length out of range") }
        return Array(padded[4..<(4 + n)])
    }
}
