// The ledger wallet plugin: a real local ledger in one SQLite file that
// several nodes on a machine share (private networks, tests). Accounts are
// Ed25519 keys (address = hex of the public key); transfers are atomic
// (BEGIN IMMEDIATE: debit, credit and history in one transaction); every
// transfer is kept with its id, so payments can be verified and listed.
// Amounts are unsigned decimals below 2^128. It sees nothing of Masq but
// include/masq_plugin.h.
import CMasqPlugin
import MasqPluginSupport
import CSQLite
import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

private let pluginName: StaticString = "ledger"
private let pluginVersion: StaticString = "1.0.0"
private let pluginSummary: StaticString =
    "local SQLite ledger shared by nodes on one machine (atomic transfers, history)"

final class LedgerWallet: PluginWallet, @unchecked Sendable {
    let host: UnsafePointer<masq_host>
    let signingKey: SecureBytes
    let address: String
    let asset: String
    private var db: OpaquePointer?
    private let lock = PluginLock()

    init(host: UnsafePointer<masq_host>, ledger: String, keyFile: String, asset: String, initialBalance: UInt128?)
        throws(PluginFailure)
    {
        self.host = host
        self.asset = asset
        signingKey = try Self.loadOrCreateKey(keyFile)
        guard let publicKey = try? Ed25519.publicKey(of: signingKey) else {
            throw .init(MASQ_E_INVALID, "bad wallet key in \(keyFile)")
        }
        address = Hex.encode(publicKey)
        var handle: OpaquePointer?
        guard
            sqlite3_open_v2(ledger, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nil)
                == SQLITE_OK, let handle
        else {
            sqlite3_close(handle)
            throw .init(MASQ_E_IO, "cannot open the ledger \(ledger)")
        }
        db = handle
        sqlite3_busy_timeout(handle, 10_000)
        try exec(
            """
            PRAGMA journal_mode=WAL;
            CREATE TABLE IF NOT EXISTS account(address TEXT NOT NULL, asset TEXT NOT NULL, balance TEXT NOT NULL, PRIMARY KEY(address, asset));
            CREATE TABLE IF NOT EXISTS transfer(seq INTEGER PRIMARY KEY AUTOINCREMENT, txid TEXT NOT NULL UNIQUE, sender TEXT NOT NULL,
                receiver TEXT NOT NULL, asset TEXT NOT NULL, amount TEXT NOT NULL, memo BLOB, at INTEGER NOT NULL);
            CREATE INDEX IF NOT EXISTS transfer_receiver ON transfer(receiver, seq);
            """)
        if let initialBalance {
            // A faucet for private networks: the first open of an account funds it.
            try transaction { () throws(PluginFailure) in
                if try self.balanceLocked(address, asset) == nil {
                    try self.setBalance(address, asset, initialBalance)
                    try self.record(
                        txid: "genesis-" + address, from: "genesis", to: address, asset: asset, amount: initialBalance,
                        memo: [])
                }
            }
        }
    }

    deinit {
        sqlite3_close(db)
    }

