import CMasqCrypto

/// ChaCha20 as a stream cipher / PRF (RFC 8439), OpenSSL's.
public enum ChaCha20 {
    /// The keystream from block `counter` under `key` (32 bytes) and `nonce` (12 bytes) into `out`.
    public static func keystream(
        key: UnsafeRawBufferPointer, counter: UInt32 = 0, nonce: UnsafeRawBufferPointer,
        into out: UnsafeMutableRawBufferPointer
    ) {
        precondition(key.count == 32 && nonce.count == 12)
        let status = masqcrypto_chacha20(
            key.baseAddress!.assumingMemoryBound(to: UInt8.self), counter,
            nonce.baseAddress!.assumingMemoryBound(to: UInt8.self), nil,
            out.baseAddress?.assumingMemoryBound(to: UInt8.self), out.count)
        precondition(status == 0, "ChaCha20 failed")
    }

    /// XOR `data` in place with the keystream from block `counter` (the
    /// cipher itself: encrypting and decrypting are the same operation).
    public static func xor(
        key: UnsafeRawBufferPointer, counter: UInt32 = 0, nonce: UnsafeRawBufferPointer,
        _ data: UnsafeMutableRawBufferPointer
    ) {
        precondition(key.count == 32 && nonce.count == 12)
        guard data.count > 0 else { return }
        let p = data.baseAddress!.assumingMemoryBound(to: UInt8.self)
        let status = masqcrypto_chacha20(
            key.baseAddress!.assumingMemoryBound(to: UInt8.self), counter,
            nonce.baseAddress!.assumingMemoryBound(to: UInt8.self), p, p, data.count)
        precondition(status == 0, "ChaCha20 failed")
    }

    /// XOR `input` with the keystream into `output` (same length; they may be
    /// the same memory): one pass where a copy and an in-place XOR would be two.
    public static func xor(
        key: UnsafeRawBufferPointer, counter: UInt32 = 0, nonce: UnsafeRawBufferPointer,
        from input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) {
        precondition(key.count == 32 && nonce.count == 12 && input.count == output.count)
        guard input.count > 0 else { return }
        let status = masqcrypto_chacha20(
            key.baseAddress!.assumingMemoryBound(to: UInt8.self), counter,
            nonce.baseAddress!.assumingMemoryBound(to: UInt8.self),
            input.baseAddress!.assumingMemoryBound(to: UInt8.self),
            output.baseAddress!.assumingMemoryBound(to: UInt8.self), input.count)
        precondition(status == 0, "ChaCha20 failed")
    }
}

/// Hashes, MACs and key derivation, all OpenSSL's.
public enum Hash {
    public static func sha256(_ data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        precondition(data.withUnsafeBufferPointer { masqcrypto_sha256($0.baseAddress, $0.count, &out) } == 0)
        return out
    }

