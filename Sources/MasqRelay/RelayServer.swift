import Logging
import MasqHandshakeGate
import MasqRelayProtocol
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import Prometheus
#if canImport(Glibc)
    import Glibc
#endif

/// Limits and endpoints of a relay. Every limit is explicit and answered with
/// an ERROR frame or a close, never a crash.
public struct RelayConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 7070
    /// Largest WebSocket message (frames beyond it close the connection with 1009).
    public var maxFrameBytes = 1 << 20
    public var maxRoomsPerConnection = 16
    /// Members one room may hold (a user's devices are a handful).
    public var maxMembersPerRoom = 256
    public var maxConnections = 20_000
    /// Connections still in their HTTP request or upgrade: at most this many
    /// at once (a newcomer evicts the oldest), each closed after
    /// `handshakeTimeoutSeconds` (HandshakeGate). They count apart from
    /// `maxConnections`, so open sockets stay below the sum of the two.
    public var maxPendingHandshakes = 1_024
    public var handshakeTimeoutSeconds: Int64 = 10
    /// Presence changes of a room within this window go out as one PRESENCE,
    /// so join/leave churn cannot multiply frames to its members.
    public var presenceCoalesceMilliseconds: Int64 = 50
    /// Frames a connection may send per second, of any kind (bursts up to
    /// twice that). Past it the relay answers one ERROR and stops reading the
    /// connection until its budget refills; one that sends another half
    /// second's budget meanwhile is closed. So one fast sender cannot hold its
    /// event loop.
    public var messagesPerSecond = 2_000
    /// A connection silent (no frame, no pong) this long is closed.
    public var idleTimeoutSeconds: Int64 = 120
    public var pingIntervalSeconds: Int64 = 30
    /// Bytes a connection may have queued for sending, replies included:
    /// deliveries beyond it are dropped (counted); a reply (ERROR, PRESENCE,
    /// pong) that finds it full closes the connection. So one member that does
    /// not read cannot grow the relay.
    public var sendBufferBytes = 1 << 20
    /// PEM certificate chain and key: serve wss:// instead of ws://.
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    public var threads = System.coreCount
    /// On SIGTERM (`drain`): seconds the connections get to take what is
    /// queued for them and close after the relay's "going away".
    public var drainSeconds: Int64 = 10

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
    let rejectedFullRooms: Counter
    let closedSlow: Counter
    let closedRate: Counter
    let handshakesPending: Gauge
    let handshakesEvicted: Gauge
    let handshakesTimedOut: Gauge
    let maxConnections: Gauge
    let draining: Gauge

    init() {
        let registry = self.registry
        func gauge(_ name: String, _ help: String) -> Gauge {
            registry.makeGauge(
                descriptor: MetricNameDescriptor(
                    namespace: "masq", subsystem: "relay", metricName: name, unitName: "", helpText: help))
        }
        func counter(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> Counter {
            registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    namespace: "masq", subsystem: "relay", metricName: name, unitName: "total", helpText: help),
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
        rejectedFullRooms = counter("rejected", "Frames or connections refused", [("reason", "room_full")])
        closedSlow = counter("closed_slow", "Connections closed because they did not read their replies")
        closedRate = counter("closed_rate", "Connections closed because they kept sending past their rate")
        handshakesPending = gauge("handshakes_pending", "Connections still in their HTTP request or WebSocket upgrade")
        handshakesEvicted = gauge("handshakes_evicted", "Handshakes closed to make room for newer ones (total)")
        handshakesTimedOut = gauge("handshakes_timed_out", "Handshakes closed because they took too long (total)")
        maxConnections = gauge("max_connections", "Connections the relay accepts (--max-connections)")
        draining = gauge("draining", "1 while the relay drains its connections before stopping")
    }
}

/// One connection as a room sees it. `wire` is the context of the
/// connection's WebSocket frame encoder: writing there sends bytes that are
/// already a WebSocket frame, so a delivery built once is shared by every
/// member without re-encoding. `wire` and `queued` belong to the member's
/// event loop (see `Outbox`).
final class Member: @unchecked Sendable {
    let channel: Channel
    let outbox: Outbox
    let wire: ChannelHandlerContext
    var queued = false

