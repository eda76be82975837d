/// The Double Ratchet (Signal's specification, rev. 4): a DH ratchet on
/// X25519 plus symmetric KDF chains, so every message has its own key (forward
/// secrecy) and a compromised state heals after one round trip (post-compromise
/// security). Headers are sent in clear but authenticated as associated data.
///
///   root step:   (rk, ck) = HKDF-SHA256(salt: rk, ikm: DH(...), info: "masq ratchet root v1", 64)
///   chain step:  suite 1 (ChaChaPoly, messages version 2): mk || ck' = ChaCha20 block 0 (key ck, nonce "masq-chain-1")
///                suite 2 (AESGCM, messages version 3): mk = HMAC-SHA256(ck, 0x01), ck' = HMAC-SHA256(ck, 0x02)
///   message:     the suite's AEAD with key mk (used once), nonce 0, AD = ad || header
///
/// Decryption is transactional: the state changes only if the message
/// authenticates, so tampered, replayed or truncated messages leave it intact.
public struct DoubleRatchet: Sendable {
    /// Bounds on skipped-message keys (out-of-order delivery, lost messages).
    public struct Limits: Sendable, Equatable {
        /// Most messages one chain may skip at once; a header asking for more is rejected.
        public var maxSkipPerChain = 1_000
        /// Most skipped keys kept in total; the oldest are forgotten beyond it.
        public var maxStoredSkipped = 2_000
        public init() {}
    }

    /// 1 version + 32 ratchet key + 4 previous-chain length + 4 message number.
    public static let headerLength = 41
    /// 2: chain steps use the ChaCha20 PRF (1 used HMAC-SHA512); 3: the AESGCM
    /// suite (HMAC-SHA256 chain, AES-256-GCM). See `CipherSuite`.
    static let version: UInt8 = 2

    public struct Header: Equatable, Sendable {
        public var ratchetKey: [UInt8]
        public var previousChainLength: UInt32
        public var messageNumber: UInt32

        init(ratchetKey: [UInt8], previousChainLength: UInt32, messageNumber: UInt32) {
            self.ratchetKey = ratchetKey
            self.previousChainLength = previousChainLength
            self.messageNumber = messageNumber
        }

        init(decoding bytes: ArraySlice<UInt8>, suite: CipherSuite) throws(CryptoError) {
            guard bytes.count >= DoubleRatchet.headerLength else {
                throw .invalidInput("ratchet message shorter than its header")
            }
            let b = Array(bytes.prefix(DoubleRatchet.headerLength))
            guard b[0] == suite.ratchetVersion else {
                throw .invalidInput(
                    CipherSuite(ratchetVersion: b[0]).map { "a ratchet message of suite \($0) on a \(suite) session" }
                        ?? "ratchet message version \(b[0]) unknown")
            }
            ratchetKey = Array(b[1..<33])
            previousChainLength = UInt32(bigEndianBytes: b[33..<37])
            messageNumber = UInt32(bigEndianBytes: b[37..<41])
        }
    }

    struct SkippedKey: Sendable {
        let ratchetKey: [UInt8]
        let number: UInt32
        let key: SecureBytes
    }

    public var limits: Limits
    /// The cipher suite (chosen at pairing): AEAD and chain step.
    public let suite: CipherSuite
    /// Ratchet key pairs to use instead of fresh ones — for test vectors only.
    var fixedKeys: [(privateKey: SecureBytes, publicKey: [UInt8])] = []
    private var sendingKey: (privateKey: SecureBytes, publicKey: [UInt8])
    private var receivingKey: [UInt8]?
    private var rootKey: SecureBytes
    private var sendingChain: SecureBytes?
    private var receivingChain: SecureBytes?
    private var sent: UInt32 = 0
    private var received: UInt32 = 0
    private var previousChainLength: UInt32 = 0
    private var skipped: [SkippedKey] = []

    /// The side that sends first ("Alice"): knows the peer's initial ratchet public key.
    public init(
        sharedSecret: SecureBytes, peerRatchetKey: [UInt8], limits: Limits = Limits(), suite: CipherSuite = .chaChaPoly
    ) throws(CryptoError) {
        try self.init(
            sharedSecret: sharedSecret, peerRatchetKey: peerRatchetKey, limits: limits, suite: suite, fixedKeys: [])
    }

