import MasqCrypto

/// Onion layers for circuit set-up, and the per-hop data layers.
///
/// A set-up onion is `size` bytes. Layer i (for hop i):
///
///     eph (32) ‖ ChaCha20-Poly1305(hk, nonce 0, ad eph, header 48) ‖ ChaCha20(sk, body)
///     header = kind (1) ‖ next hop key (32) ‖ token (8) ‖ payer proof ‖ zeros (to 256)
///     payer proof = nonce (16) ‖ u64 timestamp ‖ u8 n ‖ payer wallet (n) ‖ u8 m ‖ signature (m)
///     keys   = HKDF-SHA256(X25519(eph, hop), salt "masq mesh onion v1", info eph ‖ hop)
///            → hk ‖ sk ‖ dk (data layer) ‖ ef ‖ eb (exit AEAD, forward and back)
///
/// A hop authenticates its header, decrypts the body, and passes it on with
/// `overhead` random bytes appended, so every hop sees an onion of the same
/// size and learns only its own header (not its position). Data cells carry
/// one ChaCha20 layer per hop (each hop removes or adds its own, so the bytes
/// differ on every link) around an AEAD between the origin and the exit.
enum Onion {
    static let headerBytes = 256
    static let overhead = 32 + headerBytes + 16
    static let salt = Array("masq mesh onion v1".utf8)

    enum Kind: UInt8 { case relay = 1, exit = 2, terminal = 3 }

    struct Keys {
        let data: SecureBytes
        let exitForward: SecureBytes
        let exitBack: SecureBytes
    }

    /// Who pays a hop for a circuit, signed by the consuming wallet.
    struct PayerProof: Equatable {
        var payer: String
        var nonce: [UInt8]
        var timestamp: UInt64
        var signature: [UInt8]
    }

    struct Hop {
        let agreement: [UInt8]
        let kind: Kind
        let next: NodeKey?
        let token: [UInt8]
        var payer: PayerProof? = nil
    }

    struct Peeled {
        let kind: Kind
        let next: NodeKey
        let token: [UInt8]
        let payer: PayerProof?
        let keys: Keys
        let inner: [UInt8]
    }

    private static func derive(_ shared: SecureBytes, eph: [UInt8], hop: [UInt8]) throws(MeshError) -> (SecureBytes, SecureBytes, Keys) {
        guard let okm = try? Hash.hkdfSHA256(salt: SecureBytes(salt), ikm: shared, info: eph + hop, length: 160) else { throw .failed("key derivation failed") }
        let b = okm.bytes
        return (SecureBytes(b[0..<32]), SecureBytes(b[32..<64]),
                Keys(data: SecureBytes(b[64..<96]), exitForward: SecureBytes(b[96..<128]), exitBack: SecureBytes(b[128..<160])))
    }

    /// Build an onion for `hops` (first hop outermost) around `payload`.
    static func build(_ hops: [Hop], payload: [UInt8], size: Int) throws(MeshError) -> (onion: [UInt8], keys: [Keys]) {
        guard payload.count <= size - overhead * hops.count else { throw .invalid("onion payload too large for \(hops.count) hops") }
        var inner = payload + Random.bytes(size - payload.count)
        var keys: [Keys] = []
        for hop in hops.reversed() {
            let eph = X25519.keyPair()
            guard let shared = try? X25519.sharedSecret(privateKey: eph.privateKey, peerPublicKey: hop.agreement) else { throw .failed("bad hop key") }
            let (hk, sk, k) = try derive(shared, eph: eph.publicKey, hop: hop.agreement)
            var header = [hop.kind.rawValue] + (hop.next?.bytes ?? [UInt8](repeating: 0, count: 32)) + hop.token
            if let proof = hop.payer {
                let payer = Array(proof.payer.utf8)
                guard proof.nonce.count == 16, payer.count <= 80, proof.signature.count <= 96 else { throw .invalid("payer proof too large") }
                var t = [UInt8](repeating: 0, count: 8)
                for i in 0..<8 { t[i] = UInt8(truncatingIfNeeded: proof.timestamp >> (56 - 8 * UInt64(i))) }
                header += proof.nonce + t + [UInt8(payer.count)] + payer + [UInt8(proof.signature.count)] + proof.signature
            }
            header += [UInt8](repeating: 0, count: headerBytes - header.count)
            guard let sealed = try? AEAD.seal(.chacha20Poly1305, key: hk, nonce: [UInt8](repeating: 0, count: 12), ad: eph.publicKey, plaintext: header) else {
                throw .failed("sealing failed")
            }
            var body = Array(inner[0..<(size - overhead)])
            xor(sk, counter: 0, &body)
            inner = eph.publicKey + sealed + body
            keys.insert(k, at: 0)
        }
        return (inner, keys)
    }

