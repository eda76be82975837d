import FoundationEssentials
import MasqConnectoidProtocol
import MasqCrypto

/// Storage of shares with other people: each share's state is one secret
/// entry ('H' + share id, sealed when the store is protected), and the set
/// of namespaces shared with this store read-only is one more, read by every
/// local write (docs/CONNECTOID.md).
extension Store {
    static let readOnlyKey: [UInt8] = [RecordFormat.share, 0]

    static func shareKey(_ id: String) -> [UInt8] { [RecordFormat.share, 1] + Array(id.utf8) }

    public func shares() throws(MasqError) -> [ShareState] {
        try lock.withLock { () throws(MasqError) -> [ShareState] in
            try ensureUsable()
            var keys: [[UInt8]] = []
            try engine.scan(from: [RecordFormat.share, 1], to: [RecordFormat.share, 2]) { (key, _) throws(MasqError) -> Bool in
                keys.append(Array(key))
                return true
            }
            var out: [ShareState] = []
            for key in keys {
                guard var bytes = try getSecret(key) else { continue }
                defer { wipe(&bytes) }
                out.append(try ShareState.decode(bytes))
            }
            return out.sorted { $0.created < $1.created }
        }
    }

    public func share(_ id: String) throws(MasqError) -> ShareState? {
        try lock.withLock { () throws(MasqError) -> ShareState? in
            try ensureUsable()
            guard var bytes = try getSecret(Store.shareKey(id)) else { return nil }
            defer { wipe(&bytes) }
            return try ShareState.decode(bytes)
        }
    }

    /// Save (or, with nil, delete) a share and refresh the read-only set in the same transaction.
    public func saveShare(_ id: String, _ state: ShareState?) throws(MasqError) {
        try localTransaction { () throws(MasqError) in
            let key = Store.shareKey(id)
            if let state {
                var encoded = try state.encoded()
                defer { wipe(&encoded) }
                try Store.putMeta(engine, key, try sealSecret(key, encoded))
            } else {
                try key.withBytes { (k) throws(MasqError) in try engine.delete(k) }
            }
            var readOnly: [String] = []   // by exact bytes (a Set<String> would merge equivalent names)
            try engine.scan(from: [RecordFormat.share, 1], to: [RecordFormat.share, 2]) { (k, _) throws(MasqError) -> Bool in
                if var bytes = try getSecret(Array(k)) {
                    defer { wipe(&bytes) }
                    let share = try ShareState.decode(bytes)
                    // Only a namespace the share created is marked: merging a read-only
                    // share into the guest's own namespace never takes the guest's rights away.
                    if share.role == .guest && share.access == .readOnly && share.status != .ended && share.ownsNamespace == true {
                        if !readOnly.contains(where: { $0.utf8.elementsEqual(share.namespace.utf8) }) { readOnly.append(share.namespace) }
                    }
                }
                return true
            }
            let encoded = Array((try? JSONEncoder().encode(readOnly)) ?? Data("[]".utf8))
            try Store.putMeta(engine, Store.readOnlyKey, try sealSecret(Store.readOnlyKey, encoded))
        }
    }

    /// Whether namespace `ns` was ever written here (it has an id), live keys or not.
    public func namespaceExists(_ ns: NamespaceName) throws(MasqError) -> Bool {
        try lock.withLock { () throws(MasqError) -> Bool in
            try ensureUsable()
            return try existingNamespaceID(ns) != nil
        }
    }

    /// Namespaces local writes may not touch (their exact bytes); caller holds the lock.
    func readOnlyNamespacesLocked() throws(MasqError) -> Set<[UInt8]> {
        guard let bytes = try getSecret(Store.readOnlyKey) else { return [] }
        guard let names = try? JSONDecoder().decode([String].self, from: Data(bytes)) else { throw .corrupt("malformed read-only namespace list") }
        return Set(names.map { Array($0.utf8) })
    }

