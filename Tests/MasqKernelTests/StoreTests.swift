import Testing
@testable import MasqKernel
#if canImport(Glibc)
    import Glibc
#endif

/// The store's semantics, identical on every storage plugin.
@Suite struct StoreTests {
    static let plugins = ["sqlite", "memory"]

    @Test(arguments: plugins)
    func putGetDeleteRoundTrip(_ plugin: String) throws {
        let store = try Fixtures.open(plugin)
        defer { try? store.close() }
        let app = try ns("notes")
        #expect(try store.get(app, key: [UInt8]("k")) == nil)
        try store.put(app, key: [UInt8]("k"), value: [UInt8]("v1"))
        try store.put(app, key: [UInt8]("k"), value: [UInt8]("v2"))
        try store.put(app, key: [UInt8]("empty"), value: [])
        #expect(try store.get(app, key: [UInt8]("k")) == [UInt8]("v2"))
        #expect(try store.get(app, key: [UInt8]("empty")) == [])
        try store.delete(app, key: [UInt8]("k"))
        #expect(try store.get(app, key: [UInt8]("k")) == nil)
        try store.delete(app, key: [UInt8]("k"))  // already deleted: fine
        try store.delete(app, key: [UInt8]("never"))  // absent: fine
        try store.put(app, key: [UInt8]("k"), value: [UInt8]("back"))
        #expect(try store.get(app, key: [UInt8]("k")) == [UInt8]("back"))
    }

    @Test(arguments: plugins)
    func namespacesAreIsolated(_ plugin: String) throws {
        let store = try Fixtures.open(plugin)
        defer { try? store.close() }
        try store.put(ns("a"), key: [UInt8]("k"), value: [UInt8]("in a"))
        try store.put(ns("ab"), key: [UInt8]("k"), value: [UInt8]("in ab"))
        try store.put(ns("b"), key: [UInt8]("k"), value: [UInt8]("in b"))
        #expect(try store.get(ns("a"), key: [UInt8]("k")) == [UInt8]("in a"))
        #expect(try store.getAll(ns("ab")).map { $0.value } == [[UInt8]("in ab")])
        try store.clear(ns("a"))
        #expect(try store.get(ns("a"), key: [UInt8]("k")) == nil)
        #expect(try store.get(ns("ab"), key: [UInt8]("k")) == [UInt8]("in ab"))
        #expect(try store.namespaces() == ["ab", "b"])
        #expect(try store.get(ns("zzz"), key: [UInt8]("k")) == nil)
        #expect(try store.getAll(ns("zzz")).isEmpty)
    }

    @Test(arguments: plugins)
    func listByPrefixInOrderAcrossChunks(_ plugin: String) throws {
        let store = try Fixtures.open(plugin)
        defer { try? store.close() }
        let app = try ns("app")
        let count = Store.listChunk * 2 + 17
        var entries: [(key: [UInt8], value: [UInt8]?)] = []
        for i in 0..<count { entries.append(([UInt8]("item/\(String(i + 100_000))"), [UInt8]("v\(i)"))) }
        entries.append(([UInt8]("other"), [UInt8]("x")))
        entries.append(([UInt8]("item"), [UInt8]("exact prefix")))
        try store.setAll(app, entries.shuffled())
        // Tombstones in the middle of the range are skipped.
        for i in stride(from: 0, to: count, by: 3) {
            try store.delete(app, key: [UInt8]("item/\(String(i + 100_000))"))
        }

        var seen: [[UInt8]] = []
        try store.list(app, prefix: [UInt8]("item/")) { key, value in
            #expect(value != nil)
            seen.append(key)
            return true
        }
        let expected = (0..<count).filter { $0 % 3 != 0 }.map { [UInt8]("item/\(String($0 + 100_000))") }
        #expect(seen == expected)

        var keysOnly = 0
        try store.list(app, keysOnly: true) { _, value in
            #expect(value == nil)
            keysOnly += 1
            return true
        }
        #expect(keysOnly == expected.count + 2)

        var stopped = 0
        try store.list(app) { _, _ in
            stopped += 1; return stopped < 5
        }
        #expect(stopped == 5)
    }

