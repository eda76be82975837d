import CZlib
/// How the store's data model maps onto the storage plugin's flat ordered
/// key space (docs/STORAGE-FORMAT.md). One byte tags each key family:
///
///   'M' name                          meta: format, replica id, clock, next namespace id
///   'N' namespace name                namespace id (varint)
///   'n' u32 namespace id              namespace name
///   'R' varint nsID, key              record: header + value (or tombstone)
///   'L' u64 replica, u64 seq          change log: the keys one commit wrote
///   'V' u64 replica                   version vector: highest seq applied
///   'D' device id                     a paired device
///   'P' offer id                      a pending pairing offer
///   'S' device id                     the session with a paired device
///   'H' 0                             namespaces' write policies (Store+WritePolicy.swift)
///   'H' 1 share id                    a share with another person (MasqSharing)
///   'A' device id                     the vector a device last acknowledged
///   'Z' device id                     session renewal counters (sent, accepted)
///   'Y' device id                     what last held sync with a device back
///
/// Namespaces are stored as small ids (varints are prefix-free, so each
/// namespace's records form one contiguous key range); integers in keys are
/// big-endian so that byte order is numeric order.
enum RecordFormat {
    static let version: UInt8 = 1
    static let meta: UInt8 = 0x4D  // 'M'
    static let namespaceByName: UInt8 = 0x4E  // 'N'
    static let namespaceByID: UInt8 = 0x6E  // 'n'
    static let record: UInt8 = 0x52  // 'R'
    static let log: UInt8 = 0x4C  // 'L'
    static let vector: UInt8 = 0x56  // 'V'
    static let device: UInt8 = 0x44  // 'D' paired devices (sealed when protected)
    static let pairing: UInt8 = 0x50  // 'P' pending pairing offers (sealed when protected)
    static let session: UInt8 = 0x53  // 'S' session states per device (sealed when protected)
    static let share: UInt8 = 0x48  // 'H' write policies and shares (sealed when protected)

    static let metaFormat: [UInt8] = [meta] + Array("format".utf8)
    static let metaReplica: [UInt8] = [meta] + Array("replica".utf8)
    /// u64 last commit seq · u64 that commit's timestamp (this replica's tip).
    static let metaClock: [UInt8] = [meta] + Array("clock".utf8)
    /// u64 the greatest remote timestamp the clock observed (HLC receive rule).
    static let metaObserved: [UInt8] = [meta] + Array("observed".utf8)
    static let metaNextNamespace: [UInt8] = [meta] + Array("nsnext".utf8)

    /// 'R' varint(id) — the prefix of every record key of a namespace.
    static func recordPrefix(namespaceID: UInt32) -> [UInt8] {
        var out = [record]
        out.appendVarint(UInt64(namespaceID))
        return out
    }

