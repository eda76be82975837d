/// The handshake keys of the onion layers a node opened, so that a recorded
/// set-up sent again is refused (a relay that replays a circuit's CREATE and
/// cells would otherwise make the exit reconnect and resend the request).
/// Independent of payments: every layer is checked, paid or not.
///
/// Every layer names the time its onion was made (`Onion` header). A layer
/// is accepted when that time is at most `window` behind this node's clock
/// and at most `ahead` in front of it, and its ephemeral key was not seen;
/// the key is then kept until its time falls out of the window (later, a
/// replay is refused as stale anyway). Bounded: past `capacity` keys the
/// oldest is forgotten and the **horizon** rises to its time, and every
/// layer not newer than the horizon is refused as stale — so a flood can
/// narrow the window an honest onion must arrive in, but never make the node
/// forget a key whose layer it would still accept. `ahead` is short (origins
/// only back-date their layers; it allows for clocks that differ a little):
/// a flood of layers dated far ahead would otherwise raise the horizon past
/// every honest layer for the whole window (found by review).
struct ReplayCache {
    enum Verdict { case fresh, replayed, stale }

    let window: UInt64
    let ahead: UInt64
    let capacity: Int
    private var seen: [[UInt8]: UInt64] = [:]
    private var order: [([UInt8], UInt64)] = []
    private var head = 0
    private(set) var horizon: UInt64 = 0

    init(window: UInt64, capacity: Int, ahead: UInt64 = 30_000) {
        self.window = window
        self.ahead = min(ahead, window)
        self.capacity = capacity
    }

    var count: Int { seen.count }

    mutating func admit(_ key: [UInt8], timestamp: UInt64, now: UInt64) -> Verdict {
        expire(now)
        guard timestamp <= now &+ ahead, timestamp &+ window >= now, timestamp > horizon else { return .stale }
        guard seen[key] == nil else { return .replayed }
        while seen.count >= capacity, head < order.count {
            let (old, time) = order[head]
            head += 1
            if seen.removeValue(forKey: old) != nil { horizon = max(horizon, time) }
        }
        seen[key] = timestamp
        order.append((key, timestamp))
        return .fresh
    }

    /// Forget the keys, oldest first, whose time is out of the window.
    private mutating func expire(_ now: UInt64) {
        while head < order.count, order[head].1 &+ window < now {
            seen[order[head].0] = nil
            head += 1
        }
        if head > 1_024 && head * 2 > order.count {
            order.removeFirst(head)
            head = 0
        }
    }
}
