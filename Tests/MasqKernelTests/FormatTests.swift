import Testing
@testable import MasqKernel
import CMasq

@Suite struct ClockTests {
    @Test func ticksIncreaseStrictlyAndFollowWallTime() {
        var clock = HybridLogicalClock()
        let a = clock.tick(nowMilliseconds: 1_000)
        let b = clock.tick(nowMilliseconds: 1_000)
        let c = clock.tick(nowMilliseconds: 999)  // wall clock stepped back
        let d = clock.tick(nowMilliseconds: 2_000)
        #expect(a < b && b < c && c < d)
        #expect(HybridLogicalClock.milliseconds(of: a) == 1_000)
        #expect(HybridLogicalClock.counter(of: b) == 1)
        #expect(HybridLogicalClock.milliseconds(of: d) == 2_000 && HybridLogicalClock.counter(of: d) == 0)
    }

    @Test func observedRemoteTimestampsAreExceeded() {
        var clock = HybridLogicalClock()
        let remote = (UInt64(5_000) << 16) | 7
        clock.observe(remote)
        #expect(clock.tick(nowMilliseconds: 1_000) == remote + 1)
    }

    @Test func counterOverflowCarriesIntoMilliseconds() {
        var clock = HybridLogicalClock(last: (UInt64(10) << 16) | 0xFFFF)
        let next = clock.tick(nowMilliseconds: 10)
        #expect(HybridLogicalClock.milliseconds(of: next) == 11)
        #expect(HybridLogicalClock.counter(of: next) == 0)
    }
}

@Suite struct RecordFormatTests {
    @Test(arguments: [
        RecordHeader(tombstone: false, version: Version(timestamp: 1 << 40, replica: 9), seq: 1, previous: .none),
        RecordHeader(
            tombstone: true, version: Version(timestamp: 77, replica: 9), seq: 300,
            previous: Version(timestamp: 5, replica: 9)),
        RecordHeader(
            tombstone: false, version: Version(timestamp: .max, replica: .max), seq: .max,
            previous: Version(timestamp: 3, replica: 4))
    ])
    func headerRoundTrips(_ header: RecordHeader) throws {
        var buffer = [UInt8](repeating: 0xAA, count: RecordHeader.maxSize + RecordHeader.trailer + 3)
        let written = buffer.withUnsafeMutableBytes { header.write(to: $0) }
        #expect(written == header.size)
        let decoded = try buffer.withUnsafeBytes {
            try RecordHeader.read(unchecked: UnsafeRawBufferPointer(rebasing: $0[0..<(written + RecordHeader.trailer)]))
        }
        #expect(decoded == header)
    }

    /// Every record carries a CRC-32 of its key, header and value: a flipped
    /// byte anywhere, or the record moved under another key, is an error.
    @Test func recordsCarryAChecksumOfKeyHeaderAndValue() throws {
        let header = RecordHeader(
            tombstone: false, version: Version(timestamp: 1 << 40, replica: 9), seq: 1, previous: .none)
        let key = [UInt8]("R\u{1}k".utf8), value = [UInt8]("value")
        var record = [UInt8](repeating: 0, count: header.size + value.count + RecordHeader.trailer)
        record.withUnsafeMutableBytes { r in
            let offset = header.write(to: r)
            UnsafeMutableRawBufferPointer(rebasing: r[offset..<(offset + value.count)]).copyBytes(from: value)
            key.withUnsafeBytes { RecordHeader.seal(r, key: $0) }
        }
        let read = try record.withUnsafeBytes { r in try key.withUnsafeBytes { try RecordHeader.read(r, key: $0) } }
        #expect(read == header && read.checksummed)
        #expect(record.withUnsafeBytes { Array(RecordHeader.value(in: $0, header: read)) } == value)
        for i in record.indices {
            var damaged = record
            damaged[i] ^= 0x20
            expectMasqError(.corrupt) {
                _ = try damaged.withUnsafeBytes { r in try key.withUnsafeBytes { try RecordHeader.read(r, key: $0) } }
            }
        }
        expectMasqError(.corrupt) {
            _ = try record.withUnsafeBytes { r in
                try [UInt8]("R\u{1}x".utf8).withUnsafeBytes { try RecordHeader.read(r, key: $0) }
            }
        }
    }

    @Test func freshKeysPayASmallHeader() {
        let header = RecordHeader(
            tombstone: false, version: Version(timestamp: 1, replica: 2), seq: 100, previous: .none)
        #expect(header.size == 19)
    }

    @Test(arguments: [[UInt8](), [2], [1], [1, 0x80], [1, 0, 1, 2, 3], [1, 2] + [UInt8](repeating: 0, count: 16)])
    func malformedHeadersAreRejected(_ bytes: [UInt8]) {
        expectMasqError(.corrupt) { _ = try bytes.withUnsafeBytes { try RecordHeader.read(unchecked: $0) } }
    }

