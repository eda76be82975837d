import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// What the mesh needs of a wallet (the CLI adapts a wallet plugin to it).
/// Calls may block (a ledger file, a JSON-RPC endpoint): the node makes them
/// off its event loop, except `verify` and `sign`, which must be quick.
public protocol MeshWallet: AnyObject, Sendable {
    var address: String { get }
    func pay(to: String, amount: UInt128) throws -> String
    func sign(_ message: [UInt8]) throws -> [UInt8]
    func verify(address: String, message: [UInt8], signature: [UInt8]) -> Bool
    /// Payments received after `cursor`: (payer, amount) and the next cursor.
    func payments(after cursor: UInt64) throws -> (payments: [(from: String, amount: UInt128)], cursor: UInt64)
}

/// The accountant as the mesh drives it: MasqAccounting's (`Accountant`,
/// its book in a Masq store), handed over by `masq node` — the engine itself
/// also runs inside a transport plugin and sees nothing of the kernel.
/// Called on the node's event loop.
public protocol MeshAccountant: AnyObject, Sendable {
    var scanSeconds: UInt64 { get }
    var paymentsCursor: UInt64 { get set }
    func isBanned(_ wallet: String) -> Bool
    func owe(_ creditor: String, _ amount: UInt128, now: UInt64)
    func earn(_ debtor: String, _ amount: UInt128, now: UInt64)
    func acceptProof(
        payer: String, nonce: [UInt8], timestamp: UInt64, message: [UInt8], signature: [UInt8], now: UInt64,
        verify: (String, [UInt8], [UInt8]) -> Bool
    ) -> Bool
    func due(nowMilliseconds now: UInt64) -> [(String, UInt128)]
    func paid(_ creditor: String, _ amount: UInt128, txid: String)
    func received(from debtor: String, _ amount: UInt128)
    func updateBans(nowMilliseconds now: UInt64) -> (banned: [String], unbanned: [String])
    func save(force: Bool)
    /// Creditors (earning wallets) this node has paid at least once: each was
    /// told which wallet pays for this node's pseudonym (a binding) before.
    func paidCreditors() -> [String]
}

/// What the consumer's pseudonym at a hop signs for one circuit: a fresh
/// nonce, the time and the hop's key, so the proof can be neither replayed
/// nor moved to another hop.
public enum PayerProofMessage {
    static let context = Array("masq payer v2".utf8)
    static let bindingContext = Array("masq payer binding v1".utf8)

    public static func make(nonce: [UInt8], timestamp: UInt64, hop: NodeKey) -> [UInt8] {
        var t = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { t[i] = UInt8(truncatingIfNeeded: timestamp >> (56 - 8 * UInt64(i))) }
        return context + nonce + t + hop.bytes
    }

    /// What the consuming wallet signs to say it pays for `pseudonym` (its raw key) at `hop`.
    public static func binding(pseudonym: [UInt8], hop: NodeKey) -> [UInt8] { bindingContext + pseudonym + hop.bytes }
}

/// The consumer's pseudonyms: one Ed25519 key per hop, derived from a
/// secret of the consuming node (`<data dir>/payer.key`), so a hop knows the
/// consumer under the same name every time (debts, bans, payments) and two
/// hops under names nothing links.
struct Pseudonyms {
    private let secret: SecureBytes
    private var cache: [NodeKey: (privateKey: SecureBytes, publicKey: [UInt8])] = [:]
    static let prefix = "p:"

    init(secret: SecureBytes) { self.secret = secret }

    mutating func key(for hop: NodeKey) throws(MeshError) -> (privateKey: SecureBytes, publicKey: [UInt8]) {
        if let k = cache[hop] { return k }
        guard
            let seed = try? Hash.hkdfSHA256(
                salt: Array("masq payer pseudonym v1".utf8), ikm: secret.bytes, info: hop.bytes, length: 32),
            let publicKey = try? Ed25519.publicKey(of: seed)
        else { throw .failed("cannot derive a pseudonym") }
        if cache.count > 4_096 { cache.removeAll() }
        cache[hop] = (seed, publicKey)
        return (seed, publicKey)
    }

    static func name(_ publicKey: [UInt8]) -> String { prefix + Base64URL.encode(publicKey) }

    static func publicKey(_ name: String) -> [UInt8]? {
        guard name.hasPrefix(prefix), let k = Base64URL.decode(String(name.dropFirst(prefix.count))), k.count == 32
        else { return nil }
        return k
    }

    /// `path`'s secret (32 bytes, 0600), created on first use.
    static func loadOrCreateSecret(_ path: String) throws(MeshError) -> SecureBytes {
        if let file = fopen(path, "rb") {
            defer { fclose(file) }
            var bytes = [UInt8](repeating: 0, count: 33)
            guard fread(&bytes, 1, 33, file) == 32 else { throw .invalid("\(path): not a payer key (32 bytes)") }
            defer { for i in bytes.indices { bytes[i] = 0 } }
            return SecureBytes(bytes[0..<32])
        }
        let secret = Random.bytes(32)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw .invalid("cannot create \(path)") }
        defer { close(fd) }
        guard secret.withUnsafeBytes({ write(fd, $0.baseAddress, 32) }) == 32 else {
            throw .invalid("cannot write \(path)")
        }
        return SecureBytes(secret)
    }
}
