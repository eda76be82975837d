import Testing
@testable import MasqKernel
import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// Write `data` as a blob, handing it over in pieces of `piece` bytes.
@discardableResult
private func put(_ s: Store, _ name: String, _ key: String, _ data: [UInt8], piece: Int = 300_000) throws -> BlobInfo {
    var offset = 0
    return try s.writeBlob(ns(name), key: [UInt8](key), name: key) { (buffer) throws(MasqError) -> Int in
        let n = min(piece, buffer.count, data.count - offset)
        if n > 0 {
            buffer.copyMemory(
                from: UnsafeRawBufferPointer(rebasing: data.withUnsafeBytes { $0 }[offset..<(offset + n)]))
        }
        offset += n
        return n
    }
}

private func read(_ s: Store, _ name: String, _ key: String, offset: UInt64 = 0, length: UInt64? = nil) throws
    -> [UInt8]
{
    var out: [UInt8] = []
    try s.readBlob(ns(name), key: [UInt8](key), offset: offset, length: length) { out += $0 }
    return out
}

@Suite struct BlobTests {
    @Test(arguments: [0, 1, 1 << 20, (1 << 20) - 1, (1 << 20) + 1, 3_500_000])
    func aBlobReadsBackWholeAndInRanges(size: Int) throws {
        let s = try Fixtures.open("sqlite")
        defer { try? s.close() }
        let data = randomBytes(size, seed: UInt64(size))
        let info = try put(s, "files", "f", data)
        #expect(info.reference.size == UInt64(size) && info.complete && info.newBytes == UInt64(size))
        #expect(info.reference.chunkCount == (size + (1 << 20) - 1) >> 20)
        #expect(try read(s, "files", "f") == data)
        if size > 10 {
            for (o, l) in [(0, 10), (size - 10, 10), (size / 2, size), ((1 << 20) - 3, 7)] where o < size {
                #expect(
                    try read(s, "files", "f", offset: UInt64(o), length: UInt64(l)) == Array(data[o..<min(size, o + l)])
                )
            }
        }
        expectMasqError(.invalid) { _ = try read(s, "files", "f", offset: UInt64(size) + 1) }
        // The key holds a reference: an ordinary value that parses.
        let value = try #require(try s.get(ns("files"), key: [UInt8]("f")))
        #expect(try BlobReference.parse(value) == info.reference)
        #expect(value.count < 120)
    }

    @Test func theSameBytesAreStoredOnceAndCollectedWhenUnreferenced() throws {
        let s = try Fixtures.open("sqlite")
        defer { try? s.close() }
        let data = randomBytes(2_500_000, seed: 7)
        let first = try put(s, "files", "a", data)
        #expect(first.newChunks == 3)
        let second = try put(s, "files", "b", data, piece: 77_777)
        // names differ
        #expect(second.newChunks == 0 && second.newBytes == 0 && second.reference.manifest != first.reference.manifest)
        let third = try put(s, "other", "c", data + [1])  // last chunk differs
        #expect(third.newChunks == 1)
        var report = try s.collectBlobs()
        #expect(report.chunksDeleted == 0 && report.chunksKept == 4)
        try s.delete(ns("files"), key: [UInt8]("a"))
        report = try s.collectBlobs()
        #expect(report.chunksDeleted == 0 && report.manifestsDeleted == 1)  // "b" still uses the chunks
        try s.delete(ns("files"), key: [UInt8]("b"))
        try s.put(ns("other"), key: [UInt8]("c"), value: [UInt8]("now a plain value"))
        report = try s.collectBlobs()
        #expect(report.chunksDeleted == 4 && report.bytesDeleted == 2_500_000 + (2_500_000 - 2 * 1_048_576 + 1))
        #expect(report.chunksKept == 0 && report.manifestsKept == 0)
        expectMasqError(.notFound) { _ = try read(s, "files", "a") }
        expectMasqError(.invalid) { _ = try read(s, "other", "c") }  // an ordinary value
    }

    @Test func aFailingSourceLeavesTheKeyAsItWasAndItsChunksAreCollected() throws {
        let s = try Fixtures.open("sqlite")
        defer { try? s.close() }
        try s.put(ns("files"), key: [UInt8]("k"), value: [UInt8]("old"))
        var sent = 0
        let error = expectMasqError(.io) {
            _ = try s.writeBlob(ns("files"), key: [UInt8]("k")) { (buffer) throws(MasqError) -> Int in
                guard sent < 6_000_000 else { throw MasqError(.io, "the network went away") }
                buffer.initializeMemory(as: UInt8.self, repeating: 9)
                sent += buffer.count
                return buffer.count
            }
        }
        #expect(error?.message.contains("network") == true)
        #expect(try s.get(ns("files"), key: [UInt8]("k")) == [UInt8]("old"))
        let report = try s.collectBlobs()
        #expect(report.chunksDeleted >= 1 && report.chunksKept == 0)
        // A file that cannot be read is a clear error, and nothing changes either.
        expectMasqError(.io) { _ = try s.writeBlob(ns("files"), key: [UInt8]("k"), path: "/nonexistent/file") }
        expectMasqError(.io) { _ = try s.writeBlob(ns("files"), key: [UInt8]("k"), path: "/tmp") }
        #expect(try s.get(ns("files"), key: [UInt8]("k")) == [UInt8]("old"))
    }

    @Test func collectionSparesWritesInProgressAndDefersToOtherProcesses() throws {
        let s = try Fixtures.open("sqlite")
        defer { try? s.close() }
        let writer = try BlobWriter(store: s)
        try writer.append(randomBytes(5 << 20, seed: 3))  // four chunks stored (a batch), nothing referenced yet
        var report = try s.collectBlobs()
        #expect(report.chunksDeleted == 0 && report.chunksKept == 4)
        let info = try writer.finish(ns("files"), key: [UInt8]("w"))
        #expect(info.reference.size == 5 << 20)
        // Another process's write in progress (its pin is fresh): unreferenced chunks wait.
        try s.delete(ns("files"), key: [UInt8]("w"))
        try s.localTransaction { () throws(MasqError) in
            try Store.putMeta(
                s.engine, [BlobFormat.family, BlobFormat.pin] + [UInt8](repeating: 1, count: 16),
                bigEndianBytes(Clock.unixMilliseconds()))
        }
        report = try s.collectBlobs()
        #expect(report.deferred && report.chunksDeleted == 0)
        // A pin whose writer died long ago is removed.
        try s.localTransaction { () throws(MasqError) in
            try Store.putMeta(
                s.engine, [BlobFormat.family, BlobFormat.pin] + [UInt8](repeating: 1, count: 16), bigEndianBytes(1_000))
        }
        report = try s.collectBlobs()
        #expect(!report.deferred && report.chunksDeleted == 5)
    }

    @Test func aDamagedChunkIsAnErrorNotWrongData() throws {
        let s = try Fixtures.open("sqlite")
        defer { try? s.close() }
        let data = randomBytes(1_500_000, seed: 11)
        let info = try put(s, "files", "f", data)
        let manifest = try #require(
            try s.lock.withLock { () throws(MasqError) in try s.loadManifestLocked(info.reference) })
        try s.localTransaction { () throws(MasqError) in
            var damaged = data[0..<(1 << 20)].map { $0 }
            damaged[1000] ^= 1
            try damaged.withBytes { (d) throws(MasqError) in try s.blobPut(.chunk, manifest.hash(0), d) }
        }
        let error = expectMasqError(.corrupt) { _ = try read(s, "files", "f") }
        #expect(error?.message.contains("damaged") == true)
        // The second chunk alone still reads.
        #expect(try read(s, "files", "f", offset: 1 << 20) == Array(data[(1 << 20)...]))
    }

    @Test func referencesAreCheckedBeforeUse() throws {
        let ref = BlobReference(
            manifest: [UInt8](repeating: 7, count: 32), size: 10, chunkSize: 1 << 20, contentType: "text/plain",
            name: "n")
        #expect(try BlobReference.parse(ref.encoded) == ref)
        #expect(try BlobReference.parse([UInt8]("{\"json\": 1}")) == nil)
        var wrongVersion = ref.encoded
        wrongVersion[6] = 2
        expectMasqError(.invalid) { _ = try BlobReference.parse(wrongVersion) }
        expectMasqError(.invalid) { _ = try BlobReference.parse(Array(ref.encoded.dropLast(3))) }
        expectMasqError(.invalid) { _ = try BlobReference.parse(ref.encoded + [0]) }
        var zeroChunk = ref.encoded
        for i in 47...50 { zeroChunk[i] = 0 }  // chunk size 0
        expectMasqError(.invalid) { _ = try BlobReference.parse(zeroChunk) }
    }

    @Test func aProtectedStoreSealsChunksAndHidesTheirHashes() throws {
        let dir = Fixtures.temporaryDirectory("blob-sealed")
        var config = Fixtures.config("sqlite", dataDir: dir)
        config.scryptLogN = 10
        let marker = [UInt8]("MASQ-CLEAR-MARKER-")
        let data = (0..<60_000).flatMap { _ in marker }  // 1.08 MB of a recognizable pattern
        let hash = Hash.sha256(Array(data[0..<(1 << 20)]))
        do {
            let s = try Store(config: config)
            try put(s, "files", "secret", data)
            try s.setPassphrase(old: nil, new: [UInt8]("pw"))  // existing chunks are sealed and moved
            try put(s, "files", "later", Array(data.reversed()))  // new ones are sealed from the start
            #expect(try read(s, "files", "secret") == data)
            try s.close()
        }
        let file =
            try FileSystem.readFile(dir + "/masq.db", limit: 1 << 30)
            + ((try? FileSystem.readFile(dir + "/masq.db-wal", limit: 1 << 30)) ?? [])
        #expect(!contains(file, marker))
        #expect(!contains(file, Array(marker.reversed())))
        #expect(!contains(file, hash))
        // Reopened and unlocked it reads; removing the passphrase moves them back.
        let s = try Store(config: config, passphrase: [UInt8]("pw"))
        defer { try? s.close() }
        #expect(try read(s, "files", "secret") == data)
        #expect(try s.blobInfo(ns("files"), key: [UInt8]("later")).complete)
        try s.setPassphrase(old: [UInt8]("pw"), new: nil)
        #expect(try read(s, "files", "later") == Array(data.reversed()))
        try s.delete(ns("files"), key: [UInt8]("later"))
        #expect(try s.collectBlobs().chunksDeleted == 2)
        #expect(try read(s, "files", "secret") == data)
    }

    private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count else { return false }
        let first = needle[0]
        var i = 0
        while i <= haystack.count - needle.count {
            if haystack[i] == first && Array(haystack[i..<(i + needle.count)]) == needle { return true }
            i += 1
        }
        return false
    }
}

