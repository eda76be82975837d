import NIOConcurrencyHelpers

/// Token buckets by key (a client address, a mailbox): `rate` per second with
/// bursts up to `burst`. Idle buckets are forgotten so the table stays small
/// whatever the number of keys an abuser invents; if it still reaches
/// `maxKeys`, new keys are refused (fail closed) until it drains.
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
            var bucket = buckets[key] ?? Bucket(tokens: burst, last: now)
            if buckets[key] == nil && buckets.count >= maxKeys { return false }
            bucket.tokens = min(burst, bucket.tokens + Double(max(0, now - bucket.last)) * rate / 1_000)
            bucket.last = now
            guard bucket.tokens >= 1 else { buckets[key] = bucket; return false }
            bucket.tokens -= 1
            buckets[key] = bucket
            return true
        }
    }

    private func sweep(_ now: Int64) {
        lastSweep = now
        let full = burst / rate * 1_000
        buckets = buckets.filter { Double(now - $0.value.last) < full }
    }
}
