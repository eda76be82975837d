import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// Onion layers for circuit set-up, and the per-hop data layers.
///
/// A set-up onion is `size` bytes. Layer i (for hop i):
///
///     eph (32) ‖ ChaCha20-Poly1305(hk, nonce 0, ad eph ‖ body, header 352) ‖ body
///     body   = the first S − 400 bytes of ChaCha20(sk, nonce 0) ⊕ (inner onion) (S: the onion's size)
///     header = kind (1) ‖ next hop key (32) ‖ token (8) ‖ u64 timestamp (ms) ‖ payer proof ‖ zeros (to 352)
///     payer proof = nonce (16) ‖ u64 timestamp ‖ u8 n ‖ payer wallet (n) ‖ u8 m ‖ signature (m)
///     keys   = HKDF-SHA256(X25519(eph, hop), salt "masq mesh onion v1", info eph ‖ hop, 256 bytes)
///            → hk ‖ sk ‖ mk (data layer MAC) ‖ ef ‖ eb (exit AEAD, forward and back) ‖ ck (data layer stream)
///              ‖ tk (forward tag) ‖ ak (forward tag region)
///
/// A hop authenticates its header and the body (the AEAD's associated data
/// is eph ‖ body), decrypts the body and passes it on with `overhead` bytes
/// of its keystream appended (the filler, computed ahead by the origin as
/// Sphinx's), so every hop sees an onion of the same size, learns only its
/// own header (not its position), and refuses one changed anywhere. Data cells carry
/// one layer per relay around an AEAD between the origin and the exit: a
/// wide block on return circuits (`unwrap`), a tag check and a stream on
/// forward ones (`checkTag`, `relayForward`); either way the bytes differ on
/// every link and a tag cannot be carried across an honest hop.
enum Onion {
    static let headerBytes = 352
    static let overhead = 32 + headerBytes + 16
    static let salt = Array("masq mesh onion v1".utf8)
    /// Times in layers and payer proofs are this much in the past at most, at random (ms).
    static let timeJitter: UInt64 = 2_000

    /// `forwardRelay`: a relay on a forward circuit, which checks every
    /// DATA cell's tag (`relayForward`); `relay`: one on a return circuit,
    /// which cannot (the exit makes those cells without the relays' keys).
    enum Kind: UInt8 { case relay = 1, exit = 2, terminal = 3, forwardRelay = 4 }

    struct Keys {
        /// This hop's data layer.
        let layer: Layer
        let exitForward: SecureBytes
        let exitBack: SecureBytes
    }

    /// A hop's data layer: a MAC key and a stream key (see `unwrap` and
    /// `relayForward`), and a forward relay's tag key and tag-region key.
    struct Layer {
        let mac: SecureBytes
        let stream: SecureBytes
        let tag: SecureBytes
        let shift: SecureBytes
    }

    /// Who pays a hop for a circuit: the consumer's **pseudonym at that hop**
    /// (`payer`, "p:" + base64url of an Ed25519 key derived for that hop
    /// alone), signed by the pseudonym — no identifier is common to two hops.
    /// Once the consumer has paid the hop's earning wallet, one layer of a
    /// route may carry a `binding`: the consuming wallet's signature that it
    /// pays for that pseudonym, so the hop credits the payments it sees.
    struct PayerProof: Equatable {
        var payer: String
        var nonce: [UInt8]
        var timestamp: UInt64
        var signature: [UInt8]
        var binding: Binding? = nil
    }

    struct Binding: Equatable {
        var wallet: String
        var signature: [UInt8]
    }

    struct Hop {
        let agreement: [UInt8]
        let kind: Kind
        let next: NodeKey?
        let token: [UInt8]
        var payer: PayerProof? = nil
    }

    struct Peeled {
        let kind: Kind
        let next: NodeKey
        let token: [UInt8]
        let payer: PayerProof?
        let keys: Keys
        let inner: [UInt8]
        /// The layer's ephemeral key (the replay cache remembers it) and when the origin made the onion.
        let eph: [UInt8]
        let timestamp: UInt64
    }

