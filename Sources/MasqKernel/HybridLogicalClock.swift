/// A hybrid logical clock (Kulkarni et al., 2014) packed in 64 bits: the top
/// 48 bits are Unix milliseconds, the low 16 a counter. Timestamps it issues
/// are strictly increasing, stay close to wall time, and exceed every
/// timestamp the replica has observed, so "greatest timestamp wins" respects
/// causality without trusting any one device's clock.
public struct HybridLogicalClock: Sendable, Equatable {
    public private(set) var last: UInt64

    public init(last: UInt64 = 0) { self.last = last }

    /// A fresh timestamp for a local event at wall time `nowMilliseconds`.
    /// max(physical, last + 1): a counter overflow simply carries into the
    /// millisecond part.
    public mutating func tick(nowMilliseconds: UInt64) -> UInt64 {
        let physical = (nowMilliseconds & 0xFFFF_FFFF_FFFF) << 16
        last = max(physical, last &+ 1)
        return last
    }

    /// Merge a timestamp seen on a remote event, so later local ticks exceed it.
    public mutating func observe(_ remote: UInt64) {
        last = max(last, remote)
    }

    public static func milliseconds(of timestamp: UInt64) -> UInt64 { timestamp >> 16 }
    public static func counter(of timestamp: UInt64) -> UInt16 { UInt16(truncatingIfNeeded: timestamp) }
}