    @Test(arguments: plugins)
    func listToleratesWritesFromTheCallback(_ plugin: String) throws {
        let store = try Fixtures.open(plugin)
        defer { try? store.close() }
        let app = try ns("app")
        try store.setAll(app, (0..<600).map { ([UInt8]("k\(String($0 + 1000))"), [UInt8]("v")) })
        var visited = 0
        try store.list(app) { (key, _) throws(MasqError) in
            visited += 1
            try store.delete(app, key: key)
            return true
        }
        #expect(visited == 600)
        #expect(try store.getAll(app).isEmpty)
    }

    @Test(arguments: plugins)
    func setAllIsOneTransactionAndReplaceKeepsOnlyTheEntries(_ plugin: String) throws {
        let store = try Fixtures.open(plugin)
        defer { try? store.close() }
        let app = try ns("app")
        try store.setAll(
            app, [([UInt8]("a"), [UInt8]("1")), ([UInt8]("b"), [UInt8]("2")), ([UInt8]("c"), [UInt8]("3"))])
        let seqBefore = try store.versionVector()[store.replicaID]!
        try store.setAll(app, [([UInt8]("b"), [UInt8]("two")), ([UInt8]("d"), [UInt8]("4")), ([UInt8]("a"), nil)])
        #expect(try store.versionVector()[store.replicaID]! == seqBefore + 1)  // one commit
        #expect(try store.getAll(app).map { String(decoding: $0.key, as: UTF8.self) } == ["b", "c", "d"])
        try store.setAll(app, [([UInt8]("c"), [UInt8]("only"))], replace: true)
        #expect(try store.getAll(app).map { $0.value } == [[UInt8]("only")])
        // A key given twice: the last one wins; logged once.
        try store.setAll(app, [([UInt8]("x"), [UInt8]("first")), ([UInt8]("x"), [UInt8]("second"))])
        #expect(try store.get(app, key: [UInt8]("x")) == [UInt8]("second"))
        let seq = try store.versionVector()[store.replicaID]!
        #expect(try store.changeLog(replica: store.replicaID, seq: seq)?.count == 1)
        #expect(try store.recordInfo(app, key: [UInt8]("x"))?.previous == Version.none)
    }

    @Test(arguments: plugins)
    func anInvalidEntryFailsTheWholeBatch(_ plugin: String) throws {
        var limits = Limits()
        limits.maxValueBytes = 8
        let store = try Fixtures.open(plugin, limits: limits)
        defer { try? store.close() }
        let app = try ns("app")
        try store.put(app, key: [UInt8]("keep"), value: [UInt8]("old"))
        let e = expectMasqError(.tooLarge) {
            try store.setAll(
                app, [([UInt8]("keep"), [UInt8]("new")), ([UInt8]("big"), [UInt8](repeating: 1, count: 9))])
        }
        #expect(e?.message.hasPrefix("entry 1:") == true)
        expectMasqError(.invalid) { try store.setAll(app, [([UInt8]("ok"), [UInt8]("v")), ([], [UInt8]("v"))]) }
        #expect(try store.get(app, key: [UInt8]("keep")) == [UInt8]("old"))
        #expect(try store.get(app, key: [UInt8]("ok")) == nil)
    }

    @Test(arguments: plugins)
    func limitsAreEnforcedAndNothingIsWritten(_ plugin: String) throws {
        var limits = Limits()
        limits.maxKeyBytes = 4
        limits.maxValueBytes = 4
        limits.maxNamespaceBytes = 5
        limits.maxBatchEntries = 2
        let store = try Fixtures.open(plugin, limits: limits)
        defer { try? store.close() }
        let app = try NamespaceName("app", limits: limits)
        expectMasqError(.tooLarge) { try store.put(app, key: [UInt8]("12345"), value: []) }
        expectMasqError(.tooLarge) { try store.put(app, key: [UInt8]("k"), value: [UInt8]("12345")) }
        expectMasqError(.invalid) { try store.put(app, key: [], value: []) }
        expectMasqError(.tooLarge) { _ = try NamespaceName("toolong", limits: limits) }
        expectMasqError(.tooLarge) { try store.setAll(app, [([1], [1]), ([2], [2]), ([3], [3])]) }
        try store.put(app, key: [UInt8]("1234"), value: [UInt8]("1234"))
        try store.setAll(app, [([1], [1]), ([2], [2])])
        // get_all refuses more than max_batch_entries: listing is the way.
        expectMasqError(.tooLarge) { _ = try store.getAll(app) }
        #expect(try store.get(app, key: [UInt8]("1234")) == [UInt8]("1234"))
    }

