import FoundationEssentials
import MasqKernel
#if canImport(Glibc)
    import Glibc
#endif

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
        guard age >= maturitySeconds else { return nil }  // not mature: no limit applies yet
        let into = age - maturitySeconds
        guard into < thresholdIntervalSeconds, debtThreshold > permanentAllowance else { return permanentAllowance }
        let drop = (debtThreshold - permanentAllowance) * UInt128(into) / UInt128(thresholdIntervalSeconds)
        return debtThreshold - drop
    }
}

/// The accountant: payables (what a node owes the nodes that
/// carried its traffic, by their earning wallet) and receivables (what
/// consumers owe it, by their consuming wallet), kept in a Masq store
/// (namespace `masq.accounts`). The mesh drives it through a protocol of its
/// own (it sees nothing of the kernel); calls come from one thread at a time.
public final class Accountant: @unchecked Sendable {
    public struct Account: Codable, Equatable, Sendable {
        public var balance: String = "0"
        /// When the oldest unpaid part of the balance arose (Unix ms); 0 when nothing is owed.
        public var since: UInt64 = 0
        public var total: String = "0"
        public var paid: String = "0"
        public var lastPayment: String?

        public var owed: UInt128 { UInt128(balance) ?? 0 }

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

    public struct Book: Codable, Sendable {
        public var payables: [String: Account] = [:]
        public var receivables: [String: Account] = [:]
        public var banned: [String] = []
        public var paymentsCursor: UInt64 = 0
        public var proofsRejected = 0
        public var payments: [String] = []
    }

    public private(set) var book = Book()
    public let thresholds: PaymentThresholds
    let store: Store
    static let namespace = "masq.accounts"
    static let bookKey = Array("book".utf8)
    /// Payer nonces seen (replay protection), with when they may be forgotten,
    /// in the order they came (so forgetting is a walk from the front, not a
    /// scan of the table per proof); at most `maxNonces`.
    private var nonces: [[UInt8]: UInt64] = [:]
    private var nonceOrder: [(nonce: [UInt8], until: UInt64, timestamp: UInt64)] = []
    private var nonceHead = 0
    /// Proofs not newer than this are refused: it rises to a forgotten nonce's
    /// proof time when the table is full, so a flood can never make this hop
    /// forget a nonce whose proof it would still accept.
    private var nonceHorizon: UInt64 = 0
    public static let maxNonces = 200_000
    /// Payer nonces held now (tests: the table stays bounded).
    public var nonceCount: Int { nonces.count }
    /// A proof dated ahead of this hop's clock by more than this is refused
    /// (consumers only back-date theirs): a flood dated far ahead would raise
    /// the horizon past every honest proof.
    public static let proofAheadMilliseconds: UInt64 = 30_000
    private var dirty = false

    /// How far a proof's timestamp may be from this node's clock.
    public static let proofWindowMilliseconds: UInt64 = 300_000

    /// Load the book kept in `store` (a new one when there is none).
    public init(store: Store, thresholds: PaymentThresholds) throws(MasqError) {
        self.store = store
        self.thresholds = thresholds
        let ns = try NamespaceName(Self.namespace, limits: store.limits)
        if let bytes = try store.get(ns, key: Self.bookKey) {
            guard let loaded = try? JSONDecoder().decode(Book.self, from: Data(bytes)) else {
                throw .corrupt("malformed accounting book")
            }
            book = loaded
        }
    }

    /// The book a store holds, for display.
    public static func book(in store: Store) throws(MasqError) -> Book? {
        let ns = try NamespaceName(namespace, limits: store.limits)
        guard let bytes = try store.get(ns, key: bookKey) else { return nil }
        guard let book = try? JSONDecoder().decode(Book.self, from: Data(bytes)) else {
            throw .corrupt("malformed accounting book")
        }
        return book
    }

    public var scanSeconds: UInt64 { thresholds.scanSeconds }
    public var paymentsCursor: UInt64 {
        get { book.paymentsCursor }
        set { book.paymentsCursor = newValue; dirty = true }
    }

    public func isBanned(_ wallet: String) -> Bool { book.banned.contains(wallet) }

    public func owe(_ creditor: String, _ amount: UInt128, now: UInt64) {
        guard amount > 0 else { return }
        book.payables[creditor, default: Account()].add(amount, now: now)
        dirty = true
    }

