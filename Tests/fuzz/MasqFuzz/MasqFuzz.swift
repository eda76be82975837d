// Fuzz targets for every decoder that reads what another party sends: sync
// frames and the store's own records, ratchet messages, pairing handshakes
// and links, masqd's app protocol, Connectoid JSON, links and envelopes, mesh
// link records, gossip, onions and stream messages, relay frames.
//
// Each target must refuse bad input with an error — never crash, hang, read
// out of bounds (AddressSanitizer) or allocate without bound — and, where a
// decoder has an encoder, whatever decodes must re-encode to the same value.
//
//   MASQ_FUZZ=1 swift build --scratch-path .build-fuzz --product masq-fuzz
//   MASQ_FUZZ_TARGET=sync-frame .build-fuzz/debug/masq-fuzz corpus/   (libFuzzer)
//   masq-fuzz seeds DIR            valid inputs for every target (DIR/<target>/…)
//   masq-fuzz run TARGET PATH…     replay files or directories (a regression check)
//
// Tests/fuzz/run.sh drives both.
import MasqConnectoidProtocol
import MasqConnectoidWire
import MasqCrypto
@testable import MasqDaemon
@testable import MasqKernel
@testable import MasqMesh
@testable import MasqSharing
import MasqRelayProtocol
#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
#if canImport(Glibc)
    import Glibc
#endif

/// A fixed key pair derived from a label, so every run fuzzes the same state.
func fixedX25519(_ label: String) -> (privateKey: SecureBytes, publicKey: [UInt8]) {
    let key = SecureBytes(Hash.sha256(Array(label.utf8)))
    return (key, try! X25519.publicKey(of: key))
}

let sharedSecret = SecureBytes(Hash.sha256(Array("masq fuzz ratchet".utf8)))
let bob = fixedX25519("masq fuzz bob")
let node = fixedX25519("masq fuzz node")
let mailbox = P384.keyPair()  // envelopes are signed with fresh keys: only layout is fuzzed here

struct Target: Sendable {
    let name: String
    let run: @Sendable ([UInt8]) -> Void
    /// Valid inputs to start from.
    let seeds: @Sendable () -> [[UInt8]]
}

