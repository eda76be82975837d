import FoundationEssentials
import MasqCrypto
import Testing

@testable import MasqMesh

/// The key and version a gossiped record names, read off its base64 bytes
/// without decoding it: what lets a node skip a version it already has at
/// read cost. A hint is never trusted, so what matters is that it is right
/// for records nodes sign and that odd input gives no hint, never a crash.
@Suite struct RecordHintsTests {
    static func signed(network: String = "masq", version: UInt64, neighbours: Int = 5) throws -> (SignedRecord, NodeKey)
    {
        let identity = NodeIdentity.generate()
        let record = NodeRecord(
            network: network, key: identity.key.text, agreement: Base64URL.encode(identity.agreement.publicKey),
            host: "", port: 0, version: version,
            neighbours: (0..<neighbours).map { _ in NodeIdentity.generate().key.text }, rates: RatePack(),
            exit: true, wallet: "0x" + String(repeating: "ab", count: 20))
        let (signed, _) = try SignedRecord.sign(record, with: identity)
        return (signed, identity.key)
    }

    /// A record as a forger might write it: any JSON, base64url, no signature check.
    static func forged(_ json: String) -> SignedRecord {
        SignedRecord(r: Base64URL.encode(Array(json.utf8)), s: String(repeating: "A", count: 86))
    }

    @Test func aSignedRecordsHintsAreItsKeyAndVersion() throws {
        for version: UInt64 in [0, 1, 1_765_000_000_000, UInt64.max] {
            for network in ["masq", String(repeating: "n", count: 200)] {
                let (signed, key) = try Self.signed(network: network, version: version)
                let hints = try #require(signed.hints())
                #expect(hints.key == key)
                #expect(hints.version == version)
                #expect(try signed.verified(network: network).version == version)
            }
        }
    }

    @Test func oddInputGivesNoHintNotACrash() {
        let key = NodeIdentity.generate().key.text
        // No version, or one that is not a number of at most 20 digits: the key alone.
        for tail in ["}", ",\"version\":\"7\"}", ",\"version\":-1}", ",\"version\":99999999999999999999999}"] {
            let hints = Self.forged("{\"key\":\"\(key)\"\(tail)").hints()
            #expect(hints?.key.text == key)
            #expect(hints?.version == nil)
        }
        // The version before the key is read too.
        #expect(Self.forged("{\"version\":42,\"key\":\"\(key)\"}").hints()?.version == 42)
        // A key of the wrong length, no key, bytes that are not base64url, nothing at all.
        #expect(Self.forged("{\"key\":\"abc\",\"version\":1}").hints() == nil)
        #expect(Self.forged("{\"version\":1}").hints() == nil)
        #expect(SignedRecord(r: "{{{{", s: "").hints() == nil)
        #expect(SignedRecord(r: "", s: "").hints() == nil)
        // A key past the first 2,048 characters is not looked for.
        let padded = Self.forged("{\"pad\":\"\(String(repeating: "x", count: 2_000))\",\"key\":\"\(key)\"}")
        #expect(padded.hints() == nil)
    }

    /// What a peer gains by padding a record or listing junk as neighbours:
    /// nothing, the record is refused before its signature is checked.
    @Test func paddedRecordsAndJunkNeighboursAreRefused() throws {
        let identity = NodeIdentity.generate()
        func signed(neighbours: [String], network: String = "masq") throws -> SignedRecord {
            let record = NodeRecord(
                network: network, key: identity.key.text, agreement: Base64URL.encode(identity.agreement.publicKey),
                host: "", port: 0, version: 1, neighbours: neighbours, rates: RatePack(), exit: false)
            return try SignedRecord.sign(record, with: identity).0
        }
        let keys = (0..<16).map { _ in NodeIdentity.generate().key.text }
        // The largest honest neighbour list passes; a name that is not a key does not.
        #expect(try signed(neighbours: keys).verified(network: "masq").neighbours == keys)
        #expect(throws: MeshError.self) { try signed(neighbours: ["not a key"]).verified(network: "masq") }
        // Padding past 3,072 characters (an unknown field would be ignored, so only the size stops it).
        let padded = try signed(neighbours: [])
        let json = String(decoding: Base64URL.decode(padded.r) ?? [], as: UTF8.self)
        let pad = ",\"pad\":\"" + String(repeating: "x", count: 3_000) + "\"}"
        let bloated = Self.forged(String(json.dropLast()) + pad)
        #expect(bloated.r.utf8.count > SignedRecord.maxGossipCharacters)
        #expect(throws: MeshError.self) { try bloated.decoded(network: "masq") }
    }

    /// Anchors (the links a node asks its neighbours never to shed) name
    /// only its own neighbours, at most 16: a record claiming a node it is
    /// not linked to, or a long list, is refused before any signature check.
    /// The largest honest public record with anchors still fits the cap.
    @Test func anchorsNameOnlyTheNodesOwnNeighbours() throws {
        let identity = NodeIdentity.generate()
        func signed(neighbours: [String], anchors: [String]?, family: [String]? = nil) throws -> SignedRecord {
            var record = NodeRecord(
                network: "masq", key: identity.key.text, agreement: Base64URL.encode(identity.agreement.publicKey),
                host: "", port: 0, version: UInt64.max, neighbours: neighbours, rates: RatePack(), exit: true,
                wallet: "0x" + String(repeating: "ab", count: 20))
            record.seeking = true
            record.family = family
            record.anchors = anchors
            return try SignedRecord.sign(record, with: identity).0
        }
        let keys = (0..<5).map { _ in NodeIdentity.generate().key.text }
        let family = (0..<16).map { _ in NodeIdentity.generate().key.text }
        let honest = try signed(neighbours: keys, anchors: Array(keys.prefix(2)), family: family)
        #expect(honest.r.utf8.count <= SignedRecord.maxGossipCharacters)
        #expect(try honest.verified(network: "masq").anchors == Array(keys.prefix(2)))
        let stranger = NodeIdentity.generate().key.text
        #expect(throws: MeshError.self) {
            try signed(neighbours: keys, anchors: [stranger]).decoded(network: "masq")
        }
        #expect(throws: MeshError.self) {
            try signed(neighbours: keys, anchors: Array(repeating: keys[0], count: 17)).decoded(network: "masq")
        }
    }
}
