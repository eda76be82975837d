// The relay transport plugin: a WebSocket client (SwiftNIO) for `masq relay`.
// It joins rooms and carries opaque frames (already sealed by the kernel's
// sessions); the relay sees room ids and ciphertext only. It reconnects with
// exponential backoff and keeps an outbound queue across disconnects.
// It sees nothing of Masq but include/masq_plugin.h and the relay's wire format.
import CMasqPlugin
import MasqRelayProtocol
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

private let pluginName: StaticString = "relay"
private let pluginVersion: StaticString = "1.0.0"
private let pluginSummary: StaticString = "WebSocket client for masq relay (rooms, reconnect, outbound queue)"

/// A parsed ws:// or wss:// endpoint.
struct Endpoint: Sendable {
    let tls: Bool
    let host: String
    let port: Int
    let path: String

    init(_ text: String) throws(TransportFailure) {
        let secure = text.hasPrefix("wss://")
        guard secure || text.hasPrefix("ws://") else { throw .init(MASQ_E_INVALID, "endpoint must start with ws:// or wss://, not \(text)") }
        var rest = Substring(text.dropFirst(secure ? 6 : 5))
        var path = "/"
        if let slash = rest.firstIndex(of: "/") {
            path = String(rest[slash...])
            rest = rest[..<slash]
        }
        var host = String(rest)
        var port = secure ? 443 : 80
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(p) else { throw .init(MASQ_E_INVALID, "bad port in \(text)") }
            port = p
            host = String(rest[..<colon])
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw .init(MASQ_E_INVALID, "no host in \(text)") }
        self.tls = secure
        self.host = host
        self.port = port
        self.path = path
    }
}

struct TransportFailure: Error {
    let status: Int32
    let message: String
    init(_ status: Int32, _ message: String) {
        self.status = status
        self.message = message
    }
}

/// One plugin instance. All mutable state lives on the event loop.
final class RelayTransport: @unchecked Sendable {
    struct Options {
        var maxQueueFrames = 10_000
        var maxQueueBytes = 64 << 20
        var maxFrameBytes = 1 << 20
        var minBackoffMilliseconds: Int64 = 100
        var maxBackoffMilliseconds: Int64 = 30_000
    }

    /// What `stats` reports (readable from any thread).
    struct Counters {
        var framesSent: UInt64 = 0
        var framesReceived: UInt64 = 0
        /// Malformed, truncated, unknown-version, oversized or unexpected frames from the relay.
        var framesRejected: UInt64 = 0
        /// ERROR frames the relay answered with (rate limit, not in room…).
        var relayErrors: UInt64 = 0
        /// `send` calls refused because the outbound queue was full.
        var sendsRefused: UInt64 = 0
        var connects: UInt64 = 0

        var json: String {
            "{\"frames_sent\": \(framesSent), \"frames_received\": \(framesReceived), \"frames_rejected\": \(framesRejected), "
                + "\"relay_errors\": \(relayErrors), \"sends_refused\": \(sendsRefused), \"connects\": \(connects)}"
        }
    }

    let host: UnsafePointer<masq_host>
    let options: Options
    let group: MultiThreadedEventLoopGroup
    let loop: EventLoop
    private let stopped = NIOLockedValueBox(false)
    let counters = NIOLockedValueBox(Counters())

    // Event-loop state
    private var endpoint: Endpoint?
    private var channel: Channel?
    private var connected = false
    private var connecting = false
    private var rooms: Set<[UInt8]> = []
    private var queue: [[UInt8]] = []
    private var queuedBytes = 0
    private var backoff: Int64
    private var reconnectTask: Scheduled<Void>?
    private var tls: NIOSSLContext?

    init(host: UnsafePointer<masq_host>, options: Options) {
        self.host = host
        self.options = options
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        loop = group.next()
        backoff = options.minBackoffMilliseconds
    }

    // MARK: plugin entry points (any thread)

    func start() -> Int32 { MASQ_OK }

    func stop() -> Int32 {
        guard !stopped.withLockedValue({ s in defer { s = true }; return s }) else { return MASQ_OK }
        onLoop {
            self.reconnectTask?.cancel()
            self.channel?.close(promise: nil)
        }
        try? group.syncShutdownGracefully()
        return MASQ_OK
    }

