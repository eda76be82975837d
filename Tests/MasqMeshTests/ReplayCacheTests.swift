import Testing

@testable import MasqMesh

/// The set-up replay cache (`ReplayCache`), on its own clock.
@Suite struct ReplayCacheTests {
    static func key(_ i: Int) -> [UInt8] { (0..<32).map { UInt8(truncatingIfNeeded: i >> ($0 % 4 * 8)) ^ UInt8($0) } }

    @Test func aReplayIsRefusedAndAFloodCannotReopenIt() {
        var cache = ReplayCache(window: 300_000, capacity: 100)
        let now: UInt64 = 1_800_000_000_000
        #expect(cache.admit(Self.key(1), timestamp: now - 1_000, now: now) == .fresh)
        #expect(cache.admit(Self.key(1), timestamp: now - 1_000, now: now + 5) == .replayed)
        // A flood of fresh keys pushes key 1 out: its layer is then refused on its time, never accepted again.
        for i in 2...200 { _ = cache.admit(Self.key(i), timestamp: now, now: now) }
        #expect(cache.count <= 100)
        #expect(cache.admit(Self.key(1), timestamp: now - 1_000, now: now + 10) == .stale)
        // Too old, or dated far ahead: stale.
        #expect(cache.admit(Self.key(500), timestamp: now - 301_000, now: now) == .stale)
        #expect(cache.admit(Self.key(501), timestamp: now + 60_000, now: now) == .stale)
    }

    /// Found by review: layers dated up to the whole window ahead, in a flood,
    /// raised the horizon past every honest layer for five minutes (and each
    /// refused honest set-up cost its neighbour penalty points). Now a layer may
    /// be at most `ahead` (30 s) ahead, so the flood holds honest set-ups off
    /// for no longer than that after it stops.
    @Test func aFloodDatedAheadHoldsHonestSetUpsOffForAtMostAhead() {
        var cache = ReplayCache(window: 300_000, capacity: 100)
        let now: UInt64 = 1_800_000_000_000
        // Dated nearly the whole window ahead: refused, and the horizon does not move.
        for i in 0..<300 { #expect(cache.admit(Self.key(i), timestamp: now + 299_000, now: now) == .stale) }
        #expect(cache.admit(Self.key(5_000), timestamp: now - 2_000, now: now) == .fresh)
        // Dated within `ahead`: accepted, and they can raise the horizon only that far.
        for i in 300..<600 { _ = cache.admit(Self.key(i), timestamp: now + 29_000, now: now) }
        #expect(cache.horizon <= now + 30_000)
        // An honest layer (back-dated up to 2 s) made 32 s later is accepted.
        let later = now + 32_000
        #expect(cache.admit(Self.key(10_000), timestamp: later - 2_000, now: later) == .fresh)
    }
}
