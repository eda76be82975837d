import FoundationEssentials
import MasqCrypto
import NIOConcurrencyHelpers
import Testing
#if canImport(Glibc)
    import Glibc
#endif
@testable import MasqConnectoid
@testable import MasqConnectoidProtocol

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    let now = NIOLockedValueBox<Int64>(1_800_000_000_000)
    func advance(seconds: Int64) { now.withLockedValue { $0 += seconds * 1_000 } }
    var function: @Sendable () -> Int64 { { self.now.withLockedValue { $0 } } }
}

func temporaryDatabase() -> String {
    "/tmp/connectoid-test-\(getpid())-\(Random.bytes(6).map { String($0, radix: 16) }.joined()).sqlite3"
}

struct Client {
    let service: ConnectoidService
    let keys = P384.keyPair()
    var pub: String { Base64URL.encode(try! P384.compress(keys.publicKey)) }
    let ext = "app1"

    func call(_ request: ConnectoidRequest) -> ConnectoidResponse {
        service.handle(body: Array(try! JSONEncoder().encode(request)), client: "127.0.0.1")
    }
    func send(_ bytes: [UInt8], to pub: String? = nil) -> ConnectoidResponse {
        call(ConnectoidRequest(pub: pub ?? self.pub, ext: ext, action: "send", data: Base64URL.encode(bytes)))
    }
    func check(at: Int64 = 0) -> ConnectoidResponse {
        call(ConnectoidRequest(pub: pub, ext: ext, action: "check", at: at))
    }
    func answer(_ question: String) -> String {
        let box = Base64URL.decode(question)!
        return Base64URL.encode(try! ChallengeBox.open(box, privateKey: keys.privateKey, publicKey: keys.publicKey))
    }
    func receive(answer: String, at: Int64 = 0, limit: Int = 10) -> ConnectoidResponse {
        call(ConnectoidRequest(pub: pub, ext: ext, action: "receive", at: at, answer: answer, limit: limit))
    }
}

@Suite struct ConnectoidServiceTests {
    func makeService(_ clock: ManualClock, configure: (inout ConnectoidConfiguration) -> Void = { _ in }) throws
        -> ConnectoidService
    {
        var config = ConnectoidConfiguration()
        config.databasePath = temporaryDatabase()
        config.collectEverySeconds = 1_000_000
        configure(&config)
        return try ConnectoidService(configuration: config, clock: clock.function)
    }

    @Test func sendCheckReceiveAndCursor() throws {
        let clock = ManualClock()
        let client = Client(service: try makeService(clock))
        #expect(client.check().found == false)
        #expect(client.send([1, 2, 3]).ok)
        #expect(client.send([4, 5]).ok)
        let check = client.check()
        #expect(check.ok && check.found == true)
        let got = client.receive(answer: client.answer(check.question!), limit: 1)
        #expect(got.ok && got.messages?.count == 1 && got.more == true && got.data == Base64URL.encode([1, 2, 3]))
        #expect(got.messages?[0].id == Hash.sha256([1, 2, 3]).map { String(format2: $0) }.joined())
        let second = client.check(at: got.at!)
        let rest = client.receive(answer: client.answer(second.question!), at: got.at!, limit: 10)
        #expect(rest.messages?.map(\.data) == [Base64URL.encode([4, 5])] && rest.more == false)
        #expect(client.check(at: rest.at!).found == false)
    }

    @Test func answersAreSingleUseAndExpire() throws {
        let clock = ManualClock()
        let client = Client(service: try makeService(clock))
        #expect(client.receive(answer: "AAAA").code == "no_challenge")
        _ = client.send([9])
        let question = client.check().question!
        #expect(client.check().question == question)  // pending question handed out again
        #expect(client.receive(answer: Base64URL.encode(Random.bytes(32))).code == "wrong_answer")
        let answer = client.answer(question)
        #expect(client.receive(answer: answer).ok)
        #expect(client.receive(answer: answer).code == "reused_answer")
        let next = client.check().question!
        #expect(next != question)
        clock.advance(seconds: 61)
        #expect(client.receive(answer: client.answer(next)).code == "expired_answer")
    }

    @Test func retentionAndMailboxCollection() throws {
        let clock = ManualClock()
        let service = try makeService(clock)
        let client = Client(service: service)
        _ = client.send([1])
        clock.advance(seconds: 3_599)
        #expect(client.check().found == true)
        clock.advance(seconds: 2)
        #expect(client.check().found == false)  // invisible past an hour, even before collection
        #expect(try service.collectGarbage().messages == 1)
        let pub = try ConnectoidLink.checkedPublicKey(client.pub)
        #expect(try service.hasMailbox(pub: pub, ext: client.ext))
        clock.advance(seconds: 29 * 86_400)
        _ = try service.collectGarbage()
        #expect(try service.hasMailbox(pub: pub, ext: client.ext))
        clock.advance(seconds: 2 * 86_400)  // a month without a check
        #expect(try service.collectGarbage().mailboxes == 1)
        #expect(try !service.hasMailbox(pub: pub, ext: client.ext))
    }