    init(channel: Channel, outbox: Outbox, wire: ChannelHandlerContext) {
        self.channel = channel
        self.outbox = outbox
        self.wire = wire
    }
}

/// A room with at least one member. `members` is guarded by the registry's
/// lock and replaced, never mutated, so a reader's snapshot stays valid.
final class Room: @unchecked Sendable {
    let id: [UInt8]
    fileprivate var members: [Member] = []
    /// A PRESENCE for this room is scheduled (guarded by the registry's lock).
    fileprivate var presencePending = false

    init(id: [UInt8]) { self.id = id }

    func matches(_ bytes: UnsafeRawBufferPointer) -> Bool {
        id.count == bytes.count && id.withUnsafeBytes { $0.elementsEqual(bytes) }
    }
}

/// Who is in which room.
final class RoomRegistry: @unchecked Sendable {
    private let lock = NIOLock()
    private var rooms: [[UInt8]: Room] = [:]
    let metrics: RelayMetrics

    init(metrics: RelayMetrics) { self.metrics = metrics }

    /// Add `member` to the room `id` (created on first join); returns the
    /// room, or nil when it already holds `maxMembers`.
    func join(_ id: [UInt8], _ member: Member, maxMembers: Int) -> Room? {
        lock.withLock { () -> Room? in
            let room = rooms[id] ?? Room(id: id)
            guard room.members.count < maxMembers || room.members.contains(where: { $0 === member }) else { return nil }
            rooms[id] = room
            if !room.members.contains(where: { $0 === member }) { room.members.append(member) }
            metrics.rooms.set(Int64(rooms.count))
            return room
        }
    }

    /// Whether a PRESENCE for `room` must be scheduled (false when one already is).
    func claimPresence(_ room: Room) -> Bool {
        lock.withLock {
            if room.presencePending { return false }
            room.presencePending = true
            return true
        }
    }

    /// The members a scheduled PRESENCE goes to; later changes schedule anew.
    func releasePresence(_ room: Room) -> [Member] {
        lock.withLock {
            room.presencePending = false
            return room.members
        }
    }

    /// Remove `member`; the room goes away with its last member. Returns the
    /// members left.
    func leave(_ room: Room, _ member: Member) -> [Member] {
        lock.withLock {
            room.members.removeAll { $0 === member }
            if room.members.isEmpty, rooms[room.id] === room { rooms[room.id] = nil }
            metrics.rooms.set(Int64(rooms.count))
            return room.members
        }
    }

    func members(_ room: Room) -> [Member] {
        lock.withLock { room.members }
    }
}

/// Deliveries waiting for a flush, one outbox per event loop, touched only on
/// that loop. Forwarding writes to members without flushing; once the loop
/// has handled the reads at hand, the outbox flushes each member once (one
/// `writev` carries many deliveries) and hands deliveries for members on
/// other loops over in one task per loop, instead of one cross-thread hop
/// per delivery.
final class Outbox: @unchecked Sendable {
    let loop: EventLoop
    let index: Int
    var peers: [Outbox] = []
    private let metrics: RelayMetrics
    private var written: [Member] = []
    private var remote: [[(Member, ByteBuffer)]]
    private var delivered: Int64 = 0
    private var dropped: Int64 = 0
    private var flushScheduled = false

    init(loop: EventLoop, index: Int, loops: Int, metrics: RelayMetrics) {
        self.loop = loop
        self.index = index
        self.metrics = metrics
        remote = Array(repeating: [], count: loops)
    }

    /// Queue `frame` (a whole WebSocket frame, see `Member.wire`) for
    /// `member`; call on `loop`. The flush runs as a task, which the loop
    /// starts after the I/O events it is handling.
    func deliver(_ frame: ByteBuffer, to member: Member) {
        if !flushScheduled {
            flushScheduled = true
            loop.execute { self.flush() }
        }
        if member.outbox === self {
            write(frame, to: member)
        } else {
            remote[member.outbox.index].append((member, frame))
        }
    }