let targets: [Target] = [
    Target(
        name: "sync-frame",
        run: { bytes in
            guard let frame = try? SyncFrame.decode(bytes) else { return }
            let again = try? SyncFrame.decode(frame.encoded())
            precondition(again == frame, "decode(encode(x)) != x for a sync frame")
        },
        seeds: {
            let record = SyncRecord(
                namespace: "notes", key: Array("k".utf8),
                header: RecordHeader(
                    tombstone: false, version: Version(timestamp: 1 << 32, replica: 7), seq: 3, previous: .none),
                value: Array("value".utf8))
            return [
                SyncFrame.hello(
                    replica: 7, applied: VersionVector([7: 3, 9: 1]), collected: VersionVector([7: 1]),
                    tips: [7: 1 << 32]
                ).encoded(),
                SyncFrame.commits([SyncCommit(origin: 7, seq: 3, timestamp: 1 << 32, records: [record])]).encoded(),
                SyncFrame.ack(VersionVector([7: 3])).encoded(),
                SyncFrame.snapshot(records: [record], final: VersionVector([7: 3])).encoded(),
                SyncFrame.refused(.init(reason: .futureClock, origin: 7, seq: 3, timestamp: 1 << 40, receiverTime: 1))
                    .encoded()
            ]
        }),
    Target(
        name: "store-record",
        run: { bytes in
            // Records and log entries as a storage plugin hands them back (a damaged file).
            bytes.withUnsafeBytes { raw in
                if let header = try? RecordHeader.read(unchecked: raw) {
                    _ = RecordHeader.value(in: raw, header: header)
                }
                _ = try? RecordHeader.read(raw, key: UnsafeRawBufferPointer(rebasing: raw.prefix(8)))
                _ = try? LogEntryWriter.decodeWithTimestamp(raw)
            }
            _ = try? Counter(decoding: bytes)
            _ = try? PairedDevice(decoding: bytes)
        },
        seeds: {
            var log = LogEntryWriter()
            log.timestamp = 1 << 32
            Array("key".utf8).withUnsafeBytes { log.append(namespaceID: 1, key: $0) }
            var counter = Counter()
            try? counter.add(5, replica: 7)
            return [log.encoded(), counter.encoded]
        }),
    Target(
        name: "ratchet",
        run: { bytes in
            // Bob, who has heard nothing yet, reads any message; a failure leaves his state as it was.
            guard var receiver = try? DoubleRatchet(sharedSecret: sharedSecret, ownRatchetKey: bob) else { return }
            let before = receiver.serialized()
            if (try? receiver.decrypt(bytes, associatedData: [1, 2, 3])) == nil {
                precondition(receiver.serialized() == before, "a refused ratchet message changed the state")
            }
        },
        seeds: {
            guard var alice = try? DoubleRatchet(sharedSecret: sharedSecret, peerRatchetKey: bob.publicKey) else {
                return []
            }
            return (0..<3).compactMap { i in try? alice.encrypt(Array("message \(i)".utf8), associatedData: [1, 2, 3]) }
        }),
    Target(
        name: "pairing",
        run: { bytes in
            // The offerer reads a joiner's first handshake message; links arrive as text.
            if let offerer = try? Noise.Handshake(
                pattern: .XXpsk3, role: .responder, prologue: Array("masq pairing v1".utf8),
                staticKey: bob.privateKey, psks: [sharedSecret])
            {
                _ = try? offerer.readMessage(bytes)
            }
            _ = try? PairingLink(parsing: String(decoding: bytes, as: UTF8.self))
        },
        seeds: {
            guard
                let joiner = try? Noise.Handshake(
                    pattern: .XXpsk3, role: .initiator, prologue: Array("masq pairing v1".utf8),
                    staticKey: node.privateKey, psks: [sharedSecret]),
                let first = try? joiner.writeMessage()
            else { return [] }
            return [
                first,
                Array(PairingLink(secret: Array(repeating: 7, count: 16), via: "ws://127.0.0.1:7070/").string.utf8)
            ]
        }),
    Target(
        name: "app-request",
        run: { bytes in
            _ = try? Request.decode(bytes)
        },
        seeds: {
            [
                #"{"id": 1, "op": "put", "key": "k", "value": "v"}"#,
                #"{"op": "set_all", "entries": [{"key": "a", "value": null}], "replace": true}"#,
                #"{"id": "x", "op": "hello", "app_id": "vault", "token": "AAAA"}"#
            ].map { Array($0.utf8) }
        }),
    Target(
        name: "connectoid",
        run: { bytes in
            // What a (hostile) service answers, links pasted by users, questions and envelopes.
            _ = try? JSONDecoder().decode(ConnectoidResponse.self, from: Data(bytes))
            _ = try? JSONDecoder().decode(ConnectoidRequest.self, from: Data(bytes))
            _ = try? ConnectoidLink.parse(String(decoding: bytes, as: UTF8.self))
            _ = try? ChallengeBox.open(bytes, privateKey: mailbox.privateKey, publicKey: mailbox.publicKey)
            _ = try? Padding.unpad(bytes)
            _ = try? ShareEnvelope.parse(bytes, recipient: mailbox.publicKey)
        },
        seeds: {
            var out = [
                #"{"ok":true,"at":3,"data":"AAAA","messages":[{"at":3,"id":"00","data":"AAAA"}],"more":false}"#,
                #"{"ok":false,"error":"Too often","code":"rate_limited"}"#
            ].map { Array($0.utf8) }
            if let link = try? ConnectoidLink(
                pub: P384.compress(mailbox.publicKey), services: ["https://connectoid.example/"], ext: "masq1",
                secret: Array(repeating: 1, count: 32))
            {
                out.append(Array(link.text.utf8))
            }
            if let question = try? ChallengeBox.seal(Array(repeating: 9, count: 32), to: mailbox.publicKey) {
                out.append(question)
            }
            return out
        }),
    Target(
        name: "mesh-records",
        run: { bytes in
            // An opened link message: the first two bytes say how much of the rest is its clear part.
            guard bytes.count >= 2 else { return }
            let clearCount = min(Int(bytes[0]) << 8 | Int(bytes[1]), bytes.count - 2)
            let records = Array(bytes[(2 + clearCount)...])
            if case .success(let items) = LinkRecords.split(records, clear: 2..<(2 + clearCount), cellBytes: 64) {
                for item in items {
                    switch item {
                    case .frame(let range): precondition(range.lowerBound >= 0 && range.upperBound <= records.count)
                    case .dataCell(_, let payload): precondition(payload.upperBound <= 2 + clearCount)
                    }
                }
            }
        },
        seeds: {
            [
                [0, 64] + [UInt8](repeating: 0xAB, count: 64) + [0, 6, 3, 0, 0, 0, 1, 2] + [0, 2, 4, 0],
                [1, 64] + [UInt8](repeating: 0xCD, count: 320) + [0, 6, 3, 0, 0, 0, 1, 2] + [0, 6, 3, 0, 0, 0, 2, 4]
            ]
        }),
    Target(
        name: "mesh-gossip",
        run: { bytes in
            guard bytes.count <= 1 << 20, let list = try? JSONDecoder().decode([SignedRecord].self, from: Data(bytes))
            else { return }
            for signed in list.prefix(64) {
                // The hints are read off every record before anything else (MeshNode.receiveGossip).
                _ = signed.hints()
                _ = try? signed.verified(network: "fuzz")
            }
        },
        seeds: {
            let identity = NodeIdentity.generate()
            let record = NodeRecord(
                network: "fuzz", key: identity.key.text, agreement: Base64URL.encode(identity.agreement.publicKey),
                host: "127.0.0.2",
                port: 7000, version: 1, neighbours: [], rates: RatePack(), exit: false)
            guard let (signed, _) = try? SignedRecord.sign(record, with: identity),
                let json = try? JSONEncoder().encode([signed])
            else { return [] }
            return [Array(json)]
        }),
    Target(
        name: "mesh-onion",
        run: { bytes in
            _ = try? Onion.peel(bytes, privateKey: node.privateKey, publicKey: node.publicKey)
            bytes.withUnsafeBytes { _ = MeshNode.unpack($0) }
        },
        seeds: {
            guard
                let (onion, _) = try? Onion.build(
                    [
                        Onion.Hop(
                            agreement: node.publicKey, kind: .exit, next: nil, token: [UInt8](repeating: 1, count: 8),
                            payer: nil)
                    ],
                    payload: Array("payload".utf8), size: 1_024)
            else { return [] }
            return [onion, [4, 0, 1, 0, 3, 65, 66, 67]]
        }),
    Target(
        name: "relay-frame",
        run: { bytes in
            guard let frame = try? RelayFrame.decode(bytes) else { return }
            if case .error = frame { return }  // error text may be re-encoded lossily (invalid UTF-8)
            precondition((try? RelayFrame.decode(frame.encoded())) == frame, "decode(encode(x)) != x for a relay frame")
        },
        seeds: {
            [
                RelayFrame.join(room: Array(repeating: 65, count: 16)).encoded(),
                RelayFrame.send(room: [1, 2], payload: [9, 9, 9]).encoded(),
                RelayFrame.presence(room: [1], members: 2).encoded(),
                RelayFrame.error(code: .frameTooLarge, message: "too big").encoded()
            ]
        })
]

