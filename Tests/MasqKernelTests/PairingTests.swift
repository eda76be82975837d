import Testing
@testable import MasqKernel
import MasqCrypto
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// Drive a pairing between two stores by handing frames across, as any
/// transport would. `tamper` may rewrite each frame in flight.
@discardableResult
func pair(
    offerer: Store, joiner: Store, link: PairingLink, joinerLink: PairingLink? = nil,
    tamper: (Int, [UInt8]) -> [UInt8] = { $1 }
) throws -> (PairedDevice, PairedDevice) {
    let offer = try PairingFlow(offering: link, store: offerer)
    let join = try PairingFlow(joining: joinerLink ?? link, store: joiner)
    var frame = tamper(0, try join.start())
    var index = 1
    while true {
        let step: PairingFlow.Step
        do {
            step = try offer.receive(frame)
        } catch {
            _ = try? join.receive(PairingFlow.refusal(error.message))
            throw error
        }
        switch step {
        case .send(let reply):
            frame = tamper(index + 1, try sendBack(join, tamper(index, reply)))
            index += 2
        case .paired(let joinerDevice, let final):
            guard case .paired(let offererDevice, nil) = try join.receive(tamper(index, final!)) else {
                throw MasqError(.internal, "joiner did not finish")
            }
            return (joinerDevice, offererDevice)
        }
    }
}

private func sendBack(_ join: PairingFlow, _ frame: [UInt8]) throws -> [UInt8] {
    guard case .send(let next) = try join.receive(frame) else { throw MasqError(.internal, "joiner finished early") }
    return next
}

@Suite struct PairingTests {
    func device(_ label: String, protected: Bool = false) throws -> Store {
        var config = Fixtures.config("sqlite", dataDir: Fixtures.temporaryDirectory(label))
        config.scryptLogN = 10
        let store = try Store(config: config, passphrase: protected ? [UInt8]("pw-\(label)") : nil)
        try store.setDeviceName(label)
        return store
    }

    @Test func linksRoundTripAndRejectDamage() throws {
        let link = PairingLink(secret: Random.bytes(16), via: "tcp:127.0.0.1:4000")
        let text = link.string
        #expect(text.hasPrefix("masq://pair/") && text.contains("?via=tcp:127.0.0.1:4000#"))
        #expect(try PairingLink(parsing: text) == link)
        #expect(!text.contains(Base64URL.encode(link.secret) + "?"))  // the secret only after '#'
        let noVia = PairingLink(secret: Random.bytes(16), via: nil)
        #expect(try PairingLink(parsing: noVia.string) == noVia)
        for bad in [
            "https://example.com/#abc", "masq://pair/abc", text.replacingOccurrences(of: "#", with: "#x"),
            String(text.dropLast(3)), text.replacingOccurrences(of: "masq://pair/", with: "masq://pair/A")
        ] {
            #expect(throws: MasqError.self) { try PairingLink(parsing: bad) }
        }
    }

    @Test func base64URL() {
        for n in 0..<40 {
            let bytes = Random.bytes(n)
            #expect(Base64URL.decode(Base64URL.encode(bytes)) == bytes)
        }
        #expect(Base64URL.encode(Array("any carnal pleas".utf8)) == "YW55IGNhcm5hbCBwbGVhcw")
        #expect(Base64URL.decode("YW55IGNhcm5hbCBwbGVhcx") == nil)  // non-zero leftover bits
        #expect(Base64URL.decode("a+b/") == nil && Base64URL.decode("abcde") == nil)
    }

    @Test func twoDevicesPairAndTalk() throws {
        let alice = try device("alice"), bob = try device("bob")
        defer { try? alice.close(); try? bob.close() }
        let link = try alice.createPairingOffer(via: nil)
        let (seenByAlice, seenByBob) = try pair(offerer: alice, joiner: bob, link: link)
        #expect(seenByAlice.name == "bob" && seenByBob.name == "alice")
        #expect(seenByAlice.keys == bob.identity!.publicKeys)
        #expect(seenByBob.keys == alice.identity!.publicKeys)
        #expect(try alice.devices().map(\.deviceID) == [bob.identity!.publicKeys.deviceID])
        #expect(try bob.devices().map(\.deviceID) == [alice.identity!.publicKeys.deviceID])
        // Sessions work both ways, and survive a restart.
        let toBob = try alice.seal(for: seenByAlice.deviceID, Array("hi bob".utf8))
        #expect(try bob.open(from: seenByBob.deviceID, toBob) == Array("hi bob".utf8))
        let toAlice = try bob.seal(for: seenByBob.deviceID, Array("hi alice".utf8))
        #expect(try alice.open(from: seenByAlice.deviceID, toAlice) == Array("hi alice".utf8))
        #expect(throws: MasqError.self) { try bob.open(from: seenByBob.deviceID, toBob) }  // no replay
        // The offer is single-use.
        let carol = try device("carol")
        defer { try? carol.close() }
        let again = expectMasqError(.denied) { try pair(offerer: alice, joiner: carol, link: link) }
        #expect(again?.message.contains("already used") == true)
        #expect(try carol.devices().isEmpty)
    }

    @Test func aWrongSecretFailsClearlyAndStoresNothing() throws {
        let alice = try device("alice2"), mallory = try device("mallory")
        defer { try? alice.close(); try? mallory.close() }
        let link = try alice.createPairingOffer(via: nil)
        var forged = Random.bytes(16)
        forged[0] = link.secret[0]
        let wrong = PairingLink(secret: forged, via: nil)
        let error = expectMasqError(.denied) {
            try pair(offerer: alice, joiner: mallory, link: link, joinerLink: wrong)
        }
        #expect(error?.message.contains("pairing failed") == true)
        #expect(try alice.devices().isEmpty && mallory.devices().isEmpty)
        // The genuine device can still use the link afterwards.
        let bob = try device("bob2")
        defer { try? bob.close() }
        try pair(offerer: alice, joiner: bob, link: link)
        #expect(try alice.devices().count == 1)
    }

