import CMasq
import CMasqSupport
import CMasqCrypto
import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

// The security part of include/masq.h: encryption at rest, devices, pairing,
// crypto sessions and primitives. Same conventions as CAPI.swift.

// MARK: - plumbing

private func bytesIn(_ pointer: UnsafePointer<UInt8>?, _ length: Int, _ what: String) throws(MasqError) -> [UInt8] {
    Array(try bytes(pointer, length, what))
}

/// Let `produce` write straight into a malloc'd buffer handed to the caller
/// (masq_free); freed again if `produce` fails.
private func deliver(
    _ out: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>, _ length: UnsafeMutablePointer<Int>,
    _ produce: ((Int) -> UnsafeMutableRawBufferPointer) throws(CryptoError) -> Void
) throws(MasqError) {
    var memory: UnsafeMutableRawPointer?
    var size = 0
    do throws(CryptoError) {
        try produce { count in
            memory = malloc(max(count, 1))
            size = count
            return UnsafeMutableRawBufferPointer(start: memory, count: count)
        }
    } catch {
        if let memory { masqcrypto_wipe(memory, size); free(memory) }
        _ = try crypto { () throws(CryptoError) -> Void in throw error }
    }
    guard let memory else { throw MasqError(.noMemory, "out of memory") }
    out.pointee = memory.assumingMemoryBound(to: UInt8.self)
    length.pointee = size
}

func deviceJSON(_ keys: DevicePublicKeys, name: String, pairedAt: UInt64? = nil) -> String {
    let fp = keys.fingerprint
    var fields = [
        "\"device_id\": \(jsonString(keys.deviceID))", "\"name\": \(jsonString(name))",
        "\"signing_key\": \(jsonString(hex(keys.signing)))", "\"agreement_key\": \(jsonString(hex(keys.agreement)))",
        "\"fingerprint\": \(jsonString(fp.digits))", "\"fingerprint_emoji\": \(jsonString(fp.emoji))"
    ]
    if let pairedAt { fields.append("\"paired_at\": \(pairedAt)") }
    return "{" + fields.joined(separator: ", ") + "}"
}

// MARK: - encryption at rest

@c @implementation
public func masq_unlock(_ handle: OpaquePointer?, _ passphrase: UnsafePointer<UInt8>?, _ length: Int) -> Int32 {
    api { () throws(MasqError) in
        var copy = try bytesIn(passphrase, length, "passphrase")
        defer { wipe(&copy) }
        try store(handle).unlock(copy)
    }
}

@c @implementation
public func masq_lock(_ handle: OpaquePointer?) -> Int32 {
    api { () throws(MasqError) in try store(handle).relock() }
}

@c @implementation
public func masq_set_passphrase(
    _ handle: OpaquePointer?, _ old: UnsafePointer<UInt8>?, _ oldLength: Int,
    _ new: UnsafePointer<UInt8>?, _ newLength: Int
) -> Int32 {
    api { () throws(MasqError) in
        let store = try store(handle)
        var oldBytes = old == nil && oldLength == 0 ? nil : try bytesIn(old, oldLength, "old_passphrase")
        var newBytes = new == nil && newLength == 0 ? nil : try bytesIn(new, newLength, "new_passphrase")
        defer {
            if oldBytes != nil { wipe(&oldBytes!) }
            if newBytes != nil { wipe(&newBytes!) }
        }
        try store.setPassphrase(old: oldBytes, new: newBytes)
    }
}

@c @implementation
public func masq_protection(
    _ handle: OpaquePointer?, _ protectedOut: UnsafeMutablePointer<Int32>?, _ lockedOut: UnsafeMutablePointer<Int32>?
) -> Int32 {
    api { () throws(MasqError) in
        let store = try store(handle)
        protectedOut?.pointee = store.isProtected ? 1 : 0
        lockedOut?.pointee = store.isLocked ? 1 : 0
    }
}

// MARK: - devices

@c @implementation
public func masq_device_info(_ handle: OpaquePointer?, _ jsonOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?)
    -> Int32
{
    jsonOut?.pointee = nil
    return api { () throws(MasqError) in
        let store = try store(handle)
        let out = try required(jsonOut, "json_out")
        try giveText(deviceJSON(try store.requireIdentity().publicKeys, name: store.deviceName), out)
    }
}