    init(
        sharedSecret: SecureBytes, peerRatchetKey: [UInt8], limits: Limits = Limits(), suite: CipherSuite,
        fixedKeys: [(privateKey: SecureBytes, publicKey: [UInt8])]
    ) throws(CryptoError) {
        guard sharedSecret.count == 32 else { throw .invalidInput("ratchet shared secret must be 32 bytes") }
        self.limits = limits
        self.suite = suite
        self.fixedKeys = fixedKeys
        sendingKey = self.fixedKeys.isEmpty ? X25519.keyPair() : self.fixedKeys.removeFirst()
        receivingKey = peerRatchetKey
        let (root, chain) = try Self.rootStep(
            sharedSecret, X25519.sharedSecret(keyPair: sendingKey, peerPublicKey: peerRatchetKey))
        rootKey = root
        sendingChain = chain
    }

    /// The side that receives first ("Bob"): owns the initial ratchet key pair.
    public init(
        sharedSecret: SecureBytes, ownRatchetKey: (privateKey: SecureBytes, publicKey: [UInt8]),
        limits: Limits = Limits(),
        suite: CipherSuite = .chaChaPoly
    ) throws(CryptoError) {
        guard sharedSecret.count == 32 else { throw .invalidInput("ratchet shared secret must be 32 bytes") }
        self.limits = limits
        self.suite = suite
        sendingKey = ownRatchetKey
        rootKey = sharedSecret
    }

    /// Whether this side may send (the receiving side must hear first).
    public var canSend: Bool { sendingChain != nil }
    public var storedSkippedKeys: Int { skipped.count }

    /// Encrypt one message: header || ciphertext || tag.
    public mutating func encrypt(_ plaintext: [UInt8], associatedData: [UInt8] = []) throws(CryptoError) -> [UInt8] {
        var buffer: UnsafeMutableRawBufferPointer?
        defer { buffer?.deallocate() }
        try plaintext.withBytes { (p) throws(CryptoError) in
            try associatedData.withBytes { (a) throws(CryptoError) in
                try encrypt(p, associatedData: a) { length in
                    buffer = .allocate(byteCount: max(length, 1), alignment: 1)
                    return UnsafeMutableRawBufferPointer(rebasing: buffer![0..<length])
                }
            }
        }
        return Array(
            UnsafeRawBufferPointer(
                rebasing: buffer![0..<(DoubleRatchet.headerLength + plaintext.count + AEAD.tagLength)]))
    }

    /// Encrypt into a buffer `allocate(length)` returns (the caller owns it),
    /// with no intermediate copies: the zero-copy path of the C API.
    public mutating func encrypt(
        _ plaintext: UnsafeRawBufferPointer, associatedData: UnsafeRawBufferPointer,
        into allocate: (Int) -> UnsafeMutableRawBufferPointer
    ) throws(CryptoError) {
        guard let chain = sendingChain else {
            throw .protocolViolation("this side cannot send before it has received a message")
        }
        guard sent < UInt32.max else { throw .protocolViolation("sending chain exhausted") }
        let output = allocate(DoubleRatchet.headerLength + plaintext.count + AEAD.tagLength)
        // The header goes straight into the output; the AD is ad || header on the stack.
        output[0] = suite.ratchetVersion
        sendingKey.publicKey.withUnsafeBytes {
            UnsafeMutableRawBufferPointer(rebasing: output[1..<33]).copyMemory(from: $0)
        }
        output.storeBytes(of: previousChainLength.bigEndian, toByteOffset: 33, as: UInt32.self)
        output.storeBytes(of: sent.bigEndian, toByteOffset: 37, as: UInt32.self)
        let header = UnsafeRawBufferPointer(rebasing: output[0..<DoubleRatchet.headerLength])
        let aead = suite.aead
        let next = try Self.withChainStep(chain, suite) { (messageKey) throws(CryptoError) in
            try withConcatenation(associatedData, header) { (ad) throws(CryptoError) in
                try AEAD.seal(
                    aead, key: messageKey, nonce: Self.nonce, ad: ad, plaintext: plaintext,
                    into: UnsafeMutableRawBufferPointer(rebasing: output[DoubleRatchet.headerLength...]))
            }
        }
        sendingChain = next
        sent += 1
    }