    public static func sha384(_ data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 48)
        precondition(data.withUnsafeBufferPointer { masqcrypto_sha384($0.baseAddress, $0.count, &out) } == 0)
        return out
    }

    public static func hmacSHA256(key: UnsafeRawBufferPointer, data: UnsafeRawBufferPointer) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        precondition(
            masqcrypto_hmac_sha256(
                key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count,
                data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count, &out) == 0)
        return out
    }

    /// HMAC-SHA512 into a caller's 64-byte buffer.
    public static func hmacSHA512(
        key: UnsafeRawBufferPointer, data: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer
    ) {
        precondition(out.count == 64)
        let status = masqcrypto_hmac_sha512(
            key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count,
            data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count,
            out.baseAddress!.assumingMemoryBound(to: UInt8.self))
        precondition(status == 0, "HMAC-SHA512 failed")
    }

    public static func hmacSHA512(key: UnsafeRawBufferPointer, data: UnsafeRawBufferPointer) -> SecureBytes {
        let out = SecureBytes(count: 64)
        let status = out.withUnsafeMutableBytes { o in
            masqcrypto_hmac_sha512(
                key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count,
                data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count,
                o.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        precondition(status == 0, "HMAC-SHA512 failed")
        return out
    }

    public static func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] {
        key.withUnsafeBytes { k in data.withUnsafeBytes { d in hmacSHA256(key: k, data: d) } }
    }

    /// HKDF-SHA256 (RFC 5869). `length` must be 1...8160.
    public static func hkdfSHA256(salt: UnsafeRawBufferPointer, ikm: UnsafeRawBufferPointer, info: [UInt8], length: Int)
        throws(CryptoError) -> SecureBytes
    {
        guard length > 0 && length <= 255 * 32 else {
            throw .invalidInput("HKDF output length \(length) is not 1...8160")
        }
        let out = SecureBytes(count: length)
        let status = out.withUnsafeMutableBytes { o in
            info.withUnsafeBufferPointer { i in
                masqcrypto_hkdf_sha256(
                    salt.baseAddress?.assumingMemoryBound(to: UInt8.self), salt.count,
                    ikm.baseAddress?.assumingMemoryBound(to: UInt8.self), ikm.count,
                    i.baseAddress, i.count, o.baseAddress!.assumingMemoryBound(to: UInt8.self), length)
            }
        }
        guard status == 0 else { throw .invalidInput("HKDF failed") }
        return out
    }

    public static func hkdfSHA256(salt: [UInt8], ikm: UnsafeRawBufferPointer, info: [UInt8], length: Int)
        throws(CryptoError) -> SecureBytes
    {
        let r: Result<SecureBytes, CryptoError> = salt.withUnsafeBytes { s in
            Result { () throws(CryptoError) in try hkdfSHA256(salt: s, ikm: ikm, info: info, length: length) }
        }
        return try r.get()
    }

    public static func hkdfSHA256(salt: [UInt8], ikm: [UInt8], info: [UInt8], length: Int) throws(CryptoError)
        -> SecureBytes
    {
        let r: Result<SecureBytes, CryptoError> = ikm.withUnsafeBytes { i in
            Result { () throws(CryptoError) in try hkdfSHA256(salt: salt, ikm: i, info: info, length: length) }
        }
        return try r.get()
    }

    /// HKDF-SHA256 keyed by secrets on both sides (salt and input key material).
    public static func hkdfSHA256(salt: SecureBytes, ikm: SecureBytes, info: [UInt8], length: Int) throws(CryptoError)
        -> SecureBytes
    {
        let r: Result<SecureBytes, CryptoError> = salt.withUnsafeBytes { s in
            ikm.withUnsafeBytes { i in
                Result { () throws(CryptoError) in try hkdfSHA256(salt: s, ikm: i, info: info, length: length) }
            }
        }
        return try r.get()
    }

    /// scrypt (RFC 7914). `maxMemory` 0 keeps OpenSSL's default ceiling (32 MiB).
    public static func scrypt(
        password: [UInt8], salt: [UInt8], n: UInt64, r: UInt64, p: UInt64, length: Int,
        maxMemory: UInt64 = 0
    ) throws(CryptoError) -> SecureBytes {
        let out = SecureBytes(count: length)
        let status = out.withUnsafeMutableBytes { o in
            password.withUnsafeBufferPointer { pw in
                salt.withUnsafeBufferPointer { s in
                    masqcrypto_scrypt(
                        pw.baseAddress, pw.count, s.baseAddress, s.count, n, r, p, maxMemory,
                        o.baseAddress!.assumingMemoryBound(to: UInt8.self), length)
                }
            }
        }
        guard status == 0 else { throw .invalidInput("scrypt rejected its parameters (N=\(n), r=\(r), p=\(p))") }
        return out
    }
}

/// OpenSSL's CSPRNG.
public enum Random {
    public static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        precondition(count == 0 || masqcrypto_random(&out, count) == 0, "RAND_bytes failed")
        return out
    }
}

/// X25519 key agreement (RFC 7748).
public enum X25519 {
    public static let keyLength = 32

    public static func keyPair() -> (privateKey: SecureBytes, publicKey: [UInt8]) {
        let privateKey = SecureBytes(count: 32)
        var publicKey = [UInt8](repeating: 0, count: 32)
        let status = privateKey.withUnsafeMutableBytes {
            masqcrypto_x25519_keypair($0.baseAddress!.assumingMemoryBound(to: UInt8.self), &publicKey)
        }
        precondition(status == 0, "X25519 key generation failed")
        return (privateKey, publicKey)
    }

    public static func publicKey(of privateKey: SecureBytes) throws(CryptoError) -> [UInt8] {
        guard privateKey.count == 32 else { throw .invalidInput("X25519 private key must be 32 bytes") }
        var publicKey = [UInt8](repeating: 0, count: 32)
        let status = privateKey.withUnsafeBytes {
            masqcrypto_x25519_public($0.baseAddress!.assumingMemoryBound(to: UInt8.self), &publicKey)
        }
        guard status == 0 else { throw .invalidInput("invalid X25519 private key") }
        return publicKey
    }

