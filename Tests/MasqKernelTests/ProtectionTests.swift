import Testing
@testable import MasqKernel
import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// Passphrase protection and device identity, checked against the bytes
/// that actually reach the disk.
@Suite struct ProtectionTests {
    static let secretValue = "the-secret-value-\(UInt32.random(in: 0...UInt32.max))"
    static let secretNamespace = "diary-\(UInt32.random(in: 0...UInt32.max))"

    func config(_ dir: String) -> MasqConfig {
        var c = Fixtures.config("sqlite", dataDir: dir)
        c.scryptLogN = 10  // fast for tests; production default is 17
        return c
    }

    /// Every byte under `dir` (database, WAL, identity, keyring).
    func diskBytes(_ dir: String) throws -> [UInt8] {
        var all: [UInt8] = []
        for name in FileSystem.listDirectory(dir) where !FileSystem.isDirectory(dir + "/" + name) {
            all += try FileSystem.readFile(dir + "/" + name, limit: 256 << 20)
        }
        return all
    }

    func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count else { return false }
        return (0...(haystack.count - needle.count)).contains {
            haystack[$0..<($0 + needle.count)].elementsEqual(needle)
        }
    }

    @Test func aProtectedStoreWritesNoSecretInClear() throws {
        let dir = Fixtures.temporaryDirectory("sealed")
        let store = try Store(config: config(dir), passphrase: [UInt8]("correct horse"))
        let ns = try NamespaceName(Self.secretNamespace, limits: Limits())
        for i in 0..<50 { try store.put(ns, key: [UInt8]("k\(i)"), value: [UInt8](Self.secretValue)) }
        #expect(try store.get(ns, key: [UInt8]("k7")) == [UInt8](Self.secretValue))
        #expect(try store.namespaces() == [Self.secretNamespace])
        let identity = try #require(store.identity)
        try store.close()
        let disk = try diskBytes(dir)
        #expect(!contains(disk, [UInt8](Self.secretValue)))
        #expect(!contains(disk, [UInt8](Self.secretNamespace)))
        #expect(!contains(disk, identity.signingKey.bytes))
        #expect(!contains(disk, identity.agreementKey.bytes))
        // The files that hold secrets are private to the user.
        for file in ["identity", "keyring"] {
            var st = stat()
            #expect(stat(dir + "/" + file, &st) == 0 && st.st_mode & 0o777 == 0o600, "\(file) mode")
        }
    }

    @Test func lockedUntilTheRightPassphrase() throws {
        let dir = Fixtures.temporaryDirectory("locked")
        let first = try Store(config: config(dir), passphrase: [UInt8]("pw-1"))
        try first.put(ns("app"), key: [UInt8]("k"), value: [UInt8]("v"))
        let identity = first.identity!.publicKeys
        try first.close()

        let store = try Store(config: config(dir))
        defer { try? store.close() }
        #expect(store.isLocked && store.identity == nil)
        let locked = expectMasqError(.denied) { _ = try store.get(ns("app"), key: [UInt8]("k")) }
        #expect(locked?.message.contains("locked") == true)
        expectMasqError(.denied) { try store.put(ns("app"), key: [UInt8]("k"), value: [UInt8]("x")) }
        let wrong = expectMasqError(.denied) { try store.unlock([UInt8]("pw-2")) }
        #expect(wrong?.message == "wrong passphrase")
        #expect(store.isLocked)
        try store.unlock([UInt8]("pw-1"))
        #expect(try store.get(ns("app"), key: [UInt8]("k")) == [UInt8]("v"))
        #expect(store.identity?.publicKeys == identity)
        store.relock()
        expectMasqError(.denied) { _ = try store.get(ns("app"), key: [UInt8]("k")) }
    }

    @Test func changingThePassphraseReWrapsWithoutReEncrypting() throws {
        let dir = Fixtures.temporaryDirectory("rewrap")
        let store = try Store(config: config(dir), passphrase: [UInt8]("old"))
        try store.put(ns("app"), key: [UInt8]("k"), value: [UInt8]("v"))
        let before = try rawRecords(store)
        expectMasqError(.denied) { try store.setPassphrase(old: [UInt8]("not it"), new: [UInt8]("new")) }
        try store.setPassphrase(old: [UInt8]("old"), new: [UInt8]("new"))
        #expect(try rawRecords(store) == before)  // same ciphertext: only the master key was re-wrapped
        try store.close()
        let reopened = try Store(config: config(dir))
        defer { try? reopened.close() }
        expectMasqError(.denied) { try reopened.unlock([UInt8]("old")) }
        try reopened.unlock([UInt8]("new"))
        #expect(try reopened.get(ns("app"), key: [UInt8]("k")) == [UInt8]("v"))
    }

    @Test func protectingAnExistingStoreLeavesNoClearCopy() throws {
        let dir = Fixtures.temporaryDirectory("migrate")
        let store = try Store(config: config(dir))
        let app = try NamespaceName(Self.secretNamespace, limits: Limits())
        try store.setAll(app, (0..<300).map { ([UInt8]("key-\($0)"), [UInt8](Self.secretValue + "-\($0)")) })
        try store.delete(app, key: [UInt8]("key-5"))
        let identity = store.identity!
        #expect(contains(try diskBytes(dir), [UInt8](Self.secretValue)))  // in clear before
        try store.setPassphrase(old: nil, new: [UInt8]("now protected"))
        #expect(try store.get(app, key: [UInt8]("key-299")) == [UInt8](Self.secretValue + "-299"))
        #expect(try store.get(app, key: [UInt8]("key-5")) == nil)
        try store.close()
        let disk = try diskBytes(dir)
        #expect(!contains(disk, [UInt8](Self.secretValue)))
        #expect(!contains(disk, [UInt8](Self.secretNamespace)))
        #expect(!contains(disk, identity.signingKey.bytes))
        let reopened = try Store(config: config(dir), passphrase: [UInt8]("now protected"))
        #expect(try reopened.getAll(app).count == 299)
        #expect(reopened.identity?.publicKeys == identity.publicKeys)
        // And back: removing the passphrase opens the data to anyone again.
        try reopened.setPassphrase(old: [UInt8]("now protected"), new: nil)
        try reopened.close()
        #expect(!FileSystem.exists(dir + "/keyring"))
        let plain = try Store(config: config(dir))
        defer { try? plain.close() }
        #expect(!plain.isProtected)
        #expect(try plain.get(app, key: [UInt8]("key-1")) == [UInt8](Self.secretValue + "-1"))
    }

    @Test func anInterruptedProtectionIsFinishedOrUndoneOnOpen() throws {
        // Crash after writing keyring.new, before sealing the data: undone.
        let dir = Fixtures.temporaryDirectory("crash1")
        let store = try Store(config: config(dir))
        try store.put(ns("app"), key: [UInt8]("k"), value: [UInt8]("v"))
        try store.close()
        try FileSystem.writeFile(dir + "/keyring.new", [1, 2, 3])
        let reopened = try Store(config: config(dir))
        #expect(!reopened.isProtected && !FileSystem.exists(dir + "/keyring.new"))
        #expect(try reopened.get(ns("app"), key: [UInt8]("k")) == [UInt8]("v"))

        // Crash after sealing the data, before installing the keyring: finished.
        let master = SecureBytes.random(count: 32)
        let keyring = try KeyRing(master: master, passphrase: [UInt8]("pw"), algorithm: .chacha20Poly1305, logN: 10)
        try FileSystem.writeFile(dir + "/keyring.new", keyring.encoded)
        try reopened.migrate(from: nil, to: SecretBox(master: master, algorithm: .chacha20Poly1305))
        try reopened.close()
        let finished = try Store(config: config(dir), passphrase: [UInt8]("pw"))
        defer { try? finished.close() }
        #expect(FileSystem.exists(dir + "/keyring") && !FileSystem.exists(dir + "/keyring.new"))
        #expect(try finished.get(ns("app"), key: [UInt8]("k")) == [UInt8]("v"))
    }

    @Test func tamperedCiphertextIsDetectedNotReturned() throws {
        let dir = Fixtures.temporaryDirectory("tamper")
        let store = try Store(config: config(dir), passphrase: [UInt8]("pw"))
        defer { try? store.close() }
        try store.put(ns("app"), key: [UInt8]("a"), value: [UInt8]("alpha"))
        try store.put(ns("app"), key: [UInt8]("b"), value: [UInt8]("bravo"))
        var records = try rawRecords(store)
        // Swap the two sealed records: each is bound to its own key.
        let keys = records.keys.sorted { $0.lexicographicallyPrecedes($1) }
        (records[keys[0]], records[keys[1]]) = (records[keys[1]], records[keys[0]])
        try store.engine.begin()
        for (k, v) in records {
            try k.withBytes { (kb) throws(MasqError) in
                try v.withBytes { (vb) throws(MasqError) in try store.engine.put(kb, vb) }
            }
        }
        try store.engine.commit()
        expectMasqError(.corrupt) { _ = try store.get(ns("app"), key: [UInt8]("a")) }
    }

    @Test func identityIsCreatedOnceAndKept() throws {
        let dir = Fixtures.temporaryDirectory("identity")
        let a = try Store(config: config(dir))
        let b = try Store(config: config(dir))  // a second handle on the same store
        #expect(a.identity?.publicKeys == b.identity?.publicKeys)
        let keys = a.identity!.publicKeys
        try a.close(); try b.close()
        let c = try Store(config: config(dir))
        defer { try? c.close() }
        #expect(c.identity?.publicKeys == keys)
        #expect(keys.deviceID.count == 20)
        let fp = keys.fingerprint
        #expect(fp.digits.split(separator: " ").count == 6 && fp.digits.filter(\.isNumber).count == 30)
        #expect(fp.emoji.count == 8)
        #expect(DeviceIdentity.generate().publicKeys.fingerprint.digits != fp.digits)
    }

    /// The engine's 'R' entries as stored bytes.
    func rawRecords(_ store: Store) throws -> [[UInt8]: [UInt8]] {
        var out: [[UInt8]: [UInt8]] = [:]
        try store.engine.scan(from: [RecordFormat.record], to: [RecordFormat.record + 1]) {
            (k, v) throws(MasqError) -> Bool in
            out[Array(k)] = Array(v)
            return true
        }
        return out
    }
}