    /// What a share sends next of namespace `ns`: records of commits after
    /// `acked` (the peer's acknowledged vector of this store's change log),
    /// with the vector they bring the peer to. When the log below `acked`
    /// has been collected, the namespace goes whole instead, in key order
    /// from `cursor` (the caller keeps the cursor and the vector of the
    /// snapshot's start until the last chunk).
    public func shareExport(_ ns: NamespaceName, after acked: VersionVector, maxBytes: Int)
        throws(MasqError) -> (records: [SyncRecord], through: VersionVector)? {
        guard let commits = try exportCommits(after: acked, maxCommits: 1_000, maxBytes: maxBytes) else { return nil }
        var through = acked
        var records: [SyncRecord] = []
        for commit in commits {
            through[commit.origin] = max(through[commit.origin], commit.seq)
            records += commit.records.filter { $0.namespace.utf8.elementsEqual(ns.bytes) }   // bytes, not canonical equivalence
        }
        return (records, through)
    }

    /// One chunk of every record of `ns` after `cursor` (a user key), in
    /// key order; `next` is nil after the last.
    public func namespaceChunk(_ ns: NamespaceName, after cursor: [UInt8]?, maxBytes: Int) throws(MasqError) -> (records: [SyncRecord], next: [UInt8]?, vector: VersionVector) {
        try lock.withLock { () throws(MasqError) in
            try ensureUsable()
            let vector = try currentVector()
            guard let id = try existingNamespaceID(ns) else { return ([], nil, vector) }
            let base = RecordFormat.recordPrefix(namespaceID: id)
            let start = cursor.map { base + $0 + [0] } ?? base
            var records: [SyncRecord] = []
            var bytes = 0
            var last: [UInt8]?
            var full = false
            try engine.scan(from: start, to: RecordFormat.successor(ofPrefix: base)) { (key, _) throws(MasqError) -> Bool in
                guard let (header, value) = try readRecord(key) else { return true }
                let userKey = Array(key[base.count...])
                let size = userKey.count + value.count + 48
                if !records.isEmpty && bytes + size > maxBytes { full = true; return false }
                records.append(SyncRecord(namespace: ns.string, key: userKey, header: header, value: value))
                last = userKey
                bytes += size
                full = bytes >= maxBytes
                return !full
            }
            return (records, full ? last : nil, vector)
        }
    }
}

/// One share with another person, as this side keeps it.
public struct ShareState: Codable, Sendable, Equatable {
    public enum Role: String, Codable, Sendable { case owner, guest }
    public enum Access: String, Codable, Sendable { case readOnly = "read-only", readWrite = "read-write" }
    public enum Status: String, Codable, Sendable {
        /// Owner: link made, nobody claimed it yet.
        case offered
        /// Guest: claim sent, no welcome yet.
        case claimed
        case active
        /// Guest: the owner says someone else used the link first.
        case intercepted
        /// The other side ended the share.
        case ended
    }

    /// A mailbox this side polls (its key pair stays here).
    public struct Inbox: Codable, Sendable, Equatable {
        public var privateKey: SecretKey
        public var pub: [UInt8]
        public var ext: String
        public var services: [String]
        public var mailbox: String { ConnectoidLink(pub: pub, services: services, ext: ext).mailbox }
    }