    /// Authenticate and decrypt one message; the state is unchanged on any failure.
    public mutating func decrypt(_ message: [UInt8], associatedData: [UInt8] = []) throws(CryptoError) -> [UInt8] {
        var buffer: UnsafeMutableRawBufferPointer?
        var count = 0
        defer { buffer?.deallocate() }
        try message.withBytes { (m) throws(CryptoError) in
            try associatedData.withBytes { (a) throws(CryptoError) in
                try decrypt(m, associatedData: a) { length in
                    count = length
                    buffer = .allocate(byteCount: max(length, 1), alignment: 1)
                    return UnsafeMutableRawBufferPointer(rebasing: buffer![0..<length])
                }
            }
        }
        return Array(UnsafeRawBufferPointer(rebasing: buffer![0..<count]))
    }

    /// Decrypt into a buffer `allocate(length)` returns (zero-copy path). On
    /// failure the buffer (if allocated) holds nothing meaningful.
    public mutating func decrypt(
        _ message: UnsafeRawBufferPointer, associatedData: UnsafeRawBufferPointer,
        into allocate: (Int) -> UnsafeMutableRawBufferPointer
    ) throws(CryptoError) {
        guard message.count >= DoubleRatchet.headerLength + AEAD.tagLength else {
            throw .invalidInput("ratchet message too short")
        }
        let header = try Header(decoding: Array(message.prefix(DoubleRatchet.headerLength))[...], suite: suite)
        let aead = suite.aead
        let ad = Array(associatedData) + Array(message.prefix(DoubleRatchet.headerLength))
        let body = UnsafeRawBufferPointer(rebasing: message[DoubleRatchet.headerLength...])
        var output: UnsafeMutableRawBufferPointer?
        func open(_ k: UnsafeRawBufferPointer) throws(CryptoError) {
            if output == nil { output = allocate(body.count - AEAD.tagLength) }
            try ad.withBytes { (a) throws(CryptoError) in
                try AEAD.open(aead, key: k, nonce: Self.nonce, ad: a, ciphertext: body, into: output!)
            }
        }

        if let index = skipped.firstIndex(where: {
            $0.ratchetKey == header.ratchetKey && $0.number == header.messageNumber
        }) {
            try skipped[index].key.withBytes { (k) throws(CryptoError) in try open(k) }
            skipped.remove(at: index)
            return
        }

        var next = self
        if header.ratchetKey != next.receivingKey {
            guard header.ratchetKey.count == 32 else { throw .invalidInput("bad ratchet key") }
            if next.receivingChain != nil { try next.skip(until: header.previousChainLength) }
            try next.dhStep(header.ratchetKey)
        } else if header.messageNumber < next.received {
            throw .authenticationFailed("replayed or already decrypted message")
        }
        try next.skip(until: header.messageNumber)
        guard let chain = next.receivingChain else { throw .protocolViolation("no receiving chain") }
        next.receivingChain = try Self.withChainStep(chain, suite) { (messageKey) throws(CryptoError) in
            try open(messageKey)
        }
        next.received = header.messageNumber + 1
        self = next
    }

    // MARK: - steps

    private static let nonce = [UInt8](repeating: 0, count: 12)

    static func rootStep(_ root: SecureBytes, _ dh: SecureBytes) throws(CryptoError) -> (SecureBytes, SecureBytes) {
        let out = try Hash.hkdfSHA256(salt: root, ikm: dh, info: Array("masq ratchet root v1".utf8), length: 64)
        return out.withUnsafeBytes { (SecureBytes($0[0..<32]), SecureBytes($0[32..<64])) }
    }

    /// The chain KDF: the first ChaCha20 keystream block under the chain key
    /// (a fixed nonce names the purpose) gives the message key (bytes 0..<32)
    /// and the next chain key (32..<64). ChaCha20 is a PRF in its key, so
    /// this is the PRG-based key evolution of Bellare and Yee: the next chain
    /// key reveals neither this message key nor any earlier key (forward
    /// secrecy), at a tenth of HMAC-SHA512's cost.
    static func chainKDF(_ chain: SecureBytes, into out: UnsafeMutableRawBufferPointer) {
        chain.withUnsafeBytes { key in
            chainNonce.withUnsafeBytes { nonce in ChaCha20.keystream(key: key, nonce: nonce, into: out) }
        }
    }

