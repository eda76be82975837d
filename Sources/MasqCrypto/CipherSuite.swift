/// The cipher suites two Masq devices can speak, chosen at pairing and kept
/// per pair of devices (docs/PROTOCOL.md, "Cipher suites"). Every suite uses
/// X25519, SHA-256 and HKDF-SHA256; they differ in the AEAD and in the
/// Double Ratchet's chain step:
///
/// | id | Noise name part | ratchet message version | chain step | message AEAD |
/// |----|-----------------|-------------------------|------------|--------------|
/// | 1  | ChaChaPoly      | 2 | first ChaCha20 block under the chain key (nonce "masq-chain-1") | ChaCha20-Poly1305 |
/// | 2  | AESGCM          | 3 | HMAC-SHA256(ck, 0x01) = message key, HMAC-SHA256(ck, 0x02) = next chain key | AES-256-GCM |
///
/// Suite 2 exists because a web page can only use WebCrypto, which has
/// AES-GCM and HMAC but neither ChaCha20 nor Poly1305; OpenSSL has both.
public enum CipherSuite: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case chaChaPoly = 1
    case aesGCM = 2

    /// The cipher's name in a Noise protocol name.
    public var noiseName: String {
        switch self {
        case .chaChaPoly: "ChaChaPoly"
        case .aesGCM: "AESGCM"
        }
    }

    public var description: String { noiseName }

    /// The AEAD of handshakes and ratchet messages.
    public var aead: AEAD.Algorithm {
        switch self {
        case .chaChaPoly: .chacha20Poly1305
        case .aesGCM: .aesGCM
        }
    }

    /// The first byte of every ratchet message (and of a saved ratchet state) in this suite.
    public var ratchetVersion: UInt8 {
        switch self {
        case .chaChaPoly: 2
        case .aesGCM: 3
        }
    }

    public init?(ratchetVersion: UInt8) {
        guard let suite = CipherSuite.allCases.first(where: { $0.ratchetVersion == ratchetVersion }) else { return nil }
        self = suite
    }
}
