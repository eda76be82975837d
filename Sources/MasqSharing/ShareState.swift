import FoundationEssentials
import MasqConnectoidProtocol
import MasqCrypto
import MasqKernel

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

    /// Why a guest may not write the namespace of a read-only share (the
    /// kernel's write policy: "namespace "NAME" is …").
    static let readOnlyReason = "shared with you read-only; its owner's changes arrive by sync"

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
        guard
            !text.unicodeScalars.contains(where: { scalar in
                scalar.properties.generalCategory == .control || bidi.contains { $0.contains(scalar.value) }
            })
        else {
            throw .invalid("a nickname may not contain control characters or bidirectional overrides")
        }
        return text
    }

    func encoded() throws(MasqError) -> [UInt8] {
        do { return Array(try JSONEncoder().encode(self)) } catch {
            throw MasqError(.internal, "cannot encode a share: \(error)")
        }
    }

    static func decode(_ bytes: [UInt8]) throws(MasqError) -> ShareState {
        do { return try JSONDecoder().decode(ShareState.self, from: Data(bytes)) } catch {
            throw .corrupt("malformed share entry")
        }
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
