import Logging
import MasqRelayProtocol
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import Prometheus

/// Limits and endpoints of a relay. Every limit is explicit and answered with
/// an ERROR frame or a close, never a crash.
public struct RelayConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 7070
    /// Largest WebSocket message (frames beyond it close the connection with 1009).
    public var maxFrameBytes = 1 << 20
    public var maxRoomsPerConnection = 16
    public var maxConnections = 20_000
    /// Messages a connection may send per second (bursts up to twice that).
    public var messagesPerSecond = 2_000
    /// A connection silent (no frame, no pong) this long is closed.
    public var idleTimeoutSeconds: Int64 = 120
    public var pingIntervalSeconds: Int64 = 30
    /// PEM certificate chain and key: serve wss:// instead of ws://.
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    public var threads = System.coreCount

    public init() {}
}

/// Counters and gauges exposed at /metrics (Prometheus text format).
final class RelayMetrics: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    let connections: Gauge
    let rooms: Gauge
    let framesIn: Counter
    let deliveries: Counter
    let bytesIn: Counter
    let dropped: Counter
    let rejectedMalformed: Counter
    let rejectedRate: Counter
    let rejectedRooms: Counter
    let rejectedConnections: Counter

    init() {
        let registry = self.registry
        func gauge(_ name: String, _ help: String) -> Gauge {
            registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "masq", subsystem: "relay", metricName: name, unitName: "", helpText: help))
        }
        func counter(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> Counter {
            registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "masq", subsystem: "relay", metricName: name, unitName: "total", helpText: help),
                                 labels: labels)
        }
        connections = gauge("connections", "Open WebSocket connections")
        rooms = gauge("rooms", "Rooms with at least one member")
        framesIn = counter("frames_received", "SEND frames accepted")
        deliveries = counter("deliveries", "DELIVER frames written to members")
        bytesIn = counter("payload_bytes", "Payload bytes accepted")
        dropped = counter("dropped", "Deliveries dropped because a member could not keep up")
        rejectedMalformed = counter("rejected", "Frames or connections refused", [("reason", "malformed")])
        rejectedRate = counter("rejected", "Frames or connections refused", [("reason", "rate")])
        rejectedRooms = counter("rejected", "Frames or connections refused", [("reason", "rooms")])
        rejectedConnections = counter("rejected", "Frames or connections refused", [("reason", "connections")])
    }
}

/// Who is in which room. Members are channels; writes hop to each channel's
/// event loop, so the registry can be used from any of them.
final class RoomRegistry: @unchecked Sendable {
    private let lock = NIOLock()
    private var rooms: [[UInt8]: [ObjectIdentifier: Channel]] = [:]
    let metrics: RelayMetrics

    init(metrics: RelayMetrics) { self.metrics = metrics }

    func join(_ room: [UInt8], _ channel: Channel) -> [Channel] {
        lock.withLock {
            rooms[room, default: [:]][ObjectIdentifier(channel)] = channel
            metrics.rooms.set(Int64(rooms.count))
            return Array(rooms[room]!.values)
        }
    }

    func leave(_ room: [UInt8], _ channel: Channel) -> [Channel] {
        lock.withLock {
            rooms[room]?[ObjectIdentifier(channel)] = nil
            if rooms[room]?.isEmpty == true { rooms[room] = nil }
            metrics.rooms.set(Int64(rooms.count))
            return Array(rooms[room]?.values ?? [:].values)
        }
    }

    func members(_ room: [UInt8]) -> [Channel] {
        lock.withLock { Array(rooms[room]?.values ?? [:].values) }
    }
}

/// The relay: WebSocket rooms that forward ciphertext between members, plus
/// GET /healthz and GET /metrics. It keeps nothing on disk.
public final class RelayServer: @unchecked Sendable {
    public let configuration: RelayConfiguration
    let logger: Logger
    let metrics = RelayMetrics()
    let registry: RoomRegistry
    let connectionCount = NIOLockedValueBox(0)
    private let group: MultiThreadedEventLoopGroup
    private var channel: Channel?

    public init(configuration: RelayConfiguration, logger: Logger = Logger(label: "masq.relay")) {
        self.configuration = configuration
        self.logger = logger
        registry = RoomRegistry(metrics: metrics)
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
    }

