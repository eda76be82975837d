// What every Swift plugin does the same way: its descriptor and its option
// list. Only masq_plugin.h types; nothing of the kernel.
import CMasqPlugin

/// A plugin's descriptor, allocated once and never freed (the kernel keeps it
/// for the life of the process).
public func pluginDescriptor(kind: Int32, name: StaticString, version: StaticString, summary: StaticString,
                             vtable: UnsafeRawPointer) -> UnsafeMutablePointer<masq_plugin_descriptor> {
    let d = UnsafeMutablePointer<masq_plugin_descriptor>.allocate(capacity: 1)
    var t = masq_plugin_descriptor()
    t.struct_size = UInt32(MemoryLayout<masq_plugin_descriptor>.size)
    t.abi_version = UInt32(MASQ_PLUGIN_ABI_VERSION)
    t.kind = UInt32(kind)
    t.name = UnsafeRawPointer(name.utf8Start).assumingMemoryBound(to: CChar.self)
    t.version = UnsafeRawPointer(version.utf8Start).assumingMemoryBound(to: CChar.self)
    t.description = UnsafeRawPointer(summary.utf8Start).assumingMemoryBound(to: CChar.self)
    t.vtable = vtable
    d.initialize(to: t)
    return d
}

/// An option of the list is NULL.
public struct NullOption: Error {
    public let index: Int
}

/// A plugin's option list as Swift pairs.
public func pluginOptions(_ list: UnsafePointer<masq_plugin_option>?, _ count: Int) throws(NullOption) -> [(key: String, value: String)] {
    var out: [(key: String, value: String)] = []
    for i in 0..<count {
        guard let list, let k = list[i].key, let v = list[i].value else { throw NullOption(index: i) }
        out.append((String(cString: k), String(cString: v)))
    }
    return out
}

/// Hand bytes to a sink; its status is the caller's answer.
public func sinkBytes(_ bytes: [UInt8], _ sink: masq_bytes_sink?, _ ctx: UnsafeMutableRawPointer?) -> Int32 {
    guard let sink else { return MASQ_E_INVALID }
    return bytes.withUnsafeBufferPointer { sink(ctx, $0.baseAddress, $0.count) }
}

/// A plugin call that failed: a masq status code and a message for the
/// host's error callback (never holds secrets).
public struct PluginFailure: Error, Sendable {
    public let status: Int32
    public let message: String
    public init(_ status: Int32, _ message: String) {
        self.status = status
        self.message = message
    }
}

/// Report a failure through the host's error callback; its status is the caller's answer.
public func report(_ host: UnsafePointer<masq_host>, _ failure: PluginFailure) -> Int32 {
    host.pointee.error(host, failure.status, failure.message)
}

/// What every plugin's `create` does once it checked its arguments: build
/// the instance and hand it to the kernel retained (`destroy` releases it),
/// or report why not.
public func handOver(_ host: UnsafePointer<masq_host>, _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>,
                     _ make: () throws(PluginFailure) -> AnyObject) -> Int32 {
    do {
        out.pointee = Unmanaged.passRetained(try make()).toOpaque()
        return MASQ_OK
    } catch {
        return report(host, error)
    }
}