/// Two transfers wired back to back: frames go through a queue that can
/// drop or alter them (as a relay or a broken device could).
private final class TransferLink {
    var queue: [(to: String, from: String, frame: [UInt8])] = []
    var transfers: [String: BlobTransfer] = [:]
    var alter: ((inout [UInt8]) -> Bool)?  // false: drop
    /// The devices each transfer sees present (default: all the others).
    var present: [String]?

    func add(_ name: String, _ store: Store, mode: SyncConfig.BlobMode = .eager) {
        // A save scheduled by the transfer runs after what is queued (an empty frame marks it), as on the service's queue.
        transfers[name] = BlobTransfer(
            store: store, mode: mode, scheduleSave: { [unowned self] in self.queue.append((name, "", [])) }
        ) { [unowned self] frame, device in
            self.queue.append((device, name, frame))
            return true
        }
    }

    func run(limit: Int = 10_000) throws {
        var steps = 0
        while !queue.isEmpty && steps < limit {
            var (to, from, frame) = queue.removeFirst()
            steps += 1
            if frame.isEmpty {
                transfers[to]!.save()
                continue
            }
            if let alter, !alter(&frame) { continue }
            let others = (present ?? transfers.keys.sorted()).filter { $0 != to }
            try transfers[to]!.receive(frame, from: from, devices: others)
        }
    }
}