    static func loadOrCreateKey(_ path: String) throws(PluginFailure) -> SecureBytes {
        if let file = fopen(path, "rb") {
            defer { fclose(file) }
            var bytes = [UInt8](repeating: 0, count: 33)
            guard fread(&bytes, 1, 33, file) == 32 else {
                throw .init(MASQ_E_INVALID, "\(path) is not a wallet key (32 bytes)")
            }
            defer { for i in bytes.indices { bytes[i] = 0 } }
            return SecureBytes(bytes[0..<32])
        }
        let (key, _) = Ed25519.keyPair()
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw .init(MASQ_E_IO, "cannot create the wallet key \(path)") }
        defer { close(fd) }
        let written = key.withUnsafeBytes { write(fd, $0.baseAddress, 32) }
        guard written == 32 else { throw .init(MASQ_E_IO, "cannot write \(path)") }
        return key
    }

    // MARK: operations

    func balance(_ asset: String?) throws(PluginFailure) -> String {
        try locked { () throws(PluginFailure) in String(try balanceLocked(address, asset ?? self.asset) ?? 0) }
    }

    func pay(to: String, asset: String?, amount text: String, memo: [UInt8]) throws(PluginFailure) -> String {
        guard let amount = UInt128(text), amount > 0 else {
            throw .init(MASQ_E_INVALID, "amount must be a positive decimal integer below 2^128")
        }
        guard Self.validAddress(to) else { throw .init(MASQ_E_INVALID, "not a ledger address: \(to.prefix(80))") }
        guard to != address else { throw .init(MASQ_E_INVALID, "a wallet cannot pay itself") }
        let asset = asset ?? self.asset
        let txid = Hex.encode(Random.bytes(16))
        try transaction { () throws(PluginFailure) in
            let mine = try balanceLocked(address, asset) ?? 0
            guard mine >= amount else { throw .init(MASQ_E_FUNDS, "balance \(mine) does not cover \(amount) \(asset)") }
            let theirs = try balanceLocked(to, asset) ?? 0
            let (sum, overflow) = theirs.addingReportingOverflow(amount)
            guard !overflow else { throw .init(MASQ_E_INVALID, "the receiver's balance would overflow") }
            try setBalance(address, asset, mine - amount)
            try setBalance(to, asset, sum)
            try record(txid: txid, from: address, to: to, asset: asset, amount: amount, memo: memo)
        }
        return txid
    }

    func sign(_ message: [UInt8]) throws(PluginFailure) -> [UInt8] {
        do { return try Ed25519.sign(message, privateKey: signingKey) } catch {
            throw .init(MASQ_E_INTERNAL, "signing failed")
        }
    }

    static func verify(_ address: String, _ message: [UInt8], _ signature: [UInt8]) -> Bool {
        guard validAddress(address), let key = Hex.decode(address) else { return false }
        return Ed25519.verify(signature, message: message, publicKey: key)
    }

    func verifyPayment(txid: String, from: String, to: String, asset: String?, amount text: String)
        throws(PluginFailure) -> Int32
    {
        guard let amount = UInt128(text) else { throw .init(MASQ_E_INVALID, "amount must be a decimal integer") }
        return try locked { () throws(PluginFailure) -> Int32 in
            let s = try prepare("SELECT sender, receiver, asset, amount FROM transfer WHERE txid = ?1")
            defer { sqlite3_finalize(s) }
            sqlite3_bind_text(s, 1, txid, -1, transient)
            guard sqlite3_step(s) == SQLITE_ROW else { return MASQ_E_NOT_FOUND }
            let ok =
                column(s, 0) == from && column(s, 1) == to && column(s, 2) == (asset ?? self.asset)
                && (UInt128(column(s, 3)) ?? 0) >= amount
            return ok ? MASQ_OK : MASQ_E_DENIED
        }
    }

    /// Payments to this wallet after `cursor`, in the configured asset only:
    /// a transfer of another asset (worth anything or nothing) is not a
    /// payment of what is owed, so a node never credits a debtor for it.
    func payments(after cursor: UInt64, limit: UInt32) throws(PluginFailure) -> String {
        try locked { () throws(PluginFailure) -> String in
            let s = try prepare(
                "SELECT seq, txid, sender, asset, amount FROM transfer WHERE receiver = ?1 AND seq > ?2 AND asset = ?4 ORDER BY seq LIMIT ?3"
            )
            defer { sqlite3_finalize(s) }
            sqlite3_bind_text(s, 1, address, -1, transient)
            sqlite3_bind_int64(s, 2, Int64(clamping: cursor))
            sqlite3_bind_int64(s, 3, Int64(limit))
            sqlite3_bind_text(s, 4, asset, -1, transient)
            var items: [String] = []
            var next = cursor
            while sqlite3_step(s) == SQLITE_ROW {
                next = UInt64(sqlite3_column_int64(s, 0))
                items.append(
                    "{\"txid\": \"\(column(s, 1))\", \"from\": \"\(column(s, 2))\", \"asset\": \"\(column(s, 3))\", \"amount\": \"\(column(s, 4))\"}"
                )
            }
            return "{\"payments\": [" + items.joined(separator: ", ") + "], \"cursor\": \(next)}"
        }
    }

    // MARK: plumbing

    static func validAddress(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    private func locked<T>(_ body: () throws(PluginFailure) -> T) throws(PluginFailure) -> T {
        try lock.withLock { () throws(PluginFailure) -> T in try body() }
    }

    private func transaction(_ body: () throws(PluginFailure) -> Void) throws(PluginFailure) {
        try locked { () throws(PluginFailure) in
            try exec("BEGIN IMMEDIATE")
            do throws(PluginFailure) {
                try body()
                try exec("COMMIT")
            } catch {
                _ = sqlite3_exec(db, "ROLLBACK", nil, nil, nil)
                throw error
            }
        }
    }

    private func balanceLocked(_ address: String, _ asset: String) throws(PluginFailure) -> UInt128? {
        let s = try prepare("SELECT balance FROM account WHERE address = ?1 AND asset = ?2")
        defer { sqlite3_finalize(s) }
        sqlite3_bind_text(s, 1, address, -1, transient)
        sqlite3_bind_text(s, 2, asset, -1, transient)
        guard sqlite3_step(s) == SQLITE_ROW else { return nil }
        guard let value = UInt128(column(s, 0)) else {
            throw .init(MASQ_E_CORRUPT, "a malformed balance in the ledger")
        }
        return value
    }

    private func setBalance(_ address: String, _ asset: String, _ value: UInt128) throws(PluginFailure) {
        let s = try prepare(
            "INSERT INTO account(address, asset, balance) VALUES(?1, ?2, ?3) ON CONFLICT(address, asset) DO UPDATE SET balance = excluded.balance"
        )
        defer { sqlite3_finalize(s) }
        sqlite3_bind_text(s, 1, address, -1, transient)
        sqlite3_bind_text(s, 2, asset, -1, transient)
        sqlite3_bind_text(s, 3, String(value), -1, transient)
        guard sqlite3_step(s) == SQLITE_DONE else { throw failure("update balance") }
    }

    private func record(txid: String, from: String, to: String, asset: String, amount: UInt128, memo: [UInt8])
        throws(PluginFailure)
    {
        let s = try prepare(
            "INSERT INTO transfer(txid, sender, receiver, asset, amount, memo, at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)")
        defer { sqlite3_finalize(s) }
        sqlite3_bind_text(s, 1, txid, -1, transient)
        sqlite3_bind_text(s, 2, from, -1, transient)
        sqlite3_bind_text(s, 3, to, -1, transient)
        sqlite3_bind_text(s, 4, asset, -1, transient)
        sqlite3_bind_text(s, 5, String(amount), -1, transient)
        _ = memo.withUnsafeBytes { sqlite3_bind_blob(s, 6, $0.baseAddress, Int32($0.count), transient) }
        sqlite3_bind_int64(s, 7, Int64(time(nil)))
        guard sqlite3_step(s) == SQLITE_DONE else { throw failure("record transfer") }
    }

    private func prepare(_ sql: String) throws(PluginFailure) -> OpaquePointer {
        var s: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &s, nil) == SQLITE_OK, let s else { throw failure("prepare") }
        return s
    }

    private func exec(_ sql: String) throws(PluginFailure) {
        guard sqlite3_exec(db, sql, nil, nil, nil) == SQLITE_OK else { throw failure(sql) }
    }

    private func column(_ s: OpaquePointer, _ i: Int32) -> String {
        sqlite3_column_text(s, i).map { String(cString: $0) } ?? ""
    }

    private func failure(_ what: String) -> PluginFailure {
        let code = sqlite3_errcode(db)
        return .init(
            code == SQLITE_BUSY ? MASQ_E_BUSY : MASQ_E_IO, "ledger: \(what): \(String(cString: sqlite3_errmsg(db)))")
    }
}

