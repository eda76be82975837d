/// How the store's data model maps onto the storage plugin's flat ordered
/// key space (docs/STORAGE-FORMAT.md). One byte tags each key family:
///
///   'M' name                          meta: format, replica id, clock
///   'R' u8 nsLen, ns, key             record: header + value (or tombstone)
///   'L' u64 replica, u64 seq          change log: the keys one commit wrote
///   'V' u64 replica                   version vector: highest seq applied
///
/// Integers are big-endian so that byte order is numeric order.
enum RecordFormat {
    static let version: UInt8 = 1
    static let meta: UInt8 = 0x4D      // 'M'
    static let record: UInt8 = 0x52    // 'R'
    static let log: UInt8 = 0x4C       // 'L'
    static let vector: UInt8 = 0x56    // 'V'

    static let metaFormat: [UInt8] = [meta] + Array("format".utf8)
    static let metaReplica: [UInt8] = [meta] + Array("replica".utf8)
    static let metaClock: [UInt8] = [meta] + Array("clock".utf8)

    /// 'R' nsLen ns — the prefix of every record key of a namespace.
    static func namespacePrefix(_ ns: NamespaceName) -> [UInt8] {
        var out = [record, UInt8(ns.bytes.count)]
        out += ns.bytes
        return out
    }

    static func logKey(replica: UInt64, seq: UInt64) -> [UInt8] {
        var out: [UInt8] = [log]
        out.appendBigEndian(replica)
        out.appendBigEndian(seq)
        return out
    }

    static func vectorKey(replica: UInt64) -> [UInt8] {
        var out: [UInt8] = [vector]
        out.appendBigEndian(replica)
        return out
    }

    /// The smallest key greater than every key starting with `prefix`, or nil
    /// when there is none (prefix all 0xFF).
    static func successor(ofPrefix prefix: [UInt8]) -> [UInt8]? {
        var out = prefix
        while let last = out.last {
            if last < 0xFF {
                out[out.count - 1] = last + 1
                return out
            }
            out.removeLast()
        }
        return nil
    }
}

/// The version of one write: who wrote it, when, in which of its commits.
/// Versions are totally ordered by (timestamp, replica): the greatest wins.
public struct Version: Sendable, Equatable, Comparable, Hashable {
    public var timestamp: UInt64
    public var replica: UInt64

    public static let none = Version(timestamp: 0, replica: 0)

    public static func < (a: Version, b: Version) -> Bool {
        (a.timestamp, a.replica) < (b.timestamp, b.replica)
    }
}

/// The fixed header in front of every stored record value.
///
///   u8  format (1)      u8  flags (bit 0: tombstone)
///   u64 timestamp       u64 replica      u64 seq (the writer's commit)
///   u64 previous timestamp, u64 previous replica (the version this write replaced)
struct RecordHeader: Equatable {
    static let size = 42
    static let tombstoneFlag: UInt8 = 1

    var tombstone: Bool
    var version: Version
    var seq: UInt64
    var previous: Version

    func write(to out: UnsafeMutableRawBufferPointer) {
        out[0] = RecordFormat.version
        out[1] = tombstone ? RecordHeader.tombstoneFlag : 0
        out.storeBigEndian(version.timestamp, at: 2)
        out.storeBigEndian(version.replica, at: 10)
        out.storeBigEndian(seq, at: 18)
        out.storeBigEndian(previous.timestamp, at: 26)
        out.storeBigEndian(previous.replica, at: 34)
    }

    static func read(_ bytes: UnsafeRawBufferPointer) throws(MasqError) -> RecordHeader {
        guard bytes.count >= size else { throw .corrupt("record shorter than its header (\(bytes.count) bytes)") }
        guard bytes[0] == RecordFormat.version else { throw .corrupt("record format \(bytes[0]) unknown (this library reads \(RecordFormat.version))") }
        guard bytes[1] & ~tombstoneFlag == 0 else { throw .corrupt("record has unknown flags \(bytes[1])") }
        return RecordHeader(tombstone: bytes[1] & tombstoneFlag != 0,
                            version: Version(timestamp: bytes.loadBigEndian(at: 2), replica: bytes.loadBigEndian(at: 10)),
                            seq: bytes.loadBigEndian(at: 18),
                            previous: Version(timestamp: bytes.loadBigEndian(at: 26), replica: bytes.loadBigEndian(at: 34)))
    }
}