    static func wallClock() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    static func bigEndian(_ v: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * UInt64($0))) }
    }

    private static func derive(_ shared: SecureBytes, eph: [UInt8], hop: [UInt8]) throws(MeshError) -> (
        SecureBytes, SecureBytes, Keys
    ) {
        guard let okm = try? Hash.hkdfSHA256(salt: SecureBytes(salt), ikm: shared, info: eph + hop, length: 256) else {
            throw .failed("key derivation failed")
        }
        let b = okm.bytes
        return (
            SecureBytes(b[0..<32]), SecureBytes(b[32..<64]),
            Keys(
                layer: Layer(
                    mac: SecureBytes(b[64..<96]), stream: SecureBytes(b[160..<192]), tag: SecureBytes(b[192..<224]),
                    shift: SecureBytes(b[224..<256])),
                exitForward: SecureBytes(b[96..<128]), exitBack: SecureBytes(b[128..<160]))
        )
    }

    /// Build an onion for `hops` (first hop outermost) around `payload`.
    ///
    /// As Sphinx's header: the origin computes ahead the filler the hops will
    /// have appended (each hop's keystream past the body, `peel`), so that it
    /// knows every byte each hop will receive and can bind all of them to that
    /// hop's header. The innermost onion is `payload ‖ random ‖ filler`.
    static func build(_ hops: [Hop], payload: [UInt8], size: Int) throws(MeshError) -> (onion: [UInt8], keys: [Keys]) {
        guard size > overhead * hops.count, payload.count <= size - overhead * hops.count else {
            throw .invalid("onion payload too large for \(hops.count) hops")
        }
        let now = wallClock()
        var layers: [(eph: [UInt8], hk: SecureBytes, stream: [UInt8], keys: Keys)] = []
        // The keystreams open the bodies: wiped when done, as the keys are (review).
        defer { for i in layers.indices { wipe(&layers[i].stream) } }
        for hop in hops {
            let eph = X25519.keyPair()
            guard let shared = try? X25519.sharedSecret(privateKey: eph.privateKey, peerPublicKey: hop.agreement) else {
                throw .failed("bad hop key")
            }
            let (hk, sk, k) = try derive(shared, eph: eph.publicKey, hop: hop.agreement)
            var stream = [UInt8](repeating: 0, count: size)
            xor(sk, counter: 0, &stream)
            layers.append((eph.publicKey, hk, stream, k))
        }
        // What hop i appends is its keystream's last `overhead` bytes; the
        // hops after it decrypt that tail with their own keystreams.
        var filler: [UInt8] = []
        for layer in layers {
            filler += [UInt8](repeating: 0, count: overhead)
            for (j, b) in layer.stream[(size - filler.count)...].enumerated() { filler[j] ^= b }
        }
        var inner = payload + Random.bytes(size - payload.count - filler.count) + filler
        for (hop, layer) in zip(hops, layers).reversed() {
            // The body this hop receives: it decrypts to `inner` once the hop has appended its keystream's tail.
            let body = (0..<(size - overhead)).map { inner[$0] ^ layer.stream[$0] }
            // Each layer its own time, a little in the past: one millisecond value in
            // every layer would be an identifier common to the hops of the circuit.
            let header = try encodeHeader(hop, now: now - UInt64.random(in: 0..<Self.timeJitter))
            guard
                let sealed = try? AEAD.seal(
                    .chacha20Poly1305, key: layer.hk, nonce: [UInt8](repeating: 0, count: 12), ad: layer.eph + body,
                    plaintext: header)
            else {
                throw .failed("sealing failed")
            }
            inner = layer.eph + sealed + body
        }
        return (inner, layers.map(\.keys))
    }

    /// Remove this node's layer. The header's AEAD covers the whole onion
    /// (the body is its associated data), so a bit changed anywhere by an
    /// earlier hop fails here, at the next honest hop: nobody can probe how
    /// many hops follow by changing where a later header would be. The inner
    /// onion is the body decrypted with the keystream extended `overhead`
    /// bytes past it (those bytes are the hop's filler, which the origin
    /// computed ahead): it keeps the onion's size, and a hop learns nothing
    /// of its position.
    static func peel(_ onion: [UInt8], privateKey: SecureBytes, publicKey: [UInt8]) throws(MeshError) -> Peeled {
        guard onion.count > overhead else { throw .malformed("a short onion") }
        let eph = Array(onion[0..<32])
        guard let shared = try? X25519.sharedSecret(privateKey: privateKey, peerPublicKey: eph) else {
            throw .malformed("a bad onion key")
        }
        let (hk, sk, keys) = try derive(shared, eph: eph, hop: publicKey)
        var inner = Array(onion[overhead...])
        guard
            let header = try? AEAD.open(
                .chacha20Poly1305, key: hk, nonce: [UInt8](repeating: 0, count: 12), ad: eph + inner,
                ciphertext: Array(onion[32..<overhead])), header.count == headerBytes,
            let kind = Kind(rawValue: header[0])
        else {
            throw .malformed("an onion layer that does not open")
        }
        inner += [UInt8](repeating: 0, count: overhead)
        xor(sk, counter: 0, &inner)
        return Peeled(
            kind: kind, next: NodeKey(Array(header[1..<33])), token: Array(header[33..<41]), payer: payerProof(header),
            keys: keys, inner: inner, eph: eph,
            timestamp: header[41..<49].reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    }

    /// A layer's header (`headerBytes`):
    ///
    ///     kind (1) ‖ next hop key (32) ‖ token (8) ‖ u64 timestamp (ms)
    ///     ‖ payer proof: nonce (16) ‖ u64 timestamp ‖ u8 n ‖ payer (n) ‖ u8 m ‖ signature (m)   (n = 0: none)
    ///     ‖ binding:     u8 n ‖ wallet (n) ‖ u8 m ‖ signature (m)                             (n = 0: none)
    ///     ‖ zeros
    static func encodeHeader(_ hop: Hop, now: UInt64) throws(MeshError) -> [UInt8] {
        var header =
            [hop.kind.rawValue] + (hop.next?.bytes ?? [UInt8](repeating: 0, count: 32)) + hop.token + bigEndian(now)
        if let proof = hop.payer {
            let payer = Array(proof.payer.utf8)
            guard proof.nonce.count == 16, (1...80).contains(payer.count), (1...96).contains(proof.signature.count)
            else { throw .invalid("payer proof too large") }
            header +=
                proof.nonce + bigEndian(proof.timestamp) + [UInt8(payer.count)] + payer + [UInt8(proof.signature.count)]
                + proof.signature
            if let binding = proof.binding {
                let wallet = Array(binding.wallet.utf8)
                guard (1...80).contains(wallet.count), (1...96).contains(binding.signature.count) else {
                    throw .invalid("payer binding too large")
                }
                header += [UInt8(wallet.count)] + wallet + [UInt8(binding.signature.count)] + binding.signature
            }
        }
        guard header.count <= headerBytes else { throw .invalid("a layer's header is too large") }
        return header + [UInt8](repeating: 0, count: headerBytes - header.count)
    }

    private static func payerProof(_ header: [UInt8]) -> PayerProof? {
        var at = 49
        let nonce = Array(header[at..<(at + 16)]); at += 16
        let timestamp = header[at..<(at + 8)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }; at += 8
        let n = Int(header[at]); at += 1
        guard n > 0, n <= 80, at + n < header.count else { return nil }
        guard let payer = String(validating: header[at..<(at + n)], as: UTF8.self) else { return nil }
        at += n
        let m = Int(header[at]); at += 1
        guard m > 0, m <= 96, at + m <= header.count else { return nil }
        var proof = PayerProof(
            payer: payer, nonce: nonce, timestamp: timestamp, signature: Array(header[at..<(at + m)]))
        at += m
        // The binding, if any.
        guard at < header.count else { return proof }
        let w = Int(header[at]); at += 1
        guard w > 0, w <= 80, at + w < header.count,
            let wallet = String(validating: header[at..<(at + w)], as: UTF8.self)
        else { return proof }
        at += w
        let k = Int(header[at]); at += 1
        guard k > 0, k <= 96, at + k <= header.count else { return proof }
        proof.binding = Binding(wallet: wallet, signature: Array(header[at..<(at + k)]))
        return proof
    }

    // MARK: - data layers

    /// Bytes of a cell's head: the nonce of the rest's encryption, bound to the rest by a MAC.
    static let layerHead = 12

    /// Remove a hop's data layer (what every relay does to every cell, in its
    /// circuit's direction), from `input` into `output` (distinct, one size):
    ///
    ///     Y ‖ R' = input (Y: 12 bytes)
    ///     k = the first 32 bytes of ChaCha20(stream key, nonce 4 zero bytes ‖ u64 LE cell number)
    ///     R = R' ⊕ ChaCha20(k, nonce Y)
    ///     X = Y ⊕ MAC(R)      MAC = the first 12 bytes of the ChaCha20-Poly1305 tag under the
    ///                         mac key, nonce 4 zero bytes ‖ u64 LE cell number, ad R, nothing sealed
    ///     output = X ‖ R
    ///
    /// No bit of the input can be changed without changing the output
    /// unpredictably: a change to Y changes the whole keystream, a change to R'
    /// changes the MAC and so X — the next layer's Y. A tag XORed in by one
    /// relay cannot be XORed out by a colluding hop behind an honest one: the
    /// cell is garbled for good, the exit's (or origin's) AEAD fails and the
    /// route goes (Tor's tagging attack, as its Counter Galois Onion design
    /// defeats it, with the primitives Masq has). The keystream's key is the
    /// cell's own (k): with the stream key itself, two cells sent with one Y
    /// would leave the relay XORed with one keystream, and the difference the
    /// sender put between them would reach a colluder after it unchanged
    /// (found by review).
    static func unwrap(
        _ layer: Layer, counter: UInt64, from input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) {
        precondition(input.count == output.count && input.count > layerHead)
        let h = layerHead
        let rest = UnsafeMutableRawBufferPointer(rebasing: output[h...])
        // The nonce is the input's head, read in place (input and output are distinct).
        withCellKey(layer.stream, counter: counter) { k in
            CellCipher.xor(
                rawKey: k, nonce: input.baseAddress!, from: UnsafeRawBufferPointer(rebasing: input[h...]), into: rest)
        }
        mac(layer.mac, counter: counter, UnsafeRawBufferPointer(rest)) { tag in
            for i in 0..<h { output[i] = input[i] ^ tag[i] }
        }
    }

    /// Add a hop's data layer in place (the inverse of `unwrap`): the origin
    /// wraps a forward cell for each relay (the last relay first) and unwraps
    /// a return cell by wrapping it for each return relay (the last first).
    static func wrap(_ layer: Layer, counter: UInt64, _ cell: UnsafeMutableRawBufferPointer) {
        precondition(cell.count > layerHead)
        let h = layerHead
        let rest = UnsafeMutableRawBufferPointer(rebasing: cell[h...])
        mac(layer.mac, counter: counter, UnsafeRawBufferPointer(rest)) { tag in
            for i in 0..<h { cell[i] ^= tag[i] }
        }
        // The head (12 bytes) is the nonce of the rest: it lies apart from the bytes XORed.
        withCellKey(layer.stream, counter: counter) { k in
            CellCipher.xor(
                rawKey: k, nonce: UnsafeRawPointer(cell.baseAddress!), from: UnsafeRawBufferPointer(rest), into: rest)
        }
    }

    /// The wide block's key for cell `counter`: the first 32 bytes of
    /// ChaCha20(stream key, nonce 4 zero bytes ‖ u64 LE counter), on the
    /// stack and wiped after `body`.
    private static func withCellKey(_ key: SecureBytes, counter: UInt64, _ body: (UnsafeRawPointer) -> Void) {
        var nonce: (UInt32, UInt32, UInt32) = (
            0, UInt32(truncatingIfNeeded: counter).littleEndian, UInt32(truncatingIfNeeded: counter >> 32).littleEndian
        )
        withUnsafeTemporaryAllocation(byteCount: 32, alignment: 16) { k in
            withUnsafeBytes(of: &nonce) { n in CellCipher.keystream(key: key, nonce: n.baseAddress!, into: k) }
            body(UnsafeRawPointer(k.baseAddress!))
            masqWipe(k)
        }
    }

    // MARK: - forward tags (issue 19.7)

    /// A forward DATA cell begins with a region of tags, one 16-byte tag per
    /// forward relay, with room for the longest route's (6 nodes: 5 relays);
    /// its body (the rest) holds the relays' layers around the exit's box.
    static let maxForwardRelays = 5
    static let tagRegion = 16 * maxForwardRelays

    /// A forward relay's check of a cell, before it relays or charges for it:
    /// the first 16 bytes must be the ChaCha20-Poly1305 tag (nothing sealed,
    /// nonce 4 zero bytes ‖ u64 LE cell number) under the hop's tag key of
    /// everything after them. Only the origin knows that key, so a cell
    /// injected or altered by an earlier relay (or on a link) fails here, at
    /// the first honest relay, and nobody after it counts it.
    static func checkTag(_ layer: Layer, counter: UInt64, _ cell: UnsafeRawBufferPointer) -> Bool {
        guard cell.count > tagRegion + layerHead else { return false }
        var same = true
        mac(layer.tag, counter: counter, UnsafeRawBufferPointer(rebasing: cell[16...])) { tag in
            var diff: UInt8 = 0
            for i in 0..<16 { diff |= tag[i] ^ cell[i] }
            same = diff == 0
        }
        return same
    }

    /// What a forward relay passes on (after `checkTag`): the region without
    /// its tag, shifted and refilled (as Sphinx's header, so that the region
    /// keeps its size and a relay learns nothing of its position), and the
    /// body without its layer:
    ///
    ///     t ‖ A' = region (t: 16 bytes)        region out = (A' ‖ 16 zeros) ⊕ ChaCha20(shift key, cell number)
    ///     body out = body ⊕ ChaCha20(stream key, cell number)
    ///
    /// A plain stream layer suffices here (return circuits need `unwrap`'s
    /// wide block): the tag covers every byte the relay receives, so a bit
    /// changed by an earlier hop is refused by the next honest relay and no
    /// tag can travel past it — the property the wide block gives where no
    /// relay can check. It saves each forward relay a MAC pass per cell.
    static func relayForward(
        _ layer: Layer, counter: UInt64, from input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) {
        precondition(input.count == output.count && input.count > tagRegion + layerHead)
        let t = tagRegion
        let region = UnsafeMutableRawBufferPointer(rebasing: output[0..<t])
        UnsafeMutableRawBufferPointer(rebasing: region[0..<(t - 16)]).copyMemory(
            from: UnsafeRawBufferPointer(rebasing: input[16..<t]))
        UnsafeMutableRawBufferPointer(rebasing: region[(t - 16)...]).initializeMemory(as: UInt8.self, repeating: 0)
        xor(layer.shift, counter: counter, from: UnsafeRawBufferPointer(region), into: region)
        xor(
            layer.stream, counter: counter, from: UnsafeRawBufferPointer(rebasing: input[t...]),
            into: UnsafeMutableRawBufferPointer(rebasing: output[t...]))
    }

    /// The origin's side: `cell` holds the region (any bytes) and the sealed
    /// box as its body; wrap the body for each relay (the last first) and
    /// write each relay's tag so that every relay's `checkTag` holds on what
    /// it receives. The region's end is the filler the relays will have
    /// appended (computed ahead, as Sphinx's), its start random bytes
    /// (`fill`'s keystream): the exit sees no sign of the route's length.
    static func wrapForward(
        _ layers: [Layer], counter: UInt64, fill: SecureBytes, _ cell: UnsafeMutableRawBufferPointer
    ) {
        let m = layers.count
        let t = tagRegion
        precondition(m <= maxForwardRelays && cell.count > t + layerHead)
        withUnsafeTemporaryAllocation(byteCount: t * (m + 1), alignment: 16) { scratch in
            // Each relay's region keystream G_i (t bytes each), then the filler φ in the last slot.
            let zero = UnsafeMutableRawBufferPointer(rebasing: scratch[(t * m)...])
            zero.initializeMemory(as: UInt8.self, repeating: 0)
            for i in 0..<m {
                let g = UnsafeMutableRawBufferPointer(rebasing: scratch[(t * i)..<(t * i + t)])
                xor(layers[i].shift, counter: counter, from: UnsafeRawBufferPointer(zero), into: g)
            }
            // φ_i = (φ_{i-1} ‖ 16 zeros) ⊕ G_i[t − 16i ..< t]: what relays 1…i leave at the region's end.
            var filler: [UInt8] = []
            for i in 0..<m {
                filler += [UInt8](repeating: 0, count: 16)
                let g = scratch.baseAddress! + t * i + t - filler.count
                for j in 0..<filler.count { filler[j] ^= g.load(fromByteOffset: j, as: UInt8.self) }
            }
            // The region as the exit will see it: random bytes, then the filler.
            let region = UnsafeMutableRawBufferPointer(rebasing: cell[0..<t])
            region.initializeMemory(as: UInt8.self, repeating: 0)
            xor(fill, counter: counter, from: UnsafeRawBufferPointer(region), into: region)
            for j in 0..<filler.count { region[t - filler.count + j] = filler[j] }
            // Backwards, relay m first: the body as relay i receives it, and its region with its tag.
            let body = UnsafeMutableRawBufferPointer(rebasing: cell[t...])
            for i in stride(from: m - 1, through: 0, by: -1) {
                xor(layers[i].stream, counter: counter, from: UnsafeRawBufferPointer(body), into: body)
                let g = scratch.baseAddress! + t * i
                for j in stride(from: t - 1, through: 16, by: -1) {
                    region[j] = region[j - 16] ^ g.load(fromByteOffset: j - 16, as: UInt8.self)
                }
                mac(layers[i].tag, counter: counter, UnsafeRawBufferPointer(rebasing: cell[16...])) { tag in
                    for j in 0..<16 { region[j] = tag[j] }
                }
            }
        }
    }

    /// The ChaCha20-Poly1305 tag (16 bytes) of `data` (as associated data,
    /// nothing sealed) under `key`, nonce 4 zero bytes ‖ u64 LE `counter`.
    private static func mac(
        _ key: SecureBytes, counter: UInt64, _ data: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void
    ) {
        var nonce: (UInt32, UInt32, UInt32) = (
            0, UInt32(truncatingIfNeeded: counter).littleEndian, UInt32(truncatingIfNeeded: counter >> 32).littleEndian
        )
        var tag: (UInt64, UInt64) = (0, 0)
        withUnsafeMutableBytes(of: &tag) { t in
            let ok = withUnsafeBytes(of: &nonce) { n in
                CellCipher.seal(
                    key: key, nonce: n.baseAddress!, ad: data, plaintext: UnsafeRawBufferPointer(start: nil, count: 0),
                    into: UnsafeMutableRawBufferPointer(start: nil, count: 0), tag: t.baseAddress!)
            }
            precondition(ok, "the data layer's MAC failed")
            body(UnsafeRawBufferPointer(t))
        }
    }

    /// XOR a data layer: the keystream of `key` at cell number `counter`.
    static func xor(_ key: SecureBytes, counter: UInt64, _ data: inout [UInt8]) {
        var nonce = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { nonce[4 + i] = UInt8(truncatingIfNeeded: counter >> (8 * UInt64(i))) }
        key.withUnsafeBytes { k in
            nonce.withUnsafeBytes { n in
                data.withUnsafeMutableBytes { d in ChaCha20.xor(key: k, nonce: n, d) }
            }
        }
    }

    /// XOR a data layer from `input` into `output` (the same memory is fine).
    static func xor(
        _ key: SecureBytes, counter: UInt64, from input: UnsafeRawBufferPointer,
        into output: UnsafeMutableRawBufferPointer
    ) {
        var nonce: (UInt32, UInt32, UInt32) = (
            0, UInt32(truncatingIfNeeded: counter).littleEndian, UInt32(truncatingIfNeeded: counter >> 32).littleEndian
        )
        withUnsafeBytes(of: &nonce) { n in CellCipher.xor(key: key, nonce: n.baseAddress!, from: input, into: output) }
    }

    /// Seal a cell in place between origin and exit: the plaintext fills all
    /// but the last 16 bytes, which receive the tag.
    static func sealCell(_ key: SecureBytes, counter: UInt64, _ cell: UnsafeMutableRawBufferPointer) -> Bool {
        var n = cellNonce(counter)
        let text = cell.count - AEAD.tagLength
        return withUnsafeBytes(of: &n) { nb in
            CellCipher.seal(
                key: key, nonce: nb.baseAddress!, ad: UnsafeRawBufferPointer(start: nil, count: 0),
                plaintext: UnsafeRawBufferPointer(rebasing: cell[0..<text]),
                into: UnsafeMutableRawBufferPointer(rebasing: cell[0..<text]), tag: cell.baseAddress! + text)
        }
    }

    /// Open a cell in place: the plaintext is left in all but the last 16 bytes.
    static func openCell(_ key: SecureBytes, counter: UInt64, _ cell: UnsafeMutableRawBufferPointer) -> Bool {
        var n = cellNonce(counter)
        let text = cell.count - AEAD.tagLength
        return withUnsafeBytes(of: &n) { nb in
            CellCipher.open(
                key: key, nonce: nb.baseAddress!, ad: UnsafeRawBufferPointer(start: nil, count: 0),
                ciphertext: UnsafeRawBufferPointer(rebasing: cell[0..<text]), tag: cell.baseAddress! + text,
                into: UnsafeMutableRawBufferPointer(rebasing: cell[0..<text]))
        }
    }

    /// The box's nonce (u64 LE cell number ‖ 4 zero bytes), as 12 bytes in a tuple.
    static func cellNonce(_ counter: UInt64) -> (UInt32, UInt32, UInt32) {
        (UInt32(truncatingIfNeeded: counter).littleEndian, UInt32(truncatingIfNeeded: counter >> 32).littleEndian, 0)
    }

    static func nonce(_ counter: UInt64) -> [UInt8] {
        var nonce = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { nonce[i] = UInt8(truncatingIfNeeded: counter >> (8 * UInt64(i))) }
        return nonce
    }
}
