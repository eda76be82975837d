#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import MasqKernel

/// What an approved app may ask (docs/APP-PROTOCOL.md). Every operation
/// works in the app's own namespace unless "ns" names another app's
/// namespace the user granted it.
enum AppOperation: String {
    case get, put, del, list
    case getAll = "get_all"
    case setAll = "set_all"
    case clear
    case counterAdd = "counter_add"
    case counterGet = "counter_get"
    case watch, unwatch

    var writes: Bool {
        switch self {
        case .put, .del, .setAll, .clear, .counterAdd: true
        default: false
        }
    }
}

extension Daemon {
    /// At most this many entries per list (and per get_all) answer.
    static let maxListEntries = 10_000

    func perform(_ op: AppOperation, _ c: Connection, _ appID: String, _ r: Request) throws(DaemonError) -> JSON {
        // A write retried with its request id (the client lost the answer) is applied once.
        guard op.writes, let requestID = r.request_id else { return try performOnce(op, c, appID, r) }
        guard (1...64).contains(requestID.utf8.count) else {
            throw DaemonError(.badRequest, "\"request_id\" is 1-64 bytes")
        }
        // The receipt is stored in the write's own transaction (Store.applyOnce),
        // so a retry after a crash or restart of this daemon is still recognised.
        let store = try activeProfile().store
        var result: JSON = .object([])
        var failure: DaemonError?
        do throws(MasqError) {
            _ = try store.applyOnce(receipt: Array("app\u{0}\(appID)\u{0}\(requestID)".utf8)) { () throws(MasqError) in
                do throws(DaemonError) { result = try performOnce(op, c, appID, r) } catch {
                    failure = error
                    throw MasqError(.invalid, error.message)  // not applied: no receipt
                }
            }
        } catch {
            throw failure ?? DaemonError(error)
        }
        return result
    }