    /// Bind and serve; returns the port actually bound (for port 0).
    public func start() throws -> Int {
        let tls: NIOSSLContext?
        if let certificate = configuration.tlsCertificatePath, let key = configuration.tlsKeyPath {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
            let privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
            tls = try NIOSSLContext(configuration: TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(privateKey)))
        } else {
            tls = nil
        }
        let server = self
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                do {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try server.configureHTTP(channel)
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        let bound = try bootstrap.bind(host: configuration.host, port: configuration.port).wait()
        channel = bound
        let port = bound.localAddress?.port ?? configuration.port
        logger.info("relay listening", metadata: ["address": "\(configuration.host):\(port)", "tls": "\(tls != nil)"])
        return port
    }

    /// Block until the server closes (Ctrl-C ends the process).
    public func wait() throws { try channel?.closeFuture.wait() }

    public func stop() {
        try? channel?.close().wait()
        try? group.syncShutdownGracefully()
    }

    /// The metrics page text.
    public func metricsText() -> String { metrics.registry.emitToString() }

    private func configureHTTP(_ channel: Channel) throws {
        let server = self
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: configuration.maxFrameBytes,
            shouldUpgrade: { channel, _ in
                let accepted = server.connectionCount.withLockedValue { count -> Bool in
                    guard count < server.configuration.maxConnections else { return false }
                    count += 1
                    return true
                }
                if !accepted { server.metrics.rejectedConnections.increment() }
                return channel.eventLoop.makeSucceededFuture(accepted ? HTTPHeaders() : nil)
            },
            upgradePipelineHandler: { channel, _ in
                server.metrics.connections.set(Int64(server.connectionCount.withLockedValue { $0 }))
                do {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 64,
                                                                    maxAccumulatedFrameSize: server.configuration.maxFrameBytes))
                    try sync.addHandler(IdleStateHandler(readTimeout: .seconds(server.configuration.idleTimeoutSeconds)))
                    try sync.addHandler(RelayConnectionHandler(server: server))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            })
        let routes = NIOLoopBound(HTTPRouteHandler(server: self), eventLoop: channel.eventLoop)
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                context.pipeline.syncOperations.removeHandler(routes.value, promise: nil)
            }))
        try channel.pipeline.syncOperations.addHandler(routes.value)
    }

    func connectionClosed() {
        let count = connectionCount.withLockedValue { count -> Int in
            count -= 1
            return count
        }
        metrics.connections.set(Int64(count))
    }
}

/// Plain HTTP requests: /healthz, /metrics; anything else 404 (or 503 when a
/// WebSocket upgrade was refused because the relay is full).
final class HTTPRouteHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let server: RelayServer
    private var head: HTTPRequestHead?

    init(server: RelayServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let (status, body, type): (HTTPResponseStatus, String, String)
            switch (head.method, head.uri) {
            case (.GET, "/healthz"): (status, body, type) = (.ok, "ok\n", "text/plain")
            case (.GET, "/metrics"): (status, body, type) = (.ok, server.metricsText(), "text/plain; version=0.0.4")
            default:
                if head.headers["upgrade"].contains(where: { $0.lowercased() == "websocket" }) {
                    (status, body, type) = (.serviceUnavailable, "too many connections\n", "text/plain")
                } else {
                    (status, body, type) = (.notFound, "not found\n", "text/plain")
                }
            }
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: type)
            headers.add(name: "content-length", value: String(body.utf8.count))
            headers.add(name: "connection", value: "close")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// One WebSocket member: rooms, rate limit, keepalive, forwarding.
