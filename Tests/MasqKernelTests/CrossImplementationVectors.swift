import Foundation
import Testing
@testable import MasqKernel
@testable import MasqCrypto

/// Vectors the two implementations of the wire protocol check each other
/// with (issue 18.5): this side writes Tests/js/vectors/swift.json (sync
/// frames of every kind, and a session of the AESGCM suite — XXpsk3
/// handshake and a scripted ratchet conversation with fixed keys) that
/// Tests/js checks byte for byte; and it checks Tests/js/vectors/js.json,
/// which the JS side wrote the same way. MASQ_WRITE_VECTORS=1 rewrites
/// swift.json; otherwise this test fails if the committed file differs from
/// what this implementation produces.
@Suite struct CrossImplementationVectors {
    static let directory = Fixtures.repository + "/Tests/js/vectors"

    static func key(_ label: String) -> [UInt8] { Hash.sha256(Array("masq vector \(label)".utf8)) }

    static func hexs(_ b: [UInt8]) -> String { hex(b) }

    static func unhex(_ s: String) -> [UInt8] { Hex.decode(s)! }

    // MARK: sync frames

    static func record(
        _ ns: String, _ key: String, tombstone: Bool = false, counter: Bool = false, ts: UInt64, replica: UInt64,
        seq: UInt64, previous: Version = .none, value: [UInt8]
    ) -> SyncRecord {
        SyncRecord(
            namespace: ns, key: Array(key.utf8),
            header: RecordHeader(
                tombstone: tombstone, counter: counter, version: Version(timestamp: ts, replica: replica),
                seq: seq, previous: previous),
            value: value)
    }

    static func describe(_ r: SyncRecord) -> [String: Any] {
        [
            "ns": r.namespace, "key": hexs(r.key), "tombstone": r.header.tombstone, "counter": r.header.counter,
            "ts": String(r.header.version.timestamp), "replica": String(r.header.version.replica),
            "seq": String(r.header.seq),
            "prevTs": String(r.header.previous.timestamp), "prevReplica": String(r.header.previous.replica),
            "value": hexs(r.value)
        ]
    }

    static func describe(_ v: VersionVector) -> [String: String] {
        Dictionary(uniqueKeysWithValues: v.entries.map { (String($0.key), String($0.value)) })
    }

    static func describe(_ frame: SyncFrame) -> [String: Any] {
        switch frame {
        case .hello(let replica, let applied, let collected, let tips, let wants, _):
            return [
                "type": "hello", "replica": String(replica), "applied": describe(applied),
                "collected": describe(collected),
                "tips": Dictionary(uniqueKeysWithValues: tips.map { (String($0.key), String($0.value)) }),
                "wantsSnapshot": wants
            ]
        case .commits(let commits):
            return [
                "type": "commits",
                "commits": commits.map { c in
                    [
                        "origin": String(c.origin), "seq": String(c.seq), "ts": String(c.timestamp),
                        "records": c.records.map(describe)
                    ] as [String: Any]
                }
            ]
        case .ack(let v): return ["type": "ack", "applied": describe(v)]
        case .snapshot(let records, let final):
            var d: [String: Any] = ["type": "snapshot", "records": records.map(describe)]
            if let final { d["final"] = describe(final) }
            return d
        case .refused(let r):
            return [
                "type": "refused", "reason": Int(r.reason.rawValue), "origin": String(r.origin), "seq": String(r.seq),
                "ts": String(r.timestamp), "receiverTime": String(r.receiverTime)
            ]
        }
    }

