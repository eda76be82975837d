/// Sync frames (docs/PROTOCOL.md). They travel inside a device pair's
/// Double Ratchet session, so they are already private and authenticated;
/// the decoder still checks every length, because a peer can be buggy.
///
///   frame   = u8 version(1) · u8 type · body
///   HELLO   (1) = u64 replica · vector(applied) · vector(collected) · [tips · [u8 flags · [filter if bit 1]]]
///                 flags: bit 0 send me a snapshot; bit 1 I keep only some namespaces (the filter
///                 follows, NamespaceFilter: send me only their records; I relay only my own commits)
///   COMMITS (2) = varint n · n × commit
///   ACK     (3) = vector(applied)
///   SNAPSHOT(4) = u8 final · names · varint n · n × record · [vector(as of the snapshot) if final]
///   REFUSED (5) = u8 reason · u64 origin · varint seq · u64 commit timestamp · u64 receiver's Unix ms
///   FRAGMENT(6) = u32 message id · u32 index · u32 count · bytes   (SyncService: a frame bigger
///                 than the transport carries goes as `count` fragments, in order, each sealed;
///                 the receiver reassembles one message per device at a time)
///   REMOVALS(7), WANT (8), CHUNK (9), LACK (10): SyncService, Store+Removals.swift, BlobTransfer.swift
///   tips    = varint n · n × (u64 replica · u64 timestamp of the last commit applied from it)
///   commit  = u64 origin · varint seq · u64 timestamp · names · varint n · n × record
///   names   = varint n · n × (varint len · UTF-8 namespace)
///   record  = varint name index · varint keyLen · key · u8 flags ·
///             [u64 timestamp · u64 replica · varint seq  unless flags bit 4: the commit's version] ·
///             [u64 prev ts · u64 prev replica  if flags bit 1] · varint valueLen · value
///   vector  = varint n · n × (u64 replica · varint seq)
public enum SyncFrame: Equatable, Sendable {
    /// `tips`: per origin, the timestamp of the last commit applied from it
    /// (where the change log still holds it). A replica that finds a peer
    /// holding a different commit under one of its own numbers has been
    /// rolled back (Store.reidentify).
    /// `wantsSnapshot`: the sender repaired damage and asks for a whole copy.
    /// `filter`: the sender keeps only these namespaces (selective sync, SyncFilter.swift).
    case hello(
        replica: UInt64, applied: VersionVector, collected: VersionVector, tips: [UInt64: UInt64],
        wantsSnapshot: Bool = false,
        filter: NamespaceFilter? = nil)
    case commits([SyncCommit])
    case ack(VersionVector)
    case snapshot(records: [SyncRecord], final: VersionVector?)
    /// The receiver refused commit `seq` of `origin` and will refuse it until
    /// the cause goes: the sender must not resend it at once (docs/PROTOCOL.md).
    case refused(Refusal)

    /// Why a commit was refused, with what the sender needs to show the user.
    public struct Refusal: Error, Equatable, Sendable {
        public enum Reason: UInt8, Sendable {
            /// Timestamped beyond the receiver's clock bound: the sender's clock is ahead.
            case futureClock = 1
            /// A record exceeds the receiver's limits (key, value or namespace size).
            case limits = 2
            /// The receiver could not store it (disk full, I/O error).
            case storage = 3
            /// Anything else (malformed or inconsistent).
            case invalid = 4
        }
        public var reason: Reason
        public var origin: UInt64
        public var seq: UInt64
        public var timestamp: UInt64
        /// The receiver's wall clock (Unix ms) when it refused.
        public var receiverTime: UInt64
    }

    public static let version: UInt8 = 1
    /// Largest sync message (a whole frame, reassembled from FRAGMENTs when
    /// it is bigger than the transport carries). Bounded batches keep most
    /// frames far below it; one commit is sent whole, so the store refuses a
    /// single change bigger than `maxCommitBytes` (it could never sync).
    public static let maxFrameBytes = 64 << 20
    public static let maxCommitBytes = 60 << 20