    private func write(_ frame: ByteBuffer, to member: Member) {
        // A member that cannot keep up loses frames rather than making the relay hold them.
        guard member.channel.isWritable, member.channel.isActive else {
            dropped += 1
            return
        }
        member.wire.write(NIOAny(frame), promise: nil)
        delivered += 1
        if !member.queued {
            member.queued = true
            written.append(member)
        }
    }

    /// Flush what this loop wrote and pass the rest to the other loops.
    func flush() {
        flushScheduled = false
        for member in written {
            member.queued = false
            member.channel.flush()
        }
        written.removeAll(keepingCapacity: true)
        for i in remote.indices where !remote[i].isEmpty {
            let batch = remote[i]
            remote[i].removeAll(keepingCapacity: true)
            let peer = peers[i]
            peer.loop.execute {
                for (member, frame) in batch { peer.write(frame, to: member) }
                peer.flush()
            }
        }
        if delivered > 0 { metrics.deliveries.increment(by: delivered); delivered = 0 }
        if dropped > 0 { metrics.dropped.increment(by: dropped); dropped = 0 }
    }
}

/// The relay: WebSocket rooms that forward ciphertext between members, plus
/// GET /healthz and GET /metrics. It keeps nothing on disk.
public final class RelayServer: @unchecked Sendable {
    public let configuration: RelayConfiguration
    let logger: Logger
    let metrics: RelayMetrics
    let registry: RoomRegistry
    let connectionCount = NIOLockedValueBox(0)
    let handshakes: HandshakeGate
    /// WebSocket connections open now, to tell each one when the relay drains.
    let live = NIOLockedValueBox([ObjectIdentifier: Channel]())
    let isDraining = NIOLockedValueBox(false)
    private let group: MultiThreadedEventLoopGroup
    private let outboxes: [ObjectIdentifier: Outbox]
    private var channel: Channel?

    public init(configuration: RelayConfiguration, logger: Logger = Logger(label: "masq.relay")) {
        self.configuration = configuration
        self.logger = logger
        let metrics = RelayMetrics()
        self.metrics = metrics
        registry = RoomRegistry(metrics: metrics)
        metrics.maxConnections.set(Int64(configuration.maxConnections))
        handshakes = HandshakeGate(
            capacity: max(1, configuration.maxPendingHandshakes),
            timeout: .seconds(max(1, configuration.handshakeTimeoutSeconds)))
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
        let loops = Array(group.makeIterator())
        let boxes = loops.enumerated().map { Outbox(loop: $1, index: $0, loops: loops.count, metrics: metrics) }
        for box in boxes { box.peers = boxes }
        outboxes = Dictionary(uniqueKeysWithValues: boxes.map { (ObjectIdentifier($0.loop), $0) })
    }

    /// The outbox of the loop a channel runs on (fixed for the channel's life).
    func outbox(for loop: EventLoop) -> Outbox { outboxes[ObjectIdentifier(loop)]! }

