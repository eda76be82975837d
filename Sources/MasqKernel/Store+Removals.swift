import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

/// A device removed from the group: who removed it and when. Removals travel
/// to the other devices (sync's REMOVALS frame, docs/PROTOCOL.md), each of
/// which forgets the device and its session, so the removed device learns
/// nothing written afterwards by any device that heard of its removal.
public struct DeviceRemoval: Sendable, Equatable {
    public let removed: String
    public let remover: String
    /// Unix ms on the remover's clock.
    public let at: UInt64

    /// 10 removed · 10 remover · u64 at (device ids as bytes).
    static let encodedSize = 28

    var encoded: [UInt8] {
        var out = Hex.decode(removed) ?? []
        out += Hex.decode(remover) ?? []
        out.appendBigEndian(at)
        return out
    }

    init(removed: String, remover: String, at: UInt64) {
        self.removed = removed
        self.remover = remover
        self.at = at
    }

    init(decoding b: ArraySlice<UInt8>) throws(MasqError) {
        guard b.count == Self.encodedSize else { throw .invalid("malformed device removal") }
        let start = b.startIndex
        removed = hex(Array(b[start..<(start + 10)]))
        remover = hex(Array(b[(start + 10)..<(start + 20)]))
        at = b[(start + 20)..<(start + 28)].reduce(0) { $0 << 8 | UInt64($1) }
    }
}

/// Device removals: recorded here when this device removes one, and applied
/// when a paired device reports one. Trust: a report comes over the sending
/// device's authenticated session, and any paired device may remove any
/// other, so a report is as good as that device removing it itself. Rules:
///   - a report about this device itself, or sent by the device it names, is
///     ignored (a device does not remove itself, nor can the removed one undo);
///   - a report older than the named device's pairing here is ignored, so a
///     device paired again after its removal stays (the old report still
///     circulates);
///   - the record is kept (one per removed device, the latest), and passed on
///     to every device this one syncs with.
/// A device that meets the removed one before hearing of the removal may
/// still send it what it holds then; one stolen device can remove others
/// (then pair them again): it can never read what is written after its own
/// removal by a device that knows of it.
extension Store {
    static let removalFamily: UInt8 = 0x58  // 'X' removed device id -> DeviceRemoval (sealed when protected)

    /// Removals this store knows (its own and those it learned).
    public func removals() throws(MasqError) -> [DeviceRemoval] {
        try lock.withLock { () throws(MasqError) -> [DeviceRemoval] in
            try ensureUsable()
            var keys: [[UInt8]] = []
            try engine.scan(from: [Store.removalFamily], to: [Store.removalFamily + 1]) {
                (key, _) throws(MasqError) -> Bool in
                keys.append(Array(key))
                return true
            }
            var out: [DeviceRemoval] = []
            for key in keys {
                if let bytes = try getSecret(key), let removal = try? DeviceRemoval(decoding: bytes[...]) {
                    out.append(removal)
                }
            }
            return out
        }
    }

    /// How many removals were recorded since the store opened (sync compares).
    public var removalEpoch: Int { removalChanges.withLock { $0 } }

    /// Record a removal this device made (inside removeDevice's transaction).
    func recordRemovalLocked(_ removal: DeviceRemoval) throws(MasqError) {
        let key = [Store.removalFamily] + Array(removal.removed.utf8)
        if let existing = try getSecret(key), let old = try? DeviceRemoval(decoding: existing[...]),
            old.at >= removal.at
        {
            return
        }
        try Store.putMeta(engine, key, try sealSecret(key, removal.encoded))
    }

    /// A removal reported by paired device `sender`: forget the device it
    /// names (per the rules above). Returns whether anything changed.
    @discardableResult
    public func applyRemoval(_ removal: DeviceRemoval, from sender: String) throws(MasqError) -> Bool {
        let me = try requireIdentity().publicKeys.deviceID
        guard removal.removed != me, removal.removed != sender else { return false }
        let changed = try localTransaction { () throws(MasqError) -> Bool in
            let recordKey = [Store.removalFamily] + Array(removal.removed.utf8)
            if let existing = try getSecret(recordKey), let old = try? DeviceRemoval(decoding: existing[...]),
                old.at >= removal.at
            {
                return false
            }
            let deviceKey = [RecordFormat.device] + Array(removal.removed.utf8)
            if let record = try getSecret(deviceKey) {
                let device = try PairedDevice(decoding: record)
                // Paired again after that removal: the report is stale.
                guard device.pairedAt < removal.at else { return false }
                try forgetDeviceLocked(removal.removed)
            }
            try Store.putMeta(engine, recordKey, try sealSecret(recordKey, removal.encoded))
            return true
        }
        if changed {
            removalChanges.withLock { $0 += 1 }
            Log.info(
                "kernel",
                "device \(removal.removed) was removed from the group by \(removal.remover) (reported by \(sender))")
        }
        return changed
    }

    /// Delete a device, its session and renewal counters (in a transaction).
    func forgetDeviceLocked(_ deviceID: String) throws(MasqError) {
        try ([RecordFormat.device] + Array(deviceID.utf8)).withBytes { (k) throws(MasqError) in try engine.delete(k) }
        try ([RecordFormat.session] + Array(deviceID.utf8)).withBytes { (k) throws(MasqError) in try engine.delete(k) }
        try ([Store.renewalFamily] + Array(deviceID.utf8)).withBytes { (k) throws(MasqError) in try engine.delete(k) }
        try ([Store.renewalFamily, 0] + Array(deviceID.utf8)).withBytes { (k) throws(MasqError) in try engine.delete(k)
        }
        freshSessions.withLock { _ = $0.remove(deviceID) }
    }
}