@Suite struct BlobTransferTests {
    private func pair(_ size: Int, mode: SyncConfig.BlobMode = .eager) throws -> (
        TransferLink, Store, Store, [UInt8], BlobReference
    ) {
        let a = try Fixtures.open("sqlite"), b = try Fixtures.open("sqlite")
        let data = randomBytes(size, seed: UInt64(size) &* 31)
        let info = try put(a, "files", "f", data)
        try b.put(ns("files"), key: [UInt8]("f"), value: info.reference.encoded)  // as sync would bring it
        let link = TransferLink()
        link.add("A", a)
        link.add("B", b, mode: mode)
        return (link, a, b, data, info.reference)
    }

    @Test func aBlobCrossesAndEveryChunkIsChecked() throws {
        let (link, a, b, data, _) = try pair(5_300_000)
        defer { try? a.close(); try? b.close() }
        let progress = Shared<[(UInt64, UInt64)]>([])
        b.blobState.progress = { _, fetched, size in progress.update { $0.append((fetched, size)) } }
        expectMasqError(.unavailable) { _ = try read(b, "files", "f") }
        link.transfers["B"]!.start(filter: NamespaceFilter())
        link.transfers["B"]!.pump(["A"])
        try link.run()
        #expect(try read(b, "files", "f") == data)
        #expect(try b.blobInfo(ns("files"), key: [UInt8]("f")).complete)
        // + the manifest
        #expect(link.transfers["B"]!.counters.chunksReceived == 6 && link.transfers["A"]!.counters.chunksSent == 7)
        #expect(progress.current.last! == (5_300_000, 5_300_000))
        #expect(link.transfers["B"]!.settled(["A"]) && link.transfers["B"]!.status(["A"]).isEmpty)
        #expect(try b.wantedBlobs().isEmpty)
    }

