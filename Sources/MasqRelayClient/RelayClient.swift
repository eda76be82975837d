// The relay client behind the relay and mesh transport plugins: a WebSocket
// client (SwiftNIO) for `masq relay`. It joins rooms and carries opaque
// frames (already sealed by the kernel's sessions); the relay sees room ids
// and ciphertext only. It reconnects with exponential backoff and keeps an
// outbound queue across disconnects; through a SOCKS5 proxy when asked (the
// mesh plugin's node). It sees nothing of Masq but include/masq_plugin.h and
// the relay's wire format.
import CMasqPlugin
import MasqEncoding
import MasqPluginSupport
import MasqRelayProtocol
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// A parsed ws:// or wss:// endpoint.
struct Endpoint: Sendable {
    let tls: Bool
    let host: String
    let port: Int
    let path: String
    let text: String

    init(_ text: String) throws(PluginFailure) {
        let secure = text.hasPrefix("wss://")
        guard secure || text.hasPrefix("ws://") else {
            throw .init(MASQ_E_INVALID, "endpoint must start with ws:// or wss://, not \(text)")
        }
        var rest = Substring(text.dropFirst(secure ? 6 : 5))
        var path = "/"
        if let slash = rest.firstIndex(of: "/") {
            path = String(rest[slash...])
            rest = rest[..<slash]
        }
        var host = String(rest)
        var port = secure ? 443 : 80
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65_535).contains(p) else {
                throw .init(MASQ_E_INVALID, "bad port in \(text)")
            }
            port = p
            host = String(rest[..<colon])
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw .init(MASQ_E_INVALID, "no host in \(text)") }
        self.tls = secure
        self.host = host
        self.port = port
        self.path = path
        self.text = text
    }

    private init(tls: Bool, host: String, port: Int, path: String, text: String) {
        self.tls = tls
        self.host = host
        self.port = port
        self.path = path
        self.text = text
    }

    /// The same endpoint requesting another path (`text` stays the configured URL).
    func withPath(_ path: String) -> Endpoint { Endpoint(tls: tls, host: host, port: port, path: path, text: text) }
}

/// One plugin instance. All mutable state lives on the event loop.
public final class RelayTransport: PluginTransport, @unchecked Sendable {
    public struct Options: Sendable {
        public var maxQueueFrames = 10_000
        public var maxQueueBytes = 64 << 20
        public var maxFrameBytes = 1 << 20
        public var minBackoffMilliseconds: Int64 = 100
        /// Capped near 5 s: after a relay outage devices are back within seconds
        /// (with jitter, so they do not all come back at once).
        public var maxBackoffMilliseconds: Int64 = 5_000
        /// Reach the relay through this SOCKS5 proxy (host, port): the mesh.
        public var socks5: (host: String, port: Int)?
        public init() {}
    }

    /// What `stats` reports (readable from any thread).
    public struct Counters {
        var framesSent: UInt64 = 0
        var framesReceived: UInt64 = 0
        /// Malformed, truncated, unknown-version, oversized or unexpected frames from the relay.
        var framesRejected: UInt64 = 0
        /// ERROR frames the relay answered with (rate limit, not in room…).
        var relayErrors: UInt64 = 0
        /// `send` calls refused because the outbound queue was full.
        var sendsRefused: UInt64 = 0
        var connects: UInt64 = 0

        public var json: String {
            "{\"frames_sent\": \(framesSent), \"frames_received\": \(framesReceived), \"frames_rejected\": \(framesRejected), "
                + "\"relay_errors\": \(relayErrors), \"sends_refused\": \(sendsRefused), \"connects\": \(connects)}"
        }
    }

    let host: UnsafePointer<masq_host>
    let options: Options
    let group: MultiThreadedEventLoopGroup
    let loop: EventLoop
    /// `stopped` once stop() began; `active` entry points running now (stop
    /// waits for them before it shuts the event loop down, so a call racing
    /// with stop never waits on a loop that is gone).
    private let lifecycle = NIOLockedValueBox((stopped: false, active: 0))
    private var isStopped: Bool { lifecycle.withLockedValue { $0.stopped } }
    public let counters = NIOLockedValueBox(Counters())
    public var statsJSON: String { counters.withLockedValue { $0.json } }
    /// What a frame may carry: the relay frame's own header and the longest room excluded.
    public var maxFrameBytes: UInt64 { UInt64(max(0, options.maxFrameBytes - 3 - RelayFrame.maxRoomLength)) }
    /// Runs once when the instance stops (the mesh plugin stops its node).
    public var onStop: (@Sendable () -> Void)?