    /// The AESGCM suite's chain KDF (what WebCrypto can compute too): message
    /// key = HMAC-SHA256(ck, 0x01), next chain key = HMAC-SHA256(ck, 0x02) —
    /// Signal's recommended KDF_CK; HMAC is a PRF in its key, so the same
    /// forward secrecy argument holds.
    static func chainKDF(_ chain: SecureBytes, _ suite: CipherSuite, into out: UnsafeMutableRawBufferPointer) {
        switch suite {
        case .chaChaPoly:
            chainKDF(chain, into: out)
        case .aesGCM:
            chain.withUnsafeBytes { key in
                var one: UInt8 = 1, two: UInt8 = 2
                var mk = withUnsafeBytes(of: &one) { Hash.hmacSHA256(key: key, data: $0) }
                var ck = withUnsafeBytes(of: &two) { Hash.hmacSHA256(key: key, data: $0) }
                UnsafeMutableRawBufferPointer(rebasing: out[0..<32]).copyBytes(from: mk)
                UnsafeMutableRawBufferPointer(rebasing: out[32..<64]).copyBytes(from: ck)
                wipe(&mk)
                wipe(&ck)
            }
        }
    }

    /// One chain step without putting the message key on the heap: `body`
    /// sees it in a stack buffer that is wiped afterwards; returns the next chain key.
    static func withChainStep(
        _ chain: SecureBytes, _ suite: CipherSuite, _ body: (UnsafeRawBufferPointer) throws(CryptoError) -> Void
    ) throws(CryptoError) -> SecureBytes {
        try withUnsafeTemporaryAllocation(byteCount: 64, alignment: 16) { (out) throws(CryptoError) -> SecureBytes in
            defer { masqWipe(out) }
            chainKDF(chain, suite, into: out)
            try body(UnsafeRawBufferPointer(rebasing: out[0..<32]))
            return SecureBytes(UnsafeRawBufferPointer(rebasing: out[32..<64]))
        }
    }

    static func chainStep(_ chain: SecureBytes, _ suite: CipherSuite = .chaChaPoly) -> (
        messageKey: SecureBytes, next: SecureBytes
    ) {
        withUnsafeTemporaryAllocation(byteCount: 64, alignment: 16) { out in
            defer { masqWipe(out) }
            chainKDF(chain, suite, into: out)
            return (
                SecureBytes(UnsafeRawBufferPointer(rebasing: out[0..<32])),
                SecureBytes(UnsafeRawBufferPointer(rebasing: out[32..<64]))
            )
        }
    }

    private mutating func dhStep(_ peerKey: [UInt8]) throws(CryptoError) {
        previousChainLength = sent
        sent = 0
        received = 0
        receivingKey = peerKey
        let (root1, receiving) = try Self.rootStep(
            rootKey, X25519.sharedSecret(keyPair: sendingKey, peerPublicKey: peerKey))
        sendingKey = fixedKeys.isEmpty ? X25519.keyPair() : fixedKeys.removeFirst()
        let (root2, sending) = try Self.rootStep(
            root1, X25519.sharedSecret(keyPair: sendingKey, peerPublicKey: peerKey))
        rootKey = root2
        receivingChain = receiving
        sendingChain = sending
    }

    /// Store keys for messages [received, until) of the receiving chain.
    private mutating func skip(until: UInt32) throws(CryptoError) {
        guard let start = receivingChain, until > received else { return }
        guard Int(until - received) <= limits.maxSkipPerChain else {
            throw .protocolViolation(
                "message would skip \(until - received) keys; the limit is \(limits.maxSkipPerChain)")
        }
        guard let ratchetKey = receivingKey else { return }
        var chain = start
        while received < until {
            let (mk, next) = Self.chainStep(chain, suite)
            skipped.append(SkippedKey(ratchetKey: ratchetKey, number: received, key: mk))
            chain = next
            received += 1
        }
        receivingChain = chain
        if skipped.count > limits.maxStoredSkipped { skipped.removeFirst(skipped.count - limits.maxStoredSkipped) }
    }

    // MARK: - persistence

    /// The whole state as bytes (secret: store it encrypted).
    public func serialized() -> [UInt8] {
        var out: [UInt8] = [suite.ratchetVersion]
        out += sendingKey.privateKey.bytes + sendingKey.publicKey
        out += rootKey.bytes
        out += optional(receivingKey) + optional(sendingChain?.bytes) + optional(receivingChain?.bytes)
        out += sent.bigEndianBytes + received.bigEndianBytes + previousChainLength.bigEndianBytes
        out += UInt32(limits.maxSkipPerChain).bigEndianBytes + UInt32(limits.maxStoredSkipped).bigEndianBytes
        out += UInt32(skipped.count).bigEndianBytes
        for s in skipped { out += s.ratchetKey + s.number.bigEndianBytes + s.key.bytes }
        return out
    }

