// The relay transport plugin: a WebSocket client (SwiftNIO) for `masq relay`.
// It joins rooms and carries opaque frames (already sealed by the kernel's
// sessions); the relay sees room ids and ciphertext only. It reconnects with
// exponential backoff and keeps an outbound queue across disconnects.
// The client itself is Sources/MasqRelayClient (shared with the mesh plugin).
import CMasqPlugin
import MasqRelayClient

private let pluginName: StaticString = "relay"
private let pluginVersion: StaticString = "1.0.0"
private let pluginSummary: StaticString = "WebSocket client for masq relay (rooms, reconnect, outbound queue)"

private func parseOptions(_ list: UnsafePointer<masq_plugin_option>?, _ count: Int) throws(TransportFailure) -> RelayTransport.Options {
    var options = RelayTransport.Options()
    for (key, value) in try pluginOptions(list, count) where key != "data_dir" && key != "url" {
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
        guard host.pointee.struct_size >= UInt32(MemoryLayout<masq_host>.size), host.pointee.frame_received != nil, host.pointee.peer_event != nil else {
            return MASQ_E_INVALID
        }
        do throws(TransportFailure) {
            let instance = RelayTransport(host: host, options: try parseOptions(options, count))
            out.pointee = Unmanaged.passRetained(instance).toOpaque()
            return MASQ_OK
        } catch {
            return host.pointee.error(host, error.status, error.message)
        }
    }
    v.initialize(to: t)
    return v
}()

nonisolated(unsafe) private let descriptor: UnsafeMutablePointer<masq_plugin_descriptor> = {
    let d = UnsafeMutablePointer<masq_plugin_descriptor>.allocate(capacity: 1)
    var t = masq_plugin_descriptor()
    t.struct_size = UInt32(MemoryLayout<masq_plugin_descriptor>.size)
    t.abi_version = UInt32(MASQ_PLUGIN_ABI_VERSION)
    t.kind = UInt32(MASQ_PLUGIN_TRANSPORT)
    t.name = UnsafeRawPointer(pluginName.utf8Start).assumingMemoryBound(to: CChar.self)
    t.version = UnsafeRawPointer(pluginVersion.utf8Start).assumingMemoryBound(to: CChar.self)
    t.description = UnsafeRawPointer(pluginSummary.utf8Start).assumingMemoryBound(to: CChar.self)
    t.vtable = UnsafeRawPointer(vtable)
    d.initialize(to: t)
    return d
}()

@c @implementation
public func masq_plugin_entry() -> UnsafePointer<masq_plugin_descriptor>! {
    UnsafePointer(descriptor)
}