/// A change-log entry: the (namespace, key) pairs one commit wrote.
///   u8 format, varint count, then per key: u8 nsLen, ns, varint keyLen, key
struct LogEntryWriter {
    private(set) var bytes: [UInt8] = []
    private(set) var count = 0

    mutating func append(namespace: NamespaceName, key: UnsafeRawBufferPointer) {
        bytes.append(UInt8(namespace.bytes.count))
        bytes += namespace.bytes
        bytes.appendVarint(UInt64(key.count))
        bytes += key
        count += 1
    }

    func encoded() -> [UInt8] {
        var out: [UInt8] = [RecordFormat.version]
        out.reserveCapacity(bytes.count + 10)
        out.appendVarint(UInt64(count))
        out += bytes
        return out
    }

    static func decode(_ data: UnsafeRawBufferPointer) throws(MasqError) -> [(namespace: [UInt8], key: [UInt8])] {
        var reader = ByteReader(data)
        guard try reader.byte() == RecordFormat.version else { throw .corrupt("change-log entry in an unknown format") }
        let count = try reader.varint()
        guard count <= UInt64(data.count) else { throw .corrupt("change-log entry claims \(count) keys in \(data.count) bytes") }
        var out: [(namespace: [UInt8], key: [UInt8])] = []
        out.reserveCapacity(Int(count))
        for _ in 0..<count {
            let ns = try reader.bytes(Int(try reader.byte()))
            let keyLength = try reader.varint()
            guard keyLength <= UInt64(data.count) else { throw .corrupt("change-log key length out of range") }
            out.append((ns, try reader.bytes(Int(keyLength))))
        }
        guard reader.isAtEnd else { throw .corrupt("change-log entry has trailing bytes") }
        return out
    }
}

/// Bounds-checked reading of untrusted bytes: every read checks the length first.
struct ByteReader {
    private let data: UnsafeRawBufferPointer
    private var offset = 0

    init(_ data: UnsafeRawBufferPointer) { self.data = data }

    var isAtEnd: Bool { offset == data.count }

    mutating func byte() throws(MasqError) -> UInt8 {
        guard offset < data.count else { throw .corrupt("truncated data") }
        defer { offset += 1 }
        return data[offset]
    }

    mutating func uint64() throws(MasqError) -> UInt64 {
        guard data.count - offset >= 8 else { throw .corrupt("truncated data") }
        defer { offset += 8 }
        return data.loadBigEndian(at: offset)
    }

    mutating func bytes(_ count: Int) throws(MasqError) -> [UInt8] {
        guard count >= 0, data.count - offset >= count else { throw .corrupt("truncated data") }
        defer { offset += count }
        return Array(data[offset..<(offset + count)])
    }

    /// LEB128, at most 10 bytes.
    mutating func varint() throws(MasqError) -> UInt64 {
        var value: UInt64 = 0
        for shift in stride(from: 0, to: 70, by: 7) {
            let b = try byte()
            if shift == 63 && b > 1 { throw .corrupt("varint overflows 64 bits") }
            value |= UInt64(b & 0x7F) << UInt64(shift)
            if b & 0x80 == 0 { return value }
        }
        throw .corrupt("varint longer than 10 bytes")
    }
}

extension Array where Element == UInt8 {
    mutating func appendBigEndian(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    mutating func appendVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        append(UInt8(v))
    }
}

extension UnsafeRawBufferPointer {
    @inline(__always)
    func loadBigEndian(at offset: Int) -> UInt64 {
        UInt64(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always)
    func storeBigEndian(_ value: UInt64, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt64.self)
    }
}

extension Array where Element == UInt8 {
    /// withUnsafeBytes for closures with typed throws (the standard one rethrows `any Error`).
    @inline(__always)
    func withBytes<T>(_ body: (UnsafeRawBufferPointer) throws(MasqError) -> T) throws(MasqError) -> T {
        let result: Result<T, MasqError> = withUnsafeBytes { raw in Result { () throws(MasqError) in try body(raw) } }
        return try result.get()
    }
}
