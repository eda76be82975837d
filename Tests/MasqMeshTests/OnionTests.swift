import MasqCrypto
import Testing
@testable import MasqMesh

@Suite struct OnionTests {
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
