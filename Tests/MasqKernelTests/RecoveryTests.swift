import Testing
@testable import MasqKernel
import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// What keeps a pair of replicas working after faults: a store restored from
/// a copy continues under a new identity and loses nothing; a clock that ran
/// ahead is repaired; a refused commit is not resent in a loop; sessions are
/// renewed by a handshake of the two device keys that cannot be replayed.
@Suite struct RecoveryTests {
    func ns(_ name: String) -> NamespaceName { try! NamespaceName(name, limits: Limits()) }

    func copyDirectory(_ from: String, _ to: String) {
        Fixtures.run("rm -rf '\(to)' && cp -a '\(from)' '\(to)'")
    }

    /// Replace replica `name`'s engine by one over `store` (a reopened store).
    func reopen(_ net: SimulatedNetwork, _ name: String, _ store: Store) {
        net.engines[name] = SyncEngine(store: store)
        net.setMembers()
    }

    @Test func aStoreRestoredFromACopyContinuesUnderANewIdentityAndLosesNothing() throws {
        let dirA = Fixtures.temporaryDirectory("rollback-a")
        let net = try SimulatedNetwork([])
        net.engines["A"] = SyncEngine(store: try Fixtures.open("sqlite", dataDir: dirA))
        net.engines["B"] = SyncEngine(store: try Fixtures.open("sqlite"))
        net.setMembers()
        defer { net.close() }
        try net.store("A").put(ns("n"), key: [UInt8]("k1"), value: [UInt8]("one"))
        try net.reconcile()
        let original = net.store("A").replicaID

        // A copy of A's directory, taken while it is closed.
        try net.store("A").close()
        let backup = Fixtures.temporaryDirectory("rollback-backup")
        copyDirectory(dirA, backup)
        reopen(net, "A", try Fixtures.open("sqlite", dataDir: dirA))
        try net.store("A").put(ns("n"), key: [UInt8]("k2"), value: [UInt8]("two"))
        try net.reconcile()
        #expect(try net.store("B").get(ns("n"), key: [UInt8]("k2")) == [UInt8]("two"))
        // B collects its change log up to what A acknowledged: its tip for A's
        // commits must not depend on the log (the vector entry keeps it).
        try net.store("B").collectGarbage(acknowledged: net.store("B").acknowledgedVectors(of: ["A"]))
        let aSeq = try net.store("A").syncVectors().applied[original]
        #expect(try net.store("B").changeLog(replica: original, seq: aSeq) == nil)

        // Restore the copy: A no longer has k2, and its next commit reuses k2's number.
        try net.store("A").close()
        copyDirectory(backup, dirA)
        reopen(net, "A", try Fixtures.open("sqlite", dataDir: dirA))
        #expect(try net.store("A").get(ns("n"), key: [UInt8]("k2")) == nil)
        try net.store("A").put(ns("n"), key: [UInt8]("k3"), value: [UInt8]("three"))
        try net.reconcile()

        #expect(net.store("A").replicaID != original)
        for name in ["A", "B"] {
            for (key, value) in [("k1", "one"), ("k2", "two"), ("k3", "three")] {
                #expect(try net.store(name).get(ns("n"), key: [UInt8](key)) == [UInt8](value), "\(name) lacks \(key)")
            }
        }
        #expect(try net.state("A") == net.state("B"))
        // The new identity is stable: another round changes nothing.
        let renewed = net.store("A").replicaID
        try net.reconcile()
        #expect(net.store("A").replicaID == renewed)
    }

    @Test func aCommitFromTheFutureIsRefusedOnceWithItsReasonNotResentInALoop() throws {
        let net = try SimulatedNetwork(["A", "B"])
        defer { net.close() }
        // A holds a commit stamped ten minutes ahead (accepted, as an older
        // version would have, from a third replica with a fast clock).
        // (A's own write first: after the phantom's, A's clock would sit at the bound.)
        try net.store("A").put(ns("n"), key: [UInt8]("ordinary"), value: [UInt8]("x"))
        let future = (Clock.unixMilliseconds() + 10 * 60_000) << 16
        let phantom: UInt64 = 0x5eed
        let record = SyncRecord(
            namespace: "n", key: [UInt8]("fast"),
            header: RecordHeader(
                tombstone: false, version: Version(timestamp: future, replica: phantom), seq: 1, previous: .none),
            value: [UInt8]("v"))
        #expect(
            try net.store("A").applyRemote(
                SyncCommit(origin: phantom, seq: 1, timestamp: future, records: [record]), clockBound: .max) == .applied
        )

