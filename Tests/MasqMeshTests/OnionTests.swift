import MasqCrypto
import Testing
@testable import MasqMesh

@Suite struct OnionTests {
    @Test func onionCarriesThePayerProofToItsHopOnly() throws {
        let hops = (0..<3).map { _ in NodeIdentity.generate() }
        let proofs = (0..<3).map { i in
            Onion.PayerProof(
                payer: "payer-\(i)", nonce: Random.bytes(16), timestamp: UInt64(i), signature: Random.bytes(64))
        }
        let layers = hops.enumerated().map { i, h in
            Onion.Hop(
                agreement: h.agreement.publicKey, kind: i == 2 ? .exit : .relay, next: i == 2 ? nil : hops[i + 1].key,
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
        #expect(throws: MeshError.self) {
            try Onion.peel(other, privateKey: hops[1].agreement.privateKey, publicKey: hops[1].agreement.publicKey)
        }
    }

    /// The set-up onion is authenticated whole: a bit changed anywhere (the
    /// next hop's key, its header, where a later hop's header would be, the
    /// filler at the end) fails at the next hop, wherever it sits in a route
    /// of 2 to 6 hops, so a relay cannot probe how many hops follow it. The
    /// innermost onion holds the payload and no run of zeros (the filler is
    /// keystream).
    @Test func aSetUpOnionChangedAnywhereFailsAtTheNextHop() throws {
        let size = 4_096
        for count in 2...6 {
            let hops = (0..<count).map { _ in NodeIdentity.generate() }
            let layers = hops.enumerated().map { i, h in
                Onion.Hop(
                    agreement: h.agreement.publicKey, kind: i == count - 1 ? .exit : .relay,
                    next: i == count - 1 ? nil : hops[i + 1].key, token: [UInt8](repeating: UInt8(i), count: 8))
            }
            let payload = Array("the request".utf8)
            var (onion, _) = try Onion.build(layers, payload: payload, size: size)
            for (i, h) in hops.enumerated() {
                #expect(onion.count == size)
                // Every position class an earlier hop could change, checked against this hop.
                let positions =
                    [0, 40, Onion.overhead - 1, Onion.overhead + 72] + (1...4).map { Onion.overhead * $0 + 50 }
                for p in positions + [size - 1] where p < size {
                    var changed = onion
                    changed[p] ^= 1
                    #expect(throws: MeshError.self) {
                        try Onion.peel(changed, privateKey: h.agreement.privateKey, publicKey: h.agreement.publicKey)
                    }
                }
                let peeled = try Onion.peel(onion, privateKey: h.agreement.privateKey, publicKey: h.agreement.publicKey)
                #expect(peeled.token == [UInt8](repeating: UInt8(i), count: 8))
                onion = peeled.inner
            }
            #expect(Array(onion[0..<payload.count]) == payload)
            let longestZeroRun = onion.reduce(into: (run: 0, longest: 0)) { r, b in
                r.run = b == 0 ? r.run + 1 : 0
                r.longest = max(r.longest, r.run)
            }.longest
            #expect(longestZeroRun < 8)
        }
        // Too many hops for the size: refused, not a short onion.
        let one = NodeIdentity.generate()
        let many = (0..<11).map { _ in
            Onion.Hop(
                agreement: one.agreement.publicKey, kind: .relay, next: one.key, token: [UInt8](repeating: 0, count: 8))
        }
        #expect(throws: MeshError.self) { try Onion.build(many, payload: [], size: size) }
    }

    static func layer() -> Onion.Layer {
        Onion.Layer(
            mac: SecureBytes(Random.bytes(32)), stream: SecureBytes(Random.bytes(32)),
            tag: SecureBytes(Random.bytes(32)),
            shift: SecureBytes(Random.bytes(32)))
    }

    static let fill = SecureBytes(Random.bytes(32))