    /// Remove this node's layer.
    static func peel(_ onion: [UInt8], privateKey: SecureBytes, publicKey: [UInt8]) throws(MeshError) -> Peeled {
        guard onion.count > overhead else { throw .malformed("a short onion") }
        let eph = Array(onion[0..<32])
        guard let shared = try? X25519.sharedSecret(privateKey: privateKey, peerPublicKey: eph) else { throw .malformed("a bad onion key") }
        let (hk, sk, keys) = try derive(shared, eph: eph, hop: publicKey)
        guard let header = try? AEAD.open(.chacha20Poly1305, key: hk, nonce: [UInt8](repeating: 0, count: 12), ad: eph,
                                          ciphertext: Array(onion[32..<overhead])), header.count == headerBytes,
              let kind = Kind(rawValue: header[0]) else {
            throw .malformed("an onion layer that does not open")
        }
        var body = Array(onion[overhead...])
        xor(sk, counter: 0, &body)
        return Peeled(kind: kind, next: NodeKey(Array(header[1..<33])), token: Array(header[33..<41]), payer: payerProof(header),
                      keys: keys, inner: body + Random.bytes(overhead))
    }

    private static func payerProof(_ header: [UInt8]) -> PayerProof? {
        var at = 41
        let nonce = Array(header[at..<(at + 16)]); at += 16
        let timestamp = header[at..<(at + 8)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }; at += 8
        let n = Int(header[at]); at += 1
        guard n > 0, n <= 80, at + n < header.count else { return nil }
        guard let payer = String(validating: header[at..<(at + n)], as: UTF8.self) else { return nil }
        at += n
        let m = Int(header[at]); at += 1
        guard m > 0, m <= 96, at + m <= header.count else { return nil }
        return PayerProof(payer: payer, nonce: nonce, timestamp: timestamp, signature: Array(header[at..<(at + m)]))
    }

    /// XOR a data layer: the keystream of `key` at cell number `counter`.
    static func xor(_ key: SecureBytes, counter: UInt64, _ data: inout [UInt8]) {
        var nonce = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { nonce[4 + i] = UInt8(truncatingIfNeeded: counter >> (8 * UInt64(i))) }
        key.withUnsafeBytes { k in
            nonce.withUnsafeBytes { n in
                data.withUnsafeMutableBytes { d in ChaCha20.xor(key: k, nonce: n, d) }
            }
        }
    }

    /// XOR a data layer from `input` into `output` (the same memory is fine).
    static func xor(_ key: SecureBytes, counter: UInt64, from input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) {
        withUnsafeTemporaryAllocation(byteCount: 12, alignment: 4) { nonce in
            nonce.initializeMemory(as: UInt8.self, repeating: 0)
            for i in 0..<8 { nonce[4 + i] = UInt8(truncatingIfNeeded: counter >> (8 * UInt64(i))) }
            key.withUnsafeBytes { k in ChaCha20.xor(key: k, nonce: UnsafeRawBufferPointer(nonce), from: input, into: output) }
        }
    }

    /// Seal a cell in place between origin and exit: the plaintext fills all
    /// but the last 16 bytes, which receive the tag.
    static func sealCell(_ key: SecureBytes, counter: UInt64, _ cell: UnsafeMutableRawBufferPointer) -> Bool {
        let n = nonce(counter)
        return key.withUnsafeBytes { k in
            (try? AEAD.seal(.chacha20Poly1305, key: k, nonce: n, ad: UnsafeRawBufferPointer(start: nil, count: 0),
                            plaintext: UnsafeRawBufferPointer(rebasing: cell[0..<(cell.count - AEAD.tagLength)]), into: cell)) != nil
        }
    }

    /// Open a cell in place: the plaintext is left in all but the last 16 bytes.
    static func openCell(_ key: SecureBytes, counter: UInt64, _ cell: UnsafeMutableRawBufferPointer) -> Bool {
        let n = nonce(counter)
        return key.withUnsafeBytes { k in
            (try? AEAD.open(.chacha20Poly1305, key: k, nonce: n, ad: UnsafeRawBufferPointer(start: nil, count: 0), ciphertext: UnsafeRawBufferPointer(cell),
                            into: UnsafeMutableRawBufferPointer(rebasing: cell[0..<(cell.count - AEAD.tagLength)]))) != nil
        }
    }

    static func nonce(_ counter: UInt64) -> [UInt8] {
        var nonce = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { nonce[i] = UInt8(truncatingIfNeeded: counter >> (8 * UInt64(i))) }
        return nonce
    }
}