    static func namespaceIDKey(_ id: UInt32) -> [UInt8] {
        var out = [namespaceByID]
        out.appendBigEndian32(id)
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

/// The header in front of every stored record value (variable length, so a
/// fresh key pays 20-odd bytes, not the worst case):
///
///   u8  format (1)
///   u8  flags: bit 0 tombstone, bit 1 has previous, bit 2 previous replica is this replica,
///              bit 3 counter (the value is a counter's per-replica state, see Counter),
///              bit 4 checksummed (the record ends with a CRC-32 trailer)
///   u64 timestamp, u64 replica, varint seq (the writer's commit)
///   [u64 previous timestamp] [u64 previous replica]   the version this write replaced
///
/// A record is header ‖ value ‖ [u32 CRC-32 of record key ‖ header ‖ value].
/// Every record written since the trailer exists has it: a flipped byte in
/// a stored key, header or value is an error (MASQ_E_CORRUPT), never a
/// wrong answer. (The trailer is outside the header, so a sealed value's
/// associated data — key and header — does not depend on it.)
struct RecordHeader: Equatable {
    static let maxSize = 2 + 16 + 10 + 16
    static let tombstoneFlag: UInt8 = 1
    static let previousFlag: UInt8 = 2
    static let sameReplicaFlag: UInt8 = 4
    static let counterFlag: UInt8 = 8
    static let checksumFlag: UInt8 = 16
    static let trailer = 4

    var tombstone: Bool
    var counter = false
    var version: Version
    var seq: UInt64
    var previous: Version
    /// Whether the record carries the CRC-32 trailer (new records always do).
    var checksummed = true
    /// Bytes the header occupies (set by read; what write will produce otherwise).
    var size: Int {
        var n = 18 + varintSize(seq)
        if previous != .none { n += previous.replica == version.replica ? 8 : 16 }
        return n
    }

    /// Write into `out` (at least `size` bytes); returns the bytes written.
    @discardableResult
    func write(to out: UnsafeMutableRawBufferPointer) -> Int {
        var flags: UInt8 = tombstone ? RecordHeader.tombstoneFlag : 0
        if counter { flags |= RecordHeader.counterFlag }
        if checksummed { flags |= RecordHeader.checksumFlag }
        if previous != .none {
            flags |= RecordHeader.previousFlag
            if previous.replica == version.replica { flags |= RecordHeader.sameReplicaFlag }
        }
        out[0] = RecordFormat.version
        out[1] = flags
        out.storeBigEndian(version.timestamp, at: 2)
        out.storeBigEndian(version.replica, at: 10)
        var offset = 18
        var v = seq
        while v >= 0x80 {
            out[offset] = UInt8(truncatingIfNeeded: v) | 0x80
            v >>= 7
            offset += 1
        }
        out[offset] = UInt8(v)
        offset += 1
        if previous != .none {
            out.storeBigEndian(previous.timestamp, at: offset)
            offset += 8
            if previous.replica != version.replica {
                out.storeBigEndian(previous.replica, at: offset)
                offset += 8
            }
        }
        return offset
    }

    /// Read the header of the record stored under `key`, checking its trailer.
    static func read(_ bytes: UnsafeRawBufferPointer, key: UnsafeRawBufferPointer) throws(MasqError) -> RecordHeader {
        let header = try read(unchecked: bytes)
        if header.checksummed {
            let stored = bytes.loadBigEndian32(at: bytes.count - trailer)
            guard
                stored
                    == checksum(key: key, record: UnsafeRawBufferPointer(rebasing: bytes[0..<(bytes.count - trailer)]))
            else {
                throw .corrupt("a stored record fails its checksum: the store is damaged (run `masq check`)")
            }
        }
        return header
    }

    /// CRC-32 (zlib) of key ‖ record-without-trailer.
    static func checksum(key: UnsafeRawBufferPointer, record: UnsafeRawBufferPointer) -> UInt32 {
        var crc = crc32(0, nil, 0)
        if let base = key.baseAddress, key.count > 0 {
            crc = crc32(crc, base.assumingMemoryBound(to: UInt8.self), uInt(key.count))
        }
        if let base = record.baseAddress, record.count > 0 {
            crc = crc32(crc, base.assumingMemoryBound(to: UInt8.self), uInt(record.count))
        }
        return UInt32(truncatingIfNeeded: crc)
    }

    /// Fill the trailer of `record` (header ‖ value ‖ 4 spare bytes) stored under `key`.
    static func seal(_ record: UnsafeMutableRawBufferPointer, key: UnsafeRawBufferPointer) {
        let body = UnsafeRawBufferPointer(rebasing: record[0..<(record.count - trailer)])
        record.storeBigEndian32(checksum(key: key, record: body), at: record.count - trailer)
    }

    static func read(unchecked bytes: UnsafeRawBufferPointer) throws(MasqError) -> RecordHeader {
        var reader = ByteReader(bytes)
        guard try reader.byte() == RecordFormat.version else {
            throw .corrupt("record format \(bytes[0]) unknown (this library reads \(RecordFormat.version))")
        }
        let flags = try reader.byte()
        guard flags & ~(tombstoneFlag | previousFlag | sameReplicaFlag | counterFlag | checksumFlag) == 0 else {
            throw .corrupt("record has unknown flags \(flags)")
        }
        let version = Version(timestamp: try reader.uint64(), replica: try reader.uint64())
        let seq = try reader.varint()
        var previous = Version.none
        if flags & previousFlag != 0 {
            previous.timestamp = try reader.uint64()
            previous.replica = flags & sameReplicaFlag != 0 ? version.replica : try reader.uint64()
        }
        let header = RecordHeader(
            tombstone: flags & tombstoneFlag != 0, counter: flags & counterFlag != 0, version: version, seq: seq,
            previous: previous,
            checksummed: flags & checksumFlag != 0)
        guard bytes.count >= header.size + (header.checksummed ? trailer : 0) else {
            throw .corrupt("a stored record is shorter than its header")
        }
        return header
    }

    /// The value that follows the header in `record` (before its trailer).
    static func value(in record: UnsafeRawBufferPointer, header: RecordHeader) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: record[header.size..<(record.count - (header.checksummed ? trailer : 0))])
    }
}

