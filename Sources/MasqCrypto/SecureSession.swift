/// A session between two devices: a Noise handshake that authenticates both
/// long-term X25519 keys (and, for pairing, a one-time pre-shared secret),
/// then a Double Ratchet seeded from it for every later message.
///
/// Ratchet roles: the handshake *responder* sends the first ratchet message
/// (it knows the initiator's Noise ephemeral key, which seeds the ratchet),
/// so a pairing completes with the responder's confirmation.
public final class SecureSession: @unchecked Sendable {
    public enum Phase: Sendable { case handshaking, established, failed }

    private var handshake: Noise.Handshake?
    private var ratchet: DoubleRatchet?
    public private(set) var phase: Phase = .handshaking
    /// The peer's static X25519 key, once the handshake authenticated it.
    public private(set) var peerStaticKey: [UInt8]?
    /// Channel binding both sides share once established.
    public private(set) var handshakeHash: [UInt8] = []
    public let role: Noise.Role
    /// The cipher suite of the handshake and of the ratchet that follows it.
    public let suite: CipherSuite
    private let limits: DoubleRatchet.Limits
    /// Ratchet key pairs to use instead of fresh ones — for test vectors only.
    var fixedRatchetKeys: [(privateKey: SecureBytes, publicKey: [UInt8])] = []

    public convenience init(
        pattern: Noise.Pattern, role: Noise.Role, prologue: [UInt8] = [], staticKey: SecureBytes,
        remoteStatic: [UInt8]? = nil, psk: SecureBytes? = nil, limits: DoubleRatchet.Limits = DoubleRatchet.Limits(),
        suite: CipherSuite = .chaChaPoly
    ) throws(CryptoError) {
        try self.init(
            pattern: pattern, role: role, prologue: prologue, staticKey: staticKey, remoteStatic: remoteStatic,
            psk: psk, limits: limits, suite: suite, ephemeral: nil)
    }

    /// With a fixed Noise ephemeral (and `fixedRatchetKeys`) — for test vectors only.
    init(
        pattern: Noise.Pattern, role: Noise.Role, prologue: [UInt8] = [], staticKey: SecureBytes,
        remoteStatic: [UInt8]? = nil, psk: SecureBytes? = nil, limits: DoubleRatchet.Limits = DoubleRatchet.Limits(),
        suite: CipherSuite, ephemeral: SecureBytes?
    ) throws(CryptoError) {
        self.role = role
        self.limits = limits
        self.suite = suite
        handshake = try Noise.Handshake(
            pattern: pattern, role: role, prologue: prologue, staticKey: staticKey,
            remoteStatic: remoteStatic, psks: psk.map { [$0] } ?? [], ephemeral: ephemeral, suite: suite)
    }

    /// Restore an established session saved with `serialized()`.
    public init(serialized bytes: [UInt8]) throws(CryptoError) {
        guard bytes.count > 2 + 32 + 32, bytes[0] == 1 else {
            throw .invalidInput("session state in an unknown format")
        }
        role = bytes[1] == 0 ? .initiator : .responder
        peerStaticKey = Array(bytes[2..<34])
        handshakeHash = Array(bytes[34..<66])
        ratchet = try DoubleRatchet(serialized: Array(bytes[66...]))
        limits = ratchet!.limits
        suite = ratchet!.suite
        phase = .established
    }

    public var isEstablished: Bool { phase == .established }
    /// The handshake hash so far (final once established): what a payload
    /// inside the handshake can be bound to.
    public var transcriptHash: [UInt8] { handshake?.handshakeHash ?? handshakeHash }
    /// Whether the handshake expects this side to write next.
    public var mustWriteHandshake: Bool { handshake?.isMyTurn ?? false }
    public var canSend: Bool { ratchet?.canSend ?? false }

    public func writeHandshake(payload: [UInt8] = []) throws(CryptoError) -> [UInt8] {
        guard let handshake, phase == .handshaking else { throw .protocolViolation("the session is not handshaking") }
        do throws(CryptoError) {
            let message = try handshake.writeMessage(payload: payload)
            try finishIfComplete()
            return message
        } catch {
            phase = .failed
            throw error
        }
    }

    /// Read the peer's handshake message. `tentative`: a message that fails
    /// (forged by a relay, say) leaves the session as it was, so the genuine
    /// one can still be read; otherwise a failure ends the session.
    public func readHandshake(_ message: [UInt8], tentative: Bool = false) throws(CryptoError) -> [UInt8] {
        guard let current = handshake, phase == .handshaking else {
            throw .protocolViolation("the session is not handshaking")
        }
        let working = tentative ? current.copy() : current
        do throws(CryptoError) {
            let payload = try working.readMessage(message)
            handshake = working
            try finishIfComplete()
            return payload
        } catch {
            if !tentative { phase = .failed }
            throw error
        }
    }

    private func finishIfComplete() throws(CryptoError) {
        guard let handshake, handshake.isComplete else { return }
        let result = try handshake.result()
        let root = try Hash.hkdfSHA256(
            salt: result.chainingKey, ikm: SecureBytes(result.handshakeHash),
            info: Array("masq session v1".utf8), length: 32)
        ratchet =
            role == .responder
            ? try DoubleRatchet(
                sharedSecret: root, peerRatchetKey: result.remoteEphemeral, limits: limits, suite: suite,
                fixedKeys: fixedRatchetKeys)
            : try DoubleRatchet(sharedSecret: root, ownRatchetKey: result.localEphemeral, limits: limits, suite: suite)
        if role == .initiator { ratchet!.fixedKeys = fixedRatchetKeys }
        peerStaticKey = result.remoteStatic
        handshakeHash = result.handshakeHash
        self.handshake = nil
        phase = .established
    }

    public func seal(_ plaintext: [UInt8], associatedData: [UInt8] = []) throws(CryptoError) -> [UInt8] {
        guard phase == .established else { throw .protocolViolation("the session is not established") }
        return try ratchet!.encrypt(plaintext, associatedData: associatedData)
    }

    public func open(_ message: [UInt8], associatedData: [UInt8] = []) throws(CryptoError) -> [UInt8] {
        guard phase == .established else { throw .protocolViolation("the session is not established") }
        return try ratchet!.decrypt(message, associatedData: associatedData)
    }

    /// Zero-copy seal: the message goes into the buffer `allocate` returns.
    public func seal(
        _ plaintext: UnsafeRawBufferPointer, associatedData: UnsafeRawBufferPointer,
        into allocate: (Int) -> UnsafeMutableRawBufferPointer
    ) throws(CryptoError) {
        guard phase == .established else { throw .protocolViolation("the session is not established") }
        try ratchet!.encrypt(plaintext, associatedData: associatedData, into: allocate)
    }

    /// Zero-copy open: the plaintext goes into the buffer `allocate` returns.
    public func open(
        _ message: UnsafeRawBufferPointer, associatedData: UnsafeRawBufferPointer,
        into allocate: (Int) -> UnsafeMutableRawBufferPointer
    ) throws(CryptoError) {
        guard phase == .established else { throw .protocolViolation("the session is not established") }
        try ratchet!.decrypt(message, associatedData: associatedData, into: allocate)
    }

    /// Established state as bytes (secret: store it encrypted).
    public func serialized() throws(CryptoError) -> [UInt8] {
        guard phase == .established, let ratchet, let peerStaticKey else {
            throw .protocolViolation("only an established session can be saved")
        }
        return [1, role == .initiator ? 0 : 1] + peerStaticKey + handshakeHash + ratchet.serialized()
    }
}
