import MasqConnectoidProtocol
import MasqCrypto
import MasqKernel
import Testing
@testable import MasqSharing

@Suite struct ShareEnvelopeTests {
    let signer = P384.keyPair()
    let mailbox = P384.keyPair()
    let other = P384.keyPair()

    func sealed(to recipient: [UInt8]) throws -> [UInt8] {
        let body = ShareEnvelope.Body(type: "records", share: "id", seq: 7, inbox: "x", records: "AAAA")
        return try ShareEnvelope.seal(
            body, signingKey: signer.privateKey, signingPub: try P384.compress(signer.publicKey),
            to: try P384.compress(recipient))
    }

    @Test func opensForItsMailboxWithAValidSignature() throws {
        let box = try sealed(to: mailbox.publicKey)
        let envelope = try ShareEnvelope.open(
            box, privateKey: mailbox.privateKey, pub: try P384.compress(mailbox.publicKey))
        #expect(envelope.body.seq == 7 && envelope.body.type == "records")
        #expect(envelope.signer == (try P384.compress(signer.publicKey)))
    }

    @Test func refusesTamperingAndOtherMailboxes() throws {
        let box = try sealed(to: mailbox.publicKey)
        var tampered = box
        tampered[60] ^= 1
        #expect(throws: MasqError.self) {
            try ShareEnvelope.open(tampered, privateKey: mailbox.privateKey, pub: try P384.compress(mailbox.publicKey))
        }
        #expect(throws: MasqError.self) {
            try ShareEnvelope.open(box, privateKey: other.privateKey, pub: try P384.compress(other.publicKey))
        }
        #expect(throws: MasqError.self) {
            try ShareEnvelope.open(
                Array(box.prefix(40)), privateKey: mailbox.privateKey, pub: try P384.compress(mailbox.publicKey))
        }
    }

    @Test func aSignatureOverAnotherRecipientDoesNotVerify() throws {
        // Re-seal the inner envelope (signed for `mailbox`) to `other`: the signature binds the recipient.
        let inner = try SealedBox.open(
            try sealed(to: mailbox.publicKey), privateKey: mailbox.privateKey, publicKey: mailbox.publicKey)
        let moved = try SealedBox.seal(inner, to: other.publicKey)
        #expect(throws: MasqError.self) {
            try ShareEnvelope.open(moved, privateKey: other.privateKey, pub: try P384.compress(other.publicKey))
        }
    }

    @Test func proofsDependOnTheSecret() {
        let a = ShareProof.claim(secret: SecureBytes([1, 2, 3]), guest: [9], inbox: "m")
        #expect(ShareProof.matches(a, ShareProof.claim(secret: SecureBytes([1, 2, 3]), guest: [9], inbox: "m")))
        #expect(!ShareProof.matches(a, ShareProof.claim(secret: SecureBytes([1, 2, 4]), guest: [9], inbox: "m")))
        #expect(!ShareProof.matches(nil, a))
    }
}