    @Test func namespaceValidation() {
        expectMasqError(.invalid) { _ = try NamespaceName(utf8: [], limits: Limits()) }
        expectMasqError(.invalid) { _ = try NamespaceName(utf8: [0xFF, 0xFE], limits: Limits()) }
        expectMasqError(.invalid) { _ = try NamespaceName(utf8: [0x61, 0x0A], limits: Limits()) }
        expectMasqError(.invalid) { _ = try NamespaceName(utf8: [0xC3], limits: Limits()) }  // truncated sequence
        #expect(throws: Never.self) { _ = try NamespaceName("carnet de notes ✎", limits: Limits()) }
    }

    @Test(arguments: plugins)
    func everyWriteCarriesSyncMetadata(_ plugin: String) throws {
        let store = try Fixtures.open(plugin)
        defer { try? store.close() }
        let app = try ns("app")
        let start = try store.versionVector()[store.replicaID]!
        try store.put(app, key: [UInt8]("k"), value: [UInt8]("1"))
        let first = try #require(try store.recordInfo(app, key: [UInt8]("k")))
        #expect(first.version.replica == store.replicaID)
        #expect(first.seq == start + 1)
        #expect(first.previous == .none)
        #expect(!first.deleted)
        let wall = Clock.unixMilliseconds()
        #expect(HybridLogicalClock.milliseconds(of: first.version.timestamp) <= wall)
        #expect(HybridLogicalClock.milliseconds(of: first.version.timestamp) + 5_000 > wall)

        try store.put(app, key: [UInt8]("k"), value: [UInt8]("2"))
        let second = try #require(try store.recordInfo(app, key: [UInt8]("k")))
        #expect(second.version > first.version)
        #expect(second.previous == first.version)
        #expect(second.seq == start + 2)

        try store.delete(app, key: [UInt8]("k"))
        let tombstone = try #require(try store.recordInfo(app, key: [UInt8]("k")))
        #expect(tombstone.deleted)
        #expect(tombstone.previous == second.version)

        // The change log names what each commit wrote, per replica and seq.
        for seq in (start + 1)...(start + 3) {
            let entry = try #require(try store.changeLog(replica: store.replicaID, seq: seq))
            #expect(entry.count == 1 && entry[0].namespace == "app" && entry[0].key == [UInt8]("k"))
        }
        #expect(try store.changeLog(replica: store.replicaID, seq: start + 4) == nil)
        // A delete of an absent key is not a commit.
        try store.delete(app, key: [UInt8]("absent"))
        #expect(try store.versionVector()[store.replicaID] == start + 3)
    }

    @Test func dataAndReplicaSurviveReopen() throws {
        let dir = Fixtures.temporaryDirectory("reopen")
        let first = try Fixtures.open("sqlite", dataDir: dir)
        let replica = first.replicaID
        try first.put(ns("app"), key: [UInt8]("k"), value: [UInt8]("persisted"))
        let info = try first.recordInfo(ns("app"), key: [UInt8]("k"))
        try first.close()
        let second = try Fixtures.open("sqlite", dataDir: dir)
        defer { try? second.close() }
        #expect(second.replicaID == replica)
        #expect(try second.get(ns("app"), key: [UInt8]("k")) == [UInt8]("persisted"))
        try second.put(ns("app"), key: [UInt8]("k"), value: [UInt8]("again"))
        let after = try #require(try second.recordInfo(ns("app"), key: [UInt8]("k")))
        #expect(after.version > info!.version)  // the clock resumed past the old write
        #expect(after.seq == info!.seq + 1)
    }

