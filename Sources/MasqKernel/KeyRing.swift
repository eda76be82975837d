import MasqCrypto

/// Passphrase protection of a store (docs/SECURITY.md):
///
/// A random 32-byte master key encrypts what the store keeps secret (values,
/// namespace names, the device identity, session states). The passphrase,
/// through scrypt, derives a key-encryption key that wraps the master key in
/// the file `<data_dir>/keyring` (0600). Changing the passphrase re-wraps the
/// master key; no data is re-encrypted. A wrong passphrase fails the AEAD
/// unwrap: MASQ_E_DENIED.
///
///   keyring file: "MASQKR" u8 version(1) u8 algorithm u8 log2(N) u32 r u32 p
///                 [16] salt  [12] nonce  [48] AEAD(kek, master key, ad = all bytes before it)
struct KeyRing {
    static let fileName = "keyring"
    static let magic = Array("MASQKR".utf8)
    static let defaultLogN: UInt8 = 17  // 128 MiB, ~0.5 s here: costly to brute-force, fine to unlock
    static let headerLength = 6 + 3 + 8 + 16 + 12

    var algorithm: AEAD.Algorithm
    var logN: UInt8
    var r: UInt32 = 8
    var p: UInt32 = 1
    var salt: [UInt8]
    var nonce: [UInt8]
    var wrapped: [UInt8]

    var header: [UInt8] {
        KeyRing.magic + [1, UInt8(algorithm.rawValue), logN] + r.bigEndianBytes + p.bigEndianBytes + salt + nonce
    }

    var encoded: [UInt8] { header + wrapped }

    init(decoding bytes: [UInt8]) throws(MasqError) {
        guard bytes.count == KeyRing.headerLength + 48, Array(bytes.prefix(6)) == KeyRing.magic, bytes[6] == 1 else {
            throw .corrupt("keyring file is not one this library reads")
        }
        guard let algorithm = AEAD.Algorithm(rawValue: Int32(bytes[7])), (10...22).contains(bytes[8]) else {
            throw .corrupt("keyring file has unknown parameters")
        }
        self.algorithm = algorithm
        logN = bytes[8]
        r = UInt32(bigEndianBytes: bytes[9..<13])
        p = UInt32(bigEndianBytes: bytes[13..<17])
        guard (1...32).contains(r), (1...16).contains(p) else {
            throw .corrupt("keyring file has unknown scrypt parameters")
        }
        salt = Array(bytes[17..<33])
        nonce = Array(bytes[33..<45])
        wrapped = Array(bytes[45...])
    }

    /// Wrap `master` under `passphrase` with fresh salt and nonce.
    init(master: SecureBytes, passphrase: [UInt8], algorithm: AEAD.Algorithm, logN: UInt8) throws(MasqError) {
        self.algorithm = algorithm
        self.logN = logN
        salt = Random.bytes(16)
        nonce = Random.bytes(12)
        wrapped = []
        let kek = try keyEncryptionKey(passphrase)
        let header = self.header
        // The master key goes from its wiped memory straight into OpenSSL: no plain copy.
        wrapped = try crypto { () throws(CryptoError) in
            try kek.withBytes { (k) throws(CryptoError) in
                try master.withBytes { (m) throws(CryptoError) in
                    try header.withCryptoBytes { (ad) throws(CryptoError) in
                        try AEAD.seal(algorithm, key: k, nonce: nonce, ad: ad, plaintext: m)
                    }
                }
            }
        }
    }

    private func keyEncryptionKey(_ passphrase: [UInt8]) throws(MasqError) -> SecureBytes {
        try crypto { () throws(CryptoError) in
            try Hash.scrypt(
                password: passphrase, salt: salt, n: 1 << UInt64(logN), r: UInt64(r), p: UInt64(p), length: 32,
                maxMemory: (UInt64(128) * UInt64(r) << UInt64(logN)) + (64 << 20))
        }
    }

    /// The master key, or MASQ_E_DENIED for a wrong passphrase.
    func unwrap(_ passphrase: [UInt8]) throws(MasqError) -> SecureBytes {
        let kek = try keyEncryptionKey(passphrase)
        let master = SecureBytes(count: 32)
        let header = self.header
        do throws(CryptoError) {
            guard wrapped.count == 32 + AEAD.tagLength else { throw .invalidInput("wrapped key of the wrong size") }
            // Opened straight into wiped memory.
            try kek.withBytes { (k) throws(CryptoError) in
                try header.withCryptoBytes { (ad) throws(CryptoError) in
                    try wrapped.withCryptoBytes { (c) throws(CryptoError) in
                        try master.withMutableBytes { (out) throws(CryptoError) in
                            try AEAD.open(algorithm, key: k, nonce: nonce, ad: ad, ciphertext: c, into: out)
                        }
                    }
                }
            }
            return master
        } catch {
            throw MasqError(.denied, "wrong passphrase")
        }
    }

