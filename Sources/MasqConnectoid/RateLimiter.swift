import NIOConcurrencyHelpers
#if canImport(Glibc)
    import Glibc
#endif

/// Token buckets by key (a client's address prefix, a mailbox): `rate` per
/// second with bursts up to `burst`. Idle buckets are forgotten so the table
/// stays small whatever the number of keys an abuser invents; when it still
/// reaches `maxKeys`, the least recently used half is evicted (a refused new
/// key would lock every new client out while an abuser keeps it full).
final class RateLimiter: @unchecked Sendable {
    private struct Bucket { var tokens: Double; var last: Int64 }
    private let rate: Double
    private let burst: Double
    private let maxKeys: Int
    private var buckets: [String: Bucket] = [:]
    private var lastSweep: Int64 = 0
    private let lock = NIOLock()

    init(perSecond rate: Double, burst: Double, maxKeys: Int = 100_000) {
        self.rate = rate
        self.burst = max(1, burst)
        self.maxKeys = maxKeys
    }

    /// Take one token for `key` at `now` (ms); false when none is left.
    func take(_ key: String, now: Int64) -> Bool {
        lock.withLock {
            if now - lastSweep > 10_000 { sweep(now) }
            if buckets[key] == nil && buckets.count >= maxKeys { evict(now) }
            var bucket = buckets[key] ?? Bucket(tokens: burst, last: now)
            bucket.tokens = min(burst, bucket.tokens + Double(max(0, now - bucket.last)) * rate / 1_000)
            bucket.last = now
            guard bucket.tokens >= 1 else { buckets[key] = bucket; return false }
            bucket.tokens -= 1
            buckets[key] = bucket
            return true
        }
    }

    /// Keys held (for tests and metrics).
    var count: Int { lock.withLock { buckets.count } }

    private func evict(_ now: Int64) {
        sweep(now)
        guard buckets.count >= maxKeys else { return }
        evicted += 1
        let cut = buckets.values.map(\.last).sorted()[buckets.count / 2]
        buckets = buckets.filter { $0.value.last > cut }
    }

    /// How many times the table was full and its older half evicted.
    var evictions: Int { lock.withLock { evicted } }
    private var evicted = 0

    private func sweep(_ now: Int64) {
        lastSweep = now
        let full = burst / rate * 1_000
        buckets = buckets.filter { Double(now - $0.value.last) < full }
    }
}

/// The key a client's requests are limited by: its IPv4 address masked to
/// `v4Prefix` bits (32: the address), its IPv6 address to `v6Prefix` (64 by
/// default: one subscriber usually holds a whole /64, so keying by the full
/// address would let it make 2^64 keys).
public enum ClientKey {
    public static func of(_ address: String, v4Prefix: Int = 32, v6Prefix: Int = 64) -> String {
        var v4 = in_addr()
        if inet_pton(AF_INET, address, &v4) == 1 {
            let bytes = withUnsafeBytes(of: &v4) { Array($0) }
            return "4/" + masked(bytes, v4Prefix).map { String($0) }.joined(separator: ".")
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, address, &v6) == 1 {
            let bytes = withUnsafeBytes(of: &v6) { Array($0) }
            // An IPv4-mapped address (::ffff:a.b.c.d) is its IPv4 address.
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
                return "4/" + masked(Array(bytes[12...]), v4Prefix).map { String($0) }.joined(separator: ".")
            }
            return "6/" + masked(bytes, v6Prefix).map { String($0, radix: 16) }.joined(separator: ":")
        }
        return "?/" + address
    }

    private static func masked(_ bytes: [UInt8], _ prefix: Int) -> [UInt8] {
        var out = bytes
        for i in out.indices {
            let keep = max(0, min(8, prefix - i * 8))
            out[i] &= keep == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
        }
        return out
    }
}