    static func frames() -> [(String, SyncFrame)] {
        let a: UInt64 = 0x1122_3344_5566_7788, b: UInt64 = 0xF000_0000_0000_0001
        let t: UInt64 = 1_765_000_000_000 << 16
        var counter = Counter()
        try! counter.add(5, replica: a)
        try! counter.add(-2, replica: b)
        let commit1 = SyncCommit(
            origin: a, seq: 1, timestamp: t,
            records: [
                record("web:https://notes.example", "greeting", ts: t, replica: a, seq: 1, value: Array("héllo".utf8)),
                record(
                    "web:https://notes.example", "gone", tombstone: true, ts: t, replica: a, seq: 1,
                    previous: Version(timestamp: t - 5, replica: b), value: [])
            ])
        let commit2 = SyncCommit(
            origin: a, seq: 300, timestamp: t + 1,
            records: [
                record(
                    "app", "clicks", counter: true, ts: t - 9, replica: b, seq: 12,
                    previous: Version(timestamp: t - 20, replica: a), value: counter.encoded),
                record(
                    "other", "k", ts: t + 1, replica: a, seq: 300, previous: Version(timestamp: t, replica: a),
                    value: [0, 255, 1])
            ])
        return [
            (
                "hello",
                .hello(
                    replica: a, applied: VersionVector([a: 300, b: 12]), collected: VersionVector([b: 2]),
                    tips: [a: t + 1, b: t - 9])
            ),
            ("hello-empty", .hello(replica: b, applied: VersionVector(), collected: VersionVector(), tips: [:])),
            (
                "hello-wants-snapshot",
                .hello(
                    replica: b, applied: VersionVector([a: 1]), collected: VersionVector(), tips: [a: t],
                    wantsSnapshot: true)
            ),
            ("commits", .commits([commit1, commit2])),
            ("ack", .ack(VersionVector([a: 300, b: 12]))),
            ("snapshot-chunk", .snapshot(records: [commit1.records[0], commit2.records[0]], final: nil)),
            ("snapshot-final", .snapshot(records: [commit1.records[1]], final: VersionVector([a: 300]))),
            (
                "refused",
                .refused(
                    .init(
                        reason: .futureClock, origin: a, seq: 7, timestamp: t + (600_000 << 16),
                        receiverTime: 1_765_000_000_000))
            )
        ]
    }

    // MARK: a session of the AESGCM suite

    /// Scripted conversation: who does what, in order.
    static let script: [(op: String, by: String, index: Int)] = [
        ("send", "responder", 0), ("send", "responder", 1), ("receive", "initiator", 1), ("receive", "initiator", 0),
        ("send", "initiator", 2), ("receive", "responder", 2), ("send", "responder", 3), ("send", "initiator", 4),
        ("receive", "responder", 4), ("receive", "initiator", 3), ("send", "initiator", 5), ("receive", "responder", 5)
    ]