    func connect(_ text: String) -> Int32 {
        let parsed: Endpoint
        do throws(TransportFailure) { parsed = try Endpoint(text) } catch { return fail(error) }
        var made: NIOSSLContext?
        if parsed.tls {
            do { made = try NIOSSLContext(configuration: .makeClientConfiguration()) } catch {
                return host.pointee.error(host, MASQ_E_INTERNAL, "TLS setup failed: \(error)")
            }
        }
        let context = made
        loop.execute {
            self.endpoint = parsed
            self.tls = context
            self.open()
        }
        return MASQ_OK
    }

    func join(_ room: [UInt8]) -> Int32 {
        guard (1...RelayFrame.maxRoomLength).contains(room.count) else { return host.pointee.error(host, MASQ_E_INVALID, "room must be 1...64 bytes") }
        loop.execute {
            if self.rooms.insert(room).inserted, self.connected { self.write(RelayFrame.join(room: room).encoded()) }
        }
        return MASQ_OK
    }

    func leave(_ room: [UInt8]) -> Int32 {
        loop.execute {
            if self.rooms.remove(room) != nil, self.connected { self.write(RelayFrame.leave(room: room).encoded()) }
        }
        return MASQ_OK
    }

    /// Queue a frame for a room; it waits in the queue while disconnected.
    func send(_ room: [UInt8], _ payload: UnsafeRawBufferPointer) -> Int32 {
        guard (1...RelayFrame.maxRoomLength).contains(room.count) else { return host.pointee.error(host, MASQ_E_INVALID, "room must be 1...64 bytes") }
        let size = 3 + room.count + payload.count
        guard size <= options.maxFrameBytes else {
            return host.pointee.error(host, MASQ_E_TOO_LARGE, "frame of \(payload.count) bytes exceeds the relay limit (option max_frame_bytes)")
        }
        var built = RelayFrame.header(3, room: room, payloadCount: payload.count)
        built.append(contentsOf: payload)
        let frame = built
        let accepted = NIOLockedValueBox(true)
        let limits = options
        onLoop {
            guard self.queue.count < limits.maxQueueFrames, self.queuedBytes + frame.count <= limits.maxQueueBytes else {
                accepted.withLockedValue { $0 = false }
                return
            }
            self.queue.append(frame)
            self.queuedBytes += frame.count
            self.flush()
        }
        guard accepted.withLockedValue({ $0 }) else {
            counters.withLockedValue { $0.sendsRefused += 1 }
            return host.pointee.error(host, MASQ_E_BUSY, "outbound queue full (options max_queue_frames / max_queue_bytes)")
        }
        return MASQ_OK
    }

    /// Run `body` on the event loop and wait for it (directly when already there).
    private func onLoop(_ body: @escaping @Sendable () -> Void) {
        if loop.inEventLoop { body() } else { try? loop.submit(body).wait() }
    }

    // MARK: connection (event loop)

