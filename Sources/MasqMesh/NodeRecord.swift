import FoundationEssentials
import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// A node's keys: Ed25519 signs its gossip record (the key in its
/// descriptor, its identity); X25519 authenticates its links (Noise XX) and
/// opens onion layers addressed to it.
public struct NodeIdentity: Sendable {
    public let signing: (privateKey: SecureBytes, publicKey: [UInt8])
    public let agreement: (privateKey: SecureBytes, publicKey: [UInt8])

    public static func generate() -> NodeIdentity {
        NodeIdentity(signing: Ed25519.keyPair(), agreement: X25519.keyPair())
    }

    /// Load `path` (64 bytes: Ed25519 seed ‖ X25519 private key), or create it (0600).
    public static func loadOrCreate(_ path: String) throws(MeshError) -> NodeIdentity {
        if let file = fopen(path, "rb") {
            defer { fclose(file) }
            var bytes = [UInt8](repeating: 0, count: 65)
            let n = fread(&bytes, 1, 65, file)
            guard n == 64 else { throw .invalid("\(path): not a node key file") }
            let s = SecureBytes(bytes[0..<32]), a = SecureBytes(bytes[32..<64])
            for i in bytes.indices { bytes[i] = 0 }
            do {
                return NodeIdentity(
                    signing: (s, try Ed25519.publicKey(of: s)), agreement: (a, try X25519.publicKey(of: a)))
            } catch {
                throw .invalid("\(path): bad keys")
            }
        }
        let identity = generate()
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw .invalid("cannot create \(path)") }
        defer { close(fd) }
        let bytes = identity.signing.privateKey.bytes + identity.agreement.privateKey.bytes
        guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress, 64) }) == 64 else {
            throw .invalid("cannot write \(path)")
        }
        return identity
    }

    public var key: NodeKey { NodeKey(signing.publicKey) }
}

/// A node's identity: its Ed25519 public key.
public struct NodeKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }
    public init?(text: String) {
        guard let b = Base64URL.decode(text), b.count == 32 else { return nil }
        bytes = b
    }
    public var text: String { Base64URL.encode(bytes) }
    public var description: String { String(text.prefix(8)) }
    public static func < (a: NodeKey, b: NodeKey) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
}

/// `masq://<network>:<base64url key>@<ip>:<port>`
public struct NodeDescriptor: Hashable, Sendable, CustomStringConvertible {
    public var network: String
    public var key: NodeKey
    public var host: String
    public var port: Int

    public init(network: String, key: NodeKey, host: String, port: Int) {
        self.network = network
        self.key = key
        self.host = host
        self.port = port
    }

    public init?(_ text: String) {
        guard text.hasPrefix("masq://"), text.utf8.count <= 300 else { return nil }
        let rest = text.dropFirst(7)
        guard let colon = rest.firstIndex(of: ":"), let at = rest.lastIndex(of: "@"), colon < at else { return nil }
        network = String(rest[..<colon])
        guard NodeDescriptor.validNetwork(network), let key = NodeKey(text: String(rest[rest.index(after: colon)..<at]))
        else { return nil }
        self.key = key
        let address = rest[rest.index(after: at)...]
        guard let portColon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: portColon)...]),
            (1...65_535).contains(port)
        else { return nil }
        host = String(address[..<portColon])
        guard !host.isEmpty else { return nil }
        self.port = port
    }

    public var description: String { "masq://\(network):\(key.text)@\(host):\(port)" }
    public var address: String { "\(host):\(port)" }

    static func validNetwork(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 32
            && name.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
    }
}

/// What a node charges (wei; MASQ's defaults). Both sides of a payment compute
/// charges from these with the same formula.
public struct RatePack: Codable, Sendable, Equatable {
    public var routingByte: UInt64 = 53_844
    public var routingPacket: UInt64 = 53_844
    public var exitByte: UInt64 = 107_688
    public var exitPacket: UInt64 = 107_688
    public init() {}
}