    static func session(_ label: String) throws -> [String: Any] {
        let prologue = Array("masq pairing v1".utf8) + Array(key("\(label) room").prefix(16)) + [1, 2]
        let psk = key("\(label) psk")
        let inputs: [String: String] = [
            "prologue": hexs(prologue), "psk": hexs(psk),
            "initiatorStatic": hexs(key("\(label) initiator static")),
            "responderStatic": hexs(key("\(label) responder static")),
            "initiatorEphemeral": hexs(key("\(label) initiator ephemeral")),
            "responderEphemeral": hexs(key("\(label) responder ephemeral"))
        ]
        let ratchetKeys = { (side: String) in
            (0..<8).map { i -> (privateKey: SecureBytes, publicKey: [UInt8]) in
                let k = SecureBytes(key("\(label) \(side) ratchet \(i)"))
                return (k, try! X25519.publicKey(of: k))
            }
        }
        let i = try SecureSession(
            pattern: .XXpsk3, role: .initiator, prologue: prologue,
            staticKey: SecureBytes(unhex(inputs["initiatorStatic"]!)),
            psk: SecureBytes(psk), suite: .aesGCM, ephemeral: SecureBytes(unhex(inputs["initiatorEphemeral"]!)))
        let r = try SecureSession(
            pattern: .XXpsk3, role: .responder, prologue: prologue,
            staticKey: SecureBytes(unhex(inputs["responderStatic"]!)),
            psk: SecureBytes(psk), suite: .aesGCM, ephemeral: SecureBytes(unhex(inputs["responderEphemeral"]!)))
        i.fixedRatchetKeys = ratchetKeys("initiator")
        r.fixedRatchetKeys = ratchetKeys("responder")
        var handshake: [String] = []
        let m1 = try i.writeHandshake(); handshake.append(hexs(m1)); _ = try r.readHandshake(m1)
        let m2 = try r.writeHandshake(payload: Array("two".utf8)); handshake.append(hexs(m2));
        _ = try i.readHandshake(m2)
        let m3 = try i.writeHandshake(payload: Array("three".utf8)); handshake.append(hexs(m3));
        _ = try r.readHandshake(m3)
        var messages: [Int: [UInt8]] = [:]
        var steps: [[String: Any]] = []
        for step in script {
            let me = step.by == "initiator" ? i : r
            let ad = Array("ad \(step.index)".utf8)
            let plaintext =
                Array("message \(step.index) from \(step.by)".utf8)
                + [UInt8](repeating: UInt8(step.index), count: step.index * 7)
            if step.op == "send" {
                messages[step.index] = try me.seal(plaintext, associatedData: ad)
                steps.append([
                    "op": "send", "by": step.by, "index": step.index, "ad": hexs(ad), "plaintext": hexs(plaintext),
                    "message": hexs(messages[step.index]!)
                ])
            } else {
                let sender = step.by == "initiator" ? "responder" : "initiator"
                let opened = try me.open(messages[step.index]!, associatedData: ad)
                #expect(
                    opened == Array("message \(step.index) from \(sender)".utf8)
                        + [UInt8](repeating: UInt8(step.index), count: step.index * 7))
                steps.append(["op": "receive", "by": step.by, "index": step.index])
            }
        }
        return [
            "inputs": inputs, "ratchetKeySeeds": "SHA-256(\"masq vector \(label) <side> ratchet <i>\")",
            "initiatorRatchetKeys": ratchetKeys("initiator").map { hexs($0.privateKey.bytes) },
            "responderRatchetKeys": ratchetKeys("responder").map { hexs($0.privateKey.bytes) },
            "handshake": handshake, "handshakeHash": hexs(i.handshakeHash), "steps": steps
        ]
    }

    static func generate() throws -> [String: Any] {
        [
            "about":
                "Generated by Tests/MasqKernelTests/CrossImplementationVectors.swift; checked by Tests/js/vectors.test.mjs",
            "syncFrames": frames().map {
                ["name": $0.0, "hex": hexs($0.1.encoded()), "frame": describe($0.1)] as [String: Any]
            },
            "session": try session("swift")
        ]
    }

    static func json(_ object: Any) throws -> Data {
        try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }

    @Test func swiftVectorsAreWhatThisImplementationProduces() throws {
        let produced = try Self.json(try Self.generate())
        let path = Self.directory + "/swift.json"
        if ProcessInfo.processInfo.environment["MASQ_WRITE_VECTORS"] == "1" {
            try produced.write(to: URL(fileURLWithPath: path))
        }
        let committed = try Data(contentsOf: URL(fileURLWithPath: path))
        let a = try JSONSerialization.jsonObject(with: committed) as! NSDictionary
        let b = try JSONSerialization.jsonObject(with: produced) as! NSDictionary
        #expect(
            a == b,
            "Tests/js/vectors/swift.json is stale: MASQ_WRITE_VECTORS=1 swift test --filter CrossImplementationVectors")
    }

    /// What the JS implementation wrote: its frames decode here and encode
    /// back to the same bytes; its session replays here byte for byte.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: CrossImplementationVectors.directory + "/js.json")))
    func jsVectorsCheckHere() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.directory + "/js.json"))
        let js = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let frames = js["syncFrames"] as! [[String: Any]]
        #expect(frames.count >= 6)
        for f in frames {
            let bytes = Self.unhex(f["hex"] as! String)
            let frame = try SyncFrame.decode(bytes)
            #expect(frame.encoded() == bytes, "JS frame \(f["name"]!) re-encodes to the same bytes")
            let described = try JSONSerialization.jsonObject(with: try Self.json(Self.describe(frame))) as! NSDictionary
            #expect(
                described == (f["frame"] as! NSDictionary), "JS frame \(f["name"]!) decodes to what JS says it holds")
        }
        // The session: same inputs, the JS script; every message byte for byte.
        let session = js["session"] as! [String: Any]
        let label = session["label"] as! String
        let mine = try Self.session(label)
        #expect((mine["handshake"] as! [String]) == (session["handshake"] as! [String]))
        let theirs = (session["steps"] as! [[String: Any]]).filter { $0["op"] as! String == "send" }.map {
            $0["message"] as! String
        }
        let ours = (mine["steps"] as! [[String: Any]]).filter { $0["op"] as! String == "send" }.map {
            $0["message"] as! String
        }
        #expect(theirs == ours && !ours.isEmpty)
    }
}