@c @implementation
public func masq_devices(_ handle: OpaquePointer?, _ jsonOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?)
    -> Int32
{
    jsonOut?.pointee = nil
    return api { () throws(MasqError) in
        let store = try store(handle)
        let out = try required(jsonOut, "json_out")
        let items = try store.devices().map { deviceJSON($0.keys, name: $0.name, pairedAt: $0.pairedAt) }
        try giveText("[" + items.joined(separator: ", ") + "]", out)
    }
}

@c @implementation
public func masq_set_device_name(_ handle: OpaquePointer?, _ name: UnsafePointer<CChar>?) -> Int32 {
    api { () throws(MasqError) in try store(handle).setDeviceName(try text(name, "name")) }
}

@c @implementation
public func masq_device_remove(_ handle: OpaquePointer?, _ deviceID: UnsafePointer<CChar>?) -> Int32 {
    api { () throws(MasqError) in try store(handle).removeDevice(try text(deviceID, "device_id")) }
}

@c @implementation
public func masq_seal_for_device(
    _ handle: OpaquePointer?, _ deviceID: UnsafePointer<CChar>?, _ ad: UnsafePointer<UInt8>?, _ adLength: Int,
    _ plaintext: UnsafePointer<UInt8>?, _ plaintextLength: Int,
    _ messageOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, _ messageLengthOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    messageOut?.pointee = nil
    return api { () throws(MasqError) in
        let store = try store(handle)
        let sealed = try store.seal(
            for: try text(deviceID, "device_id"), try bytesIn(plaintext, plaintextLength, "plaintext"),
            associatedData: try bytesIn(ad, adLength, "ad"))
        try give(sealed, try required(messageOut, "message_out"), try required(messageLengthOut, "message_len_out"))
    }
}

@c @implementation
public func masq_open_from_device(
    _ handle: OpaquePointer?, _ deviceID: UnsafePointer<CChar>?, _ ad: UnsafePointer<UInt8>?, _ adLength: Int,
    _ message: UnsafePointer<UInt8>?, _ messageLength: Int,
    _ plaintextOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?,
    _ plaintextLengthOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    plaintextOut?.pointee = nil
    return api { () throws(MasqError) in
        let store = try store(handle)
        let opened = try store.open(
            from: try text(deviceID, "device_id"), try bytesIn(message, messageLength, "message"),
            associatedData: try bytesIn(ad, adLength, "ad"))
        try give(
            opened, try required(plaintextOut, "plaintext_out"), try required(plaintextLengthOut, "plaintext_len_out"))
    }
}

@c @implementation
public func masq_device_renew_begin(
    _ handle: OpaquePointer?, _ deviceID: UnsafePointer<CChar>?,
    _ messageOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, _ messageLengthOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    messageOut?.pointee = nil
    return api { () throws(MasqError) in
        let message = try store(handle).beginSessionRenewal(with: try text(deviceID, "device_id"))
        try give(message, try required(messageOut, "message_out"), try required(messageLengthOut, "message_len_out"))
    }
}

@c @implementation
public func masq_device_renew_answer(
    _ handle: OpaquePointer?, _ deviceID: UnsafePointer<CChar>?, _ message: UnsafePointer<UInt8>?, _ messageLength: Int,
    _ answerOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, _ answerLengthOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    answerOut?.pointee = nil
    return api { () throws(MasqError) in
        let answer = try store(handle).answerSessionRenewal(
            from: try text(deviceID, "device_id"), try bytesIn(message, messageLength, "message"))
        try give(answer, try required(answerOut, "answer_out"), try required(answerLengthOut, "answer_len_out"))
    }
}

@c @implementation
public func masq_device_renew_complete(
    _ handle: OpaquePointer?, _ deviceID: UnsafePointer<CChar>?, _ answer: UnsafePointer<UInt8>?, _ answerLength: Int
) -> Int32 {
    api { () throws(MasqError) in
        try store(handle).completeSessionRenewal(
            from: try text(deviceID, "device_id"), try bytesIn(answer, answerLength, "answer"))
    }
}

