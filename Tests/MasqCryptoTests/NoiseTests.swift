import Testing
@testable import MasqCrypto

/// The cacophony vectors for every pattern Masq implements, byte for byte:
/// injected ephemerals, every handshake and transport message, the hash.
@Suite(.enabled(if: Vectors.available, "../shared/vectors is not next to the project (set MASQ_VECTORS)"))
struct NoiseVectorTests {
    static var vectors: [[String: Any]] {
        (try? Vectors.json("noise/cacophony-25519-chachapoly-sha256.json")["vectors"] as? [[String: Any]]) ?? []
    }

    @Test func allPublishedVectors() throws {
        let vectors = Self.vectors
        #expect(vectors.count == 6)
        var covered: Set<String> = []
        for v in vectors {
            let name = v["protocol_name"] as! String
            let patternName = name.split(separator: "_")[1]
            let pattern = try #require(Noise.Pattern(rawValue: String(patternName)), "pattern \(patternName)")
            covered.insert(pattern.rawValue)
            func key(_ field: String) -> SecureBytes? { (v[field] as? String).map { SecureBytes(hex($0)) } }
            func psks(_ field: String) -> [SecureBytes] { (v[field] as? [String] ?? []).map { SecureBytes(hex($0)) } }
            let initiator = try Noise.Handshake(
                pattern: pattern, role: .initiator, prologue: hex(v["init_prologue"] as! String),
                staticKey: key("init_static"), remoteStatic: (v["init_remote_static"] as? String).map(hex),
                psks: psks("init_psks"), ephemeral: key("init_ephemeral"))
            let responder = try Noise.Handshake(
                pattern: pattern, role: .responder, prologue: hex(v["resp_prologue"] as! String),
                staticKey: key("resp_static"), remoteStatic: (v["resp_remote_static"] as? String).map(hex),
                psks: psks("resp_psks"), ephemeral: key("resp_ephemeral"))
            var initiatorResult: Noise.Result?
            var responderResult: Noise.Result?
            for (i, message) in (v["messages"] as! [[String: String]]).enumerated() {
                let payload = hex(message["payload"]!)
                let expected = hex(message["ciphertext"]!)
                let initiatorSends = i % 2 == 0
                let (sender, receiver) = initiatorSends ? (initiator, responder) : (responder, initiator)
                if !sender.isComplete {
                    let written = try sender.writeMessage(payload: payload)
                    #expect(written == expected, "\(name) handshake message \(i)")
                    #expect(try receiver.readMessage(written) == payload, "\(name) message \(i) payload")
                    if initiator.isComplete && responder.isComplete {
                        initiatorResult = try initiator.result()
                        responderResult = try responder.result()
                        #expect(
                            initiatorResult!.handshakeHash == hex(v["handshake_hash"] as! String),
                            "\(name) handshake hash")
                        #expect(responderResult!.handshakeHash == initiatorResult!.handshakeHash)
                    }
                } else {
                    let (send, receive) =
                        initiatorSends
                        ? (initiatorResult!.send, responderResult!.receive)
                        : (responderResult!.send, initiatorResult!.receive)
                    let written = try send.encrypt(ad: [], plaintext: payload)
                    #expect(written == expected, "\(name) transport message \(i)")
                    #expect(try receive.decrypt(ad: [], ciphertext: written) == payload)
                }
            }
            #expect(initiatorResult != nil, "\(name) handshake did not complete")
        }
        #expect(covered == ["KK", "IK", "XX", "NNpsk0", "XXpsk3", "IKpsk2"])
    }
}

@Suite struct NoiseBehaviourTests {
    @Test func xxpsk3AuthenticatesBothStaticKeys() throws {
        let a = X25519.keyPair(), b = X25519.keyPair()
        let psk = SecureBytes.random(count: 32)
        let i = try Noise.Handshake(pattern: .XXpsk3, role: .initiator, staticKey: a.privateKey, psks: [psk])
        let r = try Noise.Handshake(pattern: .XXpsk3, role: .responder, staticKey: b.privateKey, psks: [psk])
        _ = try r.readMessage(i.writeMessage())
        _ = try i.readMessage(r.writeMessage())
        _ = try r.readMessage(i.writeMessage(payload: [7]))
        #expect(try i.result().remoteStatic == b.publicKey)
        #expect(try r.result().remoteStatic == a.publicKey)
    }

