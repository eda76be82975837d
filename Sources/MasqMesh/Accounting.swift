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

/// The accountant as the mesh drives it: the kernel's (`MasqKernel.Accountant`,
/// its book in a Masq store), handed over by `masq node` — the engine itself
/// also runs inside a transport plugin and sees nothing of the kernel.
/// Called on the node's event loop.
public protocol MeshAccountant: AnyObject, Sendable {
    var scanSeconds: UInt64 { get }
    var paymentsCursor: UInt64 { get set }
    func isBanned(_ wallet: String) -> Bool
    func owe(_ creditor: String, _ amount: UInt128, now: UInt64)
    func earn(_ debtor: String, _ amount: UInt128, now: UInt64)
    func acceptProof(payer: String, nonce: [UInt8], timestamp: UInt64, message: [UInt8], signature: [UInt8], now: UInt64,
                     verify: (String, [UInt8], [UInt8]) -> Bool) -> Bool
    func due(nowMilliseconds now: UInt64) -> [(String, UInt128)]
    func paid(_ creditor: String, _ amount: UInt128, txid: String)
    func received(from debtor: String, _ amount: UInt128)
    func updateBans(nowMilliseconds now: UInt64) -> (banned: [String], unbanned: [String])
    func save(force: Bool)
}

/// What a consuming wallet signs for one hop of one circuit: a fresh nonce,
/// the time and the hop's key, so the proof can be neither replayed nor moved.
public enum PayerProofMessage {
    static let context = Array("masq payer v1".utf8)

    public static func make(nonce: [UInt8], timestamp: UInt64, hop: NodeKey) -> [UInt8] {
        var t = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { t[i] = UInt8(truncatingIfNeeded: timestamp >> (56 - 8 * UInt64(i))) }
        return context + nonce + t + hop.bytes
    }
}