// MARK: - pairing

/// What a masq_pairing handle points to.
final class PairingHandle {
    let flow: PairingFlow
    var peer: PairedDevice?
    init(_ flow: PairingFlow) { self.flow = flow }
}

private func pairingHandle(_ handle: OpaquePointer?) throws(MasqError) -> PairingHandle {
    guard let handle else { throw .invalid("pairing handle is NULL") }
    return Unmanaged<PairingHandle>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
}

@c @implementation
public func masq_pairing_offer(
    _ handle: OpaquePointer?, _ via: UnsafePointer<CChar>?, _ ttlSeconds: UInt32,
    _ linkOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ pairingOut: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    linkOut?.pointee = nil
    pairingOut?.pointee = nil
    return api { () throws(MasqError) in
        let store = try store(handle)
        let linkDestination = try required(linkOut, "link_out")
        let pairingDestination = try required(pairingOut, "pairing_out")
        let link = try store.createPairingOffer(via: via == nil ? nil : try text(via, "via"), ttl: UInt64(ttlSeconds))
        let flow = try PairingFlow(offering: link, store: store)
        try giveText(link.string, linkDestination)
        pairingDestination.pointee = OpaquePointer(Unmanaged.passRetained(PairingHandle(flow)).toOpaque())
    }
}

@c @implementation
public func masq_pairing_join(
    _ handle: OpaquePointer?, _ link: UnsafePointer<CChar>?, _ pairingOut: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    pairingOut?.pointee = nil
    return api { () throws(MasqError) in
        let store = try store(handle)
        let destination = try required(pairingOut, "pairing_out")
        let flow = try PairingFlow(joining: PairingLink(parsing: try text(link, "link")), store: store)
        destination.pointee = OpaquePointer(Unmanaged.passRetained(PairingHandle(flow)).toOpaque())
    }
}

@c @implementation
public func masq_pairing_start(
    _ handle: OpaquePointer?, _ frameOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?,
    _ frameLengthOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    frameOut?.pointee = nil
    return api { () throws(MasqError) in
        let pairing = try pairingHandle(handle)
        try give(
            try pairing.flow.start(), try required(frameOut, "frame_out"), try required(frameLengthOut, "frame_len_out")
        )
    }
}

@c @implementation
public func masq_pairing_receive(
    _ handle: OpaquePointer?, _ frame: UnsafePointer<UInt8>?, _ frameLength: Int,
    _ frameOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, _ frameLengthOut: UnsafeMutablePointer<Int>?,
    _ pairedOut: UnsafeMutablePointer<Int32>?
) -> Int32 {
    frameOut?.pointee = nil
    frameLengthOut?.pointee = 0
    pairedOut?.pointee = 0
    return api { () throws(MasqError) in
        let pairing = try pairingHandle(handle)
        let out = try required(frameOut, "frame_out"), length = try required(frameLengthOut, "frame_len_out")
        let paired = try required(pairedOut, "paired_out")
        let incoming = try bytesIn(frame, frameLength, "frame")
        do throws(MasqError) {
            switch try pairing.flow.receive(incoming) {
            case .send(let reply):
                try give(reply, out, length)
            case .paired(let device, let final):
                pairing.peer = device
                paired.pointee = 1
                if let final { try give(final, out, length) }
            }
        } catch {
            // Tell the other side why, unless it was the one refusing.
            if incoming.first != PairingFlow.refusalFrame { try? give(PairingFlow.refusal(error.message), out, length) }
            throw error
        }
    }
}

@c @implementation
public func masq_pairing_peer(_ handle: OpaquePointer?, _ jsonOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?)
    -> Int32
{
    jsonOut?.pointee = nil
    return api { () throws(MasqError) in
        let pairing = try pairingHandle(handle)
        guard let peer = pairing.peer else { throw MasqError(.notFound, "not paired yet") }
        try giveText(deviceJSON(peer.keys, name: peer.name, pairedAt: peer.pairedAt), try required(jsonOut, "json_out"))
    }
}