func varintSize(_ value: UInt64) -> Int {
    var n = 1
    var v = value
    while v >= 0x80 { v >>= 7; n += 1 }
    return n
}

/// A change-log entry: when one commit happened and the (namespace id, key)
/// pairs it wrote.
///   u8 format, u64 timestamp, varint count, then per key: varint nsID, varint keyLen, key
struct LogEntryWriter {
    private(set) var bytes: [UInt8] = []
    private(set) var count = 0
    var timestamp: UInt64 = 0

    mutating func append(namespaceID: UInt32, key: UnsafeRawBufferPointer) {
        bytes.appendVarint(UInt64(namespaceID))
        bytes.appendVarint(UInt64(key.count))
        bytes.append(contentsOf: key)
        count += 1
    }

    func encoded() -> [UInt8] {
        var out: [UInt8] = [RecordFormat.version]
        out.reserveCapacity(bytes.count + 20)
        out.appendBigEndian(timestamp)
        out.appendVarint(UInt64(count))
        out += bytes
        return out
    }

    static func decode(_ data: UnsafeRawBufferPointer) throws(MasqError) -> [(namespaceID: UInt32, key: [UInt8])] {
        try decodeWithTimestamp(data).keys
    }

    static func decodeWithTimestamp(_ data: UnsafeRawBufferPointer) throws(MasqError) -> (
        timestamp: UInt64, keys: [(namespaceID: UInt32, key: [UInt8])]
    ) {
        var reader = ByteReader(data)
        guard try reader.byte() == RecordFormat.version else { throw .corrupt("change-log entry in an unknown format") }
        let timestamp = try reader.uint64()
        let count = try reader.varint()
        guard count <= UInt64(data.count) else {
            throw .corrupt("change-log entry claims \(count) keys in \(data.count) bytes")
        }
        var out: [(namespaceID: UInt32, key: [UInt8])] = []
        out.reserveCapacity(Int(count))
        for _ in 0..<count {
            let id = try reader.varint()
            guard id <= UInt64(UInt32.max) else { throw .corrupt("change-log namespace id out of range") }
            let keyLength = try reader.varint()
            guard keyLength <= UInt64(data.count) else { throw .corrupt("change-log key length out of range") }
            out.append((UInt32(id), try reader.bytes(Int(keyLength))))
        }
        guard reader.isAtEnd else { throw .corrupt("change-log entry has trailing bytes") }
        return (timestamp, out)
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

    mutating func appendBigEndian32(_ value: UInt32) {
        for shift in stride(from: 24, through: 0, by: -8) { append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
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

    @inline(__always)
    func loadBigEndian32(at offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
}

extension UnsafeMutableRawBufferPointer {
    @inline(__always)
    func storeBigEndian(_ value: UInt64, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt64.self)
    }

    @inline(__always)
    func storeBigEndian32(_ value: UInt32, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
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
