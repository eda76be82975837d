import CMasq
import CMasqSupport
#if canImport(Glibc)
    import Glibc
#endif

/// The host table (masq_host) handed to one plugin instance: logging, error
/// reporting, clocks, randomness and, for transports, frame delivery. It must
/// outlive the instance; its owner keeps it until after close/destroy.
final class PluginHost: @unchecked Sendable {
    let component: String
    let table: UnsafeMutablePointer<masq_host>

    /// Transport callbacks; set before the transport starts.
    var onFrame: (@Sendable (_ peer: String, _ room: String?, _ frame: UnsafeRawBufferPointer) -> Void)?
    var onPeerEvent: (@Sendable (_ peer: String, _ event: Int32) -> Void)?
    /// A peer came up with what the transport knows of it (JSON text).
    var onPeerInfo: (@Sendable (_ peer: String, _ info: String) -> Void)?
    /// Open a challenge sealed to a mailbox key the kernel holds (Connectoid).
    var onChallenge: (@Sendable (_ mailbox: String, _ question: [UInt8]) throws(MasqError) -> [UInt8])?

    init(component: String, transport: Bool = false) {
        self.component = component
        table = .allocate(capacity: 1)
        table.initialize(to: masq_host())
        table.pointee.struct_size = UInt32(MemoryLayout<masq_host>.size)
        table.pointee.abi_version = UInt32(MASQ_PLUGIN_ABI_VERSION)
        table.pointee.host_ctx = Unmanaged.passUnretained(self).toOpaque()
        table.pointee.log = { host, level, message in
            guard let me = PluginHost.from(host) else { return }
            let text = message.map { String(cString: $0) } ?? ""
            Log.emit(LogLevel(rawValue: min(max(level, 0), 3)) ?? .debug, me.component, text)
        }
        table.pointee.error = { host, status, message in
            let text = message.map { String(cString: $0) } ?? ""
            masqsupport_set_error(status, text)
            return status
        }
        table.pointee.now_unix_ms = { _ in Clock.unixMilliseconds() }
        table.pointee.monotonic_ns = { _ in Clock.monotonicNanoseconds() }
        table.pointee.random_bytes = { _, buffer, length in
            guard length == 0 || buffer != nil else { return MASQ_E_INVALID }
            return SecureRandom.fill(UnsafeMutableRawBufferPointer(start: buffer, count: length))
                ? MASQ_OK : MASQ_E_INTERNAL
        }
        if transport {
            table.pointee.frame_received = { host, peer, room, frame, length in
                guard let me = PluginHost.from(host), let peer, frame != nil || length == 0 else { return }
                me.onFrame?(
                    String(cString: peer), room.map { String(cString: $0) },
                    UnsafeRawBufferPointer(start: frame, count: length))
            }
            table.pointee.peer_event = { host, peer, event in
                guard let me = PluginHost.from(host), let peer else { return }
                me.onPeerEvent?(String(cString: peer), event)
            }
            table.pointee.peer_up_info = { host, peer, info in
                guard let me = PluginHost.from(host), let peer else { return }
                let text = info.map { String(cString: $0) } ?? "{}"
                if let onPeerInfo = me.onPeerInfo {
                    onPeerInfo(String(cString: peer), text)
                } else {
                    me.onPeerEvent?(String(cString: peer), MASQ_PEER_UP)
                }
            }
            table.pointee.answer_challenge = { host, mailbox, question, length, sink, ctx in
                guard let me = PluginHost.from(host), let mailbox, question != nil || length == 0, let sink else {
                    return MASQ_E_INVALID
                }
                guard let answer = me.onChallenge else {
                    masqsupport_set_error(MASQ_E_NOT_FOUND, "this kernel holds no mailbox keys")
                    return MASQ_E_NOT_FOUND
                }
                do throws(MasqError) {
                    let bytes = try answer(
                        String(cString: mailbox), Array(UnsafeRawBufferPointer(start: question, count: length)))
                    return bytes.withUnsafeBufferPointer { sink(ctx, $0.baseAddress, $0.count) }
                } catch {
                    masqsupport_set_error(error.status.rawValue, error.message)
                    return error.status.rawValue
                }
            }
        }
    }

    deinit {
        table.deinitialize(count: 1)
        table.deallocate()
    }

    private static func from(_ host: UnsafePointer<masq_host>?) -> PluginHost? {
        guard let ctx = host?.pointee.host_ctx else { return nil }
        return Unmanaged<PluginHost>.fromOpaque(ctx).takeUnretainedValue()
    }
}

/// Time sources shared by the kernel and its host table.
public enum Clock {
    /// The wall clock (Unix ms), for tools that show it beside the store's.
    public static func wallMilliseconds() -> UInt64 { unixMilliseconds() }

    package static func unixMilliseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// The operating system's CSPRNG (getrandom(2)); blocks only before the
/// kernel's pool is first seeded.
enum SecureRandom {
    static func fill(_ buffer: UnsafeMutableRawBufferPointer) -> Bool {
        buffer.count == 0 || masqsupport_random(buffer.baseAddress, buffer.count) == 0
    }

    static func uint64() -> UInt64 {
        var value: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &value) { fill($0) }
        return value
    }
}

/// What a plugin call's status says: the plugin's own explanation (given
/// through host->error on this thread) when it gave one, else the status's
/// name. `label` names the plugin in the message.
func pluginMessage(_ status: Int32, label: String, operation: String) -> String {
    let reported = masqsupport_error_code() == status ? String(cString: masqsupport_error_message()) : ""
    let name = MasqStatus(rawValue: status)?.name ?? "status \(status)"
    return reported.isEmpty ? "\(label): \(operation) failed with \(name)" : "\(label): \(reported)"
}

/// A plugin call's status as an error (nothing for MASQ_OK).
func checkPlugin(_ status: Int32, label: String, operation: String) throws(MasqError) {
    if status == MASQ_OK { return }
    throw MasqError(
        MasqStatus(rawValue: status) ?? .internal, pluginMessage(status, label: label, operation: operation))
}

extension PluginHost {
    /// A plugin instance made through its vtable's `open` or `create` (`entry`),
    /// given this host table and `options` (the thread's plugin error cleared
    /// first): the plugin's status and message when it fails, an internal
    /// error when it claims success without a handle.
    func makeInstance(
        _ options: [(key: String, value: String)], label: String, operation: String,
        _ entry: (
            UnsafePointer<masq_host>, UnsafePointer<masq_plugin_option>?, Int,
            UnsafeMutablePointer<UnsafeMutableRawPointer?>
        ) -> Int32
    ) throws(MasqError) -> UnsafeMutableRawPointer {
        var handle: UnsafeMutableRawPointer?
        let status = withOptions(options) { list, count in
            masqsupport_clear_error()
            return entry(UnsafePointer(table), list, count, &handle)
        }
        try checkPlugin(status, label: label, operation: operation)
        guard let handle else { throw MasqError(.internal, "\(label): \(operation)() returned no instance") }
        return handle
    }
}