    // Event-loop state
    private var endpoint: Endpoint?
    private var channel: Channel?
    private var connected = false
    private var connecting = false
    /// MASQ_TRANSPORT_DOWN was the last event reported (so it is not repeated).
    private var reportedDown = false
    private var rooms: Set<[UInt8]> = []
    private var queue: [[UInt8]] = []
    private var queuedBytes = 0
    private var backoff: Int64
    private var reconnectTask: Scheduled<Void>?
    /// A connection was attempted since `connect` (later ones follow the backoff).
    private var opened = false
    private var tls: NIOSSLContext?

    public init(host: UnsafePointer<masq_host>, options: Options) {
        self.host = host
        self.options = options
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        loop = group.next()
        backoff = options.minBackoffMilliseconds
    }

    // MARK: plugin entry points (any thread)

    public func start() -> Int32 { MASQ_OK }

    public func stop() -> Int32 {
        let already = lifecycle.withLockedValue { s -> Bool in
            defer { s.stopped = true }
            return s.stopped
        }
        guard !already else { return MASQ_OK }
        while lifecycle.withLockedValue({ $0.active }) > 0 { usleep(1_000) }
        onLoop {
            self.reconnectTask?.cancel()
            self.channel?.close(promise: nil)
        }
        try? group.syncShutdownGracefully()
        onStop?()
        return MASQ_OK
    }

    /// Enter an entry point: false once stop() began (the caller answers MASQ_E_CLOSED).
    private func enter() -> Bool {
        lifecycle.withLockedValue { s -> Bool in
            guard !s.stopped else { return false }
            s.active += 1
            return true
        }
    }

    private func exit() { lifecycle.withLockedValue { $0.active -= 1 } }

    private func closed() -> Int32 { host.pointee.error(host, MASQ_E_CLOSED, "the transport is stopped") }