func target(named name: String) -> Target? { targets.first { $0.name == name } }

/// To standard error (fd 2: the C `stderr` global is not concurrency-safe).
func printError(_ message: String) {
    let bytes = Array((message + "\n").utf8)
    _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
}

#if FUZZING
    /// libFuzzer's entry point for a program with a main of its own (SwiftPM names
    /// executables' entry points, so libFuzzer's `main` cannot be used).
    @_silgen_name("LLVMFuzzerRunDriver")
    func LLVMFuzzerRunDriver(
        _ argc: UnsafeMutablePointer<Int32>,
        _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
    ) -> Int32

    nonisolated(unsafe) var selected: Target?

    /// libFuzzer's callback (the driver also names it).
    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
        selected?.run(size == 0 || data == nil ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
        return 0
    }

    @main
    struct Fuzz {
        static func main() {
            let name = getenv("MASQ_FUZZ_TARGET").map { String(cString: $0) } ?? ""
            guard let found = target(named: name) else {
                printError("set MASQ_FUZZ_TARGET to one of: \(targets.map(\.name).joined(separator: ", "))")
                exit(2)
            }
            selected = found
            var argc = CommandLine.argc
            var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
            exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOne(data, size) })
        }
    }
#else
    @main
    struct Replay {
        static func main() {
            let args = Array(CommandLine.arguments.dropFirst())
            switch args.first {
            case "seeds" where args.count == 2:
                for t in targets {
                    let dir = args[1] + "/" + t.name
                    mkdir(dir, 0o755)
                    for (i, seed) in t.seeds().enumerated() { write(dir + "/seed-\(i)", seed) }
                }
            case "run" where args.count >= 3:
                guard let t = target(named: args[1]) else { fail("unknown target \(args[1])") }
                var count = 0
                for path in args[2...] {
                    for file in files(path) {
                        guard let bytes = read(file) else { fail("cannot read \(file)") }
                        t.run(bytes)
                        count += 1
                    }
                }
                print("\(t.name): \(count) input(s) replayed")
            case "list": for t in targets { print(t.name) }
            default:
                fail("usage: masq-fuzz seeds DIR | run TARGET PATH... | list")
            }
        }

        static func fail(_ message: String) -> Never {
            printError(message)
            exit(2)
        }

        static func files(_ path: String) -> [String] {
            guard let dir = opendir(path) else { return [path] }
            defer { closedir(dir) }
            var out: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) {
                    String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { out.append(path + "/" + name) }
            }
            return out.sorted()
        }

        static func read(_ path: String) -> [UInt8]? { try? FileSystem.readFile(path, limit: 16 << 20) }

        static func write(_ path: String, _ bytes: [UInt8]) { try? FileSystem.writeFile(path, bytes) }
    }
#endif
