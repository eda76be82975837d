/// The Noise Protocol Framework (revision 34) with X25519, SHA-256 and either
/// ChaCha20-Poly1305 or AES-256-GCM (`CipherSuite`) — what Masq uses for
/// pairing (XXpsk3) and for sessions between paired devices (KK). A generic
/// handshake engine driven by pattern tokens, checked byte for byte against
/// the cacophony test vectors of both ciphers.
public enum Noise {
    public static let maxMessageLength = 65_535
    static let dhLength = 32

    /// The handshake patterns Masq knows (fundamental and PSK variants).
    public enum Pattern: String, CaseIterable, Sendable {
        case NN, KK, IK, XX, NNpsk0, XXpsk3, IKpsk2, NKpsk0, KKpsk0, KKpsk2

        public var protocolName: String { protocolName(.chaChaPoly) }

        public func protocolName(_ suite: CipherSuite) -> String { "Noise_\(rawValue)_25519_\(suite.noiseName)_SHA256" }

        enum Token: Sendable { case e, s, ee, es, se, ss, psk }

        /// Pre-message keys: (initiator's, responder's) statics known in advance.
        var preMessages: (initiatorStatic: Bool, responderStatic: Bool) {
            switch self {
            case .KK, .KKpsk0, .KKpsk2: (true, true)
            case .IK, .IKpsk2, .NKpsk0: (false, true)
            default: (false, false)
            }
        }

        /// One array of tokens per handshake message; even indexes go initiator -> responder.
        var messages: [[Token]] {
            switch self {
            case .NN: [[.e], [.e, .ee]]
            case .NNpsk0: [[.psk, .e], [.e, .ee]]
            case .KK: [[.e, .es, .ss], [.e, .ee, .se]]
            case .IK: [[.e, .es, .s, .ss], [.e, .ee, .se]]
            case .IKpsk2: [[.e, .es, .s, .ss], [.e, .ee, .se, .psk]]
            case .XX: [[.e], [.e, .ee, .s, .es], [.s, .se]]
            case .XXpsk3: [[.e], [.e, .ee, .s, .es], [.s, .se, .psk]]
            case .NKpsk0: [[.psk, .e, .es], [.e, .ee]]
            case .KKpsk0: [[.psk, .e, .es, .ss], [.e, .ee, .se]]
            case .KKpsk2: [[.e, .es, .ss], [.e, .ee, .se, .psk]]
            }
        }

        var pskCount: Int { messages.joined().filter { $0 == .psk }.count }
        var needsLocalStatic: (initiator: Bool, responder: Bool) {
            let tokens = messages.enumerated().flatMap { i, m in m.map { (i % 2 == 0, $0) } }
            let initiator = preMessages.initiatorStatic || tokens.contains { $0.0 && $0.1 == .s }
            let responder = preMessages.responderStatic || tokens.contains { !$0.0 && $0.1 == .s }
            return (initiator, responder)
        }
    }

    public enum Role: Sendable { case initiator, responder }

    /// A key and nonce counter. ChaChaPoly: nonce = 32 zero bits || 64-bit
    /// little-endian counter; AESGCM: 32 zero bits || 64-bit big-endian counter.
    public final class CipherState: @unchecked Sendable {
        private(set) var key: SecureBytes?
        public private(set) var nonce: UInt64 = 0
        public let suite: CipherSuite

        init(key: SecureBytes? = nil, suite: CipherSuite) {
            self.key = key
            self.suite = suite
        }

        var hasKey: Bool { key != nil }

        func initializeKey(_ newKey: SecureBytes) {
            key = newKey
            nonce = 0
        }

        func copy() -> CipherState {
            let c = CipherState(key: key, suite: suite)
            c.nonce = nonce
            return c
        }