    static func path(_ dataDir: String) -> String { dataDir + "/" + fileName }

    static func load(_ dataDir: String) throws(MasqError) -> KeyRing? {
        let path = path(dataDir)
        guard FileSystem.exists(path) else { return nil }
        return try KeyRing(decoding: FileSystem.readFile(path, limit: 4096))
    }

    func save(_ dataDir: String) throws(MasqError) {
        try FileSystem.writeFile(KeyRing.path(dataDir), encoded, mode: 0o600)
    }
}

/// Encrypts the store's secrets under keys derived from the master key.
/// Each sealed blob is nonce(12) || ciphertext || tag(16), bound by AD to
/// where it is stored so blobs cannot be swapped between places.
final class SecretBox: @unchecked Sendable {
    let algorithm: AEAD.Algorithm
    private let valueKey: SecureBytes
    private let nameKey: SecureBytes
    static let overhead = 12 + AEAD.tagLength

    init(master: SecureBytes, algorithm: AEAD.Algorithm) throws(MasqError) {
        self.algorithm = algorithm
        valueKey = try crypto { () throws(CryptoError) in
            try master.withBytes { (m) throws(CryptoError) in
                try Hash.hkdfSHA256(salt: [], ikm: m, info: Array("masq values v1".utf8), length: 32)
            }
        }
        nameKey = try crypto { () throws(CryptoError) in
            try master.withBytes { (m) throws(CryptoError) in
                try Hash.hkdfSHA256(salt: [], ikm: m, info: Array("masq names v1".utf8), length: 32)
            }
        }
    }

    func seal(_ plaintext: UnsafeRawBufferPointer, ad: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer)
        throws(MasqError)
    {
        precondition(out.count == plaintext.count + SecretBox.overhead)
        let nonce = Random.bytes(12)
        nonce.withUnsafeBytes { out.copyMemory(from: $0) }
        try crypto { () throws(CryptoError) in
            try valueKey.withBytes { (k) throws(CryptoError) in
                try AEAD.seal(
                    algorithm, key: k, nonce: nonce, ad: ad, plaintext: plaintext,
                    into: UnsafeMutableRawBufferPointer(rebasing: out[12...]))
            }
        }
    }

    func seal(_ plaintext: [UInt8], ad: [UInt8]) throws(MasqError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: plaintext.count + SecretBox.overhead)
        try out.withUnsafeMutableBytes { o in
            plaintext.withUnsafeBytes { p in
                ad.withUnsafeBytes { a in Result { () throws(MasqError) in try seal(p, ad: a, into: o) } }
            }
        }.get()
        return out
    }

    func open(_ sealed: UnsafeRawBufferPointer, ad: UnsafeRawBufferPointer) throws(MasqError) -> [UInt8] {
        guard sealed.count >= SecretBox.overhead else { throw .corrupt("encrypted data is truncated") }
        let nonce = Array(sealed.prefix(12))
        do {
            return try valueKey.withBytes { (k) throws(CryptoError) in
                try AEAD.open(
                    algorithm, key: k, nonce: nonce, ad: ad, ciphertext: UnsafeRawBufferPointer(rebasing: sealed[12...])
                )
            }
        } catch {
            throw .corrupt("encrypted data failed authentication (tampered, or moved from elsewhere)")
        }
    }

    func open(_ sealed: [UInt8], ad: [UInt8]) throws(MasqError) -> [UInt8] {
        try sealed.withBytes { (s) throws(MasqError) in try ad.withBytes { (a) throws(MasqError) in try open(s, ad: a) }
        }
    }

    /// A keyed hash of a namespace name: its lookup key when names must not be stored in clear.
    func nameTag(_ name: [UInt8]) -> [UInt8] {
        Array(nameKey.withUnsafeBytes { k in name.withUnsafeBytes { Hash.hmacSHA256(key: k, data: $0) } }.prefix(16))
    }
}

/// Run crypto code, turning its errors into MasqErrors.
func crypto<T>(_ body: () throws(CryptoError) -> T) throws(MasqError) -> T {
    do {
        return try body()
    } catch {
        switch error {
        case .authenticationFailed(let m): throw MasqError(.badSignature, m)
        case .invalidInput(let m): throw MasqError(.invalid, m)
        case .protocolViolation(let m): throw MasqError(.invalid, m)
        }
    }
}