    public func connect(_ text: String) -> Int32 {
        guard enter() else { return closed() }
        defer { exit() }
        let parsed: Endpoint
        do throws(PluginFailure) { parsed = try Endpoint(text) } catch { return fail(error) }
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
            self.opened = false
            // Opened once a room is joined, so the URL can name it (see `path`).
            if !self.rooms.isEmpty || !self.queue.isEmpty { self.open() }
        }
        return MASQ_OK
    }

    public func join(_ room: [UInt8]) -> Int32 {
        guard enter() else { return closed() }
        defer { exit() }
        guard (1...RelayFrame.maxRoomLength).contains(room.count) else {
            return host.pointee.error(host, MASQ_E_INVALID, "room must be 1...64 bytes")
        }
        loop.execute {
            if self.rooms.insert(room).inserted, self.connected { self.write(RelayFrame.join(room: room).encoded()) }
            if !self.opened { self.open() }  // the first room: connect now
        }
        return MASQ_OK
    }

    public func leave(_ room: [UInt8]) -> Int32 {
        guard enter() else { return closed() }
        defer { exit() }
        loop.execute {
            if self.rooms.remove(room) != nil, self.connected { self.write(RelayFrame.leave(room: room).encoded()) }
        }
        return MASQ_OK
    }

    /// Queue a frame for a room; it waits in the queue while disconnected.
    public func send(_ room: [UInt8], _ payload: UnsafeRawBufferPointer) -> Int32 {
        guard enter() else { return closed() }
        defer { exit() }
        guard (1...RelayFrame.maxRoomLength).contains(room.count) else {
            return host.pointee.error(host, MASQ_E_INVALID, "room must be 1...64 bytes")
        }
        // The limit declared through max_frame_bytes, whatever the room's length.
        guard UInt64(payload.count) <= maxFrameBytes else {
            return host.pointee.error(
                host, MASQ_E_TOO_LARGE,
                "frame of \(payload.count) bytes exceeds the relay limit (option max_frame_bytes)")
        }
        var built = RelayFrame.header(3, room: room, payloadCount: payload.count)
        built.append(contentsOf: payload)
        let frame = built
        let accepted = NIOLockedValueBox(true)
        let limits = options
        onLoop {
            guard self.queue.count < limits.maxQueueFrames, self.queuedBytes + frame.count <= limits.maxQueueBytes
            else {
                accepted.withLockedValue { $0 = false }
                return
            }
            self.queue.append(frame)
            self.queuedBytes += frame.count
            self.flush()
        }
        guard accepted.withLockedValue({ $0 }) else {
            counters.withLockedValue { $0.sendsRefused += 1 }
            return host.pointee.error(
                host, MASQ_E_BUSY, "outbound queue full (options max_queue_frames / max_queue_bytes)")
        }
        return MASQ_OK
    }

    /// Run `body` on the event loop and wait for it (directly when already there).
    private func onLoop(_ body: @escaping @Sendable () -> Void) {
        if loop.inEventLoop { body() } else { try? loop.submit(body).wait() }
    }

    // MARK: connection (event loop)

    /// The request path: `<endpoint path>/r/<room hex>` while the transport
    /// holds exactly one room, else the endpoint's own path. A load balancer
    /// in front of a relay fleet hashes this path, so every device of a
    /// group meets on the same relay (docs/OPERATIONS.md); the relay itself
    /// ignores the path (the JOIN decides).
    static func path(base: String, rooms: Set<[UInt8]>) -> String {
        guard rooms.count == 1, let room = rooms.first else { return base }
        var prefix =
            base.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? "/"
        while prefix.hasSuffix("/") { prefix.removeLast() }
        return prefix + "/r/" + Hex.encode(room)
    }

    private func open() {
        guard let base = endpoint, !connecting, channel == nil, !isStopped else { return }
        connecting = true
        opened = true
        let endpoint = base.withPath(Self.path(base: base.path, rooms: rooms))
        let transport = self
        let tls = self.tls
        let maxFrame = options.maxFrameBytes
        let bootstrap = ClientBootstrap(group: loop)
            .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                do {
                    if transport.options.socks5 != nil {
                        try channel.pipeline.syncOperations.addHandler(
                            Socks5ClientHandler(host: endpoint.host, port: endpoint.port))
                    }
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tls, serverHostname: endpoint.host))
                    }
                    let request = UpgradeRequestHandler(endpoint: endpoint)
                    let upgrader = NIOWebSocketClientUpgrader(
                        maxFrameSize: maxFrame,
                        upgradePipelineHandler: { channel, _ in
                            do {
                                try channel.pipeline.syncOperations.addHandler(
                                    NIOWebSocketFrameAggregator(
                                        minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 64,
                                        maxAccumulatedFrameSize: maxFrame))
                                try channel.pipeline.syncOperations.addHandler(FrameHandler(transport: transport))
                                return channel.eventLoop.makeSucceededVoidFuture()
                            } catch {
                                return channel.eventLoop.makeFailedFuture(error)
                            }
                        })
                    let bound = NIOLoopBound(request, eventLoop: channel.eventLoop)
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(
                        withClientUpgrade: (
                            upgraders: [upgrader],
                            completionHandler: { context in
                                context.pipeline.syncOperations.removeHandler(bound.value, promise: nil)
                            }
                        ))
                    try channel.pipeline.syncOperations.addHandler(request)
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        let target = options.socks5 ?? (endpoint.host, endpoint.port)
        bootstrap.connect(host: target.host, port: target.port).whenComplete { result in
            self.connecting = false
            switch result {
            case .success(let channel):
                self.channel = channel
                channel.closeFuture.whenComplete { _ in self.lost() }
            case .failure(let error):
                self.log(MASQ_LOG_WARN, "cannot reach \(endpoint.host):\(endpoint.port): \(error)")
                // The first failure after start (or after being up) is reported:
                // the host learns the relay cannot be reached, not only silence.
                if !self.reportedDown {
                    self.reportedDown = true
                    self.host.pointee.peer_event(self.host, endpoint.text, MASQ_TRANSPORT_DOWN)
                }
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
        reportedDown = false
        host.pointee.peer_event(host, endpoint?.text ?? "", MASQ_TRANSPORT_UP)
    }

    private func lost() {
        let wasConnected = connected
        connected = false
        channel = nil
        if wasConnected {
            log(MASQ_LOG_INFO, "relay connection lost; reconnecting")
            reportedDown = true
            host.pointee.peer_event(host, endpoint?.text ?? "", MASQ_TRANSPORT_DOWN)
        }
        scheduleReconnect()
    }

    private func scheduleReconnect() {
        guard !isStopped else { return }
        let delay = backoff / 2 + Int64.random(in: 0...(backoff / 2 + 1))  // "equal jitter"
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
        let decoded: Result<RelayFrame, RelayProtocolError> = data.withUnsafeReadableBytes { raw in
            Result { () throws(RelayProtocolError) in try RelayFrame.decode(raw) }
        }
        switch decoded {
        case .success(.deliver(let room, let payload)):
            counters.withLockedValue { $0.framesReceived += 1 }
            let roomText = Hex.encode(room)
            payload.withUnsafeBufferPointer { p in
                host.pointee.frame_received(host, "relay", roomText, p.baseAddress, p.count)
            }
        case .success(.presence(let room, _)):
            host.pointee.peer_event(host, Hex.encode(room), MASQ_ROOM_CHANGED)
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

    private func fail(_ failure: PluginFailure) -> Int32 { report(host, failure) }
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
            context.fireErrorCaught(
                PluginFailure(MASQ_E_UNAVAILABLE, "relay refused the WebSocket upgrade: \(head.status.code)"))
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

/// The client side of SOCKS5 (RFC 1928), no authentication, CONNECT to a
/// domain name: holds back channelActive until the proxy has connected, so
/// TLS and the WebSocket upgrade start on the far side.
final class Socks5ClientHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let host: String
    let port: Int
    private var stage = 0
    private var received: [UInt8] = []

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: [5, 1, 0])), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard stage < 2 else { return context.fireChannelRead(data) }
        var buffer = unwrapInboundIn(data)
        received += buffer.readBytes(length: buffer.readableBytes) ?? []
        if stage == 0 {
            guard received.count >= 2 else { return }
            guard received[0] == 5, received[1] == 0 else {
                return fail(context, "the SOCKS5 proxy wants authentication")
            }
            received.removeFirst(2)
            let name = Array(host.utf8)
            guard name.count <= 255 else { return fail(context, "host name too long for SOCKS5") }
            let request: [UInt8] = [5, 1, 0, 3, UInt8(name.count)] + name + [UInt8(port >> 8), UInt8(port & 0xff)]
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: request)), promise: nil)
            stage = 1
        }
        if stage == 1 {
            guard received.count >= 10 else { return }
            guard received[0] == 5, received[1] == 0 else {
                return fail(context, "the SOCKS5 proxy could not connect (reply \(received[1]))")
            }
            let rest = Array(received.dropFirst(10))
            received = []
            stage = 2
            context.fireChannelActive()
            if !rest.isEmpty { context.fireChannelRead(wrapInboundOut(context.channel.allocator.buffer(bytes: rest))) }
            context.pipeline.syncOperations.removeHandler(self, promise: nil)
        }
    }

    private func fail(_ context: ChannelHandlerContext, _ why: String) {
        context.fireErrorCaught(PluginFailure(MASQ_E_UNAVAILABLE, why))
        context.close(promise: nil)
    }
}

