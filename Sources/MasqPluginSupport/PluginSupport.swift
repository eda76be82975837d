// What every Swift plugin does the same way: its descriptor and its option
// list. Only masq_plugin.h types; nothing of the kernel.
import CMasqPlugin

/// A plugin's descriptor, allocated once and never freed (the kernel keeps it
/// for the life of the process).
public func pluginDescriptor(
    kind: Int32, name: StaticString, version: StaticString, summary: StaticString,
    vtable: UnsafeRawPointer
) -> UnsafeMutablePointer<masq_plugin_descriptor> {
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

/// MASQ_HOST_HAS in Swift: `host` offers `member` — its table reaches the
/// member's end and the member is set. Check each member a plugin calls this
/// way (a newer plugin must run on an older kernel that offers what it needs).
public func hostHas<T>(_ host: UnsafePointer<masq_host>, _ member: KeyPath<masq_host, T?>) -> Bool {
    guard let offset = MemoryLayout<masq_host>.offset(of: member) else { return false }
    guard Int(host.pointee.struct_size) >= offset + MemoryLayout<T?>.size else { return false }
    return host.pointee[keyPath: member] != nil
}

/// A plugin's option list as Swift pairs; a NULL key or value is MASQ_E_INVALID.
public func pluginOptions(_ list: UnsafePointer<masq_plugin_option>?, _ count: Int) throws(PluginFailure) -> [(
    key: String, value: String
)] {
    var out: [(key: String, value: String)] = []
    for i in 0..<count {
        guard let list, let k = list[i].key, let v = list[i].value else {
            throw PluginFailure(MASQ_E_INVALID, "option \(i) is NULL")
        }
        out.append((String(cString: k), String(cString: v)))
    }
    return out
}

/// An integer option within `range`, else MASQ_E_CONFIG naming the option and its range.
public func optionNumber(_ key: String, _ value: String, _ range: ClosedRange<Int>) throws(PluginFailure) -> Int {
    guard let n = Int(value), range.contains(n) else {
        throw PluginFailure(
            MASQ_E_CONFIG, "option \(key) must be \(range.lowerBound)...\(range.upperBound), not \"\(value)\"")
    }
    return n
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
public func handOver(
    _ host: UnsafePointer<masq_host>, _ out: UnsafeMutablePointer<UnsafeMutableRawPointer?>,
    _ make: () throws(PluginFailure) -> AnyObject
) -> Int32 {
    do {
        out.pointee = Unmanaged.passRetained(try make()).toOpaque()
        return MASQ_OK
    } catch {
        return report(host, error)
    }
}

/// What every Swift transport offers the kernel besides its own calls.
public protocol PluginTransport: AnyObject {
    func start() -> Int32
    func stop() -> Int32
    /// Its counters for `stats`, as a JSON object.
    var statsJSON: String { get }
    /// The largest frame `send` carries (0: no limit): `max_frame_bytes`.
    var maxFrameBytes: UInt64 { get }
}

extension PluginTransport {
    public var maxFrameBytes: UInt64 { 0 }
}

/// The transport behind a handle `handOver` gave the kernel.
public func pluginTransport(_ raw: UnsafeMutableRawPointer?) -> (any PluginTransport)? {
    raw.flatMap { Unmanaged<AnyObject>.fromOpaque($0).takeUnretainedValue() as? any PluginTransport }
}

/// A transport vtable holding what every Swift transport does alike:
/// destroy (stop, then release what `handOver` retained), start, stop and
/// stats. The plugin adds `create` and its own calls.
public func transportVTable(flags: UInt32) -> masq_transport_vtable {
    var t = masq_transport_vtable()
    t.struct_size = UInt32(MemoryLayout<masq_transport_vtable>.size)
    t.flags = flags
    t.destroy = { raw in
        guard let raw else { return }
        _ = pluginTransport(raw)?.stop()
        Unmanaged<AnyObject>.fromOpaque(raw).release()
    }
    t.start = { raw in pluginTransport(raw)?.start() ?? MASQ_E_INVALID }
    t.stop = { raw in pluginTransport(raw)?.stop() ?? MASQ_E_INVALID }
    t.stats = { raw, sink, ctx in
        guard let t = pluginTransport(raw) else { return MASQ_E_INVALID }
        return sinkBytes(Array(t.statsJSON.utf8), sink, ctx)
    }
    t.max_frame_bytes = { raw in pluginTransport(raw)?.maxFrameBytes ?? 0 }
    return t
}

/// What every Swift wallet offers; `walletVTable` turns it into the C calls.
public protocol PluginWallet: AnyObject {
    var host: UnsafePointer<masq_host> { get }
    var address: String { get }
    func balance(_ asset: String?) throws(PluginFailure) -> String
    func pay(to: String, asset: String?, amount: String, memo: [UInt8]) throws(PluginFailure) -> String
    func sign(_ message: [UInt8]) throws(PluginFailure) -> [UInt8]
    static func verify(_ address: String, _ message: [UInt8], _ signature: [UInt8]) -> Bool
    func verifyPayment(txid: String, from: String, to: String, asset: String?, amount: String) throws(PluginFailure)
        -> Int32
    func payments(after cursor: UInt64, limit: UInt32) throws(PluginFailure) -> String
}

/// The wallet behind a handle `handOver` gave the kernel.
public func pluginWallet(_ raw: UnsafeMutableRawPointer?) -> (any PluginWallet)? {
    raw.flatMap { Unmanaged<AnyObject>.fromOpaque($0).takeUnretainedValue() as? any PluginWallet }
}

/// A wallet call's status; a failure is reported through the host.
private func run(_ w: any PluginWallet, _ body: () throws(PluginFailure) -> Int32) -> Int32 {
    do { return try body() } catch { return report(w.host, error) }
}

private func optionalString(_ text: UnsafePointer<CChar>?) -> String? { text.map { String(cString: $0) } }

/// A wallet vtable with every call but `create` (the plugin's own).
public func walletVTable() -> masq_wallet_vtable {
    var t = masq_wallet_vtable()
    t.struct_size = UInt32(MemoryLayout<masq_wallet_vtable>.size)
    t.destroy = { raw in if let raw { Unmanaged<AnyObject>.fromOpaque(raw).release() } }
    t.address = { raw, sink, ctx in
        guard let w = pluginWallet(raw) else { return MASQ_E_INVALID }
        return sinkBytes(Array(w.address.utf8), sink, ctx)
    }
    t.balance = { raw, asset, sink, ctx in
        guard let w = pluginWallet(raw) else { return MASQ_E_INVALID }
        return run(w) { () throws(PluginFailure) in
            sinkBytes(Array(try w.balance(optionalString(asset)).utf8), sink, ctx)
        }
    }
    t.pay = { raw, to, asset, amount, memo, memoLength, sink, ctx in
        guard let w = pluginWallet(raw), let to, let amount else { return MASQ_E_INVALID }
        return run(w) { () throws(PluginFailure) in
            let memoBytes = memo.map { Array(UnsafeBufferPointer(start: $0, count: memoLength)) } ?? []
            return sinkBytes(
                Array(
                    try w.pay(
                        to: String(cString: to), asset: optionalString(asset), amount: String(cString: amount),
                        memo: memoBytes
                    ).utf8), sink, ctx)
        }
    }
    t.sign = { raw, message, length, sink, ctx in
        guard let w = pluginWallet(raw), sink != nil, message != nil || length == 0 else { return MASQ_E_INVALID }
        return run(w) { () throws(PluginFailure) in
            sinkBytes(try w.sign(Array(UnsafeBufferPointer(start: message, count: length))), sink, ctx)
        }
    }
    t.verify = { raw, address, message, length, signature, signatureLength in
        guard let w = pluginWallet(raw), let address, message != nil || length == 0, let signature else {
            return MASQ_E_INVALID
        }
        let ok = type(of: w).verify(
            String(cString: address), Array(UnsafeBufferPointer(start: message, count: length)),
            Array(UnsafeBufferPointer(start: signature, count: signatureLength)))
        return ok ? MASQ_OK : MASQ_E_BAD_SIGNATURE
    }
    t.verify_payment = { raw, txid, from, to, asset, amount in
        guard let w = pluginWallet(raw), let txid, let from, let to, let amount else { return MASQ_E_INVALID }
        return run(w) { () throws(PluginFailure) in
            try w.verifyPayment(
                txid: String(cString: txid), from: String(cString: from), to: String(cString: to),
                asset: optionalString(asset), amount: String(cString: amount))
        }
    }
    t.payments = { raw, cursor, limit, sink, ctx in
        guard let w = pluginWallet(raw) else { return MASQ_E_INVALID }
        return run(w) { () throws(PluginFailure) in
            sinkBytes(Array(try w.payments(after: cursor, limit: max(1, min(limit, 10_000))).utf8), sink, ctx)
        }
    }
    return t
}
