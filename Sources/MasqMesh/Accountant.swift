import FoundationEssentials
import MasqCrypto
#if canImport(Glibc)
import Glibc
#endif

/// What the mesh needs of a wallet (the CLI adapts a wallet plugin to it).
/// Calls may block (a ledger file, a JSON-RPC endpoint): the node makes them
/// off its event loop, except `verify`, which must be quick.
public protocol MeshWallet: AnyObject, Sendable {
    var address: String { get }
    func pay(to: String, amount: UInt128) throws -> String
    func sign(_ message: [UInt8]) throws -> [UInt8]
    func verify(address: String, message: [UInt8], signature: [UInt8]) -> Bool
    /// Payments received after `cursor`: (payer, amount) and the next cursor.
    func payments(after cursor: UInt64) throws -> (payments: [(from: String, amount: UInt128)], cursor: UInt64)
}

/// Where an accountant keeps its book: by default a file in the node's data
/// directory; `masq node` gives it a Masq store (the engine itself, which also
/// runs inside a transport plugin, sees nothing of the kernel).
public protocol AccountBookStore: AnyObject, Sendable {
    func load() -> [UInt8]?
    func save(_ bytes: [UInt8])
}

/// MASQ's payment thresholds (wei; seconds): a debt is paid once it is older
/// than `maturitySeconds` and above a limit that falls from `debtThreshold`
/// to `permanentAllowance` over `thresholdIntervalSeconds`; a debtor past the
/// same curve plus `graceSeconds` is banned until its debt falls below
/// `unbanBelow`.
public struct PaymentThresholds: Sendable, Equatable {
    public var debtThreshold: UInt128 = 1_000_000_000_000_000_000
    public var maturitySeconds: UInt64 = 1_200
    public var permanentAllowance: UInt128 = 500_000_000_000_000_000
    public var thresholdIntervalSeconds: UInt64 = 21_600
    public var graceSeconds: UInt64 = 1_200
    public var unbanBelow: UInt128 = 500_000_000_000_000_000
    public var scanSeconds: UInt64 = 300
    public init() {}

    /// The largest debt tolerated `age` seconds after it started.
    public func limit(ageSeconds age: UInt64) -> UInt128? {
        guard age >= maturitySeconds else { return nil }           // not mature: no limit applies yet
        let into = age - maturitySeconds
        guard into < thresholdIntervalSeconds, debtThreshold > permanentAllowance else { return permanentAllowance }
        let drop = (debtThreshold - permanentAllowance) * UInt128(into) / UInt128(thresholdIntervalSeconds)
        return debtThreshold - drop
    }
}

/// Payables (what this node owes the nodes that carried its traffic, by their
/// earning wallet) and receivables (what consumers owe it, by their consuming
/// wallet), persisted in `<data dir>/accounts.json`. Lives on the node's loop.
final class Accountant: @unchecked Sendable {
    struct Account: Codable, Equatable {
        var balance: String = "0"
        /// When the oldest unpaid part of the balance arose (Unix ms); 0 when nothing is owed.
        var since: UInt64 = 0
        var total: String = "0"
        var paid: String = "0"
        var lastPayment: String?

        var owed: UInt128 { UInt128(balance) ?? 0 }

        mutating func add(_ amount: UInt128, now: UInt64) {
            if owed == 0 { since = now }
            balance = String(owed + amount)
            total = String((UInt128(total) ?? 0) + amount)
        }

        mutating func settle(_ amount: UInt128) {
            let left = owed > amount ? owed - amount : 0
            balance = String(left)
            paid = String((UInt128(paid) ?? 0) + amount)
            if left == 0 { since = 0 }
        }
    }

    struct Book: Codable {
        var payables: [String: Account] = [:]
        var receivables: [String: Account] = [:]
        var banned: [String] = []
        var paymentsCursor: UInt64 = 0
        var proofsRejected = 0
        var payments: [String] = []
    }

    var book = Book()
    let path: String
    let thresholds: PaymentThresholds
    /// Payer nonces seen (replay protection), with when they may be forgotten.
    private var nonces: [[UInt8]: UInt64] = [:]
    private var dirty = false

    static let proofContext = Array("masq payer v1".utf8)
    /// How far a proof's timestamp may be from this node's clock.
    static let proofWindowMilliseconds: UInt64 = 300_000

    let store: AccountBookStore?