    @Test func logEntriesRoundTripAndRejectGarbage() throws {
        var writer = LogEntryWriter()
        [UInt8]("alpha").withUnsafeBytes { writer.append(namespaceID: 1, key: $0) }
        [UInt8](repeating: 7, count: 300).withUnsafeBytes { writer.append(namespaceID: 70_000, key: $0) }
        let encoded = writer.encoded()
        let decoded = try encoded.withUnsafeBytes { try LogEntryWriter.decode($0) }
        #expect(decoded.count == 2)
        #expect(decoded[0].namespaceID == 1 && decoded[0].key == [UInt8]("alpha"))
        #expect(decoded[1].namespaceID == 70_000 && decoded[1].key.count == 300)
        // Every truncation and a trailing byte are errors, never crashes.
        for cut in 0..<encoded.count {
            expectMasqError(.corrupt) {
                _ = try Array(encoded[0..<cut]).withUnsafeBytes { try LogEntryWriter.decode($0) }
            }
        }
        expectMasqError(.corrupt) { _ = try (encoded + [0]).withUnsafeBytes { try LogEntryWriter.decode($0) } }
        expectMasqError(.corrupt) {
            _ = try ([1] + [UInt8](repeating: 0, count: 8) + [0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).withUnsafeBytes {
                try LogEntryWriter.decode($0)
            }
        }
    }

    @Test func varintsRejectOverlongEncodings() throws {
        let overlong = [UInt8](repeating: 0xFF, count: 11)
        expectMasqError(.corrupt) {
            _ = try overlong.withUnsafeBytes {
                var r = ByteReader($0); return try r.varint()
            }
        }
        let tooBig: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02]
        expectMasqError(.corrupt) {
            _ = try tooBig.withUnsafeBytes {
                var r = ByteReader($0); return try r.varint()
            }
        }
        let max: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
        #expect(
            try max.withUnsafeBytes {
                var r = ByteReader($0); return try r.varint()
            } == UInt64.max)
    }

    @Test func prefixSuccessor() {
        #expect(RecordFormat.successor(ofPrefix: [1, 2, 3]) == [1, 2, 4])
        #expect(RecordFormat.successor(ofPrefix: [1, 0xFF, 0xFF]) == [2])
        #expect(RecordFormat.successor(ofPrefix: [0xFF]) == nil)
    }
}

/// The Swift mirror of the headers' constants must never drift from them.
@Suite struct HeaderConstantTests {
    @Test func statusCodesMatchTheHeader() {
        let header: [(Int32, MasqStatus)] = [
            (MASQ_OK, .ok), (MASQ_E_INVALID, .invalid), (MASQ_E_NOT_FOUND, .notFound), (MASQ_E_TOO_LARGE, .tooLarge),
            (MASQ_E_CONFIG, .config), (MASQ_E_PLUGIN, .plugin), (MASQ_E_ABI, .abi), (MASQ_E_IO, .io),
            (MASQ_E_CORRUPT, .corrupt), (MASQ_E_CLOSED, .closed), (MASQ_E_BUSY, .busy), (MASQ_E_NOMEM, .noMemory),
            (MASQ_E_UNSUPPORTED, .unsupported), (MASQ_E_DENIED, .denied), (MASQ_E_BAD_SIGNATURE, .badSignature),
            (MASQ_E_FUNDS, .funds), (MASQ_E_UNAVAILABLE, .unavailable), (MASQ_E_TIMEOUT, .timeout),
            (MASQ_E_INTERNAL, .internal)
        ]
        #expect(header.count == MasqStatus.allCases.count)
        for (code, status) in header {
            #expect(code == status.rawValue)
            #expect(String(cString: masq_status_name(code)) == status.name)
        }
        #expect(String(cString: masq_status_name(999)) == "MASQ_E_UNKNOWN")
    }

    @Test func versionMatchesTheHeader() {
        #expect(String(cString: masq_version()) == MASQ_VERSION_STRING)
        #expect(masq_version_number() == MASQ_VERSION_NUMBER)
        #expect(MASQ_VERSION_NUMBER == MASQ_VERSION_MAJOR * 10000 + MASQ_VERSION_MINOR * 100 + MASQ_VERSION_PATCH)
    }

    @Test func kindsAndLevelsAgreeAcrossHeaders() {
        #expect(MASQ_PLUGIN_KIND_STORAGE == MASQ_PLUGIN_STORAGE)
        #expect(MASQ_PLUGIN_KIND_TRANSPORT == MASQ_PLUGIN_TRANSPORT)
        #expect(MASQ_PLUGIN_KIND_WALLET == MASQ_PLUGIN_WALLET)
        #expect(PluginKind.storage.rawValue == UInt32(MASQ_PLUGIN_STORAGE))
        #expect(LogLevel.debug.rawValue == MASQ_LOG_DEBUG && LogLevel.error.rawValue == MASQ_LOG_ERROR)
    }
}