    /// The SQLite plugin keeps long values in a table of their own (plugins/storage-sqlite):
    /// every operation must see one ordered key space whatever the value's length.
    @Test func longAndShortValuesShareOneKeySpace() throws {
        let dir = Fixtures.temporaryDirectory("long")
        var store = try Fixtures.open("sqlite", dataDir: dir)
        let app = try ns("app")
        let long = randomBytes(1 << 20, seed: 7), medium = randomBytes(513, seed: 8), short = [UInt8]("s")
        try store.put(app, key: [UInt8]("a"), value: short)
        try store.put(app, key: [UInt8]("b"), value: long)
        try store.put(app, key: [UInt8]("c"), value: medium)
        try store.put(app, key: [UInt8]("d"), value: randomBytes(512, seed: 9))
        #expect(try store.get(app, key: [UInt8]("b")) == long)
        #expect(try store.getAll(app).map { $0.key } == ["a", "b", "c", "d"].map { [UInt8]($0) })
        #expect(try store.getAll(app).map { $0.value.count } == [1, 1 << 20, 513, 512])
        try store.put(app, key: [UInt8]("b"), value: short)  // long -> short
        try store.put(app, key: [UInt8]("a"), value: long)  // short -> long
        try store.put(app, key: [UInt8]("c"), value: randomBytes(2_000, seed: 10))  // long -> long
        #expect(try store.get(app, key: [UInt8]("a")) == long)
        #expect(try store.get(app, key: [UInt8]("b")) == short)
        #expect(try store.get(app, key: [UInt8]("c")) == randomBytes(2_000, seed: 10))
        try store.delete(app, key: [UInt8]("a"))
        #expect(try store.get(app, key: [UInt8]("a")) == nil)
        try store.close()
        store = try Fixtures.open("sqlite", dataDir: dir)
        defer { try? store.close() }
        #expect(try store.getAll(app).map { $0.value.count } == [1, 2_000, 512])
        try store.clear(app)
        #expect(try store.getAll(app).isEmpty)
        try store.put(app, key: [UInt8]("e"), value: long)
        #expect(try store.get(app, key: [UInt8]("e")) == long)
    }

    @Test func twoHandlesOnOneFileKeepSequenceNumbersDense() throws {
        let dir = Fixtures.temporaryDirectory("shared")
        let a = try Fixtures.open("sqlite", dataDir: dir)
        let b = try Fixtures.open("sqlite", dataDir: dir)
        defer { try? a.close(); try? b.close() }
        #expect(a.replicaID == b.replicaID)
        for i in 0..<20 {
            try (i % 2 == 0 ? a : b).put(ns("app"), key: [UInt8]("k\(i)"), value: [UInt8]("v"))
        }
        let seq = try a.versionVector()[a.replicaID]!
        #expect(seq == 20)
        for s in 1...seq { #expect(try a.changeLog(replica: a.replicaID, seq: s) != nil) }
        #expect(try b.getAll(ns("app")).count == 20)
    }

    @Test(arguments: plugins)
    func watchDeliversCommittedChangesInOrder(_ plugin: String) throws {
        let store = try Fixtures.open(plugin)
        let app = try ns("app")
        try store.put(app, key: [UInt8]("before"), value: [UInt8]("not seen"))
        let seen = Shared<[Change]>([])
        let prefixed = Shared<[String]>([])
        let id = try store.watch(namespace: app) { change in seen.update { $0.append(change) } }
        let other = try store.watch(namespace: nil, prefix: [UInt8]("p/")) { change in
            prefixed.update { $0.append(change.namespace + ":" + String(decoding: change.key, as: UTF8.self)) }
        }
        try store.put(app, key: [UInt8]("k"), value: [UInt8]("v"))
        try store.setAll(app, [([UInt8]("p/1"), [UInt8]("x")), ([UInt8]("k"), nil)])
        try store.put(ns("elsewhere"), key: [UInt8]("p/2"), value: [UInt8]("y"))
        // Unwatch drops what is still queued, so let the three arrive first.
        #expect(waitUntil { seen.current.count == 3 })
        try store.unwatch(id)
        try store.put(app, key: [UInt8]("after"), value: [UInt8]("not seen"))
        try store.close()  // drains the queue
        let changes = seen.current
        try #require(changes.count == 3)
        #expect(changes.map { $0.kind } == [.put, .put, .delete])
        #expect(changes.map { String(decoding: $0.key, as: UTF8.self) } == ["k", "p/1", "k"])
        #expect(
            changes.allSatisfy { $0.origin == .local && $0.namespace == "app" && $0.version.replica == store.replicaID }
        )
        #expect(changes[0].value == [UInt8]("v") && changes[2].value == nil)
        #expect(changes[0].version < changes[1].version)
        #expect(prefixed.current == ["app:p/1", "elsewhere:p/2", "app:after"].filter { $0.contains("p/") })
        expectMasqError(.notFound) { try store.unwatch(other + 100) }
    }

