import Dispatch

/// Pairing through a transport with rooms (the relay): both devices join the
/// room named by the link (an HKDF of its secret, never the secret) and pass
/// PairingFlow frames through it. The relay sees the room and opaque frames.
public enum PairingRendezvous {
    /// Frames from the transport's threads, taken one at a time with a timeout.
    /// Frames are bounded (a room is open to whoever knows it): past
    /// `maxQueued` waiting frames the newest are dropped.
    public final class Inbox: @unchecked Sendable {
        private let lock = Lock()
        private var frames: [[UInt8]] = []
        private var cancelled = false
        private let signal = DispatchSemaphore(value: 0)
        static let maxQueued = 64

        public init() {}

        func put(_ frame: [UInt8]) {
            let queued = lock.withLock { () -> Bool in
                guard frames.count < Self.maxQueued else { return false }
                frames.append(frame)
                return true
            }
            if queued { signal.signal() }
        }

        /// End the wait: the offer or join it feeds fails with MASQ_E_CLOSED.
        public func cancel() {
            lock.withLock { cancelled = true }
            signal.signal()
        }

        public var isCancelled: Bool { lock.withLock { cancelled } }

        func take(until deadline: UInt64) -> [UInt8]? {
            let remaining = deadline > Clock.monotonicNanoseconds() ? deadline - Clock.monotonicNanoseconds() : 0
            guard signal.wait(timeout: .now() + .nanoseconds(Int(min(remaining, UInt64(Int.max))))) == .success else {
                return nil
            }
            return lock.withLock { cancelled || frames.isEmpty ? nil : frames.removeFirst() }
        }
    }

    /// Seconds to wait for the relay to answer before saying it cannot be reached.
    static let connectTimeout: Double = 10

    static func open(_ store: Store, _ transport: PluginReference, url: String, room: String, inbox: Inbox)
        throws(MasqError) -> TransportPluginInstance
    {
        // The first transport event: up, or down (the relay cannot be reached).
        let first = LockedValue<Int32?>(nil)
        let decided = DispatchSemaphore(value: 0)
        let engine = try store.openTransport(
            transport,
            onFrame: { _, frameRoom, frame in
                if frameRoom == room { inbox.put(frame) }
            },
            onPeerEvent: { _, event in
                guard event == TransportPluginInstance.transportUp || event == TransportPluginInstance.transportDown
                else { return }
                if first.withLock({ f -> Bool in
                    guard f == nil else { return false }
                    f = event
                    return true
                }) {
                    decided.signal()
                }
            })
        try engine.start()
        try engine.connect(url)
        try engine.join(room)
        // A link nobody can reach is not worth showing: wait until the relay
        // answers or fails (a transport that reports neither gets the benefit
        // of the doubt once the wait is over).
        _ = decided.wait(timeout: .now() + connectTimeout)
        if first.withLock({ $0 }) == TransportPluginInstance.transportDown {
            engine.close()
            throw MasqError(.unavailable, "cannot reach the relay at \(url)")
        }
        return engine
    }

    /// Offer a link (via `url`), show it with `onLink`, and wait up to `ttl`
    /// seconds for a device to join. Failed attempts are refused (the joiner
    /// is told why) and the wait goes on.
    public static func offer(
        store: Store, transport: PluginReference, url: String, ttl: UInt64 = Store.defaultPairingTTL,
        inbox: Inbox = Inbox(),
        onLink: (PairingLink) -> Void, onFailure: (MasqError) -> Void = { _ in }
    ) throws(MasqError) -> PairedDevice {
        let link = try store.createPairingOffer(via: url, ttl: ttl)
        let room = hex(link.room)
        let engine = try open(store, transport, url: url, room: room, inbox: inbox)
        defer { engine.close() }
        onLink(link)
        let deadline = Clock.monotonicNanoseconds() + ttl * 1_000_000_000
        var flow = try PairingFlow(offering: link, store: store)
        while let frame = inbox.take(until: deadline) {
            do throws(MasqError) {
                switch try flow.receive(frame) {
                case .send(let reply):
                    try engine.send(room, reply)
                case .paired(let device, let final):
                    if let final { try engine.send(room, final) }
                    usleep(200_000)  // let the final frame leave before closing
                    return device
                }
            } catch {
                onFailure(error)
                if frame.first != PairingFlow.refusalFrame {
                    try? engine.send(room, PairingFlow.refusal(error.message))
                }
                flow = try PairingFlow(offering: link, store: store)
            }
        }
        if inbox.isCancelled { throw MasqError(.closed, "pairing cancelled") }
        throw MasqError(.timeout, "the pairing link expired before another device joined")
    }

    /// Join through the link's relay; `timeout` seconds for the whole exchange.
    public static func join(
        store: Store, link: PairingLink, transport: PluginReference, timeout: Double = 60,
        inbox: Inbox = Inbox()
    ) throws(MasqError) -> PairedDevice {
        guard let url = link.via else { throw .invalid("the link does not say which relay to use (no via=)") }
        let room = hex(link.room)
        let engine = try open(store, transport, url: url, room: room, inbox: inbox)
        defer { engine.close() }
        let flow = try PairingFlow(joining: link, store: store)
        try engine.send(room, try flow.start())
        let deadline = Clock.monotonicNanoseconds() + UInt64(timeout * 1e9)
        while let frame = inbox.take(until: deadline) {
            switch try flow.receive(frame) {
            case .send(let reply): try engine.send(room, reply)
            case .paired(let device, _): return device
            }
        }
        if inbox.isCancelled { throw MasqError(.closed, "pairing cancelled") }
        throw MasqError(
            .timeout, "no answer from the other device through \(url) (is `masq pair` still waiting there?)")
    }
}

#if canImport(Glibc)
    import Glibc
#endif

extension MasqConfig {
    /// The relay transport to pair or sync through: `explicit` URL (with the
    /// config's relay plugin settings if any), else the config's first
    /// transport with a "url" option. Nil when neither exists.
    public func relayTransport(explicit: String?) -> (reference: PluginReference, url: String)? {
        let configured = transports.first { t in t.options.contains { $0.key == "url" } }
        if let explicit {
            var reference = configured ?? PluginReference(name: "relay")
            reference.options = reference.options.filter { $0.key != "url" } + [("url", explicit)]
            return (reference, explicit)
        }
        guard let configured, let url = configured.options.first(where: { $0.key == "url" })?.value else { return nil }
        return (configured, url)
    }

    /// This config syncing through the relay at `url` — nil when it already
    /// names a transport (devices keep the relay they paired through).
    public func rememberingRelay(_ url: String) -> MasqConfig? {
        guard transports.isEmpty else { return nil }
        var config = self
        config.transports = [PluginReference(name: "relay", options: [("url", url)])]
        return config
    }
}