    public func encoded() -> [UInt8] {
        var out: [UInt8] = [SyncFrame.version]
        switch self {
        case .hello(let replica, let applied, let collected, let tips, let wantsSnapshot, let filter):
            out.append(1)
            out.appendBigEndian(replica)
            applied.encode(into: &out)
            collected.encode(into: &out)
            out.appendVarint(UInt64(tips.count))
            for origin in tips.keys.sorted() {
                out.appendBigEndian(origin)
                out.appendBigEndian(tips[origin]!)
            }
            let flags: UInt8 = (wantsSnapshot ? 1 : 0) | (filter != nil ? 2 : 0)
            if flags != 0 { out.append(flags) }
            filter?.encode(into: &out)
        case .commits(let commits):
            out.append(2)
            out.appendVarint(UInt64(commits.count))
            for c in commits {
                out.appendBigEndian(c.origin)
                out.appendVarint(c.seq)
                out.appendBigEndian(c.timestamp)
                let names = SyncFrame.encodeNames(c.records, into: &out)
                out.appendVarint(UInt64(c.records.count))
                let own = Version(timestamp: c.timestamp, replica: c.origin)
                for r in c.records { SyncFrame.encode(r, names: names, commit: (own, c.seq), into: &out) }
            }
        case .ack(let vv):
            out.append(3)
            vv.encode(into: &out)
        case .snapshot(let records, let final):
            out.append(4)
            out.append(final == nil ? 0 : 1)
            let names = SyncFrame.encodeNames(records, into: &out)
            out.appendVarint(UInt64(records.count))
            for r in records { SyncFrame.encode(r, names: names, commit: nil, into: &out) }
            final?.encode(into: &out)
        case .refused(let refusal):
            out.append(5)
            out.append(refusal.reason.rawValue)
            out.appendBigEndian(refusal.origin)
            out.appendVarint(refusal.seq)
            out.appendBigEndian(refusal.timestamp)
            out.appendBigEndian(refusal.receiverTime)
        }
        return out
    }

    static let commitVersionFlag: UInt8 = 16

    /// Write the namespace table of these records; returns name -> index.
    static func encodeNames(_ records: [SyncRecord], into out: inout [UInt8]) -> [String: Int] {
        var index: [String: Int] = [:]
        var order: [String] = []
        for r in records where index[r.namespace] == nil {
            index[r.namespace] = order.count
            order.append(r.namespace)
        }
        out.appendVarint(UInt64(order.count))
        for name in order {
            let bytes = Array(name.utf8)
            out.appendVarint(UInt64(bytes.count))
            out += bytes
        }
        return index
    }

    static func encode(
        _ r: SyncRecord, names: [String: Int], commit: (version: Version, seq: UInt64)?, into out: inout [UInt8]
    ) {
        out.appendVarint(UInt64(names[r.namespace]!))
        out.appendVarint(UInt64(r.key.count))
        out += r.key
        var flags: UInt8 = 0
        if r.header.tombstone { flags |= RecordHeader.tombstoneFlag }
        if r.header.previous != .none { flags |= RecordHeader.previousFlag }
        if r.header.counter { flags |= RecordHeader.counterFlag }
        let ownVersion = commit.map { $0.version == r.header.version && $0.seq == r.header.seq } ?? false
        if ownVersion { flags |= commitVersionFlag }
        out.append(flags)
        if !ownVersion {
            out.appendBigEndian(r.header.version.timestamp)
            out.appendBigEndian(r.header.version.replica)
            out.appendVarint(r.header.seq)
        }
        if r.header.previous != .none {
            out.appendBigEndian(r.header.previous.timestamp)
            out.appendBigEndian(r.header.previous.replica)
        }
        out.appendVarint(UInt64(r.value.count))
        out += r.value
    }