    @Test func watchCallbacksMayCallBackIntoTheStore() throws {
        let store = try Fixtures.open("sqlite")
        let app = try ns("app")
        let echoes = Shared(0)
        _ = try store.watch(namespace: app, prefix: [UInt8]("in/")) { change in
            // Runs on the watch thread, with no lock held: reads and writes work.
            let value = try? store.get(app, key: change.key)
            try? store.put(app, key: [UInt8]("out/") + change.key, value: value ?? [])
            echoes.update { $0 += 1 }
        }
        for i in 0..<10 { try store.put(app, key: [UInt8]("in/\(i)"), value: [UInt8]("\(i)")) }
        #expect(waitUntil { echoes.current == 10 })
        #expect(try store.get(app, key: [UInt8]("out/in/7")) == [UInt8]("7"))
        try store.close()
    }

    @Test func closedStoreRefusesCalls() throws {
        let store = try Fixtures.open("memory")
        try store.close()
        try store.close()  // idempotent
        expectMasqError(.closed) { try store.put(ns("a"), key: [1], value: [1]) }
        expectMasqError(.closed) { _ = try store.get(ns("a"), key: [1]) }
        expectMasqError(.closed) { _ = try store.watch(namespace: nil) { _ in } }
    }

    @Test func concurrentWritersAllLand() async throws {
        let store = try Fixtures.open("sqlite")
        defer { try? store.close() }
        await withTaskGroup(of: Void.self) { group in
            for t in 0..<4 {
                group.addTask {
                    for i in 0..<50 { try? store.put(ns("app"), key: [UInt8]("t\(t)-\(i)"), value: [UInt8(t)]) }
                }
            }
        }
        #expect(try store.getAll(ns("app")).count == 200)
        #expect(try store.versionVector()[store.replicaID] == 200)
    }
}

/// Problems in stored data or engine options are reported, never trusted.
@Suite struct StorageErrorTests {
    @Test func aFileThatIsNotADatabaseIsCorruptAndUntouched() throws {
        let dir = Fixtures.temporaryDirectory("corrupt")
        let garbage = [UInt8](repeating: 0x42, count: 8192)
        try FileSystem.writeFile(dir + "/masq.db", garbage)
        let e = expectMasqError(.corrupt) { _ = try Fixtures.open("sqlite", dataDir: dir) }
        #expect(e?.message.contains("storage:sqlite") == true)
        #expect(try FileSystem.readFile(dir + "/masq.db") == garbage)
    }

    @Test func unknownPluginOptionsAreConfigErrors() {
        let e = expectMasqError(.config) {
            _ = try Store(config: Fixtures.config("sqlite", options: [("synchronus", "full")]))
        }
        #expect(e?.message.contains("synchronus") == true)
        expectMasqError(.config) {
            _ = try Store(config: Fixtures.config("sqlite", options: [("synchronous", "sometimes")]))
        }
        expectMasqError(.config) { _ = try Store(config: Fixtures.config("memory", options: [("max_bytes", "-1")])) }
    }

    @Test func theMemoryPluginReportsAFullStoreAndRollsBack() throws {
        let store = try Store(config: Fixtures.config("memory", options: [("max_bytes", "2000")]))
        defer { try? store.close() }
        let app = try ns("app")
        try store.put(app, key: [UInt8]("small"), value: [UInt8]("fits"))
        let e = expectMasqError(.io) {
            try store.put(app, key: [UInt8]("big"), value: [UInt8](repeating: 0, count: 4000))
        }
        #expect(e?.message.contains("max_bytes") == true)
        #expect(try store.get(app, key: [UInt8]("small")) == [UInt8]("fits"))
        #expect(try store.get(app, key: [UInt8]("big")) == nil)
        try store.put(app, key: [UInt8]("after"), value: [UInt8]("still works"))
    }

    @Test func unknownStoreFormatIsRefused() throws {
        let dir = Fixtures.temporaryDirectory("format")
        let store = try Fixtures.open("sqlite", dataDir: dir)
        try store.engine.begin()
        try [UInt8](RecordFormat.metaFormat).withBytes { (k) throws(MasqError) in
            try [UInt8]([9]).withBytes { (v) throws(MasqError) in try store.engine.put(k, v) }
        }
        try store.engine.commit()
        try store.close()
        let e = expectMasqError(.corrupt) { _ = try Fixtures.open("sqlite", dataDir: dir) }
        #expect(e?.message.contains("format 9") == true)
    }
}