        static func nonceBytes(_ n: UInt64, _ suite: CipherSuite) -> [UInt8] {
            switch suite {
            case .chaChaPoly: [0, 0, 0, 0] + (0..<8).map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) }
            case .aesGCM: [0, 0, 0, 0] + (0..<8).reversed().map { UInt8(truncatingIfNeeded: n >> (8 * UInt64($0))) }
            }
        }

        public func encrypt(ad: [UInt8], plaintext: [UInt8]) throws(CryptoError) -> [UInt8] {
            guard let key else { return plaintext }
            guard nonce < UInt64.max else { throw .protocolViolation("Noise nonce exhausted") }
            let out = try AEAD.seal(
                suite.aead, key: key, nonce: Self.nonceBytes(nonce, suite), ad: ad, plaintext: plaintext)
            nonce += 1
            return out
        }

        /// Encrypt `plaintext` into `output` (plaintext.count + 16 bytes; the
        /// same memory as the plaintext is allowed), without copies.
        public func encrypt(
            ad: UnsafeRawBufferPointer, plaintext: UnsafeRawBufferPointer,
            into output: UnsafeMutableRawBufferPointer
        ) throws(CryptoError) {
            guard let key else { throw .protocolViolation("Noise cipher without a key") }
            guard nonce < UInt64.max else { throw .protocolViolation("Noise nonce exhausted") }
            if suite == .chaChaPoly {
                // The link's per-message path: the nonce on the stack, OpenSSL's context reused.
                precondition(output.count == plaintext.count + AEAD.tagLength)
                var n = Self.chaChaNonce(nonce)
                let ok = withUnsafeBytes(of: &n) { nb in
                    CellCipher.seal(
                        key: key, nonce: nb.baseAddress!, ad: ad, plaintext: plaintext,
                        into: UnsafeMutableRawBufferPointer(rebasing: output[0..<plaintext.count]),
                        tag: output.baseAddress! + plaintext.count)
                }
                guard ok else { throw .invalidInput("AEAD parameters rejected") }
                nonce += 1
                return
            }
            let n = Self.nonceBytes(nonce, suite)
            try key.withBytes { (k) throws(CryptoError) in
                try AEAD.seal(suite.aead, key: k, nonce: n, ad: ad, plaintext: plaintext, into: output)
            }
            nonce += 1
        }

        /// The ChaChaPoly nonce of message `n` (4 zero bytes ‖ u64 LE), as 12 bytes in a tuple.
        static func chaChaNonce(_ n: UInt64) -> (UInt32, UInt32, UInt32) {
            (0, UInt32(truncatingIfNeeded: n).littleEndian, UInt32(truncatingIfNeeded: n >> 32).littleEndian)
        }

        /// Decrypt `ciphertext` (with its tag) into `output` (16 bytes fewer).
        public func decrypt(
            ad: UnsafeRawBufferPointer, ciphertext: UnsafeRawBufferPointer,
            into output: UnsafeMutableRawBufferPointer
        ) throws(CryptoError) {
            guard let key else { throw .protocolViolation("Noise cipher without a key") }
            guard nonce < UInt64.max else { throw .protocolViolation("Noise nonce exhausted") }
            if suite == .chaChaPoly {
                guard ciphertext.count >= AEAD.tagLength else {
                    throw .authenticationFailed("ciphertext shorter than its tag")
                }
                let text = ciphertext.count - AEAD.tagLength
                precondition(output.count == text)
                var n = Self.chaChaNonce(nonce)
                let ok = withUnsafeBytes(of: &n) { nb in
                    CellCipher.open(
                        key: key, nonce: nb.baseAddress!, ad: ad,
                        ciphertext: UnsafeRawBufferPointer(rebasing: ciphertext[0..<text]),
                        tag: ciphertext.baseAddress! + text, into: output)
                }
                guard ok else { throw .authenticationFailed("message authentication failed") }
                nonce += 1  // only after the tag verified
                return
            }
            let n = Self.nonceBytes(nonce, suite)
            try key.withBytes { (k) throws(CryptoError) in
                try AEAD.open(suite.aead, key: k, nonce: n, ad: ad, ciphertext: ciphertext, into: output)
            }
            nonce += 1  // only after the tag verified
        }

        public func decrypt(ad: [UInt8], ciphertext: [UInt8]) throws(CryptoError) -> [UInt8] {
            guard let key else { return ciphertext }
            guard nonce < UInt64.max else { throw .protocolViolation("Noise nonce exhausted") }
            let out = try AEAD.open(
                suite.aead, key: key, nonce: Self.nonceBytes(nonce, suite), ad: ad, ciphertext: ciphertext)
            nonce += 1  // only after the tag verified
            return out
        }
    }

    /// Chaining key, handshake hash and the current cipher.
    struct SymmetricState {
        var ck: SecureBytes
        var h: [UInt8]
        var cipher: CipherState

        init(protocolName: String, suite: CipherSuite) {
            cipher = CipherState(suite: suite)
            let name = Array(protocolName.utf8)
            h = name.count <= 32 ? name + [UInt8](repeating: 0, count: 32 - name.count) : Hash.sha256(name)
            ck = SecureBytes(h)
        }

        /// A copy that shares no mutable state with this one.
        func copy() -> SymmetricState {
            var s = self
            s.cipher = cipher.copy()
            return s
        }

        /// Noise's HKDF is RFC 5869 HKDF with the chaining key as salt and no info.
        private func hkdf(_ ikm: SecureBytes, outputs: Int) throws(CryptoError) -> [SecureBytes] {
            let out = try Hash.hkdfSHA256(salt: ck, ikm: ikm, info: [], length: 32 * outputs)
            return out.withUnsafeBytes { raw in (0..<outputs).map { SecureBytes(raw[($0 * 32)..<($0 * 32 + 32)]) } }
        }

        mutating func mixKey(_ ikm: SecureBytes) throws(CryptoError) {
            let out = try hkdf(ikm, outputs: 2)
            ck = out[0]
            cipher.initializeKey(out[1])
        }

        mutating func mixHash(_ data: [UInt8]) {
            h = Hash.sha256(h + data)
        }

        mutating func mixKeyAndHash(_ ikm: SecureBytes) throws(CryptoError) {
            let out = try hkdf(ikm, outputs: 3)
            ck = out[0]
            mixHash(out[1].bytes)
            cipher.initializeKey(out[2])
        }

        mutating func encryptAndHash(_ plaintext: [UInt8]) throws(CryptoError) -> [UInt8] {
            let ciphertext = try cipher.encrypt(ad: h, plaintext: plaintext)
            mixHash(ciphertext)
            return ciphertext
        }

        mutating func decryptAndHash(_ ciphertext: [UInt8]) throws(CryptoError) -> [UInt8] {
            let plaintext = try cipher.decrypt(ad: h, ciphertext: ciphertext)
            mixHash(ciphertext)
            return plaintext
        }

        func split() throws(CryptoError) -> (CipherState, CipherState) {
            let out = try hkdf(SecureBytes(count: 0), outputs: 2)
            return (CipherState(key: out[0], suite: cipher.suite), CipherState(key: out[1], suite: cipher.suite))
        }
    }

    /// The result of a completed handshake.
    public struct Result: Sendable {
        /// Encrypts what this side sends / decrypts what it receives.
        public let send: CipherState
        public let receive: CipherState
        /// The handshake hash: a channel binding both sides share.
        public let handshakeHash: [UInt8]
        /// The peer's static X25519 public key (authenticated by the handshake).
        public let remoteStatic: [UInt8]?
        /// The final chaining key, from which Masq derives its ratchet root.
        public let chainingKey: SecureBytes
        /// This side's and the peer's ephemeral keys (the ratchet's first keys).
        public let localEphemeral: (privateKey: SecureBytes, publicKey: [UInt8])
        public let remoteEphemeral: [UInt8]
    }

    /// One side of a handshake. Call writeMessage / readMessage in turn until
    /// `isComplete`; then `result()`.
    public final class Handshake: @unchecked Sendable {
        public let pattern: Pattern
        public let role: Role
        public let suite: CipherSuite
        private var symmetric: SymmetricState
        private let localStatic: (privateKey: SecureBytes, publicKey: [UInt8])?
        private var localEphemeral: (privateKey: SecureBytes, publicKey: [UInt8])?
        private var remoteStatic: [UInt8]?
        private var remoteEphemeral: [UInt8]?
        private var psks: [SecureBytes]
        private var nextMessage = 0
        private var failed = false
        private let fixedEphemeral: SecureBytes?

        /// - Parameters:
        ///   - staticKey: this device's X25519 private key (patterns with `s`).
        ///   - remoteStatic: the peer's static public key when the pattern pre-shares it (KK, IK).
        ///   - psks: pre-shared 32-byte keys, one per `psk` token.
        ///   - suite: the cipher (ChaChaPoly or AESGCM); X25519 and SHA-256 either way.
        ///   - ephemeral: a fixed ephemeral private key — for test vectors only.
        public init(
            pattern: Pattern, role: Role, prologue: [UInt8] = [], staticKey: SecureBytes? = nil,
            remoteStatic: [UInt8]? = nil, psks: [SecureBytes] = [], ephemeral: SecureBytes? = nil,
            suite: CipherSuite = .chaChaPoly
        ) throws(CryptoError) {
            self.pattern = pattern
            self.role = role
            self.suite = suite
            symmetric = SymmetricState(protocolName: pattern.protocolName(suite), suite: suite)
            if let staticKey {
                localStatic = (staticKey, try X25519.publicKey(of: staticKey))
            } else {
                localStatic = nil
            }
            self.remoteStatic = remoteStatic
            self.psks = psks
            fixedEphemeral = ephemeral
            let needs = pattern.needsLocalStatic
            if (role == .initiator ? needs.initiator : needs.responder) && localStatic == nil {
                throw .invalidInput("\(pattern.rawValue) needs this side's static key")
            }
            guard psks.count == pattern.pskCount, psks.allSatisfy({ $0.count == 32 }) else {
                throw .invalidInput("\(pattern.rawValue) needs \(pattern.pskCount) pre-shared key(s) of 32 bytes")
            }
            if let remoteStatic, remoteStatic.count != 32 { throw .invalidInput("remote static key must be 32 bytes") }
            symmetric.mixHash(prologue)
            let pre = pattern.preMessages
            if pre.initiatorStatic {
                let key = role == .initiator ? localStatic?.publicKey : remoteStatic
                guard let key else {
                    throw .invalidInput("\(pattern.rawValue) needs the initiator's static key in advance")
                }
                symmetric.mixHash(key)
            }
            if pre.responderStatic {
                let key = role == .responder ? localStatic?.publicKey : remoteStatic
                guard let key else {
                    throw .invalidInput("\(pattern.rawValue) needs the responder's static key in advance")
                }
                symmetric.mixHash(key)
            }
        }

        private init(copying other: Handshake) {
            pattern = other.pattern
            role = other.role
            suite = other.suite
            symmetric = other.symmetric.copy()
            localStatic = other.localStatic
            localEphemeral = other.localEphemeral
            remoteStatic = other.remoteStatic
            remoteEphemeral = other.remoteEphemeral
            psks = other.psks
            nextMessage = other.nextMessage
            failed = other.failed
            fixedEphemeral = other.fixedEphemeral
        }

        /// An independent copy: read a message that may be forged on the copy,
        /// and keep the original when it fails (keys are immutable and shared).
        public func copy() -> Handshake { Handshake(copying: self) }

        public var isComplete: Bool { nextMessage == pattern.messages.count }
        /// Whether the next message is this side's to write.
        public var isMyTurn: Bool { !isComplete && (nextMessage % 2 == 0) == (role == .initiator) }
        public var handshakeHash: [UInt8] { symmetric.h }

        public func writeMessage(payload: [UInt8] = []) throws(CryptoError) -> [UInt8] {
            guard !failed else { throw .protocolViolation("handshake already failed") }
            guard isMyTurn else {
                throw .protocolViolation(isComplete ? "handshake is complete" : "not this side's turn to write")
            }
            do throws(CryptoError) {
                var out: [UInt8] = []
                for token in pattern.messages[nextMessage] {
                    switch token {
                    case .e:
                        let e: (privateKey: SecureBytes, publicKey: [UInt8])
                        if let fixedEphemeral {
                            e = (fixedEphemeral, try X25519.publicKey(of: fixedEphemeral))
                        } else {
                            e = X25519.keyPair()
                        }
                        localEphemeral = e
                        out += e.publicKey
                        symmetric.mixHash(e.publicKey)
                        if pattern.pskCount > 0 { try symmetric.mixKey(SecureBytes(e.publicKey)) }
                    case .s:
                        out += try symmetric.encryptAndHash(localStatic!.publicKey)
                    case .psk:
                        try symmetric.mixKeyAndHash(psks.removeFirst())
                    default:
                        try symmetric.mixKey(try dh(token))
                    }
                }
                out += try symmetric.encryptAndHash(payload)
                guard out.count <= maxMessageLength else {
                    throw .invalidInput("handshake message longer than 65535 bytes")
                }
                nextMessage += 1
                return out
            } catch {
                failed = true
                throw error
            }
        }

        /// Process the peer's message; returns its payload. Any failure
        /// (truncation, bad tag — e.g. a wrong PSK) ends the handshake.
        public func readMessage(_ message: [UInt8]) throws(CryptoError) -> [UInt8] {
            guard !failed else { throw .protocolViolation("handshake already failed") }
            guard !isComplete && !isMyTurn else {
                throw .protocolViolation(isComplete ? "handshake is complete" : "not this side's turn to read")
            }
            guard message.count <= maxMessageLength else {
                throw .invalidInput("handshake message longer than 65535 bytes")
            }
            do throws(CryptoError) {
                var rest = message[...]
                for token in pattern.messages[nextMessage] {
                    switch token {
                    case .e:
                        guard rest.count >= dhLength else { throw .invalidInput("handshake message truncated") }
                        let e = Array(rest.prefix(dhLength))
                        rest = rest.dropFirst(dhLength)
                        remoteEphemeral = e
                        symmetric.mixHash(e)
                        if pattern.pskCount > 0 { try symmetric.mixKey(SecureBytes(e)) }
                    case .s:
                        let length = dhLength + (symmetric.cipher.hasKey ? AEAD.tagLength : 0)
                        guard rest.count >= length else { throw .invalidInput("handshake message truncated") }
                        remoteStatic = try symmetric.decryptAndHash(Array(rest.prefix(length)))
                        rest = rest.dropFirst(length)
                    case .psk:
                        try symmetric.mixKeyAndHash(psks.removeFirst())
                    default:
                        try symmetric.mixKey(try dh(token))
                    }
                }
                let payload = try symmetric.decryptAndHash(Array(rest))
                nextMessage += 1
                return payload
            } catch {
                failed = true
                throw error
            }
        }

        /// The transport keys and what the session layer needs. Only once complete.
        public func result() throws(CryptoError) -> Result {
            guard isComplete, let localEphemeral, let remoteEphemeral else {
                throw .protocolViolation("handshake not complete")
            }
            let (c1, c2) = try symmetric.split()
            return Result(
                send: role == .initiator ? c1 : c2, receive: role == .initiator ? c2 : c1,
                handshakeHash: symmetric.h, remoteStatic: remoteStatic, chainingKey: symmetric.ck,
                localEphemeral: localEphemeral, remoteEphemeral: remoteEphemeral)
        }

        private func dh(_ token: Pattern.Token) throws(CryptoError) -> SecureBytes {
            func need<T>(_ value: T?, _ what: String) throws(CryptoError) -> T {
                guard let value else { throw .protocolViolation("\(what) missing for \(token)") }
                return value
            }
            let initiator = role == .initiator
            switch token {
            case .ee:
                return try X25519.sharedSecret(
                    keyPair: need(localEphemeral, "e"), peerPublicKey: need(remoteEphemeral, "re"))
            case .es:
                return initiator
                    ? try X25519.sharedSecret(
                        keyPair: need(localEphemeral, "e"), peerPublicKey: need(remoteStatic, "rs"))
                    : try X25519.sharedSecret(
                        keyPair: need(localStatic, "s"), peerPublicKey: need(remoteEphemeral, "re"))
            case .se:
                return initiator
                    ? try X25519.sharedSecret(
                        keyPair: need(localStatic, "s"), peerPublicKey: need(remoteEphemeral, "re"))
                    : try X25519.sharedSecret(
                        keyPair: need(localEphemeral, "e"), peerPublicKey: need(remoteStatic, "rs"))
            case .ss:
                return try X25519.sharedSecret(keyPair: need(localStatic, "s"), peerPublicKey: need(remoteStatic, "rs"))
            default:
                throw .protocolViolation("not a DH token")
            }
        }
    }
}
