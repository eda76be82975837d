// The mesh transport plugin: sync frames reach the relay through the mesh.
// The plugin runs a mesh node of its own (no exit), joins the network
// through the seed descriptors in its options, and reaches `masq relay`
// over onion routes of 3 or more hops (SOCKS5 into its own node): the
// relay sees an exit node's address, never the device's, and the other
// devices see only the relay. Frames are the relay client's (already sealed
// by the kernel's sessions). It sees nothing of Masq but
// include/masq_plugin.h, the relay's wire format and the mesh engine.
import CMasqPlugin
import MasqPluginSupport
import MasqMesh
import MasqRelayClient
#if canImport(Glibc)
    import Glibc
#endif

private let pluginName: StaticString = "mesh"
private let pluginVersion: StaticString = "1.0.0"
private let pluginSummary: StaticString =
    "relay transport over the mesh: onion routes of 3+ hops hide the device's address"

private let meshOptionNames = "seed, network, host, hops, cell_bytes, gossip_ms, max_neighbours, target_neighbours"

private func makeTransport(_ host: UnsafePointer<masq_host>, _ list: UnsafePointer<masq_plugin_option>?, _ count: Int)
    throws(PluginFailure) -> RelayTransport
{
    var relay = RelayTransport.Options()
    var mesh = MeshConfiguration()
    mesh.gossipMilliseconds = 1_000
    var dataDirectory = "."
    let pairs = try pluginOptions(list, count)
    for (key, value) in pairs {
        func number(_ range: ClosedRange<Int>) throws(PluginFailure) -> Int { try optionNumber(key, value, range) }
        switch key {
        case "url": break
        case "data_dir": dataDirectory = value
        case "seed":
            for text in value.split(separator: " ") {
                guard let d = NodeDescriptor(String(text)) else {
                    throw .init(MASQ_E_CONFIG, "option seed: not a node descriptor: \(text)")
                }
                mesh.seeds.append(d)
            }
        case "network": mesh.network = value
        case "host": mesh.host = value
        case "hops": mesh.hops = try number(3...6)
        case "cell_bytes": mesh.cellBytes = try number(512...60_000)
        case "gossip_ms":
            mesh.gossipMilliseconds = UInt64(try number(50...600_000))
            mesh.setRecordLifetimes()
        case "max_neighbours": mesh.maxNeighbours = try number(1...16)
        case "target_neighbours": mesh.targetNeighbours = try number(1...16)
        default:
            guard try applyRelayOption(key, value, to: &relay) else {
                throw .init(
                    MASQ_E_CONFIG, "unknown option \"\(key)\" (known: url, \(meshOptionNames), \(relayOptionNames))")
            }
        }
    }
    guard !mesh.seeds.isEmpty else {
        throw .init(MASQ_E_CONFIG, "option seed (one or more node descriptors, space-separated) is required")
    }
    mesh.targetNeighbours = min(mesh.targetNeighbours, mesh.maxNeighbours)
    mesh.anchorNeighbours = min(mesh.anchorNeighbours, mesh.targetNeighbours)
    mesh.socks = "127.0.0.1:0"
    mesh.exit = false
    mesh.client = true
    let meshDirectory = dataDirectory + "/mesh"
    mkdir(meshDirectory, 0o700)
    mesh.dataDirectory = meshDirectory
    let node: MeshNode
    do {
        // The engine's lines go through the host (its level, the embedder's callback).
        node = try MeshNode(
            configuration: mesh, identity: try NodeIdentity.loadOrCreate(meshDirectory + "/node.key"),
            logger: HostLogHandler.logger("masq.node", host: host))
        try node.start()
    } catch {
        throw .init(MASQ_E_CONFIG, "mesh node: \(error)")
    }
    relay.socks5 = ("127.0.0.1", node.socksPort)
    let transport = RelayTransport(host: host, options: relay)
    transport.onStop = { node.stop() }
    host.pointee.log(host, MASQ_LOG_INFO, "mesh node \(node.descriptor) up; the relay is reached through onion routes")
    return transport
}

nonisolated(unsafe) private let vtable: UnsafeMutablePointer<masq_transport_vtable> = {
    let v = UnsafeMutablePointer<masq_transport_vtable>.allocate(capacity: 1)
    var t = relayTransportVTable()
    t.create = { host, options, count, out in
        guard let host, let out else { return MASQ_E_INVALID }
        guard hostHas(host, \.frame_received), hostHas(host, \.peer_event) else {
            return MASQ_E_ABI
        }
        return handOver(host, out) { () throws(PluginFailure) in try makeTransport(host, options, count) }
    }
    v.initialize(to: t)
    return v
}()

nonisolated(unsafe) private let descriptor = pluginDescriptor(
    kind: MASQ_PLUGIN_TRANSPORT, name: pluginName, version: pluginVersion,
    summary: pluginSummary, vtable: UnsafeRawPointer(vtable))

@c @implementation
public func masq_plugin_entry() -> UnsafePointer<masq_plugin_descriptor>! {
    UnsafePointer(descriptor)
}