    @Test func aRelayThatTampersCannotPairOrRead() throws {
        let alice = try device("alice3"), bob = try device("bob3")
        defer { try? alice.close(); try? bob.close() }
        for position in 0..<4 {
            let link = try alice.createPairingOffer(via: nil)
            expectMasqError(.denied) {
                try pair(offerer: alice, joiner: bob, link: link) { index, frame in
                    guard index == position, frame.count > 10 else { return frame }
                    var bad = frame
                    bad[bad.count - 5] ^= 0x40
                    return bad
                }
            }
        }
        #expect(try bob.devices().isEmpty)
        // A relay that only forwards sees the room id and opaque frames: never the secret.
        let link = try alice.createPairingOffer(via: nil)
        var seen: [[UInt8]] = []
        try pair(offerer: alice, joiner: bob, link: link) { _, frame in
            seen.append(frame); return frame
        }
        let everything = seen.flatMap { $0 }
        #expect(!everything.windows(link.secret.count).contains(link.secret))
        // even names are encrypted
        #expect(!everything.windows(Array("alice3".utf8).count).contains(Array("alice3".utf8)))
    }

    @Test func expiredOffersAreRefused() throws {
        let alice = try device("alice4"), bob = try device("bob4")
        defer { try? alice.close(); try? bob.close() }
        let link = try alice.createPairingOffer(via: nil, ttl: 1)
        usleep(1_100_000)
        let error = expectMasqError(.denied) { try pair(offerer: alice, joiner: bob, link: link) }
        #expect(error?.message.contains("expired") == true)
        try alice.purgeExpiredOffers()
        let gone = expectMasqError(.denied) { try alice.checkPairingOffer(link) }
        #expect(gone?.message.contains("already used") == true)
    }

    @Test func removingADeviceCutsItOffFromLaterMessages() throws {
        let a = try device("phone"), b = try device("laptop"), x = try device("stolen")
        defer { try? a.close(); try? b.close(); try? x.close() }
        try pair(offerer: a, joiner: b, link: a.createPairingOffer(via: nil))
        try pair(offerer: a, joiner: x, link: a.createPairingOffer(via: nil))
        let aID = a.identity!.publicKeys.deviceID, xID = x.identity!.publicKeys.deviceID
        let before = Dictionary(
            uniqueKeysWithValues: try a.sealForDevices(Array("before".utf8)).map { ($0.deviceID, $0.message) })
        #expect(before.count == 2)
        #expect(try x.open(from: aID, before[xID]!) == Array("before".utf8))

        try a.removeDevice(xID)
        #expect(try a.devices().map(\.name) == ["laptop"])
        let after = try a.sealForDevices(Array("after".utf8))
        #expect(after.map(\.deviceID) == [b.identity!.publicKeys.deviceID])
        // X holds its old session with A, yet cannot read what A now sends to B.
        #expect(throws: MasqError.self) { try x.open(from: aID, after[0].message) }
        #expect(try b.open(from: aID, after[0].message) == Array("after".utf8))
        expectMasqError(.notFound) { _ = try a.seal(for: xID, [1]) }
        expectMasqError(.notFound) { try a.removeDevice(xID) }
    }

    @Test func protectedStoresKeepDevicesSealed() throws {
        let alice = try device("alice5", protected: true), bob = try device("bob5")
        defer { try? bob.close() }
        try pair(offerer: alice, joiner: bob, link: alice.createPairingOffer(via: nil))
        let dir = alice.config.dataDir
        let config = alice.config
        try alice.close()
        let disk = FileSystem.listDirectory(dir).compactMap {
            try? FileSystem.readFile(dir + "/" + $0, limit: 64 << 20)
        }.flatMap { $0 }
        #expect(!disk.windows(5).contains(Array("bob5".utf8)))
        let reopened = try Store(config: config)
        defer { try? reopened.close() }
        expectMasqError(.denied) { _ = try reopened.devices() }
        try reopened.unlock([UInt8]("pw-alice5"))
        #expect(try reopened.devices().map(\.name) == ["bob5"])
    }

    @Test func qrCodesDecodeWithARealDecoder() throws {
        let link = PairingLink(secret: Random.bytes(16), via: "tcp:127.0.0.1:45678").string
        let qr = try QRCode(link)
        let path = Fixtures.temporaryDirectory("qr") + "/link.pgm"
        try FileSystem.writeFile(path, qr.pgm())
        let out = path + ".txt"
        #expect(
            system("zbarimg --quiet --raw '\(path)' > '\(out)'") == 0, "zbarimg (Debian zbar-tools) must be installed")
        let decoded = String(decoding: try FileSystem.readFile(out), as: UTF8.self).trimmingCharacters(
            in: .whitespacesAndNewlines)
        #expect(decoded == link)
        #expect(qr.terminalText().split(separator: "\n").count == (qr.size + 8 + 1) / 2)
    }
}

extension Array where Element == UInt8 {
    /// Every contiguous run of `n` bytes (for "does this leak" checks).
    func windows(_ n: Int) -> [[UInt8]] {
        guard n > 0, count >= n else { return [] }
        return (0...(count - n)).map { Array(self[$0..<($0 + n)]) }
    }
}