    /// The origin's side of a forward cell: sealed for the exit in its body,
    /// wrapped for each relay (the last first), each relay's tag in the region.
    static func originCell(_ message: [UInt8], relays: [Onion.Layer], exitKey: SecureBytes, counter: UInt64) -> [UInt8]
    {
        var cell = [UInt8](repeating: 0, count: 4_096)
        cell.replaceSubrange(Onion.tagRegion..<(Onion.tagRegion + message.count), with: message)
        cell.withUnsafeMutableBytes { c in
            #expect(
                Onion.sealCell(
                    exitKey, counter: counter, UnsafeMutableRawBufferPointer(rebasing: c[Onion.tagRegion...])))
            Onion.wrapForward(relays, counter: counter, fill: fill, c)
        }
        return cell
    }

    /// A forward relay: nil when the tag does not verify, else the cell it passes on.
    static func forwardRelay(_ key: Onion.Layer, counter: UInt64, _ cell: [UInt8]) -> [UInt8]? {
        guard cell.withUnsafeBytes({ Onion.checkTag(key, counter: counter, $0) }) else { return nil }
        var next = [UInt8](repeating: 0, count: cell.count)
        cell.withUnsafeBytes { input in
            next.withUnsafeMutableBytes { Onion.relayForward(key, counter: counter, from: input, into: $0) }
        }
        return next
    }

    /// A relay on a return circuit: its layer off, from the incoming message into the next one.
    static func relay(_ key: Onion.Layer, counter: UInt64, _ cell: [UInt8]) -> [UInt8] {
        var next = [UInt8](repeating: 0, count: cell.count)
        cell.withUnsafeBytes { input in
            next.withUnsafeMutableBytes { Onion.unwrap(key, counter: counter, from: input, into: $0) }
        }
        return next
    }

    /// The exit on a forward cell: the box in the body (the message at its start), or nil.
    static func exitOpensForward(_ cell: [UInt8], exitKey: SecureBytes, counter: UInt64) -> [UInt8]? {
        exitOpens(Array(cell[Onion.tagRegion...]), exitKey: exitKey, counter: counter)
    }

    static func exitOpens(_ cell: [UInt8], exitKey: SecureBytes, counter: UInt64) -> [UInt8]? {
        var cell = cell
        let ok = cell.withUnsafeMutableBytes { Onion.openCell(exitKey, counter: counter, $0) }
        return ok ? cell : nil
    }

    /// Issue 19.7: every forward relay checks its tag, on routes of one to
    /// five relays; the region keeps its size and differs on every link; a
    /// byte changed anywhere by a relay (or on a link) fails the next relay's
    /// check, so no later hop relays or counts it.
    @Test func forwardRelaysCheckTheirTagsAndRefuseGarbage() throws {
        let exitKey = SecureBytes(Random.bytes(32))
        let message = Array("GET / HTTP/1.1".utf8)
        for m in 1...Onion.maxForwardRelays {
            let keys = (0..<m).map { _ in Self.layer() }
            var onWire = Self.originCell(message, relays: keys, exitKey: exitKey, counter: 9)
            var regions: [[UInt8]] = [Array(onWire[0..<Onion.tagRegion])]
            for key in keys {
                onWire = try #require(Self.forwardRelay(key, counter: 9, onWire), "relay's tag, \(m) relays")
                regions.append(Array(onWire[0..<Onion.tagRegion]))
            }
            #expect(Set(regions).count == regions.count)
            // The exit sees no run of zeros that would tell the route's length.
            let atExit: [UInt8] = regions[regions.count - 1]
            #expect(Array(atExit[0..<16]) != [UInt8](repeating: 0, count: 16))
            let opened = try #require(Self.exitOpensForward(onWire, exitKey: exitKey, counter: 9))
            #expect(Array(opened[0..<message.count]) == message)
            // The wrong cell number fails the first relay.
            let first = Self.originCell(message, relays: keys, exitKey: exitKey, counter: 9)
            #expect(Self.forwardRelay(keys[0], counter: 10, first) == nil)
        }
        // A hostile first relay alters one byte (tag region or body), or sends its own bytes: the second refuses.
        let keys = (0..<3).map { _ in Self.layer() }
        let cell = Self.originCell(message, relays: keys, exitKey: exitKey, counter: 4)
        let honest = try #require(Self.forwardRelay(keys[0], counter: 4, cell))
        #expect(Self.forwardRelay(keys[1], counter: 4, honest) != nil)
        for position in [0, 15, 16, 40, Onion.tagRegion - 1, Onion.tagRegion, Onion.tagRegion + 11, 2_000, 4_095] {
            var altered = honest
            altered[position] ^= 0x01
            #expect(Self.forwardRelay(keys[1], counter: 4, altered) == nil, "a change at \(position) went through")
        }
        #expect(Self.forwardRelay(keys[1], counter: 4, Random.bytes(4_096)) == nil)
        // The first relay cannot make a cell for the second: it lacks the second's tag key.
        let forged = Self.originCell(message, relays: [keys[0], Self.layer(), keys[2]], exitKey: exitKey, counter: 4)
        let passed = try #require(Self.forwardRelay(keys[0], counter: 4, forged))
        #expect(Self.forwardRelay(keys[1], counter: 4, passed) == nil)
    }

    /// A data cell as origin, relays and exit see it: sealed in place for the
    /// exit, one layer per relay added by the origin and removed relay by relay
    /// (from the link message into the next one), then opened by the exit.
    @Test func dataCellLayersComeOffHopByHop() throws {
        let keys = (0..<3).map { _ in Self.layer() }
        let exitKey = SecureBytes(Random.bytes(32))
        let message = Array("hello through three relays".utf8)
        let cell = Self.originCell(message, relays: keys, exitKey: exitKey, counter: 7)
        #expect(Array(cell[Onion.tagRegion..<(Onion.tagRegion + message.count)]) != message)
        var onWire = cell
        var seen: [[UInt8]] = [onWire]
        for key in keys {
            onWire = try #require(Self.forwardRelay(key, counter: 7, onWire))
            seen.append(onWire)
        }
        // The bytes differ on every link.
        #expect(Set(seen).count == seen.count)
        let opened = try #require(Self.exitOpensForward(onWire, exitKey: exitKey, counter: 7))
        #expect(Array(opened[0..<message.count]) == message)
        // The wrong cell number, past the relays' checks (colluding relays), does not open at the exit.
        var replayed = Array(cell[Onion.tagRegion...])
        for key in keys { Onion.xor(key.stream, counter: 8, &replayed) }
        #expect(Self.exitOpens(replayed, exitKey: exitKey, counter: 7) == nil)
        // Return direction: relays remove their layers in turn; the origin wraps them back, the last relay's first.
        var back = [UInt8](repeating: 0, count: 4_096)
        back.replaceSubrange(0..<message.count, with: message)
        back.withUnsafeMutableBytes { #expect(Onion.sealCell(exitKey, counter: 3, $0)) }
        for key in keys { back = Self.relay(key, counter: 3, back) }
        back.withUnsafeMutableBytes { c in for key in keys.reversed() { Onion.wrap(key, counter: 3, c) } }
        #expect(Self.exitOpens(back, exitKey: exitKey, counter: 3).map { Array($0[0..<message.count]) } == message)
    }

    /// Found by review: the wide block's keystream must be the cell's own. A
    /// sender (an exit) that gives two cells one head Y, or sends one input
    /// twice, must get outputs from an honest relay whose difference tells a
    /// colluder after it nothing (with one keystream for both, R₁ ⊕ R₂ would
    /// be exactly the difference the sender chose).
    @Test func theWideBlockIsKeyedPerCell() {
        let key = Self.layer()
        let a = Random.bytes(4_096)
        var b = a
        for i in 100..<108 { b[i] ^= 0xA5 }  // same Y, a chosen difference D in R'
        let ra = Self.relay(key, counter: 5, a), rb = Self.relay(key, counter: 6, b)
        let difference = zip(ra.dropFirst(12), rb.dropFirst(12)).map { $0 ^ $1 }
        let chosen = zip(a.dropFirst(12), b.dropFirst(12)).map { $0 ^ $1 }
        #expect(difference != chosen)
        #expect(difference.filter { $0 == 0 }.count < 64, "the outputs share a keystream")
        // The same input as two cells: unrelated outputs.
        let same1 = Self.relay(key, counter: 7, a), same2 = Self.relay(key, counter: 8, a)
        #expect(zip(same1, same2).filter { $0 == $1 }.count < 64)
    }

    /// A cell in the wide-block layers of a return circuit, as if the relays
    /// were to remove them in this order: sealed, then wrapped for each relay
    /// (the last first).
    static func wideBlockCell(_ message: [UInt8], relays: [Onion.Layer], exitKey: SecureBytes, counter: UInt64)
        -> [UInt8]
    {
        var cell = [UInt8](repeating: 0, count: 4_096)
        cell.replaceSubrange(0..<message.count, with: message)
        cell.withUnsafeMutableBytes { c in
            #expect(Onion.sealCell(exitKey, counter: counter, c))
            for key in relays.reversed() { Onion.wrap(key, counter: counter, c) }
        }
        return cell
    }

    /// Issue 19.2, the tagging attack on the wide-block layers (return
    /// circuits, whose relays cannot check a cell; forward relays refuse any
    /// changed byte by their tags, above): a relay XORs a tag into the cell it
    /// passes on and a colluding hop XORs it out again before the AEAD. With stream-cipher layers the cell still opened (the circuit
    /// confirmed); across an honest relay's layer the tag garbles the cell for
    /// good, wherever it is put, and the exit cannot undo it.
    @Test func aTagCannotBeCarriedAcrossAnHonestRelay() throws {
        let keys = (0..<2).map { _ in Self.layer() }
        let exitKey = SecureBytes(Random.bytes(32))
        let message = Array("GET /secret".utf8)
        for position in [0, 5, 11, 12, 100, 4_000, 4_095] {
            let cell = Self.wideBlockCell(message, relays: keys, exitKey: exitKey, counter: 1)
            // The hostile first relay removes its layer and tags the result.
            var tagged = Self.relay(keys[0], counter: 1, cell)
            tagged[position] ^= 0x5a
            // The honest second relay.
            var atExit = Self.relay(keys[1], counter: 1, tagged)
            // The colluding exit XORs the tag out where it could have moved to (the same place).
            atExit[position] ^= 0x5a
            #expect(
                Self.exitOpens(atExit, exitKey: exitKey, counter: 1) == nil,
                "a tag at \(position) survived an honest relay")
            // Without the tag the same cell opens.
            let clean = Self.relay(keys[1], counter: 1, Self.relay(keys[0], counter: 1, cell))
            #expect(Self.exitOpens(clean, exitKey: exitKey, counter: 1) != nil)
        }
        // Return direction: the hostile hop near the exit tags, an honest relay
        // follows, the colluding last relay untags: the origin's AEAD fails.
        var back = [UInt8](repeating: 0, count: 4_096)
        back.replaceSubrange(0..<message.count, with: message)
        back.withUnsafeMutableBytes { #expect(Onion.sealCell(exitKey, counter: 2, $0)) }
        let three = keys + [Self.layer()]
        back = Self.relay(three[0], counter: 2, back)
        back[40] ^= 1
        back = Self.relay(three[1], counter: 2, back)
        back[40] ^= 1
        back = Self.relay(three[2], counter: 2, back)
        back.withUnsafeMutableBytes { c in for key in three.reversed() { Onion.wrap(key, counter: 2, c) } }
        #expect(Self.exitOpens(back, exitKey: exitKey, counter: 2) == nil)
    }
}