    private func open() {
        guard let endpoint, !connecting, channel == nil, !stopped.withLockedValue({ $0 }) else { return }
        connecting = true
        let transport = self
        let tls = self.tls
        let maxFrame = options.maxFrameBytes
        let bootstrap = ClientBootstrap(group: loop)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                do {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: endpoint.host))
                    }
                    let request = UpgradeRequestHandler(endpoint: endpoint)
                    let upgrader = NIOWebSocketClientUpgrader(
                        maxFrameSize: maxFrame,
                        upgradePipelineHandler: { channel, _ in
                            do {
                                try channel.pipeline.syncOperations.addHandler(NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 64, maxAccumulatedFrameSize: maxFrame))
                                try channel.pipeline.syncOperations.addHandler(FrameHandler(transport: transport))
                                return channel.eventLoop.makeSucceededVoidFuture()
                            } catch {
                                return channel.eventLoop.makeFailedFuture(error)
                            }
                        })
                    let bound = NIOLoopBound(request, eventLoop: channel.eventLoop)
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(withClientUpgrade: (upgraders: [upgrader], completionHandler: { context in
                        context.pipeline.syncOperations.removeHandler(bound.value, promise: nil)
                    }))
                    try channel.pipeline.syncOperations.addHandler(request)
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        bootstrap.connect(host: endpoint.host, port: endpoint.port).whenComplete { result in
            self.connecting = false
            switch result {
            case .success(let channel):
                self.channel = channel
                channel.closeFuture.whenComplete { _ in self.lost() }
            case .failure(let error):
                self.log(MASQ_LOG_WARN, "cannot reach \(endpoint.host):\(endpoint.port): \(error)")
                self.scheduleReconnect()
            }
        }
    }

    /// The WebSocket is up: join rooms, then send what waited.
    fileprivate func upgraded() {
        connected = true
        counters.withLockedValue { $0.connects += 1 }
        backoff = options.minBackoffMilliseconds
        log(MASQ_LOG_INFO, "connected to the relay")
        for room in rooms { write(RelayFrame.join(room: room).encoded()) }
        flush()
        host.pointee.peer_event(host, "relay", MASQ_PEER_UP)
    }

    private func lost() {
        let wasConnected = connected
        connected = false
        channel = nil
        if wasConnected {
            log(MASQ_LOG_INFO, "relay connection lost; reconnecting")
            host.pointee.peer_event(host, "relay", MASQ_PEER_DOWN)
        }
        scheduleReconnect()
    }

    private func scheduleReconnect() {
        guard !stopped.withLockedValue({ $0 }) else { return }
        let delay = backoff + Int64.random(in: 0...(backoff / 4 + 1))
        backoff = min(backoff * 2, options.maxBackoffMilliseconds)
        reconnectTask = loop.scheduleTask(in: .milliseconds(delay)) { self.open() }
    }

    private func flush() {
        guard connected, let channel, !queue.isEmpty else { return }
        for frame in queue { write(frame, on: channel, flush: false) }
        channel.flush()
        counters.withLockedValue { $0.framesSent += UInt64(queue.count) }
        queue.removeAll(keepingCapacity: true)
        queuedBytes = 0
    }

    private func write(_ bytes: [UInt8], on target: Channel? = nil, flush: Bool = true) {
        guard let channel = target ?? channel else { return }
        var buffer = channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        let frame = WebSocketFrame(fin: true, opcode: .binary, maskKey: .random(), data: buffer)
        if flush { channel.writeAndFlush(frame, promise: nil) } else { channel.write(frame, promise: nil) }
    }

    /// A frame from the relay.
    fileprivate func received(_ data: ByteBuffer) {
        let decoded: Result<RelayFrame, RelayProtocolError> = data.withUnsafeReadableBytes { raw in Result { () throws(RelayProtocolError) in try RelayFrame.decode(raw) } }
        switch decoded {
        case .success(.deliver(let room, let payload)):
            counters.withLockedValue { $0.framesReceived += 1 }
            let roomText = hex(room)
            payload.withUnsafeBufferPointer { p in host.pointee.frame_received(host, "relay", roomText, p.baseAddress, p.count) }
        case .success(.presence(let room, _)):
            host.pointee.peer_event(host, hex(room), MASQ_PEER_UP)
        case .success(.error(let code, let message)):
            counters.withLockedValue { $0.relayErrors += 1 }
            log(MASQ_LOG_WARN, "relay refused a frame (\(code)): \(message)")
        case .success:
            rejected("unexpected frame type from the relay")
        case .failure(let error):
            rejected("\(error)")
        }
    }

    /// Count and log a frame refused from the relay (the connection stays up).
    fileprivate func rejected(_ why: String) {
        counters.withLockedValue { $0.framesRejected += 1 }
        log(MASQ_LOG_WARN, "rejected a frame from the relay: \(why)")
    }

    fileprivate func ping(_ data: ByteBuffer) {
        channel?.writeAndFlush(WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: data), promise: nil)
    }

    private func log(_ level: Int32, _ message: String) {
        host.pointee.log(host, level, message)
    }

    private func fail(_ failure: TransportFailure) -> Int32 {
        host.pointee.error(host, failure.status, failure.message)
    }
}

/// Sends the HTTP request the WebSocket upgrade starts with.
final class UpgradeRequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let endpoint: Endpoint

    init(endpoint: Endpoint) { self.endpoint = endpoint }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(endpoint.host):\(endpoint.port)")
        headers.add(name: "Content-Length", value: "0")
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: endpoint.path, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // A plain HTTP answer means the upgrade was refused (e.g. relay full).
        if case .head(let head) = unwrapInboundIn(data) {
            context.fireErrorCaught(TransportFailure(MASQ_E_UNAVAILABLE, "relay refused the WebSocket upgrade: \(head.status.code)"))
        }
        context.close(promise: nil)
    }
}

/// Frames after the upgrade.
final class FrameHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    let transport: RelayTransport

    init(transport: RelayTransport) { self.transport = transport }

    func handlerAdded(context: ChannelHandlerContext) { transport.upgraded() }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary: transport.received(frame.unmaskedData)
        case .ping: transport.ping(frame.unmaskedData)
        case .connectionClose: context.close(promise: nil)
        case .text: transport.rejected("text frames are not part of the protocol")
        default: break
        }
    }

    /// Oversized or malformed WebSocket frames: count, drop the connection
    /// (it reconnects with backoff).
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if error is NIOWebSocketError { transport.rejected("\(error); reconnecting") }
        context.close(promise: nil)
    }
}