@c @implementation
public func masq_pairing_free(_ handle: OpaquePointer?) {
    guard let handle else { return }
    Unmanaged<PairingHandle>.fromOpaque(UnsafeRawPointer(handle)).release()
}

@c @implementation
public func masq_qr_pgm(
    _ input: UnsafePointer<CChar>?, _ scale: UInt32, _ imageOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?,
    _ imageLengthOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    imageOut?.pointee = nil
    return api { () throws(MasqError) in
        guard (1...64).contains(scale) else { throw .invalid("scale must be 1...64") }
        let image = try QRCode(try text(input, "text")).pgm(scale: Int(scale))
        try give(image, try required(imageOut, "image_out"), try required(imageLengthOut, "image_len_out"))
    }
}

// MARK: - crypto sessions

private func sessionHandle(_ handle: OpaquePointer?) throws(MasqError) -> SecureSession {
    guard let handle else { throw .invalid("session handle is NULL") }
    return Unmanaged<SecureSession>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
}

private func publish(_ session: SecureSession, _ out: UnsafeMutablePointer<OpaquePointer?>) {
    out.pointee = OpaquePointer(Unmanaged.passRetained(session).toOpaque())
}

@c @implementation
public func masq_session_new(
    _ handle: OpaquePointer?, _ options: UnsafePointer<masq_session_options>?,
    _ sessionOut: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    sessionOut?.pointee = nil
    return api { () throws(MasqError) in
        let out = try required(sessionOut, "session_out")
        let o = try required(options, "options").pointee
        guard o.struct_size >= UInt32(MemoryLayout<masq_session_options>.size) else {
            throw .invalid("options.struct_size is too small")
        }
        let name = try text(o.pattern, "options.pattern")
        guard let pattern = Noise.Pattern(rawValue: name) else {
            throw .invalid(
                "unknown pattern '\(name)' (known: \(Noise.Pattern.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard o.role == MASQ_ROLE_INITIATOR || o.role == MASQ_ROLE_RESPONDER else {
            throw .invalid("options.role must be MASQ_ROLE_INITIATOR or MASQ_ROLE_RESPONDER")
        }
        let staticKey: SecureBytes
        if let key = o.static_key {
            staticKey = SecureBytes(UnsafeBufferPointer(start: key, count: 32))
        } else {
            staticKey = try store(handle).requireIdentity().agreementKey
        }
        let remote =
            o.remote_static == nil ? nil : try bytesIn(o.remote_static, o.remote_static_len, "options.remote_static")
        let psk = o.psk == nil ? nil : SecureBytes(try bytesIn(o.psk, o.psk_len, "options.psk"))
        let prologue = try bytesIn(o.prologue, o.prologue_len, "options.prologue")
        let session = try crypto { () throws(CryptoError) in
            try SecureSession(
                pattern: pattern, role: o.role == MASQ_ROLE_INITIATOR ? .initiator : .responder, prologue: prologue,
                staticKey: staticKey, remoteStatic: remote, psk: psk)
        }
        publish(session, out)
    }
}

@c @implementation
public func masq_session_write_handshake(
    _ handle: OpaquePointer?, _ payload: UnsafePointer<UInt8>?, _ payloadLength: Int,
    _ messageOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, _ messageLengthOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    messageOut?.pointee = nil
    return api { () throws(MasqError) in
        let session = try sessionHandle(handle)
        let body = try bytesIn(payload, payloadLength, "payload")
        let message = try crypto { () throws(CryptoError) in try session.writeHandshake(payload: body) }
        try give(message, try required(messageOut, "message_out"), try required(messageLengthOut, "message_len_out"))
    }
}

@c @implementation
public func masq_session_read_handshake(
    _ handle: OpaquePointer?, _ message: UnsafePointer<UInt8>?, _ messageLength: Int,
    _ payloadOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, _ payloadLengthOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    payloadOut?.pointee = nil
    return api { () throws(MasqError) in
        let session = try sessionHandle(handle)
        let bytes = try bytesIn(message, messageLength, "message")
        let out = try required(payloadOut, "payload_out"), length = try required(payloadLengthOut, "payload_len_out")
        let payload = try crypto { () throws(CryptoError) in try session.readHandshake(bytes) }
        try give(payload, out, length)
    }
}

@c @implementation
public func masq_session_status(
    _ handle: OpaquePointer?, _ stateOut: UnsafeMutablePointer<Int32>?, _ writeNextOut: UnsafeMutablePointer<Int32>?,
    _ canSendOut: UnsafeMutablePointer<Int32>?
) -> Int32 {
    api { () throws(MasqError) in
        let session = try sessionHandle(handle)
        switch session.phase {
        case .handshaking: stateOut?.pointee = MASQ_SESSION_HANDSHAKING
        case .established: stateOut?.pointee = MASQ_SESSION_ESTABLISHED
        case .failed: stateOut?.pointee = MASQ_SESSION_FAILED
        }
        writeNextOut?.pointee = session.mustWriteHandshake ? 1 : 0
        canSendOut?.pointee = session.canSend ? 1 : 0
    }
}

@c @implementation
public func masq_session_seal(
    _ handle: OpaquePointer?, _ ad: UnsafePointer<UInt8>?, _ adLength: Int, _ plaintext: UnsafePointer<UInt8>?,
    _ plaintextLength: Int,
    _ messageOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?, _ messageLengthOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    messageOut?.pointee = nil
    return api { () throws(MasqError) in
        let session = try sessionHandle(handle)
        let a = try bytes(ad, adLength, "ad"), p = try bytes(plaintext, plaintextLength, "plaintext")
        let out = try required(messageOut, "message_out"), length = try required(messageLengthOut, "message_len_out")
        try deliver(out, length) { (allocate) throws(CryptoError) in
            try session.seal(p, associatedData: a, into: allocate)
        }
    }
}

@c @implementation
public func masq_session_open(
    _ handle: OpaquePointer?, _ ad: UnsafePointer<UInt8>?, _ adLength: Int, _ message: UnsafePointer<UInt8>?,
    _ messageLength: Int,
    _ plaintextOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?,
    _ plaintextLengthOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    plaintextOut?.pointee = nil
    return api { () throws(MasqError) in
        let session = try sessionHandle(handle)
        let a = try bytes(ad, adLength, "ad"), m = try bytes(message, messageLength, "message")
        let out = try required(plaintextOut, "plaintext_out"),
            length = try required(plaintextLengthOut, "plaintext_len_out")
        try deliver(out, length) { (allocate) throws(CryptoError) in
            try session.open(m, associatedData: a, into: allocate)
        }
    }
}

@c @implementation
public func masq_session_save(
    _ handle: OpaquePointer?, _ stateOut: UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>?,
    _ stateLengthOut: UnsafeMutablePointer<Int>?
) -> Int32 {
    stateOut?.pointee = nil
    return api { () throws(MasqError) in
        let session = try sessionHandle(handle)
        let state = try crypto { () throws(CryptoError) in try session.serialized() }
        try give(state, try required(stateOut, "state_out"), try required(stateLengthOut, "state_len_out"))
    }
}

@c @implementation
public func masq_session_load(
    _ state: UnsafePointer<UInt8>?, _ stateLength: Int, _ sessionOut: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    sessionOut?.pointee = nil
    return api { () throws(MasqError) in
        let out = try required(sessionOut, "session_out")
        let bytes = try bytesIn(state, stateLength, "state")
        publish(try crypto { () throws(CryptoError) in try SecureSession(serialized: bytes) }, out)
    }
}

@c @implementation
public func masq_session_peer_key(_ handle: OpaquePointer?, _ keyOut: UnsafeMutablePointer<UInt8>?) -> Int32 {
    api { () throws(MasqError) in
        let session = try sessionHandle(handle)
        let out = try required(keyOut, "key_out")
        guard let key = session.peerStaticKey else { throw MasqError(.notFound, "the peer's key is not known (yet)") }
        for (i, b) in key.enumerated() { out[i] = b }
    }
}

@c @implementation
public func masq_session_peer_fingerprint(
    _ handle: OpaquePointer?, _ textOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    textOut?.pointee = nil
    return api { () throws(MasqError) in
        let session = try sessionHandle(handle)
        guard let key = session.peerStaticKey else { throw MasqError(.notFound, "the peer's key is not known (yet)") }
        try giveText(DevicePublicKeys.fingerprint(agreementKey: key).digits, try required(textOut, "text_out"))
    }
}

@c @implementation
public func masq_session_free(_ handle: OpaquePointer?) {
    guard let handle else { return }
    Unmanaged<SecureSession>.fromOpaque(UnsafeRawPointer(handle)).release()
}

// MARK: - primitives

private func fixed(_ pointer: UnsafePointer<UInt8>?, _ count: Int, _ what: String) throws(MasqError) -> [UInt8] {
    Array(UnsafeBufferPointer(start: try required(pointer, what), count: count))
}

private func algorithm(_ value: Int32) throws(MasqError) -> AEAD.Algorithm {
    switch value {
    case MASQ_AEAD_CHACHA20_POLY1305: return .chacha20Poly1305
    case MASQ_AEAD_AES_256_GCM: return .aesGCM
    default: throw .invalid("unknown AEAD algorithm \(value)")
    }
}

@c @implementation
public func masq_crypto_random(_ out: UnsafeMutablePointer<UInt8>?, _ length: Int) -> Int32 {
    api { () throws(MasqError) in
        if length == 0 { return }
        let buffer = try required(out, "out")
        let bytes = Random.bytes(length)
        for i in 0..<length { buffer[i] = bytes[i] }
    }
}

@c @implementation
public func masq_crypto_x25519_public(_ privateKey: UnsafePointer<UInt8>?, _ publicOut: UnsafeMutablePointer<UInt8>?)
    -> Int32
{
    api { () throws(MasqError) in
        let key = SecureBytes(try fixed(privateKey, 32, "private_key"))
        let out = try required(publicOut, "public_out")
        for (i, b) in try crypto({ () throws(CryptoError) in try X25519.publicKey(of: key) }).enumerated() {
            out[i] = b
        }
    }
}

@c @implementation
public func masq_crypto_x25519(
    _ privateKey: UnsafePointer<UInt8>?, _ peer: UnsafePointer<UInt8>?, _ sharedOut: UnsafeMutablePointer<UInt8>?
) -> Int32 {
    api { () throws(MasqError) in
        let key = SecureBytes(try fixed(privateKey, 32, "private_key"))
        let peerKey = try fixed(peer, 32, "peer_public")
        let out = try required(sharedOut, "shared_out")
        let shared = try crypto { () throws(CryptoError) in
            try X25519.sharedSecret(privateKey: key, peerPublicKey: peerKey)
        }
        shared.withUnsafeBytes { for i in 0..<32 { out[i] = $0[i] } }
    }
}

@c @implementation
public func masq_crypto_ed25519_sign(
    _ privateKey: UnsafePointer<UInt8>?, _ message: UnsafePointer<UInt8>?, _ messageLength: Int,
    _ signatureOut: UnsafeMutablePointer<UInt8>?
) -> Int32 {
    api { () throws(MasqError) in
        let key = SecureBytes(try fixed(privateKey, 32, "private_key"))
        let m = try bytesIn(message, messageLength, "msg")
        let out = try required(signatureOut, "sig_out")
        for (i, b) in try crypto({ () throws(CryptoError) in try Ed25519.sign(m, privateKey: key) }).enumerated() {
            out[i] = b
        }
    }
}

@c @implementation
public func masq_crypto_ed25519_verify(
    _ publicKey: UnsafePointer<UInt8>?, _ message: UnsafePointer<UInt8>?, _ messageLength: Int,
    _ signature: UnsafePointer<UInt8>?, _ signatureLength: Int
) -> Int32 {
    api { () throws(MasqError) in
        let key = try fixed(publicKey, 32, "public_key")
        let ok = Ed25519.verify(
            try bytesIn(signature, signatureLength, "sig"), message: try bytesIn(message, messageLength, "msg"),
            publicKey: key)
        if !ok { throw MasqError(.badSignature, "the signature does not verify") }
    }
}

@c @implementation
public func masq_crypto_hkdf_sha256(
    _ salt: UnsafePointer<UInt8>?, _ saltLength: Int, _ ikm: UnsafePointer<UInt8>?, _ ikmLength: Int,
    _ info: UnsafePointer<UInt8>?, _ infoLength: Int, _ out: UnsafeMutablePointer<UInt8>?, _ outLength: Int
) -> Int32 {
    api { () throws(MasqError) in
        let destination = try required(out, "out")
        let s = try bytesIn(salt, saltLength, "salt"), k = try bytesIn(ikm, ikmLength, "ikm"),
            i = try bytesIn(info, infoLength, "info")
        let okm = try crypto { () throws(CryptoError) in
            try Hash.hkdfSHA256(salt: s, ikm: k, info: i, length: outLength)
        }
        okm.withUnsafeBytes { for j in 0..<outLength { destination[j] = $0[j] } }
    }
}

@c @implementation
public func masq_crypto_aead_seal(
    _ alg: Int32, _ key: UnsafePointer<UInt8>?, _ nonce: UnsafePointer<UInt8>?, _ ad: UnsafePointer<UInt8>?,
    _ adLength: Int,
    _ plaintext: UnsafePointer<UInt8>?, _ plaintextLength: Int, _ out: UnsafeMutablePointer<UInt8>?
) -> Int32 {
    api { () throws(MasqError) in
        let a = try algorithm(alg)
        let k = UnsafeRawBufferPointer(start: try required(key, "key"), count: 32), n = try fixed(nonce, 12, "nonce")
        let aad = try bytes(ad, adLength, "ad"), p = try bytes(plaintext, plaintextLength, "plaintext")
        let destination = UnsafeMutableRawBufferPointer(
            start: try required(out, "out"), count: plaintextLength + AEAD.tagLength)
        try crypto { () throws(CryptoError) in
            try AEAD.seal(a, key: k, nonce: n, ad: aad, plaintext: p, into: destination)
        }
    }
}

@c @implementation
public func masq_crypto_aead_open(
    _ alg: Int32, _ key: UnsafePointer<UInt8>?, _ nonce: UnsafePointer<UInt8>?, _ ad: UnsafePointer<UInt8>?,
    _ adLength: Int,
    _ input: UnsafePointer<UInt8>?, _ inputLength: Int, _ out: UnsafeMutablePointer<UInt8>?
) -> Int32 {
    api { () throws(MasqError) in
        let a = try algorithm(alg)
        let k = UnsafeRawBufferPointer(start: try required(key, "key"), count: 32), n = try fixed(nonce, 12, "nonce")
        let aad = try bytes(ad, adLength, "ad"), c = try bytes(input, inputLength, "in")
        guard c.count >= AEAD.tagLength else { throw MasqError(.badSignature, "input shorter than the tag") }
        let count = inputLength - AEAD.tagLength
        let destination =
            count == 0
            ? UnsafeMutableRawBufferPointer(start: nil, count: 0)
            : UnsafeMutableRawBufferPointer(start: try required(out, "out"), count: count)
        try crypto { () throws(CryptoError) in
            try AEAD.open(a, key: k, nonce: n, ad: aad, ciphertext: c, into: destination)
        }
    }
}

// MARK: - counters and sync

@c @implementation
public func masq_counter_add(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ key: UnsafePointer<UInt8>?, _ keyLength: Int,
    _ delta: Int64
) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        try s.counterAdd(try namespace(ns, s), key: try bytesIn(key, keyLength, "key"), delta: delta)
    }
}

