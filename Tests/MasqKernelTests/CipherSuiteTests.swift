import Testing
@testable import MasqKernel
@testable import MasqCrypto

/// Suite negotiation at pairing (docs/PROTOCOL.md, "Cipher suites"): the
/// joiner offers, the offerer picks, both record the pair's suite, and the
/// pair's ratchet and renewals use it; a joiner of an earlier version (a
/// plain MESSAGE first, ChaChaPoly) still pairs.
@Suite struct CipherSuiteTests {
    func device(_ label: String) throws -> Store {
        let store = try Store(config: Fixtures.config("sqlite", dataDir: Fixtures.temporaryDirectory(label)))
        try store.setDeviceName(label)
        return store
    }

    /// Frames across, as `pair` in PairingTests, with chosen suites.
    func pairSuites(
        offerer: Store, joiner: Store, offers: [CipherSuite], accepts: [CipherSuite] = PairingFlow.supportedSuites
    ) throws -> (PairedDevice, PairedDevice) {
        let link = try offerer.createPairingOffer(via: nil)
        let offer = try PairingFlow(offering: link, store: offerer, suites: accepts)
        let join = try PairingFlow(joining: link, store: joiner, suites: offers)
        var frame = try join.start()
        while true {
            switch try offer.receive(frame) {
            case .send(let reply):
                guard case .send(let next) = try join.receive(reply) else {
                    throw MasqError(.internal, "joiner finished early")
                }
                frame = next
            case .paired(let joined, let final):
                guard case .paired(let offered, nil) = try join.receive(final!) else {
                    throw MasqError(.internal, "joiner did not finish")
                }
                return (joined, offered)
            }
        }
    }

    @Test func theOffererPicksAmongWhatTheJoinerOffers() throws {
        let a = try device("suite-a"), b = try device("suite-b"), c = try device("suite-c")
        defer { try? a.close(); try? b.close(); try? c.close() }
        // A browser peer offers AESGCM only.
        let (joinedB, offeredB) = try pairSuites(offerer: a, joiner: b, offers: [.aesGCM])
        #expect(joinedB.suite == .aesGCM && offeredB.suite == .aesGCM)
        #expect(try a.devices().first { $0.deviceID == joinedB.deviceID }?.suite == .aesGCM)
        // Two native devices: the offerer's preference (ChaChaPoly) among both.
        let (joinedC, _) = try pairSuites(offerer: a, joiner: c, offers: [.aesGCM, .chaChaPoly])
        #expect(joinedC.suite == .chaChaPoly)
        // Nothing in common: a clear refusal, nothing stored.
        let d = try device("suite-d")
        defer { try? d.close() }
        #expect(throws: MasqError.self) {
            try pairSuites(offerer: d, joiner: b, offers: [.aesGCM], accepts: [.chaChaPoly])
        }
        #expect(try d.devices().isEmpty)
    }

    @Test func aPairKeepsItsSuiteThroughSealingAndRenewal() throws {
        let a = try device("renew-a"), b = try device("renew-b")
        defer { try? a.close(); try? b.close() }
        let (bDevice, aDevice) = try pairSuites(offerer: a, joiner: b, offers: [.aesGCM])
        // The offerer (ratchet sender) speaks first.
        let first = try a.seal(for: bDevice.deviceID, [1])
        #expect(first[0] == 3)
        #expect(try b.open(from: aDevice.deviceID, first) == [1])
        // Renewal: Noise KK in the pair's suite; the new sessions keep it.
        let begin = try b.beginSessionRenewal(with: aDevice.deviceID)
        let answer = try a.answerSessionRenewal(from: bDevice.deviceID, begin)
        try b.completeSessionRenewal(from: aDevice.deviceID, answer)
        let renewed = try a.seal(for: bDevice.deviceID, [2])
        #expect(renewed[0] == 3)
        #expect(try b.open(from: aDevice.deviceID, renewed) == [2])
        #expect(try b.open(from: aDevice.deviceID, try a.seal(for: bDevice.deviceID, [3])) == [3])
        #expect(try a.open(from: bDevice.deviceID, try b.seal(for: aDevice.deviceID, [4])) == [4])
    }

    @Test func aJoinerOfAnEarlierVersionStillPairs() throws {
        let a = try device("legacy-a"), b = try device("legacy-b")
        defer { try? a.close(); try? b.close() }
        let link = try a.createPairingOffer(via: nil)
        let offer = try PairingFlow(offering: link, store: a)
        // What an earlier joiner sends: message 1 of ChaChaPoly XXpsk3 with the old prologue.
        let identity = try b.requireIdentity()
        let session = try SecureSession(
            pattern: .XXpsk3, role: .initiator, prologue: PairingFlow.prologue(link),
            staticKey: identity.agreementKey, psk: try link.psk)
        guard case .send(let two) = try offer.receive([1] + (try session.writeHandshake())) else {
            Issue.record("no answer"); return
        }
        #expect(two[0] == 1)
        _ = try session.readHandshake(Array(two.dropFirst()))
        let card = try DeviceCard.signed(identity: identity, name: "legacy-b", handshakeHash: session.transcriptHash)
        guard case .paired(let device, let final) = try offer.receive([1] + (try session.writeHandshake(payload: card)))
        else { Issue.record("not paired"); return }
        #expect(device.suite == .chaChaPoly)
        let opened = try session.open(Array(final!.dropFirst()), associatedData: PairingFlow.prologue(link))
        #expect(opened.count > 16)
    }

    @Test func webLinksCarryTheLinkInTheFragment() throws {
        let link = PairingLink(secret: Random.bytes(16), via: "ws://127.0.0.1:7070/")
        let web = try link.webURL(base: "https://notes.example/app")
        #expect(web.hasPrefix("https://notes.example/app#masq-pair="))
        #expect(!web.split(separator: "#")[0].contains(Base64URL.encode(link.secret)))
        #expect(try PairingLink(parsing: web) == link)
        for bad in [
            "https://notes.example/app#masq-pair=", "https://notes.example/app#masq-pair=%%%",
            "https://notes.example/app",
            "https://notes.example/app#masq-pair=" + Base64URL.encode(Array("https://x".utf8))
        ] {
            #expect(throws: MasqError.self) { try PairingLink(parsing: bad) }
        }
        #expect(throws: MasqError.self) { try link.webURL(base: "ftp://x") }
    }

    @Test func deviceRecordsOfEarlierVersionsStillRead() throws {
        let keys = DevicePublicKeys(signing: Random.bytes(32), agreement: Random.bytes(32))
        let old = PairedDevice(name: "old", keys: keys, pairedAt: 5)
        #expect(old.encoded[0] == 1)
        #expect(try PairedDevice(decoding: old.encoded).suite == .chaChaPoly)
        let new = PairedDevice(name: "new", keys: keys, pairedAt: 5, suite: .aesGCM)
        #expect(new.encoded[0] == 2)
        #expect(try PairedDevice(decoding: new.encoded) == new)
    }
}
