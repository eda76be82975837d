import Testing
@testable import MasqCrypto

/// Every test of every Wycheproof file in ../shared/vectors/wycheproof:
/// valid cases must produce the expected output, invalid ones must be
/// rejected, acceptable ones may go either way but must be right if accepted.
@Suite(.enabled(if: Vectors.available, "../shared/vectors is not next to the project (set MASQ_VECTORS)"))
struct WycheproofTests {
    struct Tally {
        var passed = 0
        var failures: [String] = []
        mutating func check(_ ok: Bool, _ id: Any, _ what: String) {
            if ok { passed += 1 } else { failures.append("tcId \(id): \(what)") }
        }
    }

    func run(
        _ file: String, expectedTests: Int? = nil, _ body: ([String: Any], [String: Any], inout Tally) throws -> Void
    ) throws {
        let root = try Vectors.json("wycheproof/" + file)
        var tally = Tally()
        for group in root["testGroups"] as! [[String: Any]] {
            for test in group["tests"] as! [[String: Any]] { try body(group, test, &tally) }
        }
        let declared = root["numberOfTests"] as? Int
        #expect(tally.failures.isEmpty, "\(file): \(tally.failures.count) failures: \(tally.failures.prefix(10))")
        #expect(tally.passed == declared, "\(file): ran \(tally.passed) of \(declared ?? -1) tests")
    }

    @Test func x25519() throws {
        try run("x25519_test.json") { _, t, tally in
            let result = t["result"] as! String
            let shared = try? X25519.sharedSecret(
                privateKey: SecureBytes(hex(t["private"] as! String)), peerPublicKey: hex(t["public"] as! String))
            let expected = hex(t["shared"] as! String)
            switch result {
            case "valid": tally.check(shared?.bytes == expected, t["tcId"]!, "valid exchange gave a different secret")
            case "invalid": tally.check(shared == nil, t["tcId"]!, "invalid public key accepted")
            default:
                tally.check(
                    shared == nil || shared!.bytes == expected, t["tcId"]!, "acceptable case gave a wrong secret")
            }
        }
    }

    @Test func ed25519() throws {
        try run("ed25519_test.json") { group, t, tally in
            let publicKey = hex((group["publicKey"] as! [String: Any])["pk"] as! String)
            let ok = Ed25519.verify(hex(t["sig"] as! String), message: hex(t["msg"] as! String), publicKey: publicKey)
            tally.check(ok == (t["result"] as! String == "valid"), t["tcId"]!, "verify said \(ok)")
        }
    }

    func aead(_ file: String, _ algorithm: AEAD.Algorithm) throws {
        try run(file) { group, t, tally in
            let tagLength = (group["tagSize"] as! Int) / 8
            let key = hex(t["key"] as! String), nonce = hex(t["iv"] as! String), ad = hex(t["aad"] as! String)
            let message = hex(t["msg"] as! String)
            let sealed = hex(t["ct"] as! String) + hex(t["tag"] as! String)
            let opened: [UInt8]? = key.withUnsafeBytes { k in
                ad.withUnsafeBytes { a in
                    sealed.withUnsafeBytes { c in
                        try? AEAD.open(algorithm, key: k, nonce: nonce, ad: a, ciphertext: c, tagLength: tagLength)
                    }
                }
            }
            let resealed: [UInt8]? = key.withUnsafeBytes { k in
                ad.withUnsafeBytes { a in
                    message.withUnsafeBytes { m in
                        try? AEAD.seal(algorithm, key: k, nonce: nonce, ad: a, plaintext: m, tagLength: tagLength)
                    }
                }
            }
            if !AEAD.supportsNonce(algorithm, length: nonce.count) {
                // Outside what we support (OpenSSL 3 caps GCM nonces at 128 bytes): refused, never wrong.
                tally.check(opened == nil && resealed == nil, t["tcId"]!, "unsupported nonce length not refused")
            } else if t["result"] as! String == "valid" {
                tally.check(opened == message && resealed == sealed, t["tcId"]!, "valid case failed")
            } else {
                tally.check(opened == nil, t["tcId"]!, "invalid ciphertext opened")
            }
        }
    }

    @Test func chacha20Poly1305() throws { try aead("chacha20_poly1305_test.json", .chacha20Poly1305) }
    @Test func aesGCM() throws { try aead("aes_gcm_test.json", .aesGCM) }

    @Test func hkdfSHA256() throws {
        try run("hkdf_sha256_test.json") { _, t, tally in
            let okm = try? Hash.hkdfSHA256(
                salt: hex(t["salt"] as! String), ikm: hex(t["ikm"] as! String),
                info: hex(t["info"] as! String), length: t["size"] as! Int)
            if t["result"] as! String == "valid" {
                tally.check(okm?.bytes == hex(t["okm"] as! String), t["tcId"]!, "wrong output")
            } else {
                tally.check(okm == nil, t["tcId"]!, "invalid size accepted")
            }
        }
    }

    @Test func ecdhP384() throws {
        try run("ecdh_secp384r1_test.json") { _, t, tally in
            let shared = try? P384.sharedSecret(
                privateKey: SecureBytes(hex(t["private"] as! String)), peerSPKI: hex(t["public"] as! String))
            let expected = hex(t["shared"] as! String)
            switch t["result"] as! String {
            case "valid": tally.check(shared?.bytes == expected, t["tcId"]!, "valid exchange failed")
            case "invalid": tally.check(shared == nil, t["tcId"]!, "invalid key accepted")
            default:
                tally.check(
                    shared == nil || shared!.bytes == expected, t["tcId"]!, "acceptable case gave a wrong secret")
            }
        }
    }

    @Test func ecdsaP384SHA384() throws {
        try run("ecdsa_secp384r1_sha384_test.json") { group, t, tally in
            let publicKey = hex((group["publicKey"] as! [String: Any])["uncompressed"] as! String)
            let ok = P384.verify(hex(t["sig"] as! String), message: hex(t["msg"] as! String), publicKey: publicKey)
            switch t["result"] as! String {
            case "valid": tally.check(ok, t["tcId"]!, "valid signature rejected")
            case "invalid": tally.check(!ok, t["tcId"]!, "invalid signature accepted")
            default: tally.check(true, t["tcId"]!, "")
            }
        }
    }
}