    /// Decode a frame; MASQ_E_INVALID for anything malformed, truncated,
    /// oversized or of an unknown version.
    public static func decode(_ bytes: [UInt8]) throws(MasqError) -> SyncFrame {
        guard bytes.count <= maxFrameBytes else {
            throw .invalid("sync frame of \(bytes.count) bytes exceeds \(maxFrameBytes)")
        }
        do throws(MasqError) {
            return try bytes.withBytes { (raw) throws(MasqError) -> SyncFrame in
                var r = ByteReader(raw)
                let version = try r.byte()
                guard version == SyncFrame.version else {
                    throw .invalid(
                        "sync frame version \(version) is not supported (this library speaks \(SyncFrame.version))")
                }
                let type = try r.byte()
                let frame: SyncFrame
                switch type {
                case 1:
                    let replica = try r.uint64()
                    let applied = try VersionVector.decode(&r), collected = try VersionVector.decode(&r)
                    var tips: [UInt64: UInt64] = [:]
                    var flags: UInt8 = 0
                    var filter: NamespaceFilter?
                    if !r.isAtEnd {
                        let n = try r.varint()
                        guard n <= 4_096 else { throw .invalid("a HELLO with \(n) tips") }
                        for _ in 0..<n { tips[try r.uint64()] = try r.uint64() }
                        if !r.isAtEnd {
                            flags = try r.byte()
                            guard flags & ~3 == 0 else { throw .invalid("unknown HELLO flags \(flags)") }
                            if flags & 2 != 0 { filter = try NamespaceFilter.decode(&r) }
                        }
                    }
                    frame = .hello(
                        replica: replica, applied: applied, collected: collected, tips: tips,
                        wantsSnapshot: flags & 1 != 0, filter: filter)
                case 2:
                    let n = try count(&r, raw.count)
                    var commits: [SyncCommit] = []
                    for _ in 0..<n {
                        let origin = try r.uint64(), seq = try r.varint(), timestamp = try r.uint64()
                        let names = try namesTable(&r, raw.count)
                        let m = try count(&r, raw.count)
                        var records: [SyncRecord] = []
                        let own = (Version(timestamp: timestamp, replica: origin), seq)
                        for _ in 0..<m { records.append(try record(&r, raw.count, names: names, commit: own)) }
                        commits.append(SyncCommit(origin: origin, seq: seq, timestamp: timestamp, records: records))
                    }
                    frame = .commits(commits)
                case 3:
                    frame = .ack(try VersionVector.decode(&r))
                case 4:
                    let final = try r.byte()
                    guard final <= 1 else { throw .invalid("bad snapshot flag") }
                    let names = try namesTable(&r, raw.count)
                    let n = try count(&r, raw.count)
                    var records: [SyncRecord] = []
                    for _ in 0..<n { records.append(try record(&r, raw.count, names: names, commit: nil)) }
                    frame = .snapshot(records: records, final: final == 1 ? try VersionVector.decode(&r) : nil)
                case 5:
                    guard let reason = Refusal.Reason(rawValue: try r.byte()) else {
                        throw .invalid("unknown refusal reason")
                    }
                    frame = .refused(
                        Refusal(
                            reason: reason, origin: try r.uint64(), seq: try r.varint(),
                            timestamp: try r.uint64(), receiverTime: try r.uint64()))
                default:
                    throw .invalid("unknown sync frame type \(type)")
                }
                guard r.isAtEnd else { throw .invalid("sync frame has trailing bytes") }
                return frame
            }
        } catch {
            throw MasqError(
                .invalid, error.status == .corrupt ? "malformed sync frame: \(error.message)" : error.message)
        }
    }

    /// An element count that cannot exceed the bytes left (each element takes at least one).
    private static func count(_ r: inout ByteReader, _ total: Int) throws(MasqError) -> Int {
        let n = try r.varint()
        guard n <= UInt64(total) else { throw .invalid("count \(n) larger than the frame") }
        return Int(n)
    }

    private static func namesTable(_ r: inout ByteReader, _ total: Int) throws(MasqError) -> [String] {
        let n = try count(&r, total)
        var names: [String] = []
        for _ in 0..<n {
            let length = try count(&r, total)
            guard length > 0 && length <= 255 else { throw .invalid("bad namespace length") }
            guard let name = String(validating: try r.bytes(length), as: UTF8.self) else {
                throw .invalid("namespace is not UTF-8")
            }
            names.append(name)
        }
        return names
    }

    private static func record(_ r: inout ByteReader, _ total: Int, names: [String], commit: (Version, UInt64)?)
        throws(MasqError) -> SyncRecord
    {
        let index = try r.varint()
        guard index < UInt64(names.count) else { throw .invalid("record names namespace \(index) of \(names.count)") }
        let ns = names[Int(index)]
        let key = try r.bytes(try count(&r, total))
        let flags = try r.byte()
        guard
            flags
                & ~(RecordHeader.tombstoneFlag | RecordHeader.previousFlag | RecordHeader.counterFlag
                | commitVersionFlag) == 0
        else {
            throw .invalid("unknown record flags \(flags)")
        }
        let version: Version, seq: UInt64
        if flags & commitVersionFlag != 0 {
            guard let commit else { throw .invalid("a snapshot record cannot borrow a commit's version") }
            (version, seq) = commit
        } else {
            version = Version(timestamp: try r.uint64(), replica: try r.uint64())
            seq = try r.varint()
        }
        var previous = Version.none
        if flags & RecordHeader.previousFlag != 0 {
            previous = Version(timestamp: try r.uint64(), replica: try r.uint64())
        }
        let value = try r.bytes(try count(&r, total))
        let tombstone = flags & RecordHeader.tombstoneFlag != 0
        guard !tombstone || value.isEmpty else { throw .invalid("a tombstone with a value") }
        return SyncRecord(
            namespace: ns, key: key,
            header: RecordHeader(
                tombstone: tombstone, counter: flags & RecordHeader.counterFlag != 0,
                version: version, seq: seq, previous: previous),
            value: value)
    }
}
