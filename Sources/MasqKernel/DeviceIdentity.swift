import MasqCrypto

/// A device's long-term keys: Ed25519 to sign, X25519 to agree keys. Created
/// with the store, kept in `<data_dir>/identity` (0600; sealed under the
/// master key when the store has a passphrase), never logged.
///
///   identity file: "MASQID" u8 version(1) u8 sealed(0|1) then
///                  64 bytes (Ed25519 seed, X25519 private key), or those sealed
public struct DeviceIdentity: Sendable {
    public let signingKey: SecureBytes
    public let signingPublicKey: [UInt8]
    public let agreementKey: SecureBytes
    public let agreementPublicKey: [UInt8]

    static let fileName = "identity"
    static let magic = Array("MASQID".utf8)

    public static func generate() -> DeviceIdentity {
        let signing = Ed25519.keyPair(), agreement = X25519.keyPair()
        return DeviceIdentity(
            signingKey: signing.privateKey, signingPublicKey: signing.publicKey,
            agreementKey: agreement.privateKey, agreementPublicKey: agreement.publicKey)
    }

    init(signingKey: SecureBytes, signingPublicKey: [UInt8], agreementKey: SecureBytes, agreementPublicKey: [UInt8]) {
        self.signingKey = signingKey
        self.signingPublicKey = signingPublicKey
        self.agreementKey = agreementKey
        self.agreementPublicKey = agreementPublicKey
    }

    init(privateKeys: [UInt8]) throws(MasqError) {
        guard privateKeys.count == 64 else { throw .corrupt("identity keys have the wrong length") }
        let signing = SecureBytes(privateKeys[0..<32]), agreement = SecureBytes(privateKeys[32..<64])
        signingKey = signing
        agreementKey = agreement
        signingPublicKey = try crypto { () throws(CryptoError) in try Ed25519.publicKey(of: signing) }
        agreementPublicKey = try crypto { () throws(CryptoError) in try X25519.publicKey(of: agreement) }
    }

    /// The public half: what other devices and people see.
    public var publicKeys: DevicePublicKeys {
        DevicePublicKeys(signing: signingPublicKey, agreement: agreementPublicKey)
    }

    private func encoded(box: SecretBox?) throws(MasqError) -> [UInt8] {
        let keys = SecureBytes(signingKey.bytes + agreementKey.bytes)
        let header = DeviceIdentity.magic + [1, box == nil ? 0 : 1]
        return header + (try box.map { (b) throws(MasqError) in try b.seal(keys.bytes, ad: header) } ?? keys.bytes)
    }

    /// Write the identity file (sealed when `box` is given), replacing any.
    func save(_ dataDir: String, box: SecretBox?) throws(MasqError) {
        try FileSystem.writeFile(dataDir + "/" + DeviceIdentity.fileName, encoded(box: box), mode: 0o600)
    }

    /// Write the identity file only if none exists; false if one already does.
    func create(_ dataDir: String, box: SecretBox?) throws(MasqError) -> Bool {
        try FileSystem.createFile(dataDir + "/" + DeviceIdentity.fileName, encoded(box: box), mode: 0o600)
    }

    /// Read the identity file; a sealed one needs `box` (the unlocked store).
    static func load(_ dataDir: String, box: SecretBox?) throws(MasqError) -> (DeviceIdentity, sealed: Bool)? {
        let path = dataDir + "/" + fileName
        guard FileSystem.exists(path) else { return nil }
        let bytes = try FileSystem.readFile(path, limit: 4096)
        guard bytes.count > 8, Array(bytes.prefix(6)) == magic, bytes[6] == 1, bytes[7] <= 1 else {
            throw .corrupt("\(path) is not an identity file this library reads")
        }
        let body = Array(bytes[8...])
        if bytes[7] == 1 {
            guard let box else { throw .corrupt("\(path) is encrypted but the store has no keyring") }
            return (try DeviceIdentity(privateKeys: box.open(body, ad: Array(bytes.prefix(8)))), true)
        }
        return (try DeviceIdentity(privateKeys: body), false)
    }
}

/// The public keys of a device, its id and its fingerprint.
public struct DevicePublicKeys: Sendable, Equatable, Hashable {
    public let signing: [UInt8]
    public let agreement: [UInt8]

    public init(signing: [UInt8], agreement: [UInt8]) {
        self.signing = signing
        self.agreement = agreement
    }

    /// A short stable id: the first 10 bytes of SHA-256 of the X25519 key, hex.
    /// (The X25519 key is what handshakes authenticate; pairing binds the
    /// Ed25519 key to it with a signature.)
    public var deviceID: String { DevicePublicKeys.deviceID(agreementKey: agreement) }
    public var fingerprint: (digits: String, emoji: String) { DevicePublicKeys.fingerprint(agreementKey: agreement) }

    public static func deviceID(agreementKey: [UInt8]) -> String { hex(Array(Hash.sha256(agreementKey).prefix(10))) }

    /// A fingerprint people compare between two screens: 30 digits in groups
    /// of five, and the same value as 8 emoji. 5,200 rounds of SHA-256 (as
    /// Signal's safety numbers do) make finding a key with a given fingerprint costly.
    public static func fingerprint(agreementKey: [UInt8]) -> (digits: String, emoji: String) {
        var digest = Hash.sha256([0x4D, 0x46, 1] + agreementKey)  // "MF" v1
        for _ in 0..<5_200 { digest = Hash.sha256(digest + agreementKey) }
        let groups = (0..<6).map { i -> String in
            let chunk = digest[(i * 5)..<(i * 5 + 5)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let n = String(chunk % 100_000)
            return String(repeating: "0", count: 5 - n.count) + n
        }
        let emojiBytes: [UInt8] = Array(Hash.sha256(digest).prefix(8))
        let emoji: [String] = emojiBytes.map { (b: UInt8) -> String in DevicePublicKeys.emojiTable[Int(b & 63)] }
        return (groups.joined(separator: " "), emoji.joined())
    }

    static let emojiTable: [String] = [
        "🐶", "🐱", "🦊", "🐻", "🐼", "🐨", "🐯", "🦁", "🐮", "🐷", "🐸", "🐵", "🐔", "🐧", "🐦", "🦆",
        "🦉", "🐴", "🦄", "🐝", "🦋", "🐌", "🐞", "🐢", "🐍", "🐙", "🦀", "🐬", "🐳", "🦈", "🐘", "🦒",
        "🌵", "🌲", "🌻", "🍄", "🌙", "⭐", "🔥", "🌈", "☔", "❄", "🍎", "🍋", "🍌", "🍇", "🍓", "🥕",
        "🌽", "🍞", "🧀", "🍕", "🎂", "☕", "⚽", "🎸", "🎲", "🚲", "🚀", "⛵", "🔑", "🔔", "📚", "✏"
    ]
}

func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count * 2)
    for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0x0F)]) }
    return String(decoding: out, as: UTF8.self)
}