    @Test func limits() throws {
        let clock = ManualClock()
        let service = try makeService(clock) {
            $0.limits.maxMessageBytes = 1_000
            $0.limits.maxMessagesPerMailbox = 3
            $0.limits.sendsPerMailboxPerMinute = 60
            $0.mailboxBurst = 5
        }
        let client = Client(service: service)
        let big = client.send([UInt8](repeating: 7, count: 1_001))
        #expect(!big.ok && big.error == "Too big" && big.code == "too_big")
        for i in 0..<3 { #expect(client.send([UInt8(i)]).ok) }
        #expect(client.send([9]).code == "mailbox_full")
        #expect(client.send([0]).ok)  // the same bytes again: stored once, accepted
        _ = client.send([10]); _ = client.send([11])
        let often = client.send([12])
        #expect(often.error == "Too often" && often.code == "rate_limited")
        clock.advance(seconds: 2)
        #expect(client.send([13]).code == "mailbox_full")  // a token came back; the mailbox is still full
    }

    @Test func aMailboxHoldsAtMostItsByteCap() throws {
        let clock = ManualClock()
        let service = try makeService(clock) {
            $0.limits.maxMessageBytes = 4_000
            $0.limits.maxBytesPerMailbox = 10_000
            $0.mailboxBurst = 100
        }
        let client = Client(service: service)
        for i in 0..<3 { #expect(client.send([UInt8](repeating: UInt8(i), count: 3_000)).ok) }
        #expect(client.send([UInt8](repeating: 9, count: 3_000)).code == "mailbox_full")  // 12,000 > 10,000
        #expect(client.send([UInt8](repeating: 9, count: 1_000)).ok)  // 10,000 fits
        #expect(client.send([1]).code == "mailbox_full")
    }

    /// Rate limits go by address prefix (an IPv6 /64 is one client), and a
    /// full limiter table evicts rather than refusing every new client.
    @Test func clientKeysAndLimiterEviction() {
        #expect(ClientKey.of("2001:db8:1:2:aaaa::1") == ClientKey.of("2001:db8:1:2:ffff:1:2:3"))
        #expect(ClientKey.of("2001:db8:1:2::1") != ClientKey.of("2001:db8:1:3::1"))
        #expect(ClientKey.of("2001:db8:1:2::1", v6Prefix: 128) != ClientKey.of("2001:db8:1:2::2", v6Prefix: 128))
        #expect(ClientKey.of("192.0.2.7") != ClientKey.of("192.0.2.8"))
        #expect(ClientKey.of("192.0.2.7", v4Prefix: 24) == ClientKey.of("192.0.2.8", v4Prefix: 24))
        #expect(ClientKey.of("::ffff:192.0.2.7") == ClientKey.of("192.0.2.7"))
        let limiter = RateLimiter(perSecond: 1, burst: 1, maxKeys: 100)
        for i in 0..<100 { #expect(limiter.take("abuser-\(i)", now: 1_000 + Int64(i))) }
        #expect(limiter.take("newcomer", now: 1_200))  // evicted room for it
        #expect(limiter.count <= 100 && limiter.evictions == 1)
        #expect(!limiter.take("newcomer", now: 1_201))  // and it is limited like anyone
    }

    @Test func badInput() throws {
        let client = Client(service: try makeService(ManualClock()))
        func code(_ body: String) -> String? { client.service.handle(body: Array(body.utf8), client: "x").code }
        #expect(code("not json") == "bad_request")
        #expect(code(#"{"pub":"\#(client.pub)","ext":"","action":"fly"}"#) == "unknown_action")
        #expect(code(#"{"pub":"%%%","ext":"","action":"check"}"#) == "bad_request")
        #expect(code(#"{"pub":"AAAA","ext":"","action":"check"}"#) == "bad_key")
        #expect(code(#"{"pub":"\#(client.pub)","ext":"","action":"send","data":"***"}"#) == "bad_request")
        #expect(code(#"{"pub":"\#(client.pub)","ext":"!","action":"check"}"#) == "bad_request")
        #expect(code(#"{"pub":"\#(client.pub)","ext":"","action":"check","at":-1}"#) == "bad_request")
        #expect(code(#"{"pub":"\#(client.pub)","ext":"","action":"check","at":9007199254740993}"#) == "bad_request")
    }

    @Test func anotherKeyCannotReadAMailbox() throws {
        let service = try makeService(ManualClock())
        let owner = Client(service: service)
        let thief = Client(service: service)
        _ = thief.send([42], to: owner.pub)
        let question = owner.check().question!
        // The thief can ask for the question but cannot open it.
        #expect(throws: ConnectoidError.self) {
            try ChallengeBox.open(
                Base64URL.decode(question)!, privateKey: thief.keys.privateKey, publicKey: thief.keys.publicKey)
        }
        let guess = thief.call(
            ConnectoidRequest(
                pub: owner.pub, ext: owner.ext, action: "receive", at: 0, answer: Base64URL.encode(Random.bytes(32)),
                limit: 1))
        #expect(guess.code == "wrong_answer")
    }
}

@Suite struct ConnectoidProtocolTests {
    @Test func linkRoundTrip() throws {
        let keys = P384.keyPair()
        let link = ConnectoidLink(
            pub: try P384.compress(keys.publicKey), services: ["http://127.0.0.1:7080/", "https://b.example/c"],
            ext: "x1", secret: Random.bytes(32))
        #expect(link.pubText.count == 66)
        let parsed = try ConnectoidLink.parse(link.text)
        #expect(parsed == link)
        #expect(
            try ConnectoidLink.parse("https://app.example/page?a=1&connectoid=" + link.mailbox).services
                == link.services)
        #expect(throws: ConnectoidError.self) { try ConnectoidLink.parse("https://app.example/?x=1") }
        #expect(throws: ConnectoidError.self) { try ConnectoidLink.parse("masq://share/?connectoid=AAAA.aHR0cDovL3g") }
        #expect(throws: ConnectoidError.self) {
            try ConnectoidLink.parse("masq://share/?connectoid=\(link.pubText).Zm9v")
        }
    }

