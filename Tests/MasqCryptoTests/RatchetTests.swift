import Testing
@testable import MasqCrypto

/// A pair of sessions after a real KK handshake.
func sessionPair(limits: DoubleRatchet.Limits = DoubleRatchet.Limits()) throws -> (
    alice: SecureSession, bob: SecureSession
) {
    let a = X25519.keyPair(), b = X25519.keyPair()
    let alice = try SecureSession(
        pattern: .KK, role: .initiator, staticKey: a.privateKey, remoteStatic: b.publicKey, limits: limits)
    let bob = try SecureSession(
        pattern: .KK, role: .responder, staticKey: b.privateKey, remoteStatic: a.publicKey, limits: limits)
    _ = try bob.readHandshake(alice.writeHandshake())
    _ = try alice.readHandshake(bob.writeHandshake())
    #expect(alice.isEstablished && bob.isEstablished)
    #expect(alice.handshakeHash == bob.handshakeHash)
    // The responder speaks first; after that both can send.
    #expect(!alice.canSend && bob.canSend)
    #expect(try alice.open(bob.seal(Array("hello".utf8))) == Array("hello".utf8))
    #expect(alice.canSend)
    return (alice, bob)
}

func text(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite struct RatchetTests {
    @Test func conversationBothWays() throws {
        let (alice, bob) = try sessionPair()
        for round in 0..<20 {
            for i in 0..<(round % 3 + 1) {
                #expect(
                    try bob.open(alice.seal(text("a\(round).\(i)"), associatedData: [1]), associatedData: [1])
                        == text("a\(round).\(i)"))
            }
            #expect(try alice.open(bob.seal(text("b\(round)"))) == text("b\(round)"))
        }
    }

    @Test func everyMessageHasItsOwnKey() throws {
        let (alice, _) = try sessionPair()
        let a = try alice.seal(text("same")), b = try alice.seal(text("same"))
        #expect(a != b)
        #expect(a.suffix(20) != b.suffix(20))
    }

    @Test func outOfOrderAndLostMessages() throws {
        let (alice, bob) = try sessionPair()
        let m = try (0..<6).map { try alice.seal(text("m\($0)")) }
        #expect(try bob.open(m[3]) == text("m3"))
        #expect(try bob.open(m[0]) == text("m0"))
        #expect(try bob.open(m[5]) == text("m5"))
        // m1 lost forever, m2 and m4 arrive late, across a DH ratchet step.
        let reply = try bob.seal(text("r"))
        #expect(try alice.open(reply) == text("r"))
        let after = try alice.seal(text("after the step"))
        #expect(try bob.open(after) == text("after the step"))
        #expect(try bob.open(m[4]) == text("m4"))
        #expect(try bob.open(m[2]) == text("m2"))
    }

    @Test func replaysAreRejected() throws {
        let (alice, bob) = try sessionPair()
        let m0 = try alice.seal(text("once")), m1 = try alice.seal(text("twice?"))
        #expect(try bob.open(m1) == text("twice?"))
        #expect(try bob.open(m0) == text("once"))  // from the skipped store, then gone
        #expect(throws: CryptoError.self) { try bob.open(m0) }
        #expect(throws: CryptoError.self) { try bob.open(m1) }
    }

    @Test func tamperingIsRejectedAndLeavesTheStateIntact() throws {
        let (alice, bob) = try sessionPair()
        let m = try alice.seal(text("payload"), associatedData: text("room-1"))
        for index in [0, 5, 33, 40, 45, m.count - 1] {
            var bad = m
            bad[index] ^= 0x01
            #expect(throws: CryptoError.self) { try bob.open(bad, associatedData: text("room-1")) }
        }
        #expect(throws: CryptoError.self) { try bob.open(m, associatedData: text("room-2")) }
        #expect(throws: CryptoError.self) { try bob.open(Array(m.prefix(30))) }
        #expect(throws: CryptoError.self) { try bob.open([]) }
        #expect(try bob.open(m, associatedData: text("room-1")) == text("payload"))
        #expect(try bob.open(alice.seal(text("next"))) == text("next"))
    }

    @Test func skippedKeysAreBounded() throws {
        var limits = DoubleRatchet.Limits()
        limits.maxSkipPerChain = 50
        limits.maxStoredSkipped = 60
        let (alice, bob) = try sessionPair(limits: limits)
        let burst = try (0..<52).map { try alice.seal(text("\($0)")) }
        #expect(throws: CryptoError.self) { try bob.open(burst[51]) }  // would skip 51 > 50
        #expect(try bob.open(burst[50]) == text("50"))  // skips exactly 50
        #expect(try bob.open(burst[7]) == text("7"))
        // Across three chains the store stays within its cap, forgetting the oldest keys.
        for _ in 0..<3 {
            _ = try alice.open(bob.seal(text("turn")))
            let more = try (0..<40).map { try alice.seal(text("\($0)")) }
            _ = try bob.open(more[39])
            _ = try alice.open(bob.seal(text("turn")))
        }
        let state = try DoubleRatchet(serialized: Array(try bob.serialized()[66...]))
        #expect(state.storedSkippedKeys <= 60)
    }

    @Test func stateSurvivesARestartMidConversation() throws {
        let (alice, bob) = try sessionPair()
        let pending = try alice.seal(text("sent before the restart"))
        let skippedOne = try alice.seal(text("late"))
        _ = try bob.open(try alice.seal(text("third")))
        let restored = try SecureSession(serialized: bob.serialized())
        #expect(restored.peerStaticKey == bob.peerStaticKey && restored.handshakeHash == bob.handshakeHash)
        #expect(try restored.open(pending) == text("sent before the restart"))
        #expect(try alice.open(restored.seal(text("back"))) == text("back"))
        #expect(try restored.open(skippedOne) == text("late"))
        let saved = try bob.serialized()
        for cut in [0, 1, 10, 66, 100, saved.count - 1] {
            #expect(throws: CryptoError.self) { try SecureSession(serialized: Array(saved.prefix(cut))) }
        }
    }

    @Test func forwardSecrecyAStolenStateCannotReadPastMessages() throws {
        let (alice, bob) = try sessionPair()
        let past = try (0..<3).map { try alice.seal(text("secret \($0)")) }
        for m in past { _ = try bob.open(m) }
        let stolen = try SecureSession(serialized: bob.serialized())
        for m in past { #expect(throws: CryptoError.self) { try stolen.open(m) } }
    }

    @Test func postCompromiseSecurityHealsAfterOneRoundTrip() throws {
        let (alice, bob) = try sessionPair()
        let thief = try SecureSession(serialized: bob.serialized())  // attacker copies Bob's state
        // Alice's next message is still readable with the stolen state...
        let m1 = try alice.seal(text("still exposed"))
        #expect(try thief.open(m1) == text("still exposed"))
        _ = try bob.open(m1)
        // ...but once Bob replies with a fresh ratchet key and Alice answers, the thief is locked out.
        _ = try alice.open(bob.seal(text("fresh key")))
        let m2 = try alice.seal(text("healed"))
        #expect(throws: CryptoError.self) { try thief.open(m2) }
        #expect(try bob.open(m2) == text("healed"))
    }

    @Test func handshakeRulesAreEnforced() throws {
        let (alice, _) = try sessionPair()
        #expect(throws: CryptoError.self) { try alice.writeHandshake() }
        let fresh = try SecureSession(pattern: .XX, role: .initiator, staticKey: X25519.keyPair().privateKey)
        #expect(throws: CryptoError.self) { try fresh.seal(text("too early")) }
        #expect(throws: CryptoError.self) { try fresh.serialized() }
        #expect(throws: CryptoError.self) { try fresh.readHandshake(Random.bytes(48)) }
        #expect(fresh.phase == .failed)
    }
}
