// The relay transport plugin: a WebSocket client (SwiftNIO) for `masq relay`.
// It joins rooms and carries opaque frames (already sealed by the kernel's
// sessions); the relay sees room ids and ciphertext only. It reconnects with
// exponential backoff and keeps an outbound queue across disconnects.
// The client itself is Sources/MasqRelayClient (shared with the mesh plugin).
import CMasqPlugin
import MasqPluginSupport
import MasqRelayClient

private let pluginName: StaticString = "relay"
private let pluginVersion: StaticString = "1.0.0"
private let pluginSummary: StaticString = "WebSocket client for masq relay (rooms, reconnect, outbound queue)"

private func parseOptions(_ list: UnsafePointer<masq_plugin_option>?, _ count: Int) throws(PluginFailure)
    -> RelayTransport.Options
{
    var options = RelayTransport.Options()
    let pairs = try pluginOptions(list, count)
    for (key, value) in pairs where key != "data_dir" && key != "url" {
        guard try applyRelayOption(key, value, to: &options) else {
            throw .init(MASQ_E_CONFIG, "unknown option \"\(key)\" (known: url, \(relayOptionNames))")
        }
    }
    return options
}

nonisolated(unsafe) private let vtable: UnsafeMutablePointer<masq_transport_vtable> = {
    let v = UnsafeMutablePointer<masq_transport_vtable>.allocate(capacity: 1)
    var t = relayTransportVTable()
    t.create = { host, options, count, out in
        guard let host, let out else { return MASQ_E_INVALID }
        guard hostHas(host, \.frame_received), hostHas(host, \.peer_event) else {
            return MASQ_E_ABI
        }
        return handOver(host, out) { () throws(PluginFailure) in
            RelayTransport(host: host, options: try parseOptions(options, count))
        }
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
