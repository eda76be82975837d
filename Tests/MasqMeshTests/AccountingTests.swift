import MasqCrypto
import Testing
@testable import MasqMesh
#if canImport(Glibc)
import Glibc
#endif

/// An Ed25519 wallet for tests (address = hex public key), like the ledger's.
final class TestWallet: MeshWallet, @unchecked Sendable {
    let keys = Ed25519.keyPair()
    var address: String { keys.publicKey.map { String($0, radix: 16).leftPadded }.joined() }
    func pay(to: String, amount: UInt128) throws -> String { "tx" }
    func sign(_ message: [UInt8]) throws -> [UInt8] { try Ed25519.sign(message, privateKey: keys.privateKey) }
    func verify(address: String, message: [UInt8], signature: [UInt8]) -> Bool {
        var key: [UInt8] = []
        var chars = Array(address.utf8)[...]
        while chars.count >= 2 { key.append(UInt8(String(decoding: chars.prefix(2), as: UTF8.self), radix: 16) ?? 0); chars = chars.dropFirst(2) }
        return Ed25519.verify(signature, message: message, publicKey: key)
    }
    func payments(after cursor: UInt64) throws -> (payments: [(from: String, amount: UInt128)], cursor: UInt64) { ([], cursor) }
}

extension String {
    var leftPadded: String { count == 1 ? "0" + self : self }
}

func temporaryDirectory() -> String {
    let path = "/tmp/masq-mesh-test-\(getpid())-\(Random.bytes(4).map { String($0) }.joined())"
    mkdir(path, 0o700)
    return path
}

@Suite struct AccountingTests {
    @Test func payerProofsAreSingleUseAndBoundToTheHop() throws {
        let consumer = TestWallet(), earner = TestWallet()
        let accountant = Accountant(directory: temporaryDirectory(), thresholds: PaymentThresholds())
        let hop = NodeIdentity.generate().key, other = NodeIdentity.generate().key
        let nonce = Random.bytes(16)
        let now: UInt64 = 1_800_000_000_000
        let signature = try consumer.sign(Accountant.proofMessage(nonce: nonce, timestamp: now, hop: hop))
        #expect(accountant.accept(payer: consumer.address, nonce: nonce, timestamp: now, signature: signature, me: hop, wallet: earner, now: now))
        // The same proof again: a replay.
        #expect(!accountant.accept(payer: consumer.address, nonce: nonce, timestamp: now, signature: signature, me: hop, wallet: earner, now: now + 1))
        // A proof for another hop, an old proof, a forged one.
        let n2 = Random.bytes(16)
        let s2 = try consumer.sign(Accountant.proofMessage(nonce: n2, timestamp: now, hop: other))
        #expect(!accountant.accept(payer: consumer.address, nonce: n2, timestamp: now, signature: s2, me: hop, wallet: earner, now: now))
        let n3 = Random.bytes(16)
        let s3 = try consumer.sign(Accountant.proofMessage(nonce: n3, timestamp: now - 600_000, hop: hop))
        #expect(!accountant.accept(payer: consumer.address, nonce: n3, timestamp: now - 600_000, signature: s3, me: hop, wallet: earner, now: now))
        let n4 = Random.bytes(16)
        let s4 = try TestWallet().sign(Accountant.proofMessage(nonce: n4, timestamp: now, hop: hop))
        #expect(!accountant.accept(payer: consumer.address, nonce: n4, timestamp: now, signature: s4, me: hop, wallet: earner, now: now))
        #expect(accountant.book.proofsRejected == 4)
    }

    @Test func thresholdCurveAsMASQ() {
        let t = PaymentThresholds()
        #expect(t.limit(ageSeconds: 1_199) == nil)
        #expect(t.limit(ageSeconds: 1_200) == 1_000_000_000_000_000_000)
        #expect(t.limit(ageSeconds: 1_200 + 10_800) == 750_000_000_000_000_000)
        #expect(t.limit(ageSeconds: 1_200 + 21_600) == 500_000_000_000_000_000)
        #expect(t.limit(ageSeconds: 1_000_000) == 500_000_000_000_000_000)
    }

    @Test func debtsArePaidWhenDueAndDebtorsBannedAndUnbanned() {
        var t = PaymentThresholds()
        t.debtThreshold = 1_000
        t.permanentAllowance = 500
        t.maturitySeconds = 10
        t.thresholdIntervalSeconds = 100
        t.graceSeconds = 5
        t.unbanBelow = 500
        let accountant = Accountant(directory: temporaryDirectory(), thresholds: t)
        let start: UInt64 = 1_000_000
        accountant.owe("creditor", 900, now: start)
        #expect(accountant.due(nowMilliseconds: start + 5_000).isEmpty)              // not mature
        #expect(accountant.due(nowMilliseconds: start + 10_000).isEmpty)             // 900 <= 1000
        #expect(accountant.due(nowMilliseconds: start + 60_000).map(\.1) == [900])   // the limit fell to 550
        accountant.paid("creditor", 900, txid: "t1")
        #expect(accountant.book.payables["creditor"]?.owed == 0)

        accountant.earn("debtor", 2_000, now: start)
        #expect(accountant.updateBans(nowMilliseconds: start + 14_000).banned.isEmpty)   // within grace
        #expect(accountant.updateBans(nowMilliseconds: start + 16_000).banned == ["debtor"])
        #expect(accountant.isBanned("debtor"))
        accountant.received(from: "debtor", 1_600)                                       // 400 left, below 500
        #expect(accountant.updateBans(nowMilliseconds: start + 17_000).unbanned == ["debtor"])
        #expect(!accountant.isBanned("debtor"))
    }

    @Test func onionCarriesThePayerProofToItsHopOnly() throws {
        let hops = (0..<3).map { _ in NodeIdentity.generate() }
        let proofs = (0..<3).map { i in Onion.PayerProof(payer: "payer-\(i)", nonce: Random.bytes(16), timestamp: UInt64(i), signature: Random.bytes(64)) }
        let layers = hops.enumerated().map { i, h in
            Onion.Hop(agreement: h.agreement.publicKey, kind: i == 2 ? .exit : .relay, next: i == 2 ? nil : hops[i + 1].key,
                      token: [UInt8](repeating: 0, count: 8), payer: proofs[i])
        }
        var (onion, _) = try Onion.build(layers, payload: [], size: 4_096)
        for (i, h) in hops.enumerated() {
            #expect(onion.count == 4_096)
            let peeled = try Onion.peel(onion, privateKey: h.agreement.privateKey, publicKey: h.agreement.publicKey)
            #expect(peeled.payer == proofs[i])
            #expect(peeled.kind == (i == 2 ? .exit : .relay))
            onion = peeled.inner
        }
        // A hop's key does not open another hop's layer.
        let (other, _) = try Onion.build(layers, payload: [], size: 4_096)
        #expect(throws: MeshError.self) { try Onion.peel(other, privateKey: hops[1].agreement.privateKey, publicKey: hops[1].agreement.publicKey) }
    }
}