@c @implementation
public func masq_counter_get(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ key: UnsafePointer<UInt8>?, _ keyLength: Int,
    _ valueOut: UnsafeMutablePointer<Int64>?
) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        let out = try required(valueOut, "value_out")
        out.pointee = try s.counterGet(try namespace(ns, s), key: try bytesIn(key, keyLength, "key"))
    }
}

@c @implementation
public func masq_sync_start(_ handle: OpaquePointer?) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        try s.syncSlot.start(s)
    }
}

@c @implementation
public func masq_sync_stop(_ handle: OpaquePointer?) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        guard masqsupport_in_callback() != s.hub.tag | 1 else {
            throw MasqError(.busy, "cannot stop sync from inside its own progress callback")
        }
        s.syncSlot.stop()
    }
}

@c @implementation
public func masq_sync_once(_ handle: OpaquePointer?, _ timeoutSeconds: Double) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        guard timeoutSeconds > 0 && timeoutSeconds <= 86_400 else {
            throw .invalid("timeout must be 0...86400 seconds")
        }
        let service = try SyncService(store: s)
        service.engine.onProgress = s.syncSlot.progress
        guard try service.syncOnce(timeout: timeoutSeconds) else {
            // Name what held it back, where anything did (a refusal, a full disk, a frame too big).
            let problems =
                (try? service.status().devices.compactMap { d in d.problem.map { "\(d.name): \($0)" } }) ?? []
            throw MasqError(
                .timeout,
                "not caught up after \(timeoutSeconds) s"
                    + (problems.isEmpty ? "" : " (\(problems.joined(separator: "; ")))"))
        }
        // Nobody answered: nothing was synced, and the caller must be able to tell.
        let status = try service.status()
        if !status.devices.isEmpty && !status.devices.contains(where: \.present) {
            throw MasqError(
                .unavailable,
                "no paired device answered (\(status.connected ? "none is online in the room" : "the transport is not connected")); nothing was synced"
            )
        }
    }
}