    private func performOnce(_ op: AppOperation, _ c: Connection, _ appID: String, _ r: Request) throws(DaemonError)
        -> JSON
    {
        let profile = try activeProfile()
        guard c.profile == profile.name else {
            throw DaemonError(.unauthorized, "the user switched profiles: say hello again")
        }
        let store = profile.store
        let namespaceText = r.ns ?? appID
        // Its own namespace, one granted to it, or that of a share it accepted (ShareOperations.swift).
        guard let access = profile.apps.access(appID, to: namespaceText) ?? shareAccess(profile, appID, namespaceText),
            !op.writes || access == .write
        else {
            throw DaemonError(
                .denied, op.writes ? "no write access to \(namespaceText)" : "no access to \(namespaceText)")
        }
        let ns: NamespaceName
        do throws(MasqError) { ns = try NamespaceName(namespaceText, limits: store.limits) } catch {
            throw DaemonError(error)
        }
        let encoding = try ValueEncoding(r.encoding)

        func key() throws(DaemonError) -> [UInt8] {
            guard let key = r.key else { throw DaemonError(.badRequest, "missing \"key\"") }
            return Array(key.utf8)
        }
        func run<T>(_ body: () throws(MasqError) -> T) throws(DaemonError) -> T {
            do throws(MasqError) { return try body() } catch { throw DaemonError(error) }
        }

        switch op {
        case .get:
            let k = try key()
            guard let value = try run({ () throws(MasqError) in try store.get(ns, key: k) }) else {
                return .object([("found", .bool(false))])
            }
            return .object([("found", .bool(true)), encoding.field("value", value)])
        case .put:
            let k = try key()
            guard let text = r.value else { throw DaemonError(.badRequest, "missing \"value\"") }
            let v = try encoding.decode(text, "value")
            try run { () throws(MasqError) in try store.put(ns, key: k, value: v) }
            return .object([])
        case .del:
            let k = try key()
            try run { () throws(MasqError) in try store.delete(ns, key: k) }
            return .object([])
        case .list:
            let limit = min(max(r.limit ?? 1_000, 1), Self.maxListEntries)
            var entries: [JSON] = []
            var more = false
            let keysOnly = r.keys_only ?? false
            try run { () throws(MasqError) in
                try store.list(ns, prefix: Array((r.prefix ?? "").utf8), keysOnly: keysOnly) { k, v in
                    if entries.count == limit {
                        more = true
                        return false
                    }
                    var fields = [keyField(k)]
                    if !keysOnly, let v { fields.append(encoding.field("value", v)) }
                    entries.append(.object(fields))
                    return true
                }
            }
            return .object([("entries", .array(entries)), ("more", .bool(more))])
        case .getAll:
            let all = try run { () throws(MasqError) in try store.getAll(ns) }
            guard all.count <= Self.maxListEntries else {
                throw DaemonError(.tooLarge, "\(all.count) entries: use list with a prefix and a limit")
            }
            return .object([
                ("entries", .array(all.map { .object([keyField($0.key), encoding.field("value", $0.value)]) }))
            ])
        case .setAll:
            guard let entries = r.entries else { throw DaemonError(.badRequest, "missing \"entries\"") }
            var pairs: [(key: [UInt8], value: [UInt8]?)] = []
            pairs.reserveCapacity(entries.count)
            for entry in entries {
                pairs.append(
                    (
                        Array(entry.key.utf8),
                        try entry.value.map { (v) throws(DaemonError) in try encoding.decode(v, "value") }
                    ))
            }
            try run { () throws(MasqError) in try store.setAll(ns, pairs, replace: r.replace ?? false) }
            return .object([])
        case .clear:
            try run { () throws(MasqError) in try store.clear(ns) }
            return .object([])
        case .counterAdd:
            let k = try key()
            guard let delta = r.delta else { throw DaemonError(.badRequest, "missing \"delta\"") }
            try run { () throws(MasqError) in try store.counterAdd(ns, key: k, delta: delta) }
            return .object([])
        case .counterGet:
            let k = try key()
            return .object([("value", .int(try run { () throws(MasqError) in try store.counterGet(ns, key: k) }))])
        case .watch:
            guard c.watches.count < options.maxWatches else {
                throw DaemonError(.busy, "at most \(options.maxWatches) watches per connection")
            }
            let watchID = c.nextWatch
            c.nextWatch += 1
            let peer = c.peer
            let storeID = try run { () throws(MasqError) in
                try store.watch(namespace: ns, prefix: Array((r.prefix ?? "").utf8)) { [weak self] change in
                    guard let daemon = self else { return }
                    daemon.queue.async { daemon.deliver(change, watch: watchID, to: peer, encoding: encoding) }
                }
            }
            c.watches[watchID] = (storeID, namespaceText)
            return .object([("watch", .uint(watchID))])
        case .unwatch:
            guard let id = r.watch, let watch = c.watches.removeValue(forKey: id) else {
                throw DaemonError(.notFound, "no watch \(r.watch ?? 0)")
            }
            try? store.unwatch(watch.storeID)
            return .object([])
        }
    }

    /// Push one change to a watching app, if it still may see it.
    private func deliver(_ change: Change, watch: UInt64, to peer: String, encoding: ValueEncoding) {
        guard let c = connections[peer], c.approved, c.watches[watch] != nil else { return }
        var fields: [(String, JSON)] = [
            ("event", .string("change")), ("watch", .uint(watch)),
            ("kind", .string(change.kind == .put ? "put" : change.kind == .delete ? "delete" : "conflict")),
            ("origin", .string(change.origin == .local ? "local" : "remote")),
            ("ns", .string(change.namespace)), keyField(change.key)
        ]
        if let value = change.value {
            fields.append(encoding.field("value", value))
        } else {
            fields.append(("value", .null))
        }
        if change.kind == .conflict {
            if let lost = change.lostValue {
                fields.append(encoding.field("lost_value", lost))
            } else {
                fields.append(("lost_value", .null))
            }
            fields.append(("lost_was_deleted", .bool(change.lostWasDeleted)))
        }
        send(peer, .object(fields))
    }
}

/// A key as UTF-8 text, or base64 under "key_b64" when it is not UTF-8.
func keyField(_ key: [UInt8]) -> (String, JSON) {
    if let text = String(validating: key, as: UTF8.self) { return ("key", .string(text)) }
    return ("key_b64", .string(Data(key).base64EncodedString()))
}