    @Test func sealedBoxesOpenOnlyForTheirKeyAndPad() throws {
        let alice = P384.keyPair(), mallory = P384.keyPair()
        for size in [0, 1, 59, 60, 61, 1_000, 70_000] {
            let message = Random.bytes(size)
            let box = try SealedBox.seal(message, to: alice.publicKey)
            #expect(box.count == SealedBox.overhead + Padding.paddedSize(size))
            #expect(try SealedBox.open(box, privateKey: alice.privateKey, publicKey: alice.publicKey) == message)
            #expect(throws: ConnectoidError.self) {
                try SealedBox.open(box, privateKey: mallory.privateKey, publicKey: mallory.publicKey)
            }
            var tampered = box
            tampered[tampered.count - 1] ^= 1
            #expect(throws: ConnectoidError.self) {
                try SealedBox.open(tampered, privateKey: alice.privateKey, publicKey: alice.publicKey)
            }
        }
        #expect(Padding.paddedSize(60) == 64 && Padding.paddedSize(61) == 256 && Padding.paddedSize(65_533) == 131_072)
    }

    /// Challenges and messages are separate constructions: a message (even
    /// one of a question's exact size, unpadded) never opens as a challenge,
    /// and a challenge never opens as a message (issue 13: no oracle).
    @Test func challengesAndMessagesNeverOpenAsEachOther() throws {
        let mailbox = P384.keyPair()
        let secret = Random.bytes(32)
        let question = try ChallengeBox.seal(secret, to: mailbox.publicKey)
        #expect(question.count == ChallengeBox.length && question.count == 98)
        #expect(try ChallengeBox.open(question, privateKey: mailbox.privateKey, publicKey: mailbox.publicKey) == secret)
        #expect(throws: ConnectoidError.self) {
            try SealedBox.open(question, privateKey: mailbox.privateKey, publicKey: mailbox.publicKey, padded: false)
        }
        for message in [
            try SealedBox.seal(Random.bytes(32), to: mailbox.publicKey, pad: false),
            try SealedBox.seal(Random.bytes(100), to: mailbox.publicKey)
        ] {
            #expect(throws: ConnectoidError.self) {
                try ChallengeBox.open(message, privateKey: mailbox.privateKey, publicKey: mailbox.publicKey)
            }
            var relabelled = message
            relabelled[0] = ChallengeBox.version
            #expect(throws: ConnectoidError.self) {
                try ChallengeBox.open(relabelled, privateKey: mailbox.privateKey, publicKey: mailbox.publicKey)
            }
        }
        #expect(throws: ConnectoidError.self) { try ChallengeBox.seal(Random.bytes(31), to: mailbox.publicKey) }
    }
}

extension String {
    init(format2 byte: UInt8) {
        let digits = Array("0123456789abcdef")
        self = String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
    }
}
