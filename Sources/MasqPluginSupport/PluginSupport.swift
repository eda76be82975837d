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
