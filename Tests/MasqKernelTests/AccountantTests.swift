import MasqCrypto
import Testing
@testable import MasqAccounting
@testable import MasqKernel

/// The accountant in the core, its book in a real store.
@Suite struct AccountantTests {
    func accountant(_ thresholds: PaymentThresholds = PaymentThresholds()) throws -> (Accountant, Store) {
        let store = try Fixtures.open("sqlite")
        return (try Accountant(store: store, thresholds: thresholds), store)
    }

    let consumer = Ed25519.keyPair()
    var payer: String { consumer.publicKey.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }
    func verify(_ address: String, _ message: [UInt8], _ signature: [UInt8]) -> Bool {
        address == payer && Ed25519.verify(signature, message: message, publicKey: consumer.publicKey)
    }
    func message(_ nonce: [UInt8], _ time: UInt64, hop: [UInt8]) -> [UInt8] {
        Array("masq payer v1".utf8) + nonce + withUnsafeBytes(of: time.bigEndian, Array.init) + hop
    }

    @Test func payerProofsAreSingleUseFreshAndBoundToTheHop() throws {
        let (a, _) = try accountant()
        let hop = Random.bytes(32), other = Random.bytes(32)
        let now: UInt64 = 1_800_000_000_000
        let nonce = Random.bytes(16)
        let m = message(nonce, now, hop: hop)
        let signature = try Ed25519.sign(m, privateKey: consumer.privateKey)
        #expect(
            a.acceptProof(
                payer: payer, nonce: nonce, timestamp: now, message: m, signature: signature, now: now, verify: verify))
        // The same proof again is a replay.
        #expect(
            !a.acceptProof(
                payer: payer, nonce: nonce, timestamp: now, message: m, signature: signature, now: now + 1,
                verify: verify))
        // Signed for another hop: the message this hop checks differs.
        let n2 = Random.bytes(16)
        let s2 = try Ed25519.sign(message(n2, now, hop: other), privateKey: consumer.privateKey)
        #expect(
            !a.acceptProof(
                payer: payer, nonce: n2, timestamp: now, message: message(n2, now, hop: hop), signature: s2, now: now,
                verify: verify))
        // Too old.
        let n3 = Random.bytes(16), old = now - 600_000
        let s3 = try Ed25519.sign(message(n3, old, hop: hop), privateKey: consumer.privateKey)
        #expect(
            !a.acceptProof(
                payer: payer, nonce: n3, timestamp: old, message: message(n3, old, hop: hop), signature: s3, now: now,
                verify: verify))
        #expect(a.book.proofsRejected == 3)
    }

    /// Found by review: the nonce table was scanned whole on every proof and
    /// grew without bound (fresh pseudonyms cost nothing). It is now walked
    /// from its oldest entry and capped; past the cap the oldest nonce is
    /// forgotten and no proof not newer than it is accepted again, and a proof
    /// dated far ahead (which would raise that horizon past honest proofs) is
    /// refused.
    @Test func payerNoncesAreBoundedAndAFloodDatedAheadIsRefused() throws {
        let (a, _) = try accountant()
        let now: UInt64 = 1_800_000_000_000
        let yes: (String, [UInt8], [UInt8]) -> Bool = { _, _, _ in true }
        #expect(
            !a.acceptProof(
                payer: payer, nonce: Random.bytes(16), timestamp: now + 60_000, message: [], signature: [], now: now,
                verify: yes))
        let first = Random.bytes(16)
        #expect(
            a.acceptProof(
                payer: payer, nonce: first, timestamp: now - 1, message: [], signature: [], now: now, verify: yes))
        for i in 0..<Accountant.maxNonces {
            var nonce = [UInt8](repeating: 0, count: 16)
            withUnsafeBytes(of: UInt64(i).littleEndian) { nonce.replaceSubrange(0..<8, with: $0) }
            _ = a.acceptProof(
                payer: payer, nonce: nonce, timestamp: now, message: [], signature: [], now: now, verify: yes)
        }
        #expect(a.nonceCount == Accountant.maxNonces)
        // The first nonce was forgotten, and its proof is refused all the same (not newer than the horizon).
        #expect(
            !a.acceptProof(
                payer: payer, nonce: first, timestamp: now - 1, message: [], signature: [], now: now, verify: yes))
        // A newer honest proof still passes.
        #expect(
            a.acceptProof(
                payer: payer, nonce: Random.bytes(16), timestamp: now + 1, message: [], signature: [], now: now + 2,
                verify: yes))
    }

    @Test func thresholdCurveAsMASQ() {
        let t = PaymentThresholds()
        #expect(t.limit(ageSeconds: 1_199) == nil)
        #expect(t.limit(ageSeconds: 1_200) == 1_000_000_000_000_000_000)
        #expect(t.limit(ageSeconds: 1_200 + 10_800) == 750_000_000_000_000_000)
        #expect(t.limit(ageSeconds: 1_200 + 21_600) == 500_000_000_000_000_000)
        #expect(t.limit(ageSeconds: 1_000_000) == 500_000_000_000_000_000)
    }

    @Test func debtsPaidWhenDueDebtorsBannedAndUnbannedAndTheBookPersists() throws {
        var t = PaymentThresholds()
        t.debtThreshold = 1_000
        t.permanentAllowance = 500
        t.maturitySeconds = 10
        t.thresholdIntervalSeconds = 100
        t.graceSeconds = 5
        t.unbanBelow = 500
        let (a, store) = try accountant(t)
        let start: UInt64 = 1_000_000
        a.owe("creditor", 900, now: start)
        #expect(a.due(nowMilliseconds: start + 5_000).isEmpty)  // not mature
        #expect(a.due(nowMilliseconds: start + 10_000).isEmpty)  // 900 <= 1000
        #expect(a.due(nowMilliseconds: start + 60_000).map(\.1) == [900])  // the limit fell to 550
        a.paid("creditor", 900, txid: "t1")
        #expect(a.book.payables["creditor"]?.owed == 0)
        a.earn("debtor", 2_000, now: start)
        #expect(a.updateBans(nowMilliseconds: start + 14_000).banned.isEmpty)  // within grace
        #expect(a.updateBans(nowMilliseconds: start + 16_000).banned == ["debtor"])
        #expect(a.isBanned("debtor"))
        a.save(force: false)
        // In the store: a new accountant on the same store reads the same book.
        let again = try Accountant(store: store, thresholds: t)
        #expect(again.isBanned("debtor") && again.book.receivables["debtor"]?.owed == 2_000)
        a.received(from: "debtor", 1_600)  // 400 left, below 500
        #expect(a.updateBans(nowMilliseconds: start + 17_000).unbanned == ["debtor"])
        #expect(!a.isBanned("debtor"))
    }
}
