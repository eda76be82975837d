import Testing
@testable import MasqCrypto

/// The AESGCM cipher suite (CipherSuite.aesGCM): Noise with AES-256-GCM,
/// checked against every published cacophony vector of that cipher, and the
/// Double Ratchet whose chain step is HMAC-SHA256 and whose messages are
/// AES-256-GCM (version 3).
@Suite(.enabled(if: Vectors.available, "../shared/vectors is not next to the project (set MASQ_VECTORS)"))
struct NoiseAESGCMVectorTests {
    @Test func allPublishedVectors() throws {
        let vectors = try Vectors.json("noise/cacophony-25519-aesgcm-sha256.json")["vectors"] as! [[String: Any]]
        #expect(vectors.count == 9)
        var covered: Set<String> = []
        for v in vectors {
            let name = v["protocol_name"] as! String
            let patternName = String(name.split(separator: "_")[1])
            let pattern = try #require(Noise.Pattern(rawValue: patternName), "pattern \(patternName)")
            #expect(pattern.protocolName(.aesGCM) == name)
            covered.insert(patternName)
            func key(_ field: String) -> SecureBytes? { (v[field] as? String).map { SecureBytes(hex($0)) } }
            func psks(_ field: String) -> [SecureBytes] { (v[field] as? [String] ?? []).map { SecureBytes(hex($0)) } }
            let initiator = try Noise.Handshake(
                pattern: pattern, role: .initiator, prologue: hex(v["init_prologue"] as! String),
                staticKey: key("init_static"), remoteStatic: (v["init_remote_static"] as? String).map(hex),
                psks: psks("init_psks"), ephemeral: key("init_ephemeral"), suite: .aesGCM)
            let responder = try Noise.Handshake(
                pattern: pattern, role: .responder, prologue: hex(v["resp_prologue"] as! String),
                staticKey: key("resp_static"), remoteStatic: (v["resp_remote_static"] as? String).map(hex),
                psks: psks("resp_psks"), ephemeral: key("resp_ephemeral"), suite: .aesGCM)
            var results: (Noise.Result, Noise.Result)?
            for (i, message) in (v["messages"] as! [[String: String]]).enumerated() {
                let payload = hex(message["payload"]!), expected = hex(message["ciphertext"]!)
                let initiatorSends = i % 2 == 0
                let (sender, receiver) = initiatorSends ? (initiator, responder) : (responder, initiator)
                if !sender.isComplete {
                    let written = try sender.writeMessage(payload: payload)
                    #expect(written == expected, "\(name) handshake message \(i)")
                    #expect(try receiver.readMessage(written) == payload)
                    if initiator.isComplete && responder.isComplete {
                        results = (try initiator.result(), try responder.result())
                        #expect(
                            results!.0.handshakeHash == hex(v["handshake_hash"] as! String), "\(name) handshake hash")
                    }
                } else {
                    let (send, receive) =
                        initiatorSends ? (results!.0.send, results!.1.receive) : (results!.1.send, results!.0.receive)
                    let written = try send.encrypt(ad: [], plaintext: payload)
                    #expect(written == expected, "\(name) transport message \(i)")
                    #expect(try receive.decrypt(ad: [], ciphertext: written) == payload)
                }
            }
            #expect(results != nil, "\(name) did not complete")
        }
        #expect(covered == ["KK", "IK", "XX", "NNpsk0", "NKpsk0", "XXpsk3", "KKpsk0", "KKpsk2", "IKpsk2"])
    }
}

@Suite struct AESGCMRatchetTests {
    func pair(_ suite: CipherSuite = .aesGCM) throws -> (alice: DoubleRatchet, bob: DoubleRatchet) {
        let secret = SecureBytes.random(count: 32)
        let bobKey = X25519.keyPair()
        let alice = try DoubleRatchet(sharedSecret: secret, peerRatchetKey: bobKey.publicKey, suite: suite)
        let bob = try DoubleRatchet(sharedSecret: secret, ownRatchetKey: bobKey, suite: suite)
        return (alice, bob)
    }

    @Test func messagesRoundTripOutOfOrderWithVersion3() throws {
        var (alice, bob) = try pair()
        let m1 = try alice.encrypt([1], associatedData: [9]), m2 = try alice.encrypt([2], associatedData: [9])
        #expect(m1[0] == 3 && m1.count == DoubleRatchet.headerLength + 1 + 16)
        #expect(try bob.decrypt(m2, associatedData: [9]) == [2])
        #expect(try bob.decrypt(m1, associatedData: [9]) == [1])
        #expect(throws: CryptoError.self) { try bob.decrypt(m1, associatedData: [9]) }  // replay
        let reply = try bob.encrypt([3])
        #expect(try alice.decrypt(reply) == [3])
        var tampered = try alice.encrypt([4])
        tampered[tampered.count - 1] ^= 1
        #expect(throws: CryptoError.self) { try bob.decrypt(tampered) }
        #expect(throws: CryptoError.self) { try bob.decrypt(try alice.encrypt([5]), associatedData: [1]) }  // wrong AD
    }

    @Test func stateSurvivesSerializationAndNamesItsSuite() throws {
        var (alice, bob) = try pair()
        _ = try bob.decrypt(try alice.encrypt([1]))
        let saved = bob.serialized()
        #expect(saved[0] == 3)
        var restored = try DoubleRatchet(serialized: saved)
        #expect(restored.suite == .aesGCM)
        #expect(try restored.decrypt(try alice.encrypt([2])) == [2])
    }

    @Test func suitesDoNotMix() throws {
        var (alice, _) = try pair(.chaChaPoly)
        var (_, bob) = try pair(.aesGCM)
        let chacha = try alice.encrypt([1])
        #expect(chacha[0] == 2)
        #expect(throws: CryptoError.self) { try bob.decrypt(chacha) }
    }

    @Test func theChainStepIsHMACSHA256() throws {
        let ck = SecureBytes([UInt8](repeating: 7, count: 32))
        let (mk, next) = DoubleRatchet.chainStep(ck, .aesGCM)
        #expect(mk.bytes == Hash.hmacSHA256(key: ck.bytes, data: [1]))
        #expect(next.bytes == Hash.hmacSHA256(key: ck.bytes, data: [2]))
    }

    @Test func sessionsOfTheSuiteHandshakeAndTalk() throws {
        let a = X25519.keyPair(), b = X25519.keyPair()
        let psk = SecureBytes.random(count: 32)
        let i = try SecureSession(pattern: .XXpsk3, role: .initiator, staticKey: a.privateKey, psk: psk, suite: .aesGCM)
        let r = try SecureSession(pattern: .XXpsk3, role: .responder, staticKey: b.privateKey, psk: psk, suite: .aesGCM)
        _ = try r.readHandshake(i.writeHandshake())
        _ = try i.readHandshake(r.writeHandshake())
        _ = try r.readHandshake(i.writeHandshake())
        let sealed = try r.seal([42])
        #expect(sealed[0] == 3)
        #expect(try i.open(sealed) == [42])
        let restored = try SecureSession(serialized: try i.serialized())
        #expect(restored.suite == .aesGCM)
        #expect(try r.open(try restored.seal([43])) == [43])
    }
}