final class RelayConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let server: RelayServer
    private var rooms: Set<[UInt8]> = []
    private var tokens: Double
    private var lastRefill = NIODeadline.now()
    private var pingTask: Scheduled<Void>?
    private var closed = false
    private var logger: Logger

    init(server: RelayServer) {
        self.server = server
        tokens = Double(server.configuration.messagesPerSecond) * 2
        logger = server.logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        logger[metadataKey: "connection"] = "\(ObjectIdentifier(context.channel).hashValue & 0xFFFFFF)"
        logger.debug("connected")
        schedulePing(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        cleanup(context.channel)
        context.fireChannelInactive()
    }

    private func cleanup(_ channel: Channel) {
        guard !closed else { return }
        closed = true
        pingTask?.cancel()
        for room in rooms { announce(room, members: server.registry.leave(room, channel)) }
        rooms = []
        server.connectionClosed()
        logger.debug("disconnected")
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            logger.debug("idle timeout")
            close(context, code: .goingAway)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Oversized or malformed WebSocket frames end up here: close with a reason.
        logger.debug("connection error", metadata: ["error": "\(error)"])
        server.metrics.rejectedMalformed.increment()
        close(context, code: error is NIOWebSocketError ? .messageTooLarge : .protocolError)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary:
            handle(context, frame.unmaskedData)
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .pong:
            break   // a read: the idle timer was reset
        case .connectionClose:
            close(context, code: .normalClosure)
        case .text:
            server.metrics.rejectedMalformed.increment()
            reject(context, .protocolError, "text frames are not part of the protocol")
        default:
            break
        }
    }

    private func handle(_ context: ChannelHandlerContext, _ data: ByteBuffer) {
        guard takeToken() else {
            server.metrics.rejectedRate.increment()
            reject(context, .rateLimited, "more than \(server.configuration.messagesPerSecond) messages per second")
            return
        }
        let decoded: Result<RelayFrame, RelayProtocolError> = data.withUnsafeReadableBytes { raw in Result { () throws(RelayProtocolError) in try RelayFrame.decode(raw) } }
        switch decoded {
        case .failure(let error):
            server.metrics.rejectedMalformed.increment()
            if case .unsupportedVersion = error {
                reject(context, .unsupportedVersion, error.description)
                close(context, code: .protocolError)
            } else {
                reject(context, .protocolError, error.description)
            }
        case .success(.join(let room)):
            guard rooms.contains(room) || rooms.count < server.configuration.maxRoomsPerConnection else {
                server.metrics.rejectedRooms.increment()
                reject(context, .tooManyRooms, "at most \(server.configuration.maxRoomsPerConnection) rooms per connection")
                return
            }
            rooms.insert(room)
            announce(room, members: server.registry.join(room, context.channel))
        case .success(.leave(let room)):
            guard rooms.remove(room) != nil else { return reject(context, .notInRoom, "not in that room") }
            announce(room, members: server.registry.leave(room, context.channel))
        case .success(.send(let room, _)):
            guard rooms.contains(room) else { return reject(context, .notInRoom, "join the room before sending to it") }
            forward(context, room: room, frame: data)
        case .success:
            server.metrics.rejectedMalformed.increment()
            reject(context, .protocolError, "clients may only JOIN, LEAVE and SEND")
        }
    }

    /// Rewrite SEND into DELIVER in one buffer and hand it to every other member.
    private func forward(_ context: ChannelHandlerContext, room: [UInt8], frame: ByteBuffer) {
        var out = frame
        out.setInteger(UInt8(4), at: out.readerIndex + 1)   // type SEND -> DELIVER; the rest is unchanged
        let payloadBytes = frame.readableBytes - 3 - room.count
        server.metrics.framesIn.increment()
        server.metrics.bytesIn.increment(by: Int64(payloadBytes))
        let ws = WebSocketFrame(fin: true, opcode: .binary, data: out)
        var delivered: Int64 = 0, dropped: Int64 = 0
        for member in server.registry.members(room) where member !== context.channel {
            // A member that cannot keep up loses frames rather than making the relay hold them.
            if member.isWritable {
                member.writeAndFlush(ws, promise: nil)
                delivered += 1
            } else {
                dropped += 1
            }
        }
        if delivered > 0 { server.metrics.deliveries.increment(by: delivered) }
        if dropped > 0 { server.metrics.dropped.increment(by: dropped) }
    }

    /// Tell every member of `room` how many members it now has.
    private func announce(_ room: [UInt8], members: [Channel]) {
        let bytes = RelayFrame.presence(room: room, members: UInt32(members.count)).encoded()
        for member in members {
            var buffer = member.allocator.buffer(capacity: bytes.count)
            buffer.writeBytes(bytes)
            member.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, data: buffer), promise: nil)
        }
    }

    private func reject(_ context: ChannelHandlerContext, _ code: RelayErrorCode, _ message: String) {
        let bytes = RelayFrame.error(code: code, message: message).encoded()
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: buffer)), promise: nil)
    }

    private func close(_ context: ChannelHandlerContext, code: WebSocketErrorCode) {
        guard !closed else { return }
        var buffer = context.channel.allocator.buffer(capacity: 2)
        buffer.write(webSocketErrorCode: code)
        cleanup(context.channel)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: buffer))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    private func takeToken() -> Bool {
        let now = NIODeadline.now()
        let rate = Double(server.configuration.messagesPerSecond)
        let elapsed = Double((now - lastRefill).nanoseconds) / 1e9
        lastRefill = now
        tokens = min(rate * 2, tokens + elapsed * rate)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    private func schedulePing(context: ChannelHandlerContext) {
        let interval = TimeAmount.seconds(server.configuration.pingIntervalSeconds)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        pingTask = context.eventLoop.scheduleTask(in: interval) {
            let (handler, context) = bound.value
            guard !handler.closed else { return }
            context.writeAndFlush(handler.wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: context.channel.allocator.buffer(capacity: 0))), promise: nil)
            handler.schedulePing(context: context)
        }
    }
}