/// A node's signed record. Two kinds travel, signed under different
/// contexts (`RecordKind`): the **public record**, gossiped network-wide,
/// carries keys, rates and capabilities but no address (`host` empty, `port`
/// 0, both left out of the JSON); the **link record**, sent only in a link's
/// handshake (and passed on in an introduction to a node about to dial it),
/// adds the address the node listens on — so only neighbours (and nodes
/// about to become neighbours) learn a node's IP. A higher version replaces
/// a lower one; the key never changes (it is the identity).
public struct NodeRecord: Sendable, Equatable {
    public var network: String
    public var key: String
    public var agreement: String
    /// Link records only.
    public var host: String
    public var port: Int
    public var version: UInt64
    public var neighbours: [String]
    public var rates: RatePack
    public var exit: Bool
    /// A client node (a device's transport) relays nothing and is not gossiped:
    /// only its neighbours ever learn its address.
    public var client: Bool?
    /// The earning wallet that gets paid for this node's routing and exits.
    public var wallet: String?
    /// The node has fewer neighbours than it looks for: its neighbours
    /// introduce it to their neighbours with room.
    public var seeking: Bool? = nil
    /// Keys of other nodes of the same operator: an origin never puts two
    /// nodes of one family on a route (when both name each other).
    public var family: [String]? = nil
    /// The node's oldest links (keys of neighbours, at most a few): it never
    /// sheds them, and asks the neighbours at their other end not to either,
    /// so that nobody can make a node lose them by filling its neighbours.
    public var anchors: [String]? = nil

    public var isClient: Bool { client ?? false }
    public var isSeeking: Bool { seeking ?? false }

    public var nodeKey: NodeKey? { NodeKey(text: key) }
    public var descriptor: NodeDescriptor? {
        nodeKey.map { NodeDescriptor(network: network, key: $0, host: host, port: port) }
    }
    public var agreementKey: [UInt8]? { Base64URL.decode(agreement).flatMap { $0.count == 32 ? $0 : nil } }

    /// The same record without its address (what is gossiped).
    public var withoutAddress: NodeRecord {
        var r = self
        r.host = ""
        r.port = 0
        return r
    }
}

extension NodeRecord: Codable {
    enum CodingKeys: String, CodingKey {
        case network, key, agreement, host, port, version, neighbours, rates, exit, client, wallet, seeking, family,
            anchors
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        network = try c.decode(String.self, forKey: .network)
        key = try c.decode(String.self, forKey: .key)
        agreement = try c.decode(String.self, forKey: .agreement)
        host = try c.decodeIfPresent(String.self, forKey: .host) ?? ""
        port = try c.decodeIfPresent(Int.self, forKey: .port) ?? 0
        version = try c.decode(UInt64.self, forKey: .version)
        neighbours = try c.decode([String].self, forKey: .neighbours)
        rates = try c.decode(RatePack.self, forKey: .rates)
        exit = try c.decode(Bool.self, forKey: .exit)
        client = try c.decodeIfPresent(Bool.self, forKey: .client)
        wallet = try c.decodeIfPresent(String.self, forKey: .wallet)
        seeking = try c.decodeIfPresent(Bool.self, forKey: .seeking)
        family = try c.decodeIfPresent([String].self, forKey: .family)
        anchors = try c.decodeIfPresent([String].self, forKey: .anchors)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(network, forKey: .network)
        try c.encode(key, forKey: .key)
        try c.encode(agreement, forKey: .agreement)
        if !host.isEmpty { try c.encode(host, forKey: .host) }
        if port != 0 { try c.encode(port, forKey: .port) }
        try c.encode(version, forKey: .version)
        try c.encode(neighbours, forKey: .neighbours)
        try c.encode(rates, forKey: .rates)
        try c.encode(exit, forKey: .exit)
        try c.encodeIfPresent(client, forKey: .client)
        try c.encodeIfPresent(wallet, forKey: .wallet)
        try c.encodeIfPresent(seeking, forKey: .seeking)
        try c.encodeIfPresent(family, forKey: .family)
        try c.encodeIfPresent(anchors, forKey: .anchors)
    }
}

/// Where a signed record may travel (each kind is signed under its own context).
public enum RecordKind: Sendable {
    /// Gossiped network-wide: no address.
    case gossip
    /// In a link's handshake, or an introduction: the node's address.
    case link

    var context: [UInt8] { Array((self == .gossip ? "masq node record v2" : "masq node link v1").utf8) }
}