@c @implementation
public func masq_sync_status(_ handle: OpaquePointer?, _ jsonOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?)
    -> Int32
{
    jsonOut?.pointee = nil
    return api { () throws(MasqError) in
        let s = try store(handle)
        let out = try required(jsonOut, "json_out")
        let running = s.syncSlot.running
        let live = try running?.status()
        var rows: [String] = []
        for d in try s.devices() {
            let row = live?.devices.first { $0.deviceID == d.deviceID }
            let ack = try s.acknowledgement(of: d.deviceID)
            let stored = try s.syncProblem(device: d.deviceID)
            let problem = row?.problem ?? stored?.text
            rows.append(
                "{\"device_id\": \(jsonString(d.deviceID)), \"name\": \(jsonString(d.name)), \"present\": \(row?.present ?? false), "
                    + "\"they_lack\": \(row?.theyLack ?? 0), \"we_lack\": \(row?.weLack ?? 0), \"last_sync\": \(ack?.at ?? 0), "
                    + "\"problem\": \(problem.map(jsonString) ?? "null")}")
        }
        let transports = (live?.transports ?? []).map { t in
            let counters = t.stats.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)): \($0.value)" }
            return "{\"plugin\": \(jsonString(t.plugin)), \"stats\": {\(counters.joined(separator: ", "))}}"
        }
        try giveText(
            "{\"running\": \(running != nil), \"connected\": \(live?.connected ?? false), "
                + "\"storage_problem\": \(s.storageProblem().map(jsonString) ?? "null"), \"devices\": [\(rows.joined(separator: ", "))], "
                + "\"frames_received\": \(live?.framesReceived ?? 0), \"frames_rejected\": \(live?.framesRejected ?? 0), "
                + "\"transports\": [\(transports.joined(separator: ", "))], \(try blobSyncStatusJSON(s, live))}", out)
    }
}

/// Carries a C progress callback into Swift.
private struct ProgressCallback: @unchecked Sendable {
    let function: masq_progress_fn
    let context: UnsafeMutableRawPointer?
}

@c @implementation
public func masq_sync_set_progress(_ handle: OpaquePointer?, _ fn: masq_progress_fn?, _ ctx: UnsafeMutableRawPointer?)
    -> Int32
{
    api { () throws(MasqError) in
        let s = try store(handle)
        if let fn {
            let callback = ProgressCallback(function: fn, context: ctx)
            // Marked as this store's progress callback on its thread, so a
            // masq_close or masq_sync_stop from inside it is refused, not a deadlock.
            let tag = s.hub.tag | 1
            s.syncSlot.progress = { p in
                let previous = masqsupport_in_callback()
                masqsupport_set_in_callback(tag)
                defer { masqsupport_set_in_callback(previous) }
                p.device.withCString { callback.function(callback.context, $0, p.received, p.remaining) }
            }
        } else {
            s.syncSlot.progress = nil
        }
        s.syncSlot.running?.engine.onProgress = s.syncSlot.progress
    }
}