    /// The shared secret for a key pair whose public half is known (faster:
    /// OpenSSL need not re-derive it). `keyPair.publicKey` must match.
    public static func sharedSecret(keyPair: (privateKey: SecureBytes, publicKey: [UInt8]), peerPublicKey: [UInt8])
        throws(CryptoError) -> SecureBytes
    {
        guard keyPair.privateKey.count == 32, keyPair.publicKey.count == 32, peerPublicKey.count == 32 else {
            throw .invalidInput("X25519 keys must be 32 bytes")
        }
        let shared = SecureBytes(count: 32)
        let status = keyPair.privateKey.withUnsafeBytes { p in
            shared.withUnsafeMutableBytes { s in
                masqcrypto_x25519_known(
                    p.baseAddress!.assumingMemoryBound(to: UInt8.self), keyPair.publicKey, peerPublicKey,
                    s.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        guard status == 0 else {
            throw .invalidInput("X25519 with this peer key gives no shared secret (low-order point)")
        }
        return shared
    }

    /// The shared secret; an all-zero result (a low-order peer key) is an error.
    public static func sharedSecret(privateKey: SecureBytes, peerPublicKey: [UInt8]) throws(CryptoError) -> SecureBytes
    {
        guard privateKey.count == 32, peerPublicKey.count == 32 else {
            throw .invalidInput("X25519 keys must be 32 bytes")
        }
        let shared = SecureBytes(count: 32)
        let status = privateKey.withUnsafeBytes { p in
            shared.withUnsafeMutableBytes { s in
                masqcrypto_x25519(
                    p.baseAddress!.assumingMemoryBound(to: UInt8.self), peerPublicKey,
                    s.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        guard status == 0 else {
            throw .invalidInput("X25519 with this peer key gives no shared secret (low-order point)")
        }
        return shared
    }
}

/// Ed25519 signatures (RFC 8032).
public enum Ed25519 {
    public static func keyPair() -> (privateKey: SecureBytes, publicKey: [UInt8]) {
        let privateKey = SecureBytes(count: 32)
        var publicKey = [UInt8](repeating: 0, count: 32)
        let status = privateKey.withUnsafeMutableBytes {
            masqcrypto_ed25519_keypair($0.baseAddress!.assumingMemoryBound(to: UInt8.self), &publicKey)
        }
        precondition(status == 0, "Ed25519 key generation failed")
        return (privateKey, publicKey)
    }

    public static func publicKey(of privateKey: SecureBytes) throws(CryptoError) -> [UInt8] {
        guard privateKey.count == 32 else { throw .invalidInput("Ed25519 private key must be 32 bytes") }
        var publicKey = [UInt8](repeating: 0, count: 32)
        let status = privateKey.withUnsafeBytes {
            masqcrypto_ed25519_public($0.baseAddress!.assumingMemoryBound(to: UInt8.self), &publicKey)
        }
        guard status == 0 else { throw .invalidInput("invalid Ed25519 private key") }
        return publicKey
    }

    public static func sign(_ message: [UInt8], privateKey: SecureBytes) throws(CryptoError) -> [UInt8] {
        guard privateKey.count == 32 else { throw .invalidInput("Ed25519 private key must be 32 bytes") }
        var signature = [UInt8](repeating: 0, count: 64)
        let status = privateKey.withUnsafeBytes { p in
            message.withUnsafeBufferPointer { m in
                masqcrypto_ed25519_sign(
                    p.baseAddress!.assumingMemoryBound(to: UInt8.self), m.baseAddress, m.count, &signature)
            }
        }
        guard status == 0 else { throw .invalidInput("Ed25519 signing failed") }
        return signature
    }

    /// True only for a valid signature by `publicKey` over `message`.
    public static func verify(_ signature: [UInt8], message: [UInt8], publicKey: [UInt8]) -> Bool {
        guard publicKey.count == 32 else { return false }
        return message.withUnsafeBufferPointer { m in
            signature.withUnsafeBufferPointer { s in
                masqcrypto_ed25519_verify(publicKey, m.baseAddress, m.count, s.baseAddress, s.count) == 0
            }
        }
    }
}

/// Authenticated encryption with associated data.
public enum AEAD {
    public enum Algorithm: Int32, Sendable {
        case chacha20Poly1305 = 1
        case aesGCM = 2
    }

    public static let tagLength = 16

    /// AES-256-GCM where the CPU has AES instructions, else ChaCha20-Poly1305.
    public static var preferred: Algorithm { masqcrypto_has_aes_hardware() != 0 ? .aesGCM : .chacha20Poly1305 }

    /// Nonce lengths each algorithm accepts (OpenSSL 3's GCM stops at 128 bytes).
    public static func supportsNonce(_ algorithm: Algorithm, length: Int) -> Bool {
        algorithm == .chacha20Poly1305 ? length == 12 : (1...128).contains(length)
    }

    /// ciphertext || tag.
    public static func seal(
        _ algorithm: Algorithm, key: UnsafeRawBufferPointer, nonce: [UInt8], ad: UnsafeRawBufferPointer,
        plaintext: UnsafeRawBufferPointer, tagLength: Int = 16
    ) throws(CryptoError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: plaintext.count + tagLength)
        let status = out.withUnsafeMutableBufferPointer { o in
            nonce.withUnsafeBufferPointer { n in
                masqcrypto_aead_seal(
                    algorithm.rawValue, key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count,
                    n.baseAddress, n.count, ad.baseAddress?.assumingMemoryBound(to: UInt8.self), ad.count,
                    plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), plaintext.count, tagLength,
                    o.baseAddress)
            }
        }
        guard status == 0 else {
            throw .invalidInput(
                "AEAD parameters rejected (key \(key.count), nonce \(nonce.count), tag \(tagLength) bytes)")
        }
        return out
    }

    /// Seal into `output` (plaintext.count + tagLength bytes), without intermediate copies.
    public static func seal(
        _ algorithm: Algorithm, key: UnsafeRawBufferPointer, nonce: [UInt8], ad: UnsafeRawBufferPointer,
        plaintext: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) throws(CryptoError) {
        precondition(output.count == plaintext.count + tagLength)
        let status = nonce.withUnsafeBufferPointer { n in
            masqcrypto_aead_seal(
                algorithm.rawValue, key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count,
                n.baseAddress, n.count, ad.baseAddress?.assumingMemoryBound(to: UInt8.self), ad.count,
                plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), plaintext.count, tagLength,
                output.baseAddress?.assumingMemoryBound(to: UInt8.self))
        }
        guard status == 0 else { throw .invalidInput("AEAD parameters rejected") }
    }

    /// Open ciphertext || tag into `output` (ciphertext.count - tagLength bytes).
    public static func open(
        _ algorithm: Algorithm, key: UnsafeRawBufferPointer, nonce: [UInt8], ad: UnsafeRawBufferPointer,
        ciphertext: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) throws(CryptoError) {
        guard ciphertext.count >= tagLength else { throw .authenticationFailed("ciphertext shorter than its tag") }
        precondition(output.count == ciphertext.count - tagLength)
        let status = nonce.withUnsafeBufferPointer { n in
            masqcrypto_aead_open(
                algorithm.rawValue, key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count,
                n.baseAddress, n.count, ad.baseAddress?.assumingMemoryBound(to: UInt8.self), ad.count,
                ciphertext.baseAddress?.assumingMemoryBound(to: UInt8.self), ciphertext.count, tagLength,
                output.baseAddress?.assumingMemoryBound(to: UInt8.self))
        }
        if status == MASQCRYPTO_AUTH { throw .authenticationFailed("message authentication failed") }
        guard status == 0 else { throw .invalidInput("AEAD parameters rejected") }
    }

    /// Authenticate and decrypt ciphertext || tag.
    public static func open(
        _ algorithm: Algorithm, key: UnsafeRawBufferPointer, nonce: [UInt8], ad: UnsafeRawBufferPointer,
        ciphertext: UnsafeRawBufferPointer, tagLength: Int = 16
    ) throws(CryptoError) -> [UInt8] {
        guard ciphertext.count >= tagLength else { throw .authenticationFailed("ciphertext shorter than its tag") }
        var out = [UInt8](repeating: 0, count: ciphertext.count - tagLength)
        let status = out.withUnsafeMutableBufferPointer { o in
            nonce.withUnsafeBufferPointer { n in
                masqcrypto_aead_open(
                    algorithm.rawValue, key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count,
                    n.baseAddress, n.count, ad.baseAddress?.assumingMemoryBound(to: UInt8.self), ad.count,
                    ciphertext.baseAddress?.assumingMemoryBound(to: UInt8.self), ciphertext.count, tagLength,
                    o.baseAddress)
            }
        }
        if status == MASQCRYPTO_AUTH { throw .authenticationFailed("message authentication failed") }
        guard status == 0 else {
            throw .invalidInput(
                "AEAD parameters rejected (key \(key.count), nonce \(nonce.count), tag \(tagLength) bytes)")
        }
        return out
    }

    public static func seal(_ algorithm: Algorithm, key: SecureBytes, nonce: [UInt8], ad: [UInt8], plaintext: [UInt8])
        throws(CryptoError) -> [UInt8]
    {
        let r: Result<[UInt8], CryptoError> = key.withUnsafeBytes { k in
            ad.withUnsafeBytes { a in
                plaintext.withUnsafeBytes { p in
                    Result { () throws(CryptoError) in try seal(algorithm, key: k, nonce: nonce, ad: a, plaintext: p) }
                }
            }
        }
        return try r.get()
    }

    public static func open(_ algorithm: Algorithm, key: SecureBytes, nonce: [UInt8], ad: [UInt8], ciphertext: [UInt8])
        throws(CryptoError) -> [UInt8]
    {
        let r: Result<[UInt8], CryptoError> = key.withUnsafeBytes { k in
            ad.withUnsafeBytes { a in
                ciphertext.withUnsafeBytes { c in
                    Result { () throws(CryptoError) in try open(algorithm, key: k, nonce: nonce, ad: a, ciphertext: c) }
                }
            }
        }
        return try r.get()
    }
}

/// NIST P-384 ECDH and ECDSA-SHA384 (Connectoid's curve).
public enum P384 {
    public static func keyPair() -> (privateKey: SecureBytes, publicKey: [UInt8]) {
        let privateKey = SecureBytes(count: 48)
        var publicKey = [UInt8](repeating: 0, count: 97)
        let status = privateKey.withUnsafeMutableBytes {
            masqcrypto_p384_keypair($0.baseAddress!.assumingMemoryBound(to: UInt8.self), &publicKey)
        }
        precondition(status == 0, "P-384 key generation failed")
        return (privateKey, publicKey)
    }

    /// Uncompressed SEC1 public key (97 bytes) for a big-endian private scalar.
    public static func publicKey(of privateKey: SecureBytes) throws(CryptoError) -> [UInt8] {
        var publicKey = [UInt8](repeating: 0, count: 97)
        let status = privateKey.withUnsafeBytes {
            masqcrypto_p384_public($0.baseAddress!.assumingMemoryBound(to: UInt8.self), $0.count, &publicKey)
        }
        guard status == 0 else { throw .invalidInput("invalid P-384 private key") }
        return publicKey
    }

    /// 49-byte compressed form of a valid point (either form accepted).
    public static func compress(_ point: [UInt8]) throws(CryptoError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 49)
        guard masqcrypto_p384_compress(point, point.count, &out) == 0 else {
            throw .invalidInput("not a valid P-384 point")
        }
        return out
    }

    public static func decompress(_ point: [UInt8]) throws(CryptoError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 97)
        guard masqcrypto_p384_decompress(point, point.count, &out) == 0 else {
            throw .invalidInput("not a valid P-384 point")
        }
        return out
    }

    /// ECDH with a SEC1 point (compressed or uncompressed); invalid points are rejected.
    public static func sharedSecret(privateKey: SecureBytes, peerPublicKey: [UInt8]) throws(CryptoError) -> SecureBytes
    {
        let shared = SecureBytes(count: 48)
        let status = privateKey.withUnsafeBytes { p in
            shared.withUnsafeMutableBytes { s in
                masqcrypto_p384_ecdh(
                    p.baseAddress!.assumingMemoryBound(to: UInt8.self), p.count, peerPublicKey, peerPublicKey.count,
                    s.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        guard status == 0 else { throw .invalidInput("P-384 ECDH failed: invalid private key or peer point") }
        return shared
    }

    /// ECDH with a DER SubjectPublicKeyInfo peer key (must be a valid P-384 point).
    public static func sharedSecret(privateKey: SecureBytes, peerSPKI: [UInt8]) throws(CryptoError) -> SecureBytes {
        let shared = SecureBytes(count: 48)
        let status = privateKey.withUnsafeBytes { p in
            shared.withUnsafeMutableBytes { s in
                masqcrypto_p384_ecdh_spki(
                    p.baseAddress!.assumingMemoryBound(to: UInt8.self), p.count, peerSPKI, peerSPKI.count,
                    s.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        guard status == 0 else { throw .invalidInput("P-384 ECDH failed: invalid private key or peer key") }
        return shared
    }

    /// DER-encoded ECDSA-SHA384 signature.
    public static func sign(_ message: [UInt8], privateKey: SecureBytes) throws(CryptoError) -> [UInt8] {
        guard privateKey.count == 48 else { throw .invalidInput("P-384 private key must be 48 bytes") }
        var signature = [UInt8](repeating: 0, count: 104)
        var length = 0
        let status = privateKey.withUnsafeBytes { p in
            message.withUnsafeBufferPointer { m in
                masqcrypto_p384_sign(
                    p.baseAddress!.assumingMemoryBound(to: UInt8.self), m.baseAddress, m.count, &signature, &length)
            }
        }
        guard status == 0 else { throw .invalidInput("P-384 signing failed") }
        return Array(signature[0..<length])
    }

    /// True only for a strict-DER valid signature by `publicKey` (SEC1 point).
    public static func verify(_ signature: [UInt8], message: [UInt8], publicKey: [UInt8]) -> Bool {
        message.withUnsafeBufferPointer { m in
            signature.withUnsafeBufferPointer { s in
                masqcrypto_p384_verify(publicKey, publicKey.count, m.baseAddress, m.count, s.baseAddress, s.count) == 0
            }
        }
    }
}

/// secp256k1 ECDSA with recovery (Ethereum's curve), OpenSSL's arithmetic.
public enum Secp256k1 {
    public static func keyPair() -> (privateKey: SecureBytes, publicKey: [UInt8]) {
        let privateKey = SecureBytes(count: 32)
        var publicKey = [UInt8](repeating: 0, count: 65)
        let status = privateKey.withUnsafeMutableBytes {
            masqcrypto_secp256k1_keypair($0.baseAddress!.assumingMemoryBound(to: UInt8.self), &publicKey)
        }
        precondition(status == 0, "secp256k1 key generation failed")
        return (privateKey, publicKey)
    }

    /// The uncompressed public key (65 bytes, 0x04 ‖ x ‖ y).
    public static func publicKey(of privateKey: SecureBytes) throws(CryptoError) -> [UInt8] {
        guard privateKey.count == 32 else { throw .invalidInput("secp256k1 private keys are 32 bytes") }
        var publicKey = [UInt8](repeating: 0, count: 65)
        let status = privateKey.withUnsafeBytes {
            masqcrypto_secp256k1_public($0.baseAddress!.assumingMemoryBound(to: UInt8.self), &publicKey)
        }
        guard status == 0 else { throw .invalidInput("invalid secp256k1 private key") }
        return publicKey
    }

    /// (r, s, recovery id) over a 32-byte digest; s is low (EIP-2).
    public static func sign(digest: [UInt8], privateKey: SecureBytes) throws(CryptoError) -> (
        r: [UInt8], s: [UInt8], recovery: UInt8
    ) {
        guard digest.count == 32, privateKey.count == 32 else {
            throw .invalidInput("secp256k1 signs 32-byte digests with 32-byte keys")
        }
        var r = [UInt8](repeating: 0, count: 32), s = [UInt8](repeating: 0, count: 32)
        var v: UInt8 = 0
        let status = privateKey.withUnsafeBytes {
            masqcrypto_secp256k1_sign($0.baseAddress!.assumingMemoryBound(to: UInt8.self), digest, &r, &s, &v)
        }
        guard status == 0 else { throw .invalidInput("secp256k1 signing failed") }
        return (r, s, v)
    }

    /// The public key that made (r, s, recovery) over `digest`, or nil.
    public static func recover(digest: [UInt8], r: [UInt8], s: [UInt8], recovery: UInt8) -> [UInt8]? {
        guard digest.count == 32, r.count == 32, s.count == 32 else { return nil }
        var out = [UInt8](repeating: 0, count: 65)
        return masqcrypto_secp256k1_recover(digest, r, s, recovery, &out) == 0 ? out : nil
    }
}