    @Test func aWrongPSKFailsTheHandshake() throws {
        let i = try Noise.Handshake(
            pattern: .XXpsk3, role: .initiator, staticKey: X25519.keyPair().privateKey,
            psks: [SecureBytes.random(count: 32)])
        let r = try Noise.Handshake(
            pattern: .XXpsk3, role: .responder, staticKey: X25519.keyPair().privateKey,
            psks: [SecureBytes.random(count: 32)])
        _ = try r.readMessage(i.writeMessage())
        _ = try i.readMessage(r.writeMessage())
        // The initiator's last message carries its static key under the PSK; the responder cannot open it.
        #expect(throws: CryptoError.self) { try r.readMessage(i.writeMessage()) }
        #expect(throws: CryptoError.self) { try r.result() }
        #expect(throws: CryptoError.self) { try r.writeMessage() }
    }

    @Test func aMitmWithoutThePSKLearnsNothingAndIsCaught() throws {
        // Mallory relays but substitutes her own ephemeral: the handshake hashes diverge and decryption fails.
        let psk = SecureBytes.random(count: 32)
        let i = try Noise.Handshake(
            pattern: .XXpsk3, role: .initiator, staticKey: X25519.keyPair().privateKey, psks: [psk])
        let r = try Noise.Handshake(
            pattern: .XXpsk3, role: .responder, staticKey: X25519.keyPair().privateKey, psks: [psk])
        var first = try i.writeMessage()
        first.replaceSubrange(0..<32, with: X25519.keyPair().publicKey)
        // With a PSK, even the first message's (empty) payload is authenticated: the swap is caught at once.
        #expect(throws: CryptoError.self) { try r.readMessage(first) }
        // A relay that answers in the responder's place without the PSK gets through messages 1 and 2
        // (the PSK enters at message 3) but cannot read message 3 nor forge the responder's
        // confirmation, which is why pairing waits for that confirmation before trusting anything.
        let mallory = try Noise.Handshake(
            pattern: .XXpsk3, role: .responder, staticKey: X25519.keyPair().privateKey,
            psks: [SecureBytes.random(count: 32)])
        let i2 = try Noise.Handshake(
            pattern: .XXpsk3, role: .initiator, staticKey: X25519.keyPair().privateKey, psks: [psk])
        _ = try mallory.readMessage(i2.writeMessage())
        _ = try i2.readMessage(mallory.writeMessage())
        #expect(throws: CryptoError.self) { try mallory.readMessage(i2.writeMessage()) }
        let forged = Random.bytes(40)
        #expect(throws: CryptoError.self) { try i2.result().receive.decrypt(ad: [], ciphertext: forged) }
    }

    @Test func truncatedAndOversizedMessagesAreRejected() throws {
        let i = try Noise.Handshake(pattern: .XX, role: .initiator, staticKey: X25519.keyPair().privateKey)
        let r = try Noise.Handshake(pattern: .XX, role: .responder, staticKey: X25519.keyPair().privateKey)
        #expect(throws: CryptoError.self) { try r.readMessage([1, 2, 3]) }
        let r2 = try Noise.Handshake(pattern: .XX, role: .responder, staticKey: X25519.keyPair().privateKey)
        #expect(throws: CryptoError.self) { try r2.readMessage([UInt8](repeating: 0, count: 70_000)) }
        #expect(throws: CryptoError.self) { try i.readMessage([]) }  // not its turn
        #expect(throws: CryptoError.self) {
            try Noise.Handshake(pattern: .XXpsk3, role: .initiator, staticKey: X25519.keyPair().privateKey)
        }
        #expect(throws: CryptoError.self) {
            try Noise.Handshake(pattern: .KK, role: .initiator, staticKey: X25519.keyPair().privateKey)
        }
    }
}