        try net.connect("A", "B")
        try net.settle(limit: 200)  // it ends: a refusal is not answered with an immediate resend
        #expect(net.delivered < 40, "\(net.delivered) frames delivered")
        #expect(try net.store("B").get(ns("n"), key: [UInt8]("fast")) == nil)
        #expect(net.engines["A"]!.problem(with: "B")?.contains("ahead") == true)
        #expect(net.engines["B"]!.problem(with: "A")?.contains("ahead") == true)
        #expect(try net.store("B").syncProblem(device: "A")?.text.contains("refusing") == true)
        // B's clock was not moved by the refused commit.
        let (_, bClock) = try net.store("B").lock.withLock { () throws(MasqError) in
            try Store.readClock(net.store("B").engine)
        }
        #expect(HybridLogicalClock.milliseconds(of: bClock) <= Clock.unixMilliseconds() + Store.defaultClockBound)
        // Within the wait nothing is resent.
        #expect(!net.engines["A"]!.resendStalled())
    }

    @Test func aClockThatRanAheadIsRepairedAndItsWritesReachPeers() throws {
        let net = try SimulatedNetwork(["A", "B"])
        defer { net.close() }
        let a = net.store("A")
        // A's clock ran ten minutes ahead, and it wrote while it was.
        let future = (Clock.unixMilliseconds() + 10 * 60_000) << 16
        try a.localTransaction { () throws(MasqError) in
            a.clock = HybridLogicalClock(last: future)
            let saved = try Store.readClock(a.engine)
            try Store.putMeta(a.engine, RecordFormat.metaClock, bigEndianBytes(saved.seq) + bigEndianBytes(future))
        }
        let before = a.replicaID
        #expect(try a.lock.withLock { () throws(MasqError) in try a.clockIsAheadLocked() })
        // Nothing is repaired without evidence: the write is stamped by the clock as it is.
        try a.put(ns("n"), key: [UInt8]("k"), value: [UInt8]("now"))
        #expect(a.replicaID == before)
        // B refuses it, its wall clock agreeing with A's: that is the evidence. A re-stamps.
        try net.reconcile()
        #expect(a.replicaID != before)
        let info = try #require(try a.recordInfo(ns("n"), key: [UInt8]("k")))
        #expect(HybridLogicalClock.milliseconds(of: info.version.timestamp) <= Clock.unixMilliseconds() + 1_000)
        #expect(try net.store("B").get(ns("n"), key: [UInt8]("k")) == [UInt8]("now"))
        #expect(try !a.repairClockIfNeeded())
        #expect(net.engines["A"]!.problem(with: "B") == nil)
    }

    @Test func futureRecordsAreRestampedByTheRepair() throws {
        let net = try SimulatedNetwork(["A", "B"])
        defer { net.close() }
        let a = net.store("A")
        let future = (Clock.unixMilliseconds() + 10 * 60_000) << 16
        let phantom: UInt64 = 0xfa57
        let record = SyncRecord(
            namespace: "n", key: [UInt8]("fast"),
            header: RecordHeader(
                tombstone: false, version: Version(timestamp: future, replica: phantom), seq: 1, previous: .none),
            value: [UInt8]("v"))
        // As an older version left such a store: the record applied and the clock moved with it.
        _ = try a.applyRemote(
            SyncCommit(origin: phantom, seq: 1, timestamp: future, records: [record]), clockBound: .max)
        try a.localTransaction { () throws(MasqError) in
            a.clock = HybridLogicalClock(last: future)
            let saved = try Store.readClock(a.engine)
            try Store.putMeta(a.engine, RecordFormat.metaClock, bigEndianBytes(saved.seq) + bigEndianBytes(future))
        }
        #expect(try a.repairClockIfNeeded())
        let info = try #require(try a.recordInfo(ns("n"), key: [UInt8]("fast")))
        #expect(info.version.replica == a.replicaID)
        #expect(HybridLogicalClock.milliseconds(of: info.version.timestamp) <= Clock.unixMilliseconds() + 1_000)
        try net.reconcile()
        #expect(try net.store("B").get(ns("n"), key: [UInt8]("fast")) == [UInt8]("v"))
    }

    @Test func snapshotAndShareRecordsFromTheFutureAreRefusedAndNeverMoveTheClock() throws {
        let store = try Fixtures.open("memory")
        defer { try? store.close() }
        let future = (Clock.unixMilliseconds() + 3_650 * 86_400_000) << 16
        let record = SyncRecord(
            namespace: "n", key: [UInt8]("k"),
            header: RecordHeader(
                tombstone: false, version: Version(timestamp: future, replica: 77), seq: 1, previous: .none),
            value: [UInt8]("v"))
        #expect(throws: MasqError.self) { try store.applySnapshotRecords([record]) }
        #expect(try store.get(ns("n"), key: [UInt8]("k")) == nil)
        try store.put(ns("n"), key: [UInt8]("mine"), value: [UInt8]("x"))
        let info = try #require(try store.recordInfo(ns("n"), key: [UInt8]("mine")))
        #expect(HybridLogicalClock.milliseconds(of: info.version.timestamp) <= Clock.unixMilliseconds() + 1_000)
    }

    @Test func aPeerCannotForgeThisReplicasShareOfACounter() throws {
        let store = try Fixtures.open("memory")
        defer { try? store.close() }
        try store.counterAdd(ns("n"), key: [UInt8]("likes"), delta: 3)
        var forged = Counter()
        try forged.add(1_000_000, replica: store.replicaID)  // our share, claimed by someone else
        try forged.add(2, replica: 99)
        let record = SyncRecord(
            namespace: "n", key: [UInt8]("likes"),
            header: RecordHeader(
                tombstone: false, counter: true,
                version: Version(timestamp: Clock.unixMilliseconds() << 16, replica: 99), seq: 1, previous: .none),
            value: forged.encoded)
        try store.applySnapshotRecords([record])
        #expect(try store.counterGet(ns("n"), key: [UInt8]("likes")) == 5)
        try store.counterAdd(ns("n"), key: [UInt8]("likes"), delta: 1)
        #expect(try store.counterGet(ns("n"), key: [UInt8]("likes")) == 6)
        // A share never wraps around.
        try store.counterAdd(ns("n"), key: [UInt8]("big"), delta: .max)
        #expect(throws: MasqError.self) { try store.counterAdd(ns("n"), key: [UInt8]("big"), delta: .max) }
    }

    /// A damaged record is an error, never a wrong value; records lost from
    /// the file fail a full listing instead of shortening it; `repairDamage`
    /// removes what is damaged and a paired device sends it back.
    @Test func damageIsDetectedAndRepairedFromAPairedDevice() throws {
        let net = try SimulatedNetwork(["A", "B"])
        defer { net.close() }
        let a = net.store("A"), app = ns("app")
        for i in 0..<50 { try a.put(app, key: Array("k\(i)".utf8), value: Array("value \(i)".utf8)) }
        try net.reconcile()
        #expect(try a.check().ok)

        // A flipped byte in one stored value.
        let id = try #require(try a.lock.withLock { () throws(MasqError) in try a.existingNamespaceID(app) })
        try a.localTransaction { () throws(MasqError) in
            let key = RecordFormat.recordPrefix(namespaceID: id) + Array("k7".utf8)
            guard var record = try Store.getMeta(a.engine, key) else { throw MasqError(.notFound, "k7") }
            record[record.count - 6] ^= 0x01
            try Store.putMeta(a.engine, key, record)
            // And a record that vanished from the file (the count still says 50).
            try (RecordFormat.recordPrefix(namespaceID: id) + Array("k9".utf8)).withBytes { (k) throws(MasqError) in
                try a.engine.delete(k)
            }
        }
        #expect(throws: MasqError.self) { _ = try a.get(app, key: Array("k7".utf8)) }
        var listed = 0
        #expect(throws: MasqError.self) {
            try a.list(app) { _, _ in
                listed += 1; return true
            }
        }
        #expect(throws: MasqError.self) { _ = try a.getAll(app) }
        let report = try a.check()
        #expect(!report.ok && report.problems.count == 2)

        #expect(try a.repairDamage() == 1)
        #expect(a.wantsSnapshot)
        try net.reconcile()
        #expect(try a.check().ok && !a.wantsSnapshot)
        #expect(try a.get(app, key: Array("k7".utf8)) == Array("value 7".utf8))
        #expect(try a.get(app, key: Array("k9".utf8)) == Array("value 9".utf8))
        #expect(try a.getAll(app).count == 50)
    }

    @Test func replayWindowAcceptsEachNumberOnce() {
        var w = ReplayWindow()
        let accepted = [1, 3, 2, 2, 3, 1, 100, 36, 37, 37, 0].map { w.accept(UInt64($0)) }
        #expect(accepted == [true, true, true, false, false, false, true, false, true, false, false])
    }

    @Test func sessionsRenewWithAHandshakeThatCannotBeReplayed() throws {
        let a = try PairingTests().device("renew-a"), b = try PairingTests().device("renew-b")
        defer { try? a.close(); try? b.close() }
        let (bDevice, aDevice) = try pair(offerer: a, joiner: b, link: try a.createPairingOffer(via: nil))
        let prologue = [UInt8]("test renewal".utf8)

        // A renews; B answers; B speaks first on the new session.
        let (renewal, first) = try a.beginSessionRenewal(with: bDevice.deviceID, prologue: prologue)
        let second = try b.answerSessionRenewal(from: aDevice.deviceID, first, prologue: prologue)
        try a.completeSessionRenewal(renewal, second)
        #expect(!a.canSend(to: bDevice.deviceID) && b.canSend(to: aDevice.deviceID))
        let m1 = try b.seal(for: aDevice.deviceID, [UInt8]("hello"))
        #expect(try a.open(from: bDevice.deviceID, m1) == [UInt8]("hello"))
        let m2 = try a.seal(for: bDevice.deviceID, [UInt8]("back"))
        #expect(try b.open(from: aDevice.deviceID, m2) == [UInt8]("back"))

        // A recorded first message changes nothing when replayed.
        #expect(throws: MasqError.self) {
            try b.answerSessionRenewal(from: aDevice.deviceID, first, prologue: prologue)
        }
        let m3 = try a.seal(for: bDevice.deviceID, [UInt8]("still"))
        #expect(try b.open(from: aDevice.deviceID, m3) == [UInt8]("still"))
        // Another prologue (room, ids) does not verify.
        let (_, other) = try a.beginSessionRenewal(with: bDevice.deviceID, prologue: prologue)
        #expect(throws: MasqError.self) {
            try b.answerSessionRenewal(from: aDevice.deviceID, other, prologue: [UInt8]("elsewhere".utf8))
        }
    }
}