    @Test func aChunkWithTheWrongHashIsRefusedAndAskedAgain() throws {
        let (link, a, b, data, _) = try pair(3_000_000)
        defer { try? a.close(); try? b.close() }
        var tampered = 0
        link.alter = { frame in
            if frame[1] == BlobTransfer.chunkType && frame[2] == 0 && tampered < 2 {
                frame[frame.count - 1] ^= 0x55
                tampered += 1
            }
            return true
        }
        link.transfers["B"]!.start(filter: NamespaceFilter())
        link.transfers["B"]!.pump(["A"])
        try link.run()
        // A was the only device: refused chunks wait for the retry (no loop meanwhile).
        #expect(link.transfers["B"]!.counters.rejected == 2)
        #expect(!(try b.blobInfo(ns("files"), key: [UInt8]("f")).complete))
        let status = link.transfers["B"]!.status(["A"])
        #expect(status.count == 1 && status[0].problem != nil && status[0].since > 0 && status[0].fetched < 3_000_000)
        // A device that greets again is asked again.
        link.transfers["B"]!.deviceReady("A")
        link.transfers["B"]!.pump(["A"])
        try link.run()
        #expect(try read(b, "files", "f") == data)
    }

    @Test func lostChunksAreAskedAgainAndWhatArrivedStays() throws {
        let (link, a, b, data, _) = try pair(6_000_000)
        defer { try? a.close(); try? b.close() }
        var chunks = 0
        link.alter = { frame in
            guard frame[1] == BlobTransfer.chunkType, frame[2] == 0 else { return true }
            chunks += 1
            return chunks != 2  // the second chunk is lost on the way
        }
        link.transfers["B"]!.start(filter: NamespaceFilter())
        link.transfers["B"]!.pump(["A"])
        try link.run()
        #expect(try read(b, "files", "f") == data)
        #expect(link.transfers["B"]!.counters.resent >= 1)
        // Interrupted: a new transfer (a restart) asks only for what is missing.
        let c = try Fixtures.open("sqlite")
        defer { try? c.close() }
        let info = try b.blobInfo(ns("files"), key: [UInt8]("f"))
        try c.put(ns("files"), key: [UInt8]("f"), value: info.reference.encoded)
        let link2 = TransferLink()
        link2.add("A", a)
        link2.add("C", c)
        var delivered = 0
        link2.alter = { frame in
            if frame[1] == BlobTransfer.chunkType && frame[2] == 0 { delivered += 1 }
            return delivered <= 2  // "stop the receiver" after two chunks
        }
        link2.transfers["C"]!.start(filter: NamespaceFilter())
        link2.transfers["C"]!.pump(["A"])
        try link2.run()
        #expect(try c.blobInfo(ns("files"), key: [UInt8]("f")).presentChunks == 2)
        let link3 = TransferLink()
        link3.add("A", a)
        link3.add("C", c)
        link3.transfers["C"]!.start(filter: NamespaceFilter())
        link3.transfers["C"]!.pump(["A"])
        try link3.run()
        #expect(link3.transfers["C"]!.counters.chunksReceived == 4)  // 6 chunks, 2 were here
        #expect(try read(c, "files", "f") == data)
    }