    private func optional(_ bytes: [UInt8]?) -> [UInt8] { bytes.map { [1] + $0 } ?? [0] }

    public init(serialized bytes: [UInt8]) throws(CryptoError) {
        var r = Reader(bytes: bytes)
        guard let suite = CipherSuite(ratchetVersion: try r.take(1)[0]) else {
            throw .invalidInput("ratchet state in an unknown format")
        }
        self.suite = suite
        sendingKey = (SecureBytes(try r.take(32)), try r.take(32))
        rootKey = SecureBytes(try r.take(32))
        receivingKey = try r.optional()
        sendingChain = try r.optional().map { SecureBytes($0) }
        receivingChain = try r.optional().map { SecureBytes($0) }
        sent = try r.uint32()
        received = try r.uint32()
        previousChainLength = try r.uint32()
        limits = Limits()
        limits.maxSkipPerChain = Int(try r.uint32())
        limits.maxStoredSkipped = Int(try r.uint32())
        let count = try r.uint32()
        guard Int(count) <= limits.maxStoredSkipped, Int(count) * 68 <= bytes.count else {
            throw .invalidInput("ratchet state has too many skipped keys")
        }
        for _ in 0..<count {
            skipped.append(
                SkippedKey(ratchetKey: try r.take(32), number: try r.uint32(), key: SecureBytes(try r.take(32))))
        }
        guard r.isAtEnd else { throw .invalidInput("ratchet state has trailing bytes") }
    }

    struct Reader {
        let bytes: [UInt8]
        var offset = 0
        var isAtEnd: Bool { offset == bytes.count }
        mutating func take(_ n: Int) throws(CryptoError) -> [UInt8] {
            guard bytes.count - offset >= n else { throw .invalidInput("ratchet state truncated") }
            defer { offset += n }
            return Array(bytes[offset..<(offset + n)])
        }
        mutating func uint32() throws(CryptoError) -> UInt32 { UInt32(bigEndianBytes: try take(4)[...]) }
        mutating func optional() throws(CryptoError) -> [UInt8]? {
            switch try take(1)[0] {
            case 0: return nil
            case 1: return try take(32)
            default: throw .invalidInput("ratchet state malformed")
            }
        }
    }
}

extension UInt32 {
    public var bigEndianBytes: [UInt8] {
        [
            UInt8(self >> 24), UInt8(truncatingIfNeeded: self >> 16), UInt8(truncatingIfNeeded: self >> 8),
            UInt8(truncatingIfNeeded: self)
        ]
    }

    public init(bigEndianBytes b: ArraySlice<UInt8>) {
        let s = b.startIndex
        self = UInt32(b[s]) << 24 | UInt32(b[s + 1]) << 16 | UInt32(b[s + 2]) << 8 | UInt32(b[s + 3])
    }
}

/// The ChaCha20 nonce of the chain KDF (12 bytes).
private let chainNonce: [UInt8] = Array("masq-chain-1".utf8)

/// `a || b` in a stack buffer (heap only if large), for AEAD associated data.
public func withConcatenation<T, E: Error>(
    _ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer,
    _ body: (UnsafeRawBufferPointer) throws(E) -> T
) throws(E) -> T {
    try withUnsafeTemporaryAllocation(byteCount: a.count + b.count, alignment: 1) { (buffer) throws(E) -> T in
        if a.count > 0 { UnsafeMutableRawBufferPointer(rebasing: buffer[0..<a.count]).copyMemory(from: a) }
        if b.count > 0 { UnsafeMutableRawBufferPointer(rebasing: buffer[a.count...]).copyMemory(from: b) }
        return try body(UnsafeRawBufferPointer(buffer))
    }
}

extension Array where Element == UInt8 {
    /// withUnsafeBytes for closures with typed throws.
    func withBytes<T>(_ body: (UnsafeRawBufferPointer) throws(CryptoError) -> T) throws(CryptoError) -> T {
        let r: Swift.Result<T, CryptoError> = withUnsafeBytes { raw in
            Swift.Result { () throws(CryptoError) in try body(raw) }
        }
        return try r.get()
    }
}
