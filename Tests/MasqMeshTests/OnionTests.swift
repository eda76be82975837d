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

    /// A data cell as origin and exit see it: sealed in place for the exit,
    /// one layer per hop added by the origin and removed hop by hop (from the
    /// link message into the next one), then opened in place by the exit.
    @Test func dataCellLayersComeOffHopByHop() throws {
        let keys = (0..<3).map { _ in SecureBytes(Random.bytes(32)) }
        let exitKey = SecureBytes(Random.bytes(32))
        let message = Array("hello through three hops".utf8)
        var cell = [UInt8](repeating: 0, count: 4_096)
        cell.replaceSubrange(0..<message.count, with: message)
        let sealedOK = cell.withUnsafeMutableBytes { c in
            guard Onion.sealCell(exitKey, counter: 7, c) else { return false }
            for key in keys { Onion.xor(key, counter: 7, from: UnsafeRawBufferPointer(c), into: c) }
            return true
        }
        #expect(sealedOK)
        #expect(Array(cell[0..<message.count]) != message)
        // Each hop: from the incoming message into a fresh buffer (the next link's message).
        var onWire = cell
        var seen: [[UInt8]] = [onWire]
        for key in keys.dropLast() {
            var next = [UInt8](repeating: 0, count: onWire.count)
            onWire.withUnsafeBytes { input in next.withUnsafeMutableBytes { Onion.xor(key, counter: 7, from: input, into: $0) } }
            onWire = next
            seen.append(onWire)
        }
        // The bytes differ on every link.
        #expect(Set(seen).count == seen.count)
        // The exit: its layer, then the AEAD.
        let opened = onWire.withUnsafeMutableBytes { c in
            Onion.xor(keys.last!, counter: 7, from: UnsafeRawBufferPointer(c), into: c)
            return Onion.openCell(exitKey, counter: 7, c)
        }
        #expect(opened)
        #expect(Array(onWire[0..<message.count]) == message)
        // A flipped bit, or the wrong cell number, does not open.
        var tampered = cell
        tampered[100] ^= 1
        let tamperedOpens = tampered.withUnsafeMutableBytes { c in
            for key in keys { Onion.xor(key, counter: 7, from: UnsafeRawBufferPointer(c), into: c) }
            return Onion.openCell(exitKey, counter: 7, c)
        }
        #expect(!tamperedOpens)
        var replayed = cell
        let replayOpens = replayed.withUnsafeMutableBytes { c in
            for key in keys { Onion.xor(key, counter: 8, from: UnsafeRawBufferPointer(c), into: c) }
            return Onion.openCell(exitKey, counter: 8, c)
        }
        #expect(!replayOpens)
    }
}