    @Test func aDeviceThatLacksTheBlobSaysSoAndAnotherIsAsked() throws {
        let (link, a, b, data, _) = try pair(2_100_000)
        defer { try? a.close(); try? b.close() }
        let empty = try Fixtures.open("sqlite")
        defer { try? empty.close() }
        link.add("E", empty)
        link.present = ["B", "E"]
        link.transfers["B"]!.start(filter: NamespaceFilter())
        link.transfers["B"]!.pump(["E"])  // asks the device that has nothing
        try link.run()
        #expect(link.transfers["B"]!.counters.lacksReceived == 1)
        #expect(link.transfers["B"]!.settled(["E"]))
        #expect(link.transfers["B"]!.status(["E"]).first?.problem?.contains("no present device") == true)
        link.present = nil
        link.transfers["B"]!.pump(["A", "E"])
        try link.run()
        #expect(try read(b, "files", "f") == data)
    }

    @Test func onDemandFetchesOnlyWhatIsAskedFor() throws {
        let (link, a, b, data, _) = try pair(1_200_000, mode: .onDemand)
        defer { try? a.close(); try? b.close() }
        link.transfers["B"]!.start(filter: NamespaceFilter())
        link.transfers["B"]!.pump(["A"])
        try link.run()
        #expect(link.transfers["B"]!.counters.chunksReceived == 0)
        let info = try b.blobInfo(ns("files"), key: [UInt8]("f"))
        #expect(!info.complete && !info.manifestPresent && info.reference.size == 1_200_000)
        // Reading starts the fetch.
        let error = expectMasqError(.unavailable) { _ = try read(b, "files", "f") }
        #expect(error?.message.contains("not on this device") == true)
        link.transfers["B"]!.tick(["A"])
        try link.run()
        #expect(try read(b, "files", "f") == data)
    }

    @Test func malformedFramesAreRefused() throws {
        let (link, a, b, _, _) = try pair(10)
        defer { try? a.close(); try? b.close() }
        let t = link.transfers["A"]!
        for frame: [UInt8] in [
            [1, 8], [1, 8, 0, 2, 0], [1, 8, 0xFF, 0xFF], [1, 9, 0], [1, 9, 2] + [UInt8](repeating: 0, count: 40),
            [1, 11, 0, 0]
        ] {
            expectMasqError(.invalid) { try t.receive(frame, from: "B", devices: ["B"]) }
        }
        // An unasked chunk is counted and dropped.
        try link.transfers["B"]!.receive(
            [1, 9, 0] + [UInt8](repeating: 3, count: 32) + [1, 2, 3], from: "A", devices: ["A"])
        #expect(link.transfers["B"]!.counters.rejected == 1)
    }
}

