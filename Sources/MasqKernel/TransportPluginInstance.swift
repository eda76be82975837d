import CMasq
import CMasqSupport
import FoundationEssentials

/// One instance of a transport plugin, called with Swift types. Received
/// frames and peer events arrive on the plugin's threads; handlers must copy
/// what they need and return quickly (the kernel hops to its own queue).
public final class TransportPluginInstance: @unchecked Sendable {
    let plugin: LoadedPlugin
    private let host: PluginHost
    private let v: masq_transport_vtable
    private var instance: UnsafeMutableRawPointer?
    private let lock = Lock()

    /// Peer events as onPeerEvent reports them (masq_plugin.h).
    public static let peerUp = MASQ_PEER_UP
    public static let peerDown = MASQ_PEER_DOWN
    public static let transportUp = MASQ_TRANSPORT_UP
    public static let transportDown = MASQ_TRANSPORT_DOWN
    public static let roomChanged = MASQ_ROOM_CHANGED

    /// The largest frame the transport carries (its `max_frame_bytes`; nil when it does not say).
    public var maxFrameBytes: Int? {
        guard
            v.struct_size
                >= UInt32(MemoryLayout<masq_transport_vtable>.offset(of: \.max_frame_bytes)! + MemoryLayout<UInt>.size),
            let get = v.max_frame_bytes, let instance
        else { return nil }
        let n = get(instance)
        return n == 0 ? nil : Int(min(n, UInt64(Int.max)))
    }

    public var component: String { host.component }
    public var pluginName: String { plugin.name }
    var canConnect: Bool { v.flags & MASQ_TRANSPORT_CONNECT != 0 }
    var hasRooms: Bool { v.flags & MASQ_TRANSPORT_ROOMS != 0 }

    init(
        plugin: LoadedPlugin, options: [(key: String, value: String)],
        onFrame: @escaping @Sendable (_ peer: String, _ room: String?, _ frame: [UInt8]) -> Void,
        onPeerEvent: @escaping @Sendable (_ peer: String, _ event: Int32) -> Void,
        onPeerInfo: (@Sendable (_ peer: String, _ info: String) -> Void)? = nil,
        onChallenge: (@Sendable (_ mailbox: String, _ question: [UInt8]) throws(MasqError) -> [UInt8])? = nil
    ) throws(MasqError) {
        precondition(plugin.kind == .transport)
        self.plugin = plugin
        host = PluginHost(component: "transport:\(plugin.name)", transport: true)
        host.onFrame = { peer, room, frame in onFrame(peer, room, Array(frame)) }
        host.onPeerEvent = onPeerEvent
        host.onPeerInfo = onPeerInfo
        host.onChallenge = onChallenge
        v = plugin.vtable(as: masq_transport_vtable.self, zero: masq_transport_vtable())
        let create = v.create!  // present: LoadedPlugin checked the vtable
        instance = try host.makeInstance(options, label: host.component, operation: "create") { create($0, $1, $2, $3) }
    }

    deinit { close() }

    /// Load the transport plugin `name` (or at `path`) from the config's
    /// search path and create an instance: for hosts other than sync (the
    /// daemon's app listener). `onPeerInfo`, when given, receives new peers
    /// with what the transport knows of them instead of a MASQ_PEER_UP event.
    public static func open(
        _ reference: PluginReference, config: MasqConfig,
        onFrame: @escaping @Sendable (_ peer: String, _ room: String?, _ frame: [UInt8]) -> Void,
        onPeerEvent: @escaping @Sendable (_ peer: String, _ event: Int32) -> Void,
        onPeerInfo: (@Sendable (_ peer: String, _ info: String) -> Void)? = nil
    ) throws(MasqError) -> TransportPluginInstance {
        let plugin = try PluginLoader.load(
            reference, kind: .transport, searchPath: PluginLoader.searchPath(config: config))
        return try TransportPluginInstance(
            plugin: plugin, options: reference.options, onFrame: onFrame, onPeerEvent: onPeerEvent,
            onPeerInfo: onPeerInfo)
    }

    public func start() throws(MasqError) { try check(call { v.start($0) }, "start") }