// MARK: - options

public let relayOptionNames = "max_queue_frames, max_queue_bytes, max_frame_bytes, min_backoff_ms, max_backoff_ms"

/// Apply one of the relay client's options; false when `key` is not one.
public func applyRelayOption(_ key: String, _ value: String, to options: inout RelayTransport.Options)
    throws(PluginFailure) -> Bool
{
    func number(_ range: ClosedRange<Int>) throws(PluginFailure) -> Int { try optionNumber(key, value, range) }
    switch key {
    case "max_queue_frames": options.maxQueueFrames = try number(1...10_000_000)
    case "max_queue_bytes": options.maxQueueBytes = try number(1_024...(1 << 34))
    case "max_frame_bytes": options.maxFrameBytes = try number(64...(64 << 20))
    case "min_backoff_ms": options.minBackoffMilliseconds = Int64(try number(1...60_000))
    case "max_backoff_ms": options.maxBackoffMilliseconds = Int64(try number(1...3_600_000))
    default: return false
    }
    return true
}

// MARK: - the transport vtable

@inline(__always)
func transport(_ raw: UnsafeMutableRawPointer?) -> RelayTransport? {
    raw.map { Unmanaged<RelayTransport>.fromOpaque($0).takeUnretainedValue() }
}

/// The transport vtable of a RelayTransport, all but `create` (each plugin
/// parses its own options).
public func relayTransportVTable() -> masq_transport_vtable {
    var t = transportVTable(flags: MASQ_TRANSPORT_CONNECT | MASQ_TRANSPORT_ROOMS)
    t.connect = { raw, endpoint in
        guard let t = transport(raw), let endpoint else { return MASQ_E_INVALID }
        return t.connect(String(cString: endpoint))
    }
    t.join = { raw, room in
        guard let t = transport(raw), let room, let bytes = Hex.decode(String(cString: room)) else {
            return MASQ_E_INVALID
        }
        return t.join(bytes)
    }
    t.leave = { raw, room in
        guard let t = transport(raw), let room, let bytes = Hex.decode(String(cString: room)) else {
            return MASQ_E_INVALID
        }
        return t.leave(bytes)
    }
    t.send = { raw, destination, frame, length in
        guard let t = transport(raw), let destination, let room = Hex.decode(String(cString: destination)),
            frame != nil || length == 0
        else { return MASQ_E_INVALID }
        return t.send(room, UnsafeRawBufferPointer(start: frame, count: length))
    }
    return t
}