private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

// MARK: - the C face

private func parse(_ host: UnsafePointer<masq_host>, _ list: UnsafePointer<masq_plugin_option>?, _ count: Int)
    throws(PluginFailure) -> LedgerWallet
{
    var ledger: String?, keyFile: String?, dataDirectory = ".", asset = "MASQ"
    var initial: UInt128?
    let pairs = try pluginOptions(list, count)
    for (key, value) in pairs {
        switch key {
        case "ledger": ledger = value
        case "key_file": keyFile = value
        case "data_dir": dataDirectory = value
        case "asset": asset = value
        case "initial_balance":
            guard let n = UInt128(value) else {
                throw .init(MASQ_E_CONFIG, "initial_balance must be a decimal integer")
            }
            initial = n
        default:
            throw .init(MASQ_E_CONFIG, "unknown option \"\(key)\" (known: ledger, key_file, asset, initial_balance)")
        }
    }
    guard let ledger else { throw .init(MASQ_E_CONFIG, "option ledger (the shared ledger file) is required") }
    return try LedgerWallet(
        host: host, ledger: ledger, keyFile: keyFile ?? dataDirectory + "/wallet.key", asset: asset,
        initialBalance: initial)
}

nonisolated(unsafe) private let vtable: UnsafeMutablePointer<masq_wallet_vtable> = {
    let v = UnsafeMutablePointer<masq_wallet_vtable>.allocate(capacity: 1)
    var t = walletVTable()
    t.create = { host, options, count, out in
        guard let host, let out else { return MASQ_E_INVALID }
        return handOver(host, out) { () throws(PluginFailure) in try parse(host, options, count) }
    }
    v.initialize(to: t)
    return v
}()

nonisolated(unsafe) private let descriptor = pluginDescriptor(
    kind: MASQ_PLUGIN_WALLET, name: pluginName, version: pluginVersion,
    summary: pluginSummary, vtable: UnsafeRawPointer(vtable))

@c @implementation
public func masq_plugin_entry() -> UnsafePointer<masq_plugin_descriptor>! {
    UnsafePointer(descriptor)
}
