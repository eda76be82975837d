import CMasq
import CMasqSupport
import FoundationEssentials

/// One instance of a transport plugin, called with Swift types. Received
/// frames and peer events arrive on the plugin's threads; handlers must copy
/// what they need and return quickly (the kernel hops to its own queue).
final class TransportEngine: @unchecked Sendable {
    let plugin: LoadedPlugin
    private let host: PluginHost
    private let v: masq_transport_vtable
    private var instance: UnsafeMutableRawPointer?
    private let lock = Lock()

    var component: String { host.component }
    var canConnect: Bool { v.flags & MASQ_TRANSPORT_CONNECT != 0 }
    var hasRooms: Bool { v.flags & MASQ_TRANSPORT_ROOMS != 0 }

    init(plugin: LoadedPlugin, options: [(key: String, value: String)],
         onFrame: @escaping @Sendable (_ peer: String, _ room: String?, _ frame: [UInt8]) -> Void,
         onPeerEvent: @escaping @Sendable (_ peer: String, _ event: Int32) -> Void) throws(MasqError) {
        precondition(plugin.kind == .transport)
        self.plugin = plugin
        host = PluginHost(component: "transport:\(plugin.name)", transport: true)
        host.onFrame = { peer, room, frame in onFrame(peer, room, Array(frame)) }
        host.onPeerEvent = onPeerEvent
        v = plugin.vtable(as: masq_transport_vtable.self, zero: masq_transport_vtable())
        var handle: UnsafeMutableRawPointer?
        let status = withOptions(options) { list, count in
            masqsupport_clear_error()
            return v.create(host.table, list, count, &handle)
        }
        try check(status, "create")
        guard let handle else { throw MasqError(.internal, "\(component): create() returned no instance") }
        instance = handle
    }

    deinit { close() }

    func start() throws(MasqError) { try check(call { v.start($0) }, "start") }

    /// Stop I/O and release the instance; no callback runs after this returns.
    func close() {
        let handle = lock.withLock { () -> UnsafeMutableRawPointer? in
            defer { instance = nil }
            return instance
        }
        guard let handle else { return }
        _ = v.stop(handle)
        v.destroy(handle)
    }

    func connect(_ endpoint: String) throws(MasqError) {
        guard let connect = v.connect else { throw MasqError(.unsupported, "\(component) cannot connect out") }
        try check(call { i in endpoint.withCString { connect(i, $0) } }, "connect")
    }

    func join(_ room: String) throws(MasqError) {
        guard let join = v.join else { throw MasqError(.unsupported, "\(component) has no rooms") }
        try check(call { i in room.withCString { join(i, $0) } }, "join")
    }

    func leave(_ room: String) throws(MasqError) {
        guard let leave = v.leave else { throw MasqError(.unsupported, "\(component) has no rooms") }
        try check(call { i in room.withCString { leave(i, $0) } }, "leave")
    }

    func send(_ destination: String, _ frame: [UInt8]) throws(MasqError) {
        try check(call { i in destination.withCString { d in frame.withUnsafeBufferPointer { v.send(i, d, $0.baseAddress, $0.count) } } }, "send")
    }

    /// The plugin's counters (its optional `stats` member); nil when it has
    /// none or its answer is not a JSON object of unsigned integers.
    func stats() -> [String: UInt64]? {
        guard let stats = v.stats else { return nil }
        var text: [UInt8] = []
        let status = withUnsafeMutablePointer(to: &text) { out in
            call { i in
                stats(i, { raw, data, length in
                    guard let raw, length <= 1 << 16 else { return MASQ_E_TOO_LARGE }
                    raw.assumingMemoryBound(to: [UInt8].self).pointee += UnsafeBufferPointer(start: data, count: length)
                    return MASQ_OK
                }, out)
            }
        }
        guard status == MASQ_OK else { return nil }
        return try? JSONDecoder().decode([String: UInt64].self, from: Data(text))
    }

    private func call(_ body: (UnsafeMutableRawPointer) -> Int32) -> Int32 {
        guard let handle = lock.withLock({ instance }) else { return MASQ_E_CLOSED }
        masqsupport_clear_error()
        return body(handle)
    }

    private func check(_ status: Int32, _ operation: String) throws(MasqError) {
        if status == MASQ_OK { return }
        let reported = masqsupport_error_code() == status ? String(cString: masqsupport_error_message()) : ""
        let name = MasqStatus(rawValue: status)?.name ?? "status \(status)"
        throw MasqError(MasqStatus(rawValue: status) ?? .internal,
                        reported.isEmpty ? "\(component): \(operation) failed with \(name)" : "\(component): \(reported)")
    }
}

extension Store {
    /// Load and create the transport a config entry names.
    func openTransport(_ reference: PluginReference,
                       onFrame: @escaping @Sendable (String, String?, [UInt8]) -> Void,
                       onPeerEvent: @escaping @Sendable (String, Int32) -> Void) throws(MasqError) -> TransportEngine {
        let plugin = try PluginLoader.load(reference, kind: .transport, searchPath: PluginLoader.searchPath(config: config))
        var options = reference.options.filter { $0.key != "data_dir" }
        options.append(("data_dir", config.dataDir))
        return try TransportEngine(plugin: plugin, options: options, onFrame: onFrame, onPeerEvent: onPeerEvent)
    }
}