    /// Stop I/O and release the instance; no callback runs after this returns.
    public func close() {
        let handle = lock.withLock { () -> UnsafeMutableRawPointer? in
            defer { instance = nil }
            return instance
        }
        guard let handle else { return }
        _ = v.stop(handle)
        v.destroy(handle)
    }

    /// Accept connections on `endpoint`; returns the endpoint actually bound.
    public func listen(_ endpoint: String) throws(MasqError) -> String {
        guard let listen = v.listen else { throw MasqError(.unsupported, "\(component) cannot listen") }
        var bound: [UInt8] = []
        let status = withUnsafeMutablePointer(to: &bound) { out in
            call { i in
                endpoint.withCString { e in
                    listen(
                        i, e,
                        { raw, data, length in
                            guard let raw, length <= 4096 else { return MASQ_E_TOO_LARGE }
                            raw.assumingMemoryBound(to: [UInt8].self).pointee += UnsafeBufferPointer(
                                start: data, count: length)
                            return MASQ_OK
                        }, out)
                }
            }
        }
        try check(status, "listen")
        return bound.isEmpty ? endpoint : String(decoding: bound, as: UTF8.self)
    }

    /// Close one peer's connection (the plugin's optional `disconnect`).
    public func disconnect(_ peer: String, reason: String) throws(MasqError) {
        guard let disconnect = v.disconnect else {
            throw MasqError(.unsupported, "\(component) cannot disconnect a peer")
        }
        try check(call { i in peer.withCString { p in reason.withCString { disconnect(i, p, $0) } } }, "disconnect")
    }

    func connect(_ endpoint: String) throws(MasqError) {
        guard let connect = v.connect else { throw MasqError(.unsupported, "\(component) cannot connect out") }
        try check(call { i in endpoint.withCString { connect(i, $0) } }, "connect")
    }

    package func join(_ room: String) throws(MasqError) {
        guard let join = v.join else { throw MasqError(.unsupported, "\(component) has no rooms") }
        try check(call { i in room.withCString { join(i, $0) } }, "join")
    }

    package func leave(_ room: String) throws(MasqError) {
        guard let leave = v.leave else { throw MasqError(.unsupported, "\(component) has no rooms") }
        try check(call { i in room.withCString { leave(i, $0) } }, "leave")
    }

    public func send(_ destination: String, _ frame: [UInt8]) throws(MasqError) {
        try check(
            call { i in
                destination.withCString { d in frame.withUnsafeBufferPointer { v.send(i, d, $0.baseAddress, $0.count) }
                }
            }, "send")
    }

    /// The plugin's counters (its optional `stats` member); nil when it has
    /// none or its answer is not a JSON object of unsigned integers.
    func stats() -> [String: UInt64]? {
        guard let stats = v.stats else { return nil }
        var text: [UInt8] = []
        let status = withUnsafeMutablePointer(to: &text) { out in
            call { i in
                stats(
                    i,
                    { raw, data, length in
                        guard let raw, length <= 1 << 16 else { return MASQ_E_TOO_LARGE }
                        raw.assumingMemoryBound(to: [UInt8].self).pointee += UnsafeBufferPointer(
                            start: data, count: length)
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
        try checkPlugin(status, label: component, operation: operation)
    }
}

extension Store {
    /// Load and create the transport a config entry names.
    package func openTransport(
        _ reference: PluginReference,
        onFrame: @escaping @Sendable (String, String?, [UInt8]) -> Void,
        onPeerEvent: @escaping @Sendable (String, Int32) -> Void,
        onChallenge: (@Sendable (String, [UInt8]) throws(MasqError) -> [UInt8])? = nil
    ) throws(MasqError) -> TransportPluginInstance {
        let plugin = try PluginLoader.load(
            reference, kind: .transport, searchPath: PluginLoader.searchPath(config: config))
        var options = reference.options.filter { $0.key != "data_dir" }
        options.append(("data_dir", config.dataDir))
        return try TransportPluginInstance(
            plugin: plugin, options: options, onFrame: onFrame, onPeerEvent: onPeerEvent, onChallenge: onChallenge)
    }
}