func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }, as: UTF8.self)
}

func unhex(_ text: String) -> [UInt8]? {
    let chars = Array(text.utf8)
    guard chars.count % 2 == 0 else { return nil }
    var out: [UInt8] = []
    var i = 0
    while i < chars.count {
        guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
        out.append(hi << 4 | lo)
        i += 2
    }
    return out
}

private func nibble(_ c: UInt8) -> UInt8? {
    switch c {
    case 0x30...0x39: c - 0x30
    case 0x61...0x66: c - 0x61 + 10
    case 0x41...0x46: c - 0x41 + 10
    default: nil
    }
}

// MARK: - options, vtable, descriptor

private func parseOptions(_ list: UnsafePointer<masq_plugin_option>?, _ count: Int) throws(TransportFailure) -> RelayTransport.Options {
    var options = RelayTransport.Options()
    for i in 0..<count {
        guard let list, let k = list[i].key, let v = list[i].value else { throw .init(MASQ_E_INVALID, "option \(i) is NULL") }
        let key = String(cString: k), value = String(cString: v)
        func number(_ range: ClosedRange<Int>) throws(TransportFailure) -> Int {
            guard let n = Int(value), range.contains(n) else { throw .init(MASQ_E_CONFIG, "option \(key) must be \(range.lowerBound)...\(range.upperBound), not \"\(value)\"") }
            return n
        }
        switch key {
        case "data_dir", "url": break
        case "max_queue_frames": options.maxQueueFrames = try number(1...10_000_000)
        case "max_queue_bytes": options.maxQueueBytes = try number(1_024...(1 << 34))
        case "max_frame_bytes": options.maxFrameBytes = try number(64...(64 << 20))
        case "min_backoff_ms": options.minBackoffMilliseconds = Int64(try number(1...60_000))
        case "max_backoff_ms": options.maxBackoffMilliseconds = Int64(try number(1...3_600_000))
        default: throw .init(MASQ_E_CONFIG, "unknown option \"\(key)\" (known: url, max_queue_frames, max_queue_bytes, max_frame_bytes, min_backoff_ms, max_backoff_ms)")
        }
    }
    return options
}

@inline(__always)
private func transport(_ raw: UnsafeMutableRawPointer?) -> RelayTransport? {
    raw.map { Unmanaged<RelayTransport>.fromOpaque($0).takeUnretainedValue() }
}

nonisolated(unsafe) private let vtable: UnsafeMutablePointer<masq_transport_vtable> = {
    let v = UnsafeMutablePointer<masq_transport_vtable>.allocate(capacity: 1)
    var t = masq_transport_vtable()
    t.struct_size = UInt32(MemoryLayout<masq_transport_vtable>.size)
    t.flags = MASQ_TRANSPORT_CONNECT | MASQ_TRANSPORT_ROOMS
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
    t.destroy = { raw in
        guard let raw else { return }
        let unmanaged = Unmanaged<RelayTransport>.fromOpaque(raw)
        _ = unmanaged.takeUnretainedValue().stop()
        unmanaged.release()
    }
    t.start = { raw in transport(raw)?.start() ?? MASQ_E_INVALID }
    t.stop = { raw in transport(raw)?.stop() ?? MASQ_E_INVALID }
    t.connect = { raw, endpoint in
        guard let t = transport(raw), let endpoint else { return MASQ_E_INVALID }
        return t.connect(String(cString: endpoint))
    }
    t.join = { raw, room in
        guard let t = transport(raw), let room, let bytes = unhex(String(cString: room)) else { return MASQ_E_INVALID }
        return t.join(bytes)
    }
    t.leave = { raw, room in
        guard let t = transport(raw), let room, let bytes = unhex(String(cString: room)) else { return MASQ_E_INVALID }
        return t.leave(bytes)
    }
    t.send = { raw, destination, frame, length in
        guard let t = transport(raw), let destination, let room = unhex(String(cString: destination)), frame != nil || length == 0 else { return MASQ_E_INVALID }
        return t.send(room, UnsafeRawBufferPointer(start: frame, count: length))
    }
    t.stats = { raw, sink, ctx in
        guard let t = transport(raw), let sink else { return MASQ_E_INVALID }
        let text = Array(t.counters.withLockedValue { $0.json }.utf8)
        return text.withUnsafeBufferPointer { sink(ctx, $0.baseAddress, $0.count) }
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