    /// Bind and serve; returns the port actually bound (for port 0).
    public func start() throws -> Int {
        let tls: NIOSSLContext?
        if let certificate = configuration.tlsCertificatePath, let key = configuration.tlsKeyPath {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
            let privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
            tls = try NIOSSLContext(
                configuration: TLSConfiguration.makeServerConfiguration(
                    certificateChain: chain, privateKey: .privateKey(privateKey)))
        } else {
            tls = nil
        }
        let server = self
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            // Few reads per wake-up: a connection's read batch is decoded in one
            // go, so this bounds what one sender costs its loop between others.
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 4)
            .childChannelOption(
                ChannelOptions.writeBufferWaterMark,
                value: .init(low: configuration.sendBufferBytes / 2, high: configuration.sendBufferBytes)
            )
            .childChannelInitializer { channel in
                do {
                    server.handshakes.admit(channel)
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

    /// Connections open now (WebSocket members).
    public var openConnections: Int { connectionCount.withLockedValue { $0 } }

    /// Graceful shutdown (SIGTERM): stop accepting connections (the load
    /// balancer's health check then fails at once), send every member a
    /// WebSocket close "going away" after what is already queued for it,
    /// wait up to `timeout` seconds for the connections to close, then stop.
    /// A relay connection has no end of its own: members are told to leave
    /// together, so a group reconnects to its next relay together instead of
    /// being split between a draining relay and its successor. Returns how
    /// many connections were still open when the time ran out.
    @discardableResult
    public func drain(timeout: Int64) -> Int {
        isDraining.withLockedValue { $0 = true }
        metrics.draining.set(Int64(1))
        logger.info("draining", metadata: ["connections": "\(openConnections)", "timeout_s": "\(timeout)"])
        try? channel?.close().wait()
        for channel in live.withLockedValue({ Array($0.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(RelayDrain())
        }
        let deadline = NIODeadline.now() + .seconds(timeout)
        while openConnections > 0, NIODeadline.now() < deadline { usleep(20_000) }
        let left = openConnections
        logger.info("drained", metadata: ["connections_cut": "\(left)"])
        stop()
        return left
    }

    /// The metrics page text.
    public func metricsText() -> String {
        let gate = handshakes.counts
        metrics.handshakesPending.set(Int64(gate.pending))
        metrics.handshakesEvicted.set(Int64(gate.evicted))
        metrics.handshakesTimedOut.set(Int64(gate.timedOut))
        return metrics.registry.emitToString()
    }

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
                if accepted {
                    // The slot is the channel's until it closes, whatever path it takes:
                    // an upgrade reset before the handler exists releases it too.
                    server.metrics.connections.set(Int64(server.connectionCount.withLockedValue { $0 }))
                    let id = ObjectIdentifier(channel)
                    server.live.withLockedValue { $0[id] = channel }
                    channel.closeFuture.whenComplete { _ in
                        server.live.withLockedValue { $0[id] = nil }
                        server.connectionClosed()
                    }
                } else {
                    server.metrics.rejectedConnections.increment()
                }
                return channel.eventLoop.makeSucceededFuture(accepted ? HTTPHeaders() : nil)
            },
            upgradePipelineHandler: { channel, _ in
                server.handshakes.passed(channel)
                do {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(
                        NIOWebSocketFrameAggregator(
                            minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 64,
                            maxAccumulatedFrameSize: server.configuration.maxFrameBytes))
                    try sync.addHandler(
                        IdleStateHandler(readTimeout: .seconds(server.configuration.idleTimeoutSeconds)))
                    try sync.addHandler(RelayConnectionHandler(server: server))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            })
        let routes = NIOLoopBound(HTTPRouteHandler(server: self), eventLoop: channel.eventLoop)
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withServerUpgrade: (
                upgraders: [upgrader],
                completionHandler: { context in
                    context.pipeline.syncOperations.removeHandler(routes.value, promise: nil)
                }
            ))
        try channel.pipeline.syncOperations.addHandler(routes.value)
    }

    /// Tell the members of `room` how many it has, once per coalescing window
    /// however many joins and leaves happened in it. A member whose send
    /// buffer is full is closed rather than buffered for.
    func schedulePresence(_ room: Room, on loop: EventLoop) {
        guard registry.claimPresence(room) else { return }
        let server = self
        loop.scheduleTask(in: .milliseconds(configuration.presenceCoalesceMilliseconds)) {
            let members = server.registry.releasePresence(room)
            let bytes = RelayFrame.presence(room: room.id, members: UInt32(members.count)).encoded()
            for member in members {
                let channel = member.channel
                guard channel.isWritable else {
                    server.metrics.closedSlow.increment()
                    channel.close(promise: nil)
                    continue
                }
                var buffer = channel.allocator.buffer(capacity: bytes.count)
                buffer.writeBytes(bytes)
                channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .binary, data: buffer), promise: nil)
            }
        }
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