@Suite struct SelectiveSyncTests {
    @Test func aFilteredDeviceGetsOnlyItsNamespacesAndRelaysNothingPartial() throws {
        let net = try SimulatedNetwork(["A", "P", "D"])
        defer { net.close() }
        let phone = NamespaceFilter(include: ["notes", "app:*"], exclude: ["app:cache"])
        net.engines["P"]!.filter = phone
        let a = net.store("A")
        try a.put(ns("notes"), key: [UInt8]("n"), value: [UInt8]("note"))
        try a.put(ns("photos"), key: [UInt8]("p"), value: [UInt8]("big photo"))
        try a.put(ns("app:x"), key: [UInt8]("k"), value: [UInt8]("kept"))
        try a.put(ns("app:cache"), key: [UInt8]("k"), value: [UInt8]("left out"))
        try a.setAll(ns("photos"), [([UInt8]("q"), [UInt8]("photo")), ([UInt8]("r"), nil)])
        try net.connect("A", "P")
        try net.settle()
        let p = net.store("P")
        #expect(try p.get(ns("notes"), key: [UInt8]("n")) == [UInt8]("note"))
        #expect(try p.get(ns("app:x"), key: [UInt8]("k")) == [UInt8]("kept"))
        #expect(try p.get(ns("photos"), key: [UInt8]("p")) == nil)
        #expect(try p.get(ns("app:cache"), key: [UInt8]("k")) == nil)
        // Every commit was applied and acknowledged, so nothing is resent and A can collect.
        #expect(try p.syncVectors().applied[a.replicaID] == 5)
        #expect(try a.acknowledgement(of: "P")?.vector[a.replicaID] == 5)
        #expect(try net.engines["A"]!.status().first { $0.device == "P" }?.theyLack == 0)
        // The phone meets D without A: it hands over only its own commits, never A's partial ones.
        try p.put(ns("notes"), key: [UInt8]("from-phone"), value: [UInt8]("hi"))
        net.disconnect("A", "P")
        try net.connect("P", "D")
        try net.settle()
        let d = net.store("D")
        #expect(try d.get(ns("notes"), key: [UInt8]("from-phone")) == [UInt8]("hi"))
        #expect(try d.get(ns("notes"), key: [UInt8]("n")) == nil)
        #expect(try d.syncVectors().applied[a.replicaID] == 0)
        // D does not wait for what P will not send
        #expect(try net.engines["D"]!.status().first { $0.device == "P" }?.weLack == 0)
        // D meets A: everything, whole.
        try net.connect("A", "D")
        try net.settle()
        #expect(try d.get(ns("photos"), key: [UInt8]("q")) == [UInt8]("photo"))
        #expect(try d.get(ns("notes"), key: [UInt8]("n")) == [UInt8]("note"))
        #expect(try d.get(ns("app:cache"), key: [UInt8]("k")) == [UInt8]("left out"))
        // The phone widens its filter: it asks for a whole copy and gets the rest.
        net.engines["P"]!.filter = NamespaceFilter()
        try p.noteSyncFilter(phone)
        try p.noteSyncFilter(NamespaceFilter())
        #expect(p.wantsSnapshot)
        try net.connect("D", "P")
        try net.settle()
        #expect(try p.get(ns("photos"), key: [UInt8]("q")) == [UInt8]("photo"))
        #expect(try p.get(ns("app:cache"), key: [UInt8]("k")) == [UInt8]("left out"))
        #expect(try net.state("P") == net.state("D"))
    }

    @Test func aFilterTravelsInHello() throws {
        let filter = NamespaceFilter(include: ["a", "b*"], exclude: ["bx"])
        let frame = SyncFrame.hello(
            replica: 9, applied: VersionVector([9: 1]), collected: VersionVector(), tips: [:], filter: filter)
        #expect(try SyncFrame.decode(frame.encoded()) == frame)
        let all = SyncFrame.hello(
            replica: 9, applied: VersionVector(), collected: VersionVector(), tips: [:], wantsSnapshot: true)
        #expect(try SyncFrame.decode(all.encoded()) == all)
        #expect(
            filter.keeps("a") && filter.keeps("bcd") && !filter.keeps("bx") && !filter.keeps("c") && !filter.keeps("ab")
        )
        #expect(
            NamespaceFilter(exclude: ["photos"]).keeps("notes") && !NamespaceFilter(exclude: ["photos"]).keeps("photos")
        )
    }

    @Test func theConfigNamesWhatIsKept() throws {
        let config = try MasqConfig.parse(
            #"{"sync": {"namespaces": ["notes", "app:*"], "exclude": ["app:cache"], "blobs": "on_demand"}}"#,
            baseDir: "/tmp")
        #expect(config.sync.filter == NamespaceFilter(include: ["notes", "app:*"], exclude: ["app:cache"]))
        #expect(config.sync.blobs == .onDemand)
        #expect(try MasqConfig.parse(config.json(), baseDir: "/tmp").sync == config.sync)
        for bad in [
            #"{"sync": {"namespaces": []}}"#, #"{"sync": {"blobs": "lazy"}}"#, #"{"sync": {"nope": 1}}"#,
            #"{"sync": {"exclude": [""]}}"#
        ] {
            expectMasqError(.config) { _ = try MasqConfig.parse(bad, baseDir: "/tmp") }
        }
    }
}
