/// Accepts each sequence number once even when messages arrive out of order:
/// the sliding window of RFC 4303 §3.4.3 (IPsec anti-replay). `highest` is the
/// greatest number accepted; bit i of `seen` says whether `highest − i` was.
/// Numbers at or below `highest − 64` are refused: a sender resends under a
/// new number, so only replays fall there.
package struct ReplayWindow: Equatable {
    static let size: UInt64 = 64
    package private(set) var highest: UInt64
    package private(set) var seen: UInt64

    package init(highest: UInt64 = 0, seen: UInt64 = 1) {
        self.highest = highest
        self.seen = seen
    }

    /// Record `seq`; false if it was seen before or is too old.
    package mutating func accept(_ seq: UInt64) -> Bool {
        if seq > highest {
            let shift = seq - highest
            seen = shift >= ReplayWindow.size ? 1 : (seen << shift) | 1
            highest = seq
            return true
        }
        let offset = highest - seq
        guard offset < ReplayWindow.size else { return false }
        let bit: UInt64 = 1 << offset
        guard seen & bit == 0 else { return false }
        seen |= bit
        return true
    }
}
