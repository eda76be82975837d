import Testing
@testable import MasqCrypto

/// Known-answer tests from the RFCs that define each primitive.
@Suite struct KnownAnswerTests {
    @Test func x25519RFC7748() throws {
        // Section 5.2
        let cases = [
            (
                "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
                "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
                "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
            ),
            (
                "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
                "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
                "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957"
            )
        ]
        for (scalar, u, output) in cases {
            #expect(
                try X25519.sharedSecret(privateKey: SecureBytes(hex(scalar)), peerPublicKey: hex(u)).bytes
                    == hex(output))
        }
        // Section 6.1
        let alice = SecureBytes(hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
        let bob = SecureBytes(hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
        #expect(
            try X25519.publicKey(of: alice) == hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"))
        #expect(
            try X25519.publicKey(of: bob) == hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"))
        let shared = hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        #expect(try X25519.sharedSecret(privateKey: alice, peerPublicKey: X25519.publicKey(of: bob)).bytes == shared)
        #expect(try X25519.sharedSecret(privateKey: bob, peerPublicKey: X25519.publicKey(of: alice)).bytes == shared)
        // A low-order point gives no secret and is refused.
        #expect(throws: CryptoError.self) {
            try X25519.sharedSecret(privateKey: alice, peerPublicKey: [UInt8](repeating: 0, count: 32))
        }
    }

    @Test func ed25519RFC8032() throws {
        let cases = [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
            ),
            (
                "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
            ),
            (
                "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
                "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"
            )
        ]
        for (secret, publicKey, message, signature) in cases {
            let key = SecureBytes(hex(secret))
            #expect(try Ed25519.publicKey(of: key) == hex(publicKey))
            #expect(try Ed25519.sign(hex(message), privateKey: key) == hex(signature))
            #expect(Ed25519.verify(hex(signature), message: hex(message), publicKey: hex(publicKey)))
            var forged = hex(signature)
            forged[5] ^= 1
            #expect(!Ed25519.verify(forged, message: hex(message), publicKey: hex(publicKey)))
        }
    }

    @Test func chacha20Poly1305RFC8439() throws {
        let key = SecureBytes(hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"))
        let nonce = hex("070000004041424344454647")
        let ad = hex("50515253c0c1c2c3c4c5c6c7")
        let plaintext = Array(
            "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it."
                .utf8)
        let expected = hex(
            "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116"
                + "1ae10b594f09e26a7e902ecbd0600691")
        #expect(try AEAD.seal(.chacha20Poly1305, key: key, nonce: nonce, ad: ad, plaintext: plaintext) == expected)
        #expect(try AEAD.open(.chacha20Poly1305, key: key, nonce: nonce, ad: ad, ciphertext: expected) == plaintext)
        var tampered = expected
        tampered[0] ^= 0x80
        #expect(throws: CryptoError.authenticationFailed("message authentication failed")) {
            try AEAD.open(.chacha20Poly1305, key: key, nonce: nonce, ad: ad, ciphertext: tampered)
        }
        #expect(throws: CryptoError.self) {
            try AEAD.open(.chacha20Poly1305, key: key, nonce: nonce, ad: [1], ciphertext: expected)
        }
    }

    @Test func chacha20KeystreamRFC8439() {
        func keystream(_ key: [UInt8], _ counter: UInt32, _ nonce: [UInt8], _ count: Int) -> [UInt8] {
            var out = [UInt8](repeating: 0xAA, count: count)
            key.withUnsafeBytes { k in
                nonce.withUnsafeBytes { n in
                    out.withUnsafeMutableBytes { ChaCha20.keystream(key: k, counter: counter, nonce: n, into: $0) }
                }
            }
            return out
        }
        // Section 2.3.2: the block function
        #expect(
            keystream(Array(0..<32), 1, hex("000000090000004a00000000"), 64)
                == hex(
                    "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4ed2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
                ))
        // Appendix A.1, test vector 1: all-zero key and nonce, block 0
        #expect(
            keystream([UInt8](repeating: 0, count: 32), 0, [UInt8](repeating: 0, count: 12), 64)
                == hex(
                    "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
                ))
        // Longer than one internal chunk, and the counter carries on across blocks.
        let long = keystream(Array(0..<32), 0, hex("000000090000004a00000000"), 1000)
        #expect(Array(long[64..<128]) == keystream(Array(0..<32), 1, hex("000000090000004a00000000"), 64))
    }

    @Test func hkdfRFC5869() throws {
        let ikm = hex("0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b")
        #expect(
            try Hash.hkdfSHA256(
                salt: hex("000102030405060708090a0b0c"), ikm: ikm, info: hex("f0f1f2f3f4f5f6f7f8f9"), length: 42
            ).bytes
                == hex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"))
        #expect(
            try Hash.hkdfSHA256(salt: [], ikm: ikm, info: [], length: 42).bytes
                == hex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"))
        #expect(throws: CryptoError.self) { try Hash.hkdfSHA256(salt: [], ikm: ikm, info: [], length: 255 * 32 + 1) }
    }

    @Test func scryptRFC7914() throws {
        #expect(
            try Hash.scrypt(password: [], salt: [], n: 16, r: 1, p: 1, length: 64).bytes
                == hex(
                    "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"
                ))
        #expect(
            try Hash.scrypt(
                password: Array("password".utf8), salt: Array("NaCl".utf8), n: 1024, r: 8, p: 16, length: 64
            ).bytes
                == hex(
                    "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
                ))
        // N not a power of 2
        #expect(throws: CryptoError.self) { try Hash.scrypt(password: [], salt: [], n: 15, r: 1, p: 1, length: 16) }
    }

    @Test func sha256AndHMAC() {
        #expect(
            Hash.sha256(Array("abc".utf8)) == hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))
        // RFC 4231 test case 2
        #expect(
            Hash.hmacSHA256(key: Array("Jefe".utf8), data: Array("what do ya want for nothing?".utf8))
                == hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"))
    }

    @Test func p384RoundTrips() throws {
        let alice = P384.keyPair(), bob = P384.keyPair()
        let ab = try P384.sharedSecret(privateKey: alice.privateKey, peerPublicKey: bob.publicKey)
        let ba = try P384.sharedSecret(privateKey: bob.privateKey, peerPublicKey: P384.compress(alice.publicKey))
        #expect(ab == ba)
        #expect(try P384.decompress(P384.compress(alice.publicKey)) == alice.publicKey)
        #expect(try P384.publicKey(of: alice.privateKey) == alice.publicKey)
        let signature = try P384.sign([1, 2, 3], privateKey: alice.privateKey)
        #expect(P384.verify(signature, message: [1, 2, 3], publicKey: alice.publicKey))
        #expect(P384.verify(signature, message: [1, 2, 3], publicKey: try P384.compress(alice.publicKey)))
        #expect(!P384.verify(signature, message: [1, 2, 4], publicKey: alice.publicKey))
        var bad = alice.publicKey
        bad[50] ^= 1
        #expect(throws: CryptoError.self) { try P384.compress(bad) }
    }

    @Test func randomnessIsNotConstant() {
        #expect(Random.bytes(32) != Random.bytes(32))
        #expect(SecureBytes.random(count: 32) != SecureBytes.random(count: 32))
    }
}
