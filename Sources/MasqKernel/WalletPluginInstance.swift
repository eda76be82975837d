import CMasq
import CMasqSupport
import FoundationEssentials

/// One instance of a wallet plugin, called with Swift types. Amounts are
/// decimal strings (they exceed 64 bits). Any thread.
public final class WalletPluginInstance: @unchecked Sendable {
    let plugin: LoadedPlugin
    private let host: PluginHost
    private let v: masq_wallet_vtable
    private var instance: UnsafeMutableRawPointer?
    private let lock = Lock()

    public var pluginName: String { plugin.name }

    /// Load the wallet plugin a config entry names and create an instance
    /// (`data_dir` is passed when given).
    public static func open(_ reference: PluginReference, config: MasqConfig, dataDirectory: String? = nil)
        throws(MasqError) -> WalletPluginInstance
    {
        let plugin = try PluginLoader.load(
            reference, kind: .wallet, searchPath: PluginLoader.searchPath(config: config))
        var options = reference.options.filter { $0.key != "data_dir" }
        options.append(("data_dir", dataDirectory ?? config.dataDir))
        return try WalletPluginInstance(plugin: plugin, options: options)
    }

    init(plugin: LoadedPlugin, options: [(key: String, value: String)]) throws(MasqError) {
        precondition(plugin.kind == .wallet)
        self.plugin = plugin
        host = PluginHost(component: "wallet:\(plugin.name)")
        v = plugin.vtable(as: masq_wallet_vtable.self, zero: masq_wallet_vtable())
        let create = v.create!  // present: LoadedPlugin checked the vtable
        instance = try host.makeInstance(options, label: "wallet \(plugin.name)", operation: "create") {
            create($0, $1, $2, $3)
        }
    }

    deinit {
        if let instance { v.destroy(instance) }
    }

    public func address() throws(MasqError) -> String {
        try text(try collect { i, sink, ctx in v.address(i, sink, ctx) }, "address")
    }

    public func balance(asset: String? = nil) throws(MasqError) -> String {
        try text(try collect { i, sink, ctx in withOptionalCString(asset) { v.balance(i, $0, sink, ctx) } }, "balance")
    }

    /// Pay `amount` (decimal) to `to`; returns the transaction id.
    public func pay(to: String, amount: String, asset: String? = nil, memo: [UInt8] = []) throws(MasqError) -> String {
        try text(
            try collect { i, sink, ctx in
                to.withCString { t in
                    amount.withCString { a in
                        withOptionalCString(asset) { s in
                            memo.withUnsafeBufferPointer { m in v.pay(i, t, s, a, m.baseAddress, m.count, sink, ctx) }
                        }
                    }
                }
            }, "pay")
    }

    public func sign(_ message: [UInt8]) throws(MasqError) -> [UInt8] {
        try collect { i, sink, ctx in message.withUnsafeBufferPointer { v.sign(i, $0.baseAddress, $0.count, sink, ctx) }
        }
    }

    public func verify(address: String, message: [UInt8], signature: [UInt8]) -> Bool {
        call { i in
            address.withCString { a in
                message.withUnsafeBufferPointer { m in
                    signature.withUnsafeBufferPointer { s in
                        v.verify(i, a, m.baseAddress, m.count, s.baseAddress, s.count)
                    }
                }
            }
        } == MASQ_OK
    }

    /// MASQ_OK when `txid` moved at least `amount` from `from` to `to`; throws
    /// MASQ_E_NOT_FOUND (unknown or not final) or MASQ_E_DENIED (does not match).
    public func verifyPayment(txid: String, from: String, to: String, amount: String, asset: String? = nil)
        throws(MasqError)
    {
        let status = call { i in
            txid.withCString { t in
                from.withCString { f in
                    to.withCString { o in
                        amount.withCString { a in
                            withOptionalCString(asset) { s in v.verify_payment(i, t, f, o, s, a) }
                        }
                    }
                }
            }
        }
        if status == MASQ_E_NOT_FOUND {
            throw MasqError(.notFound, "wallet \(plugin.name): no final transaction \(txid)")
        }
        if status == MASQ_E_DENIED {
            throw MasqError(
                .denied, "wallet \(plugin.name): transaction \(txid) does not pay \(amount) from \(from) to \(to)")
        }
        try check(status, "verify_payment")
    }

    public struct Payment: Codable, Sendable, Equatable {
        public var txid: String
        public var from: String
        public var asset: String?
        public var amount: String
    }

    /// Payments received after `cursor`, and the cursor to pass next.
    public func payments(after cursor: UInt64, limit: UInt32 = 1_000) throws(MasqError) -> (
        payments: [Payment], cursor: UInt64
    ) {
        guard let payments = v.payments else {
            throw MasqError(.unsupported, "wallet \(plugin.name) cannot list received payments")
        }
        let bytes = try collect { i, sink, ctx in payments(i, cursor, limit, sink, ctx) }
        struct Answer: Codable { var payments: [Payment]; var cursor: UInt64 }
        guard let answer = try? JSONDecoder().decode(Answer.self, from: Data(bytes)) else {
            throw MasqError(.plugin, "wallet \(plugin.name): malformed payments answer")
        }
        return (answer.payments, answer.cursor)
    }

    // MARK: plumbing

    private func call(_ body: (UnsafeMutableRawPointer) -> Int32) -> Int32 {
        guard let handle = lock.withLock({ instance }) else { return MASQ_E_CLOSED }
        masqsupport_clear_error()
        return body(handle)
    }

    private func collect(_ body: (UnsafeMutableRawPointer, masq_bytes_sink, UnsafeMutableRawPointer) -> Int32)
        throws(MasqError) -> [UInt8]
    {
        var out: [UInt8] = []
        let status = withUnsafeMutablePointer(to: &out) { pointer in
            call { i in
                body(
                    i,
                    { raw, data, length in
                        guard let raw, length <= 1 << 24 else { return MASQ_E_TOO_LARGE }
                        raw.assumingMemoryBound(to: [UInt8].self).pointee += UnsafeBufferPointer(
                            start: data, count: length)
                        return MASQ_OK
                    }, UnsafeMutableRawPointer(pointer))
            }
        }
        try check(status, "call")
        return out
    }

    private func text(_ bytes: [UInt8], _ what: String) throws(MasqError) -> String {
        guard let s = String(validating: bytes, as: UTF8.self) else {
            throw MasqError(.plugin, "wallet \(plugin.name): \(what) is not UTF-8")
        }
        return s
    }

    private func check(_ status: Int32, _ operation: String) throws(MasqError) {
        try checkPlugin(status, label: "wallet \(plugin.name)", operation: operation)
    }
}