    /// A malformed request (answered 400 by NIO's error handler) closes the connection.
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if error is HTTPParserError { context.close(promise: nil) } else { context.fireErrorCaught(error) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let (status, body, type): (HTTPResponseStatus, String, String)
            switch (head.method, head.uri) {
            case (.GET, "/healthz"):
                // Draining: the load balancer stops sending newcomers here.
                (status, body, type) =
                    server.isDraining.withLockedValue { $0 }
                    ? (.serviceUnavailable, "draining\n", "text/plain")
                    : (.ok, "ok\n", "text/plain")
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
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                promise: nil)
            context.write(
                wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// Sent through each member's pipeline when the relay drains.
struct RelayDrain {}

/// One WebSocket member: rooms, rate limit, keepalive, forwarding.
final class RelayConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let server: RelayServer
    private var rooms: [Room] = []
    private var member: Member!
    private var outbox: Outbox!
    private var tokens: Double
    private var lastRefill = NIODeadline.now()
    private var pingTask: Scheduled<Void>?
    private var closed = false
    /// Over its rate: reading is paused and frames already read are dropped
    /// until the budget refills.
    private var throttled = false
    private var droppedWhileThrottled = 0
    private var logger: Logger

    init(server: RelayServer) {
        self.server = server
        tokens = Double(server.configuration.messagesPerSecond) * 2
        logger = server.logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        outbox = server.outbox(for: context.eventLoop)
        guard let wire = try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self) else {
            preconditionFailure("the WebSocket upgrade always installs a frame encoder")
        }
        member = Member(channel: context.channel, outbox: outbox, wire: wire)
        logger[metadataKey: "connection"] = "\(ObjectIdentifier(context.channel).hashValue & 0xFFFFFF)"
        logger.debug("connected")
        schedulePing(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        cleanup()
        context.fireChannelInactive()
    }

    private func cleanup() {
        guard !closed else { return }
        closed = true
        pingTask?.cancel()
        for room in rooms {
            _ = server.registry.leave(room, member)
            server.schedulePresence(room, on: member.channel.eventLoop)
        }
        rooms = []
        logger.debug("disconnected")
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            logger.debug("idle timeout")
            close(context, code: .goingAway)
        } else if event is RelayDrain {
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
        // Every frame spends the budget, whatever its kind: text, pings and
        // malformed frames cost the relay as much as SENDs do.
        guard !closed else { return }
        guard !throttled else {
            // Still sending after the ERROR: past half a second's budget of
            // frames dropped, the connection is closed, not decoded further.
            droppedWhileThrottled += 1
            server.metrics.rejectedRate.increment()
            if droppedWhileThrottled >= max(1, server.configuration.messagesPerSecond / 2) {
                server.metrics.closedRate.increment()
                logger.debug("closed: kept sending past its rate")
                cleanup()
                context.channel.close(promise: nil)
            }
            return
        }
        guard takeToken() else { return throttle(context) }
        switch frame.opcode {
        case .binary:
            handle(context, frame.unmaskedData)
        case .ping:
            guard context.channel.isWritable else { return closeSlow(context) }
            context.writeAndFlush(
                wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .pong:
            break  // a read: the idle timer was reset
        case .connectionClose:
            close(context, code: .normalClosure)
        case .text:
            server.metrics.rejectedMalformed.increment()
            reject(context, .protocolError, "text frames are not part of the protocol")
        default:
            break
        }
    }

    /// Over the rate: one ERROR, then no reads until the bucket holds a
    /// tenth of a second's budget again (frames the decoder already holds are
    /// dropped and counted).
    private func throttle(_ context: ChannelHandlerContext) {
        server.metrics.rejectedRate.increment()
        reject(context, .rateLimited, "more than \(server.configuration.messagesPerSecond) messages per second")
        guard !closed else { return }
        throttled = true
        droppedWhileThrottled = 0
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        let rate = Double(server.configuration.messagesPerSecond)
        let wait = max(0.01, (rate / 10 - tokens) / rate)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .nanoseconds(Int64(wait * 1e9))) {
            let (handler, context) = bound.value
            guard !handler.closed else { return }
            handler.throttled = false
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
            context.read()
        }
    }

    private func handle(_ context: ChannelHandlerContext, _ data: ByteBuffer) {
        // Only the header is read: payloads are forwarded as they came, never copied.
        let peeked = data.withUnsafeReadableBytes { raw -> Result<(UInt8, Room?, [UInt8]), RelayProtocolError> in
            Result { () throws(RelayProtocolError) in
                let (type, range) = try RelayFrame.peek(raw)
                let id = UnsafeRawBufferPointer(rebasing: raw[range])
                return (type, rooms.first { $0.matches(id) }, type <= 2 ? Array(id) : [])
            }
        }
        switch peeked {
        case .failure(let error):
            server.metrics.rejectedMalformed.increment()
            if case .unsupportedVersion = error {
                reject(context, .unsupportedVersion, error.description)
                close(context, code: .protocolError)
            } else {
                reject(context, .protocolError, error.description)
            }
        case .success((1, let joined, let id)):
            guard joined == nil else { return }  // already a member
            guard rooms.count < server.configuration.maxRoomsPerConnection else {
                server.metrics.rejectedRooms.increment()
                reject(
                    context, .tooManyRooms, "at most \(server.configuration.maxRoomsPerConnection) rooms per connection"
                )
                return
            }
            guard let room = server.registry.join(id, member, maxMembers: server.configuration.maxMembersPerRoom) else {
                server.metrics.rejectedFullRooms.increment()
                reject(context, .tooManyRooms, "the room is full (\(server.configuration.maxMembersPerRoom) members)")
                return
            }
            rooms.append(room)
            server.schedulePresence(room, on: context.eventLoop)
        case .success((2, let joined, _)):
            guard let room = joined else { return reject(context, .notInRoom, "not in that room") }
            rooms.removeAll { $0 === room }
            _ = server.registry.leave(room, member)
            server.schedulePresence(room, on: context.eventLoop)
        case .success((3, let joined, _)):
            guard let room = joined else { return reject(context, .notInRoom, "join the room before sending to it") }
            forward(context, room: room, frame: data)
        case .success:
            server.metrics.rejectedMalformed.increment()
            reject(context, .protocolError, "clients may only JOIN, LEAVE and SEND")
        }
    }

    /// Turn SEND into DELIVER (only the type byte differs), framed for the
    /// wire once, and queue that one buffer for every other member.
    private func forward(_ context: ChannelHandlerContext, room: Room, frame: ByteBuffer) {
        server.metrics.framesIn.increment()
        server.metrics.bytesIn.increment(by: Int64(frame.readableBytes - 3 - room.id.count))
        let members = server.registry.members(room)
        guard members.count > 1 else { return }
        let length = frame.readableBytes
        var wire = context.channel.allocator.buffer(capacity: length + 10)
        wire.writeInteger(UInt8(0x82))  // FIN, binary; servers do not mask
        if length < 126 {
            wire.writeInteger(UInt8(length))
        } else if length <= Int(UInt16.max) {
            wire.writeInteger(UInt8(126))
            wire.writeInteger(UInt16(length))
        } else {
            wire.writeInteger(UInt8(127))
            wire.writeInteger(UInt64(length))
        }
        let typeIndex = wire.writerIndex + 1
        var body = frame
        wire.writeBuffer(&body)
        wire.setInteger(UInt8(4), at: typeIndex)  // SEND -> DELIVER
        for other in members where other !== member {
            outbox.deliver(wire, to: other)
        }
    }

    private func reject(_ context: ChannelHandlerContext, _ code: RelayErrorCode, _ message: String) {
        // A client that does not read its replies is closed, not buffered for.
        guard context.channel.isWritable else { return closeSlow(context) }
        let bytes = RelayFrame.error(code: code, message: message).encoded()
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, data: buffer)), promise: nil)
    }

    private func closeSlow(_ context: ChannelHandlerContext) {
        guard !closed else { return }
        server.metrics.closedSlow.increment()
        logger.debug("closed: its send buffer is full of unread replies")
        cleanup()
        context.channel.close(promise: nil)
    }

    private func close(_ context: ChannelHandlerContext, code: WebSocketErrorCode) {
        guard !closed else { return }
        var buffer = context.channel.allocator.buffer(capacity: 2)
        buffer.write(webSocketErrorCode: code)
        cleanup()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: buffer)))
            .whenComplete { _ in
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
            context.writeAndFlush(
                handler.wrapOutboundOut(
                    WebSocketFrame(fin: true, opcode: .ping, data: context.channel.allocator.buffer(capacity: 0))),
                promise: nil)
            handler.schedulePing(context: context)
        }
    }
}