    init(directory: String, thresholds: PaymentThresholds, store: AccountBookStore? = nil) {
        path = directory + "/accounts.json"
        self.thresholds = thresholds
        self.store = store
        if let store {
            if let bytes = store.load(), let loaded = try? JSONDecoder().decode(Book.self, from: Data(bytes)) { book = loaded }
        } else if let file = fopen(path, "rb") {
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while true {
                let n = fread(&chunk, 1, chunk.count, file)
                if n <= 0 { break }
                bytes += chunk[0..<n]
            }
            fclose(file)
            if let loaded = try? JSONDecoder().decode(Book.self, from: Data(bytes)) { book = loaded }
        }
    }

    func isBanned(_ wallet: String) -> Bool { book.banned.contains(wallet) }

    func owe(_ creditor: String, _ amount: UInt128, now: UInt64) {
        guard amount > 0 else { return }
        book.payables[creditor, default: Account()].add(amount, now: now)
        dirty = true
    }

    func earn(_ debtor: String, _ amount: UInt128, now: UInt64) {
        guard amount > 0 else { return }
        book.receivables[debtor, default: Account()].add(amount, now: now)
        dirty = true
    }

    /// The message a consuming wallet signs for one hop of one circuit:
    /// fresh nonce and the hop's key, so it cannot be replayed or moved.
    static func proofMessage(nonce: [UInt8], timestamp: UInt64, hop: NodeKey) -> [UInt8] {
        var t = [UInt8](repeating: 0, count: 8)
        for i in 0..<8 { t[i] = UInt8(truncatingIfNeeded: timestamp >> (56 - 8 * UInt64(i))) }
        return proofContext + nonce + t + hop.bytes
    }

    /// Check a payer proof addressed to `me`: signature, time window, and a
    /// nonce never seen before.
    func accept(payer: String, nonce: [UInt8], timestamp: UInt64, signature: [UInt8], me: NodeKey, wallet: MeshWallet, now: UInt64) -> Bool {
        for (n, until) in nonces where until < now { nonces[n] = nil }
        let skew = timestamp > now ? timestamp - now : now - timestamp
        guard nonce.count == 16, skew <= Self.proofWindowMilliseconds, nonces[nonce] == nil,
              wallet.verify(address: payer, message: Self.proofMessage(nonce: nonce, timestamp: timestamp, hop: me), signature: signature) else {
            book.proofsRejected += 1
            dirty = true
            return false
        }
        nonces[nonce] = now + 2 * Self.proofWindowMilliseconds
        return true
    }

    /// Payables due now: (creditor, amount).
    func due(nowMilliseconds now: UInt64) -> [(String, UInt128)] {
        book.payables.compactMap { creditor, account in
            guard account.owed > 0, let limit = thresholds.limit(ageSeconds: (now - account.since) / 1_000), account.owed > limit else { return nil }
            return (creditor, account.owed)
        }
    }

    func paid(_ creditor: String, _ amount: UInt128, txid: String) {
        book.payables[creditor]?.settle(amount)
        book.payables[creditor]?.lastPayment = txid
        book.payments.append(txid)
        if book.payments.count > 100 { book.payments.removeFirst(book.payments.count - 100) }
        dirty = true
    }

    func received(from debtor: String, _ amount: UInt128) {
        book.receivables[debtor, default: Account()].settle(amount)
        dirty = true
    }

    /// Ban debtors past the curve plus the grace period; unban those below the unban level.
    func updateBans(nowMilliseconds now: UInt64) -> (banned: [String], unbanned: [String]) {
        var banned: [String] = [], unbanned: [String] = []
        var set = Set(book.banned)
        for (debtor, account) in book.receivables {
            let age = account.owed == 0 ? 0 : (now - account.since) / 1_000
            let over = age > thresholds.graceSeconds
                && (thresholds.limit(ageSeconds: age - thresholds.graceSeconds).map { account.owed > $0 } ?? false)
            if over && !set.contains(debtor) { set.insert(debtor); banned.append(debtor) }
            if set.contains(debtor) && account.owed < thresholds.unbanBelow && !over { set.remove(debtor); unbanned.append(debtor) }
        }
        if !banned.isEmpty || !unbanned.isEmpty { book.banned = set.sorted(); dirty = true }
        return (banned, unbanned)
    }

    func save(force: Bool = false) {
        guard dirty || force, let bytes = try? JSONEncoder().encode(book) else { return }
        dirty = false
        if let store {
            store.save(Array(bytes))
            return
        }
        let temporary = path + ".tmp"
        guard let file = fopen(temporary, "wb") else { return }
        _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        fclose(file)
        rename(temporary, path)
    }
}