    public func earn(_ debtor: String, _ amount: UInt128, now: UInt64) {
        guard amount > 0 else { return }
        book.receivables[debtor, default: Account()].add(amount, now: now)
        dirty = true
    }

    /// Check a payer proof: `message` is what the consuming wallet signed (it
    /// names the nonce, the timestamp and this hop); `verify` checks a
    /// signature with the earning wallet's scheme. The timestamp must be within
    /// the window and the nonce never seen before.
    public func acceptProof(
        payer: String, nonce: [UInt8], timestamp: UInt64, message: [UInt8], signature: [UInt8], now: UInt64,
        verify: (String, [UInt8], [UInt8]) -> Bool
    ) -> Bool {
        while nonceHead < nonceOrder.count, nonceOrder[nonceHead].until < now {
            nonces[nonceOrder[nonceHead].nonce] = nil
            nonceHead += 1
        }
        if nonceHead > 1_024 && nonceHead * 2 > nonceOrder.count {
            nonceOrder.removeFirst(nonceHead)
            nonceHead = 0
        }
        let fresh =
            timestamp <= now + Self.proofAheadMilliseconds && timestamp + Self.proofWindowMilliseconds >= now
            && timestamp > nonceHorizon
        guard nonce.count == 16, fresh, nonces[nonce] == nil, verify(payer, message, signature) else {
            book.proofsRejected += 1
            dirty = true
            return false
        }
        while nonces.count >= Self.maxNonces, nonceHead < nonceOrder.count {
            let old = nonceOrder[nonceHead]
            nonceHead += 1
            if nonces.removeValue(forKey: old.nonce) != nil { nonceHorizon = max(nonceHorizon, old.timestamp) }
        }
        let until = now + 2 * Self.proofWindowMilliseconds
        nonces[nonce] = until
        nonceOrder.append((nonce, until, timestamp))
        return true
    }

    /// Payables due now: (creditor, amount).
    public func due(nowMilliseconds now: UInt64) -> [(String, UInt128)] {
        book.payables.compactMap { creditor, account in
            guard account.owed > 0, let limit = thresholds.limit(ageSeconds: (now - account.since) / 1_000),
                account.owed > limit
            else { return nil }
            return (creditor, account.owed)
        }
    }

    public func paid(_ creditor: String, _ amount: UInt128, txid: String) {
        book.payables[creditor]?.settle(amount)
        book.payables[creditor]?.lastPayment = txid
        book.payments.append(txid)
        if book.payments.count > 100 { book.payments.removeFirst(book.payments.count - 100) }
        dirty = true
    }

    public func received(from debtor: String, _ amount: UInt128) {
        book.receivables[debtor, default: Account()].settle(amount)
        dirty = true
    }

    /// Ban debtors past the curve plus the grace period; unban those below the unban level.
    public func updateBans(nowMilliseconds now: UInt64) -> (banned: [String], unbanned: [String]) {
        var banned: [String] = [], unbanned: [String] = []
        var set = Set(book.banned)
        for (debtor, account) in book.receivables {
            let age = account.owed == 0 ? 0 : (now - account.since) / 1_000
            let over =
                age > thresholds.graceSeconds
                && (thresholds.limit(ageSeconds: age - thresholds.graceSeconds).map { account.owed > $0 } ?? false)
            if over && !set.contains(debtor) { set.insert(debtor); banned.append(debtor) }
            if set.contains(debtor) && account.owed < thresholds.unbanBelow && !over {
                set.remove(debtor); unbanned.append(debtor)
            }
        }
        if !banned.isEmpty || !unbanned.isEmpty { book.banned = set.sorted(); dirty = true }
        return (banned, unbanned)
    }

    /// Write the book to the store when it changed (or always, with `force`).
    public func save(force: Bool = false) {
        guard dirty || force, let bytes = try? JSONEncoder().encode(book),
            let ns = try? NamespaceName(Self.namespace, limits: store.limits)
        else { return }
        do {
            try store.put(ns, key: Self.bookKey, value: Array(bytes))
            dirty = false
        } catch {
            Log.warn("accounts", "cannot save the book: \(error.message)")
        }
    }
}