    /// The base64url mailbox key of the link: the same on both sides.
    public var id: String
    public var role: Role
    public var namespace: String
    public var access: Access
    public var status: Status
    public var created: UInt64
    public var signingKey: SecretKey
    public var signingPub: [UInt8]
    public var secret: SecretKey
    /// Guest: the first 16 bytes of SHA-256 of the owner's signing key (from the link).
    public var ownerKeyHash: [UInt8]
    /// Polled mailboxes, newest last (the last one is given to the peer).
    public var inboxes: [Inbox]
    public var peerSigningPub: [UInt8]?
    public var peerInbox: String?
    public var nextSeq: UInt64 = 1
    /// The highest envelope number received from the peer, and which of the
    /// 64 numbers up to it were (bit i: peerSeq − i), against replays.
    public var peerSeq: UInt64 = 0
    public var peerSeen: UInt64?
    /// Entries (replica → seq) of this store's log the peer acknowledged.
    public var acked: [UInt64: UInt64] = [:]
    /// The last batch sent and not yet acknowledged: where it brings the peer, and when.
    public var inflightThrough: [UInt64: UInt64]?
    public var inflightAt: UInt64 = 0
    /// A whole-namespace send under way (the log below `acked` was collected).
    public var snapshotCursor: [UInt8]?
    public var snapshotVector: [UInt64: UInt64]?
    /// The whole namespace was sent once and acknowledged (then only deltas);
    /// its last chunk is in flight.
    public var initialSent: Bool?
    public var snapshotFinalSent: Bool?
    /// What to acknowledge to the peer next.
    public var toAck: [UInt64: UInt64]?
    public var lastSent: UInt64 = 0
    public var lastHeard: UInt64 = 0
    public var rejected: UInt64 = 0
    /// RECORDS envelopes applied.
    public var recordsReceived: UInt64 = 0
    public var warnings: [String] = []
    /// Guest: the user asked to merge the share into an existing namespace.
    public var merge: Bool?
    /// Guest: the share created its local namespace (read-only marks apply only then).
    public var ownsNamespace: Bool?
    /// What this side calls the other person (the app asks the user); local only, never sent.
    public var nickname: String?

    public var shortID: String { String(id.prefix(10)) }

    /// Both sides compute it from the two signing keys, owner's first.
    public var fingerprint: String? { fingerprints?.digits }

    /// The same fingerprint as emoji (DevicePublicKeys.fingerprint, as for devices).
    public var fingerprintEmoji: String? { fingerprints?.emoji }

    private var fingerprints: (digits: String, emoji: String)? {
        guard let peer = peerSigningPub else { return nil }
        let (a, b) = role == .owner ? (signingPub, peer) : (peer, signingPub)
        return DevicePublicKeys.fingerprint(agreementKey: Array("masq share".utf8) + a + b)
    }

    /// Longest nickname, in UTF-8 bytes.
    public static let maxNicknameBytes = 64

    /// A nickname as given: 1...64 bytes of UTF-8 without control characters
    /// or bidirectional overrides (which could garble what the user reads
    /// around it, e.g. a consent question in masqd's manager).
    public static func checkedNickname(_ text: String) throws(MasqError) -> String {
        guard (1...maxNicknameBytes).contains(text.utf8.count) else {
            throw .invalid("a nickname is 1-\(maxNicknameBytes) bytes of UTF-8 (\(text.utf8.count) given)")
        }
        let bidi: [ClosedRange<UInt32>] = [0x200E...0x200F, 0x202A...0x202E, 0x2066...0x2069, 0x061C...0x061C]
        guard !text.unicodeScalars.contains(where: { scalar in
            scalar.properties.generalCategory == .control || bidi.contains { $0.contains(scalar.value) }
        }) else {
            throw .invalid("a nickname may not contain control characters or bidirectional overrides")
        }
        return text
    }

    func encoded() throws(MasqError) -> [UInt8] {
        do { return Array(try JSONEncoder().encode(self)) } catch { throw MasqError(.internal, "cannot encode a share: \(error)") }
    }

    static func decode(_ bytes: [UInt8]) throws(MasqError) -> ShareState {
        do { return try JSONDecoder().decode(ShareState.self, from: Data(bytes)) } catch { throw .corrupt("malformed share entry") }
    }
}

/// Secret bytes inside a Codable value (a share's signing key, mailbox keys
/// and link secret): held in memory that is wiped when freed (SecureBytes),
/// encoded as the same array of numbers as a plain `[UInt8]`.
public struct SecretKey: Codable, Equatable, Sendable {
    public let secure: SecureBytes

    public init(_ secure: SecureBytes) { self.secure = secure }
    public init(_ bytes: [UInt8]) { secure = SecureBytes(bytes) }

    public init(from decoder: Decoder) throws {
        var bytes = try decoder.singleValueContainer().decode([UInt8].self)
        secure = SecureBytes(bytes)
        wipe(&bytes)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        var bytes = secure.bytes
        defer { wipe(&bytes) }
        try container.encode(bytes)
    }

    public var count: Int { secure.count }
}