/// A record as it travels: the exact bytes that were signed, and the signature.
public struct SignedRecord: Codable, Sendable, Equatable {
    public var r: String
    public var s: String

    public static func sign(_ record: NodeRecord, with identity: NodeIdentity, kind: RecordKind = .gossip)
        throws(MeshError) -> (SignedRecord, NodeRecord)
    {
        guard let bytes = try? JSONEncoder().encode(record) else { throw .invalid("cannot encode a record") }
        guard let signature = try? Ed25519.sign(kind.context + Array(bytes), privateKey: identity.signing.privateKey)
        else { throw .invalid("signing failed") }
        return (SignedRecord(r: Base64URL.encode(Array(bytes)), s: Base64URL.encode(signature)), record)
    }

    /// The record if the signature is its key's and the fields are sane for its kind.
    public func verified(network: String, kind: RecordKind = .gossip) throws(MeshError) -> NodeRecord {
        let unverified = try decoded(network: network, kind: kind)
        try unverified.verify()
        return unverified.record
    }

    /// A record decoded and checked for sane fields, its signature not yet
    /// checked: the node looks at its key and version first, and pays for
    /// the Ed25519 verification (`verify`) only when the record would be kept.
    struct Unverified {
        let record: NodeRecord
        let key: NodeKey
        fileprivate let bytes: [UInt8]
        fileprivate let signature: [UInt8]
        fileprivate let kind: RecordKind

        func verify() throws(MeshError) {
            guard Ed25519.verify(signature, message: kind.context + bytes, publicKey: key.bytes) else {
                throw .badSignature("a record whose signature does not verify")
            }
        }
    }

    /// The longest record accepted, in base64url characters (3 KiB of JSON):
    /// the largest an honest node signs (16 neighbours, a family of 16, a
    /// wallet, an address) is about 3,000. Bounded so that a frame always
    /// holds several, and a peer cannot fill frames with padded records.
    static let maxCharacters = 4_096
    /// The same for gossiped records (no address): the largest honest one is about 2,700.
    static let maxGossipCharacters = 3_072

    func decoded(network: String, kind: RecordKind = .gossip) throws(MeshError) -> Unverified {
        guard r.utf8.count <= (kind == .gossip ? Self.maxGossipCharacters : Self.maxCharacters),
            let bytes = Base64URL.decode(r), let signature = Base64URL.decode(s), signature.count == 64
        else {
            throw .malformed("a record that is not base64url")
        }
        guard let record = try? JSONDecoder().decode(NodeRecord.self, from: Data(bytes)) else {
            throw .malformed("a record that is not JSON")
        }
        guard let key = record.nodeKey, record.agreementKey != nil, record.neighbours.count <= 16,
            (record.family?.count ?? 0) <= 16,
            (record.wallet?.utf8.count ?? 0) <= 128,
            record.neighbours.allSatisfy({ NodeKey(text: $0) != nil }),
            record.family?.allSatisfy({ NodeKey(text: $0) != nil }) ?? true,
            (record.anchors?.count ?? 0) <= 16, record.anchors?.allSatisfy({ record.neighbours.contains($0) }) ?? true
        else {
            throw .malformed("a record with bad fields")
        }
        switch kind {
        case .gossip:
            // Never an address, never a client (clients are not gossiped).
            guard record.host.isEmpty, record.port == 0, !record.isClient else {
                throw .malformed("a gossiped record with an address")
            }
        case .link:
            guard (record.isClient ? 0...65_535 : 1...65_535).contains(record.port), !record.host.isEmpty,
                record.host.utf8.count <= 255
            else {
                throw .malformed("a link record with bad fields")
            }
        }
        guard record.network == network else { throw .malformed("a record of network \(record.network.prefix(32))") }
        return Unverified(record: record, key: key, bytes: bytes, signature: signature, kind: kind)
    }

    /// The key and version the record names, read off its bytes without
    /// decoding the JSON or checking anything (the first `"key":"…"` and the
    /// first `"version":…` in the record, which encoders put near the front:
    /// only as much base64 is decoded as it takes to reach them, at most
    /// 2,048 characters). Hints to sort gossip and skip it cheaply: updates
    /// of known nodes, versions not newer than the one held, new keys while
    /// the table is full. Never trusted: a record that is kept is decoded and
    /// verified, and its decoded key and version are the ones used (a forged
    /// hint can only get its own bytes skipped or cost its sender credit).
    func hints() -> (key: NodeKey, version: UInt64?)? {
        r.utf8.withContiguousStorageIfAvailable { Self.hints(base64: $0) } ?? nil
    }

