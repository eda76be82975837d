import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// Write receipts: a write an application retries with the same request id
/// (it lost the answer: a dropped connection, a restarted daemon) is applied
/// once. The receipt is written in the write's own transaction, so "applied"
/// and "remembered" cannot part, whatever crash comes between them; receipts
/// are local (never synced) and forgotten after `receiptLifetime`.
extension Store {
    static let receiptFamily: UInt8 = 0x57  // 'W' SHA-256(receipt)[0..<16] -> u64 Unix ms
    /// How long a retry is recognised (a client retries within seconds or minutes).
    public static let receiptLifetime: UInt64 = 24 * 3_600_000
    /// Receipts older than the lifetime are removed every this many new ones.
    static let receiptSweepEvery = 512

    /// Run `body` (one write: put, delete, set_all, clear, counter_add…)
    /// unless a write carrying the same `receipt` was applied within the
    /// receipt lifetime. Returns false when it was (and `body` did not run).
    /// The receipt is stored in the commit `body` makes, even a commit that
    /// changes nothing (a delete of an absent key), so its retry cannot undo
    /// a later write. Any thread; receipts of different calls serialise.
    public func applyOnce(receipt: [UInt8], _ body: () throws(MasqError) -> Void) throws(MasqError) -> Bool {
        let key = [Store.receiptFamily] + Array(Hash.sha256(receipt).prefix(16))
        return try receipts.lock.withLock { () throws(MasqError) -> Bool in
            if let at = try lock.withLock({ () throws(MasqError) -> [UInt8]? in
                try ensureUsable(); return try Store.getMeta(engine, key)
            }),
                at.count == 8,
                Store.receiptIsFresh(
                    at.withUnsafeBytes { $0.loadBigEndian(at: 0) as UInt64 }, now: Clock.unixMilliseconds())
            {
                return false
            }
            receipts.pending = (pthread_self(), key)
            defer { receipts.pending = nil }
            try body()
            if receipts.pending != nil {
                // The body made no commit at all (it failed before one, or wrote through another path): record it alone.
                try localTransaction { () throws(MasqError) in
                    try Store.putMeta(engine, key, bigEndianBytes(Clock.unixMilliseconds()))
                }
            }
            return true
        }
    }

    /// A receipt written at `at` still stands at `now`: within the lifetime, or
    /// stamped after `now` (the wall clock stepped back since: still fresh).
    static func receiptIsFresh(_ at: UInt64, now: UInt64) -> Bool {
        at > now || now - at < receiptLifetime
    }

    /// Inside writeCommit's transaction: store the calling thread's pending
    /// receipt (true if there was one), now and then sweeping expired ones.
    func writePendingReceipt() throws(MasqError) -> Bool {
        guard let (thread, key) = receipts.pending, pthread_equal(thread, pthread_self()) != 0 else { return false }
        try Store.putMeta(engine, key, bigEndianBytes(Clock.unixMilliseconds()))
        receipts.pending = nil
        receipts.written += 1
        if receipts.written % Store.receiptSweepEvery == 0 {
            let now = Clock.unixMilliseconds()
            var expired: [[UInt8]] = []
            try engine.scan(from: [Store.receiptFamily], to: [Store.receiptFamily + 1]) {
                (k, v) throws(MasqError) -> Bool in
                if v.count != 8 || !Store.receiptIsFresh(v.loadBigEndian(at: 0), now: now) { expired.append(Array(k)) }
                return expired.count < 10_000
            }
            for k in expired { try k.withBytes { (raw) throws(MasqError) in try engine.delete(raw) } }
        }
        return true
    }
}

/// The receipt a thread is about to write (see `Store.applyOnce`).
final class ReceiptState: @unchecked Sendable {
    let lock = Lock()
    /// Read and written by the thread inside `applyOnce` and by writeCommit under the store's lock.
    var pending: (pthread_t, [UInt8])? {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }
    var written = 0
    private let state = LockedValue<(pthread_t, [UInt8])?>(nil)
}
