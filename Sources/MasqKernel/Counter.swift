/// A counter's state: per replica, what it added and what it removed. Each
/// replica only ever grows its own two totals, so merging is a pointwise
/// maximum and concurrent increments on different devices all count.
struct Counter: Equatable {
    var entries: [UInt64: (added: UInt64, removed: UInt64)] = [:]

    static func == (a: Counter, b: Counter) -> Bool {
        a.entries.count == b.entries.count && a.entries.allSatisfy { k, v in b.entries[k].map { $0 == v } ?? false }
    }

    var total: Int64 {
        var sum: Int64 = 0
        for (_, e) in entries { sum = sum &+ Int64(bitPattern: e.added) &- Int64(bitPattern: e.removed) }
        return sum
    }

    /// MASQ_E_INVALID when this replica's share would overflow (never wraps).
    mutating func add(_ delta: Int64, replica: UInt64) throws(MasqError) {
        var e = entries[replica] ?? (0, 0)
        let (sum, overflow) =
            delta >= 0
            ? e.added.addingReportingOverflow(UInt64(delta)) : e.removed.addingReportingOverflow(delta.magnitude)
        guard !overflow, sum <= UInt64(Int64.max) else {
            throw .invalid("the counter's share of this device would overflow")
        }
        if delta >= 0 { e.added = sum } else { e.removed = sum }
        entries[replica] = e
    }

    mutating func merge(_ other: Counter) {
        for (replica, e) in other.entries {
            let mine = entries[replica] ?? (0, 0)
            entries[replica] = (max(mine.added, e.added), max(mine.removed, e.removed))
        }
    }

    var encoded: [UInt8] {
        var out: [UInt8] = []
        out.appendVarint(UInt64(entries.count))
        for replica in entries.keys.sorted() {
            out.appendBigEndian(replica)
            out.appendVarint(entries[replica]!.added)
            out.appendVarint(entries[replica]!.removed)
        }
        return out
    }

    init() {}

    init(decoding bytes: [UInt8]) throws(MasqError) {
        try bytes.withBytes { (raw) throws(MasqError) in
            var reader = ByteReader(raw)
            let count = try reader.varint()
            guard count <= 65_536 else { throw .corrupt("counter with \(count) replicas") }
            for _ in 0..<count {
                let replica = try reader.uint64()
                entries[replica] = (try reader.varint(), try reader.varint())
            }
            guard reader.isAtEnd else { throw .corrupt("counter has trailing bytes") }
        }
    }

    /// How `get` shows a counter: its total in decimal.
    var text: [UInt8] { Array(String(total).utf8) }
}
