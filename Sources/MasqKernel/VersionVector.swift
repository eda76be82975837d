/// What a replica has applied: for each origin replica, the highest commit
/// sequence number such that every commit up to it is applied.
public struct VersionVector: Equatable, Sendable, CustomStringConvertible {
    public var entries: [UInt64: UInt64] = [:]

    public init(_ entries: [UInt64: UInt64] = [:]) { self.entries = entries.filter { $0.value > 0 } }

    public subscript(replica: UInt64) -> UInt64 {
        get { entries[replica] ?? 0 }
        set { entries[replica] = newValue == 0 ? nil : newValue }
    }

    /// Whether commit `seq` of `replica` is included.
    public func covers(_ replica: UInt64, _ seq: UInt64) -> Bool { self[replica] >= seq }

    /// Pointwise maximum.
    public mutating func merge(_ other: VersionVector) {
        for (replica, seq) in other.entries where seq > self[replica] { self[replica] = seq }
    }

    /// Pointwise minimum over replicas known to either (absent = 0).
    public func meet(_ other: VersionVector) -> VersionVector {
        var out = VersionVector()
        for replica in Set(entries.keys).union(other.entries.keys) { out[replica] = min(self[replica], other[replica]) }
        return out
    }

    /// Total commits counted (for progress).
    public var total: UInt64 { entries.values.reduce(0, +) }

    public var description: String {
        "{" + entries.keys.sorted().map { "\(String($0, radix: 16)):\(entries[$0]!)" }.joined(separator: ", ") + "}"
    }

    func encode(into out: inout [UInt8]) {
        out.appendVarint(UInt64(entries.count))
        for replica in entries.keys.sorted() {
            out.appendBigEndian(replica)
            out.appendVarint(entries[replica]!)
        }
    }

    static func decode(_ reader: inout ByteReader, limit: Int = 4_096) throws(MasqError) -> VersionVector {
        let count = try reader.varint()
        guard count <= UInt64(limit) else { throw .corrupt("version vector with \(count) entries") }
        var vv = VersionVector()
        for _ in 0..<count {
            let replica = try reader.uint64()
            let seq = try reader.varint()
            guard replica != 0 else { throw .corrupt("version vector names replica 0") }
            vv[replica] = seq
        }
        return vv
    }
}