    private static func hints(base64 chars: UnsafeBufferPointer<UInt8>) -> (key: NodeKey, version: UInt64?)? {
        let keyNeedle: [UInt8] = Array("\"key\":\"".utf8)
        let versionNeedle: [UInt8] = Array("\"version\":".utf8)
        var out = [UInt8]()
        out.reserveCapacity(1_536)
        var buffer: UInt32 = 0, bits = 0
        var keyMatched = 0, keyStart = -1, key: NodeKey?
        var versionMatched = 0, versionStart = -1, versionRead = false, version: UInt64?
        for i in 0..<min(chars.count, 2_048) {
            let v = base64Values[Int(chars[i])]
            guard v < 64 else { return nil }
            buffer = buffer << 6 | UInt32(v)
            bits += 6
            guard bits >= 8 else { continue }
            bits -= 8
            let byte = UInt8(truncatingIfNeeded: buffer >> UInt32(bits))
            out.append(byte)
            // Simple scans: an input that overlaps a needle oddly, such as
            // `"key"key":"`, is missed, which costs only the hint.
            if keyStart < 0 {
                keyMatched = byte == keyNeedle[keyMatched] ? keyMatched + 1 : (byte == keyNeedle[0] ? 1 : 0)
                if keyMatched == keyNeedle.count { keyStart = out.count }
            } else if key == nil {
                if byte == 0x22 {
                    // The closing quote of the key's string: 43 base64url characters.
                    guard out.count - 1 - keyStart == 43, let k = decodeKey(out[keyStart..<(out.count - 1)]) else {
                        return nil
                    }
                    key = k
                } else if out.count - keyStart > 43 {
                    return nil
                }
            }
            if versionStart < 0 {
                versionMatched =
                    byte == versionNeedle[versionMatched] ? versionMatched + 1 : (byte == versionNeedle[0] ? 1 : 0)
                if versionMatched == versionNeedle.count { versionStart = out.count }
            } else if !versionRead && !(0x30...0x39).contains(byte) {
                // The digits between the colon and this byte (1 to 20; none or too many: no hint).
                versionRead = true
                let digits = out[versionStart..<(out.count - 1)]
                var value: UInt64 = 0, overflow = digits.isEmpty
                for d in digits where !overflow {
                    let (times, o1) = value.multipliedReportingOverflow(by: 10)
                    let (sum, o2) = times.addingReportingOverflow(UInt64(d - 0x30))
                    overflow = o1 || o2
                    value = sum
                }
                version = overflow ? nil : value
            }
            if let key, versionRead { return (key, version) }
        }
        return key.map { ($0, nil) }
    }

    /// 43 base64url characters to a 32-byte key.
    private static func decodeKey(_ text: ArraySlice<UInt8>) -> NodeKey? {
        var key = [UInt8](repeating: 0, count: 32)
        var acc: UInt32 = 0, n = 0, k = 0
        for c in text {
            let v = base64Values[Int(c)]
            guard v < 64 else { return nil }
            acc = acc << 6 | UInt32(v)
            n += 6
            if n >= 8 {
                n -= 8
                guard k < 32 else { return nil }
                key[k] = UInt8(truncatingIfNeeded: acc >> UInt32(n))
                k += 1
            }
        }
        return k == 32 ? NodeKey(key) : nil
    }

    /// Base64url values by character (255: not base64url).
    private static let base64Values: [UInt8] = {
        var table = [UInt8](repeating: 255, count: 256)
        for (i, c) in Base64URL.alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()
}

public enum MeshError: Error, Sendable, CustomStringConvertible {
    case invalid(String)
    case malformed(String)
    case badSignature(String)
    case noRoute(String)
    case failed(String)

    public var description: String {
        switch self {
        case .invalid(let m), .malformed(let m), .badSignature(let m), .noRoute(let m), .failed(let m): m
        }
    }
}
