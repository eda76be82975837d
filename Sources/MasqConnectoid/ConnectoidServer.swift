import FoundationEssentials
import Logging
import MasqConnectoidWire
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
#if canImport(Glibc)
    import Glibc
#endif

/// HTTP front of a `ConnectoidService`: POST of JSON to the service URL (any
/// path but the two below), GET of it for the published limits, GET /healthz,
/// GET /metrics; CORS so web apps can call it. Keep-alive and pipelining, with
/// explicit bounds on what one connection may cost (see `ConnectoidHTTPHandler`):
/// at most `maxConnections` open, at most `maxConnectionsPerAddress` from one
/// address (prefix); a body declared or grown past the limit is answered 413
/// at once and the connection closed, its body never read.
public final class ConnectoidServer: @unchecked Sendable {
    public let service: ConnectoidService
    let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private var channel: Channel?
    /// Runs requests against a store that blocks (PostgreSQL), off the event loops.
    let pool: NIOThreadPool?
    /// Open connections, to tell each one when the service drains.
    let open = NIOLockedValueBox([ObjectIdentifier: Channel]())
    /// Open connections, in all and per client key (a slot is released when its
    /// channel closes, on every path).
    let slots: NIOLockedValueBox<Slots>

    struct Slots {
        var total = 0
        var byAddress: [String: Int] = [:]
    }

    enum Admission { case admitted, full, addressFull }

    public init(service: ConnectoidService, logger: Logger = Logger(label: "masq.connectoid")) {
        self.service = service
        self.logger = logger
        slots = NIOLockedValueBox(Slots())
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, service.configuration.threads))
        if service.storeBlocks {
            let pool = NIOThreadPool(numberOfThreads: max(1, service.configuration.storeThreads))
            pool.start()
            self.pool = pool
        } else {
            pool = nil
        }
    }

    /// Connections open now.
    public var openConnections: Int { slots.withLockedValue { $0.total } }

    /// Bind and serve; returns the bound port.
    public func start() throws -> Int {
        let configuration = service.configuration
        let tls: NIOSSLContext?
        if let certificate = configuration.tlsCertificatePath, let key = configuration.tlsKeyPath {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
            tls = try NIOSSLContext(
                configuration: .makeServerConfiguration(
                    certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))))
        } else {
            tls = nil
        }
        let service = self.service
        let slots = self.slots
        let metrics = service.metrics
        let pool = self.pool
        let open = self.open
        let readChunk = max(1_024, configuration.readChunkBytes)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            // Backpressure: past `high` unsent bytes the channel is not writable and
            // the handler stops answering and reading it (see ConnectoidHTTPHandler).
            .childChannelOption(
                ChannelOptions.writeBufferWaterMark,
                value: .init(
                    low: max(1, min(configuration.writeBufferLowBytes, configuration.writeBufferHighBytes)),
                    high: max(1, configuration.writeBufferHighBytes))
            )
            // One read of at most `readChunkBytes` per turn of the event loop: what one
            // connection brings in (and so the work it causes) per turn is bounded.
            .childChannelOption(
                ChannelOptions.recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: min(2_048, readChunk), maximum: readChunk)
            )
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 1)
            .childChannelInitializer { channel in
                let address = channel.remoteAddress?.ipAddress ?? "unknown"
                let client = ClientKey.of(
                    address, v4Prefix: configuration.ipv4Prefix, v6Prefix: configuration.ipv6Prefix)
                let admission = slots.withLockedValue { slots -> Admission in
                    guard slots.total < configuration.maxConnections else { return .full }
                    let fromAddress = slots.byAddress[client, default: 0]
                    guard fromAddress < configuration.maxConnectionsPerAddress else { return .addressFull }
                    slots.total += 1
                    slots.byAddress[client] = fromAddress + 1
                    metrics.connections.set(Int64(slots.total))
                    return .admitted
                }
                switch admission {
                case .admitted: break
                case .full:
                    metrics.refusedConnections.increment()
                    return channel.close()
                case .addressFull:
                    metrics.refusedConnectionsPerAddress.increment()
                    return channel.close()
                }
                let id = ObjectIdentifier(channel)
                open.withLockedValue { $0[id] = channel }
                channel.closeFuture.whenComplete { _ in
                    open.withLockedValue { $0[id] = nil }
                    slots.withLockedValue { slots in
                        slots.total -= 1
                        let left = slots.byAddress[client, default: 1] - 1
                        slots.byAddress[client] = left > 0 ? left : nil
                        metrics.connections.set(Int64(slots.total))
                    }
                }
                do {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    // No HTTPServerPipelineHandler: ConnectoidHTTPHandler orders
                    // pipelined requests itself, bounded, and answers malformed ones.
                    try channel.pipeline.syncOperations.addHandler(HTTPResponseEncoder())
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectoidHTTPHandler(service: service, client: client, pool: pool, address: address))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        let bound = try bootstrap.bind(host: configuration.host, port: configuration.port).wait()
        channel = bound
        let port = bound.localAddress?.port ?? configuration.port
        logger.info(
            "connectoid listening",
            metadata: [
                "address": "\(configuration.host):\(port)", "tls": "\(tls != nil)",
                "threads": "\(max(1, configuration.threads))"
            ])
        return port
    }

    public func wait() throws { try channel?.closeFuture.wait() }

    public func stop() {
        try? channel?.close().wait()
        try? group.syncShutdownGracefully()
        try? pool?.syncShutdownGracefully()
        service.store.close()
    }

    /// Graceful shutdown (SIGTERM): stop accepting connections, let /healthz
    /// answer 503, let every open connection finish the requests it sent
    /// (each answer then closes it; idle keep-alive connections close at
    /// once), wait up to `timeout` seconds for them, then stop. Returns the
    /// connections still open when the time ran out (closed by `stop`).
    @discardableResult
    public func drain(timeout: Int64) -> Int {
        service.draining.withLockedValue { $0 = true }
        logger.info("draining", metadata: ["connections": "\(openConnections)", "timeout_s": "\(timeout)"])
        try? channel?.close().wait()
        for channel in open.withLockedValue({ Array($0.values) }) {
            channel.pipeline.fireUserInboundEventTriggered(ConnectoidDrain())
        }
        let deadline = NIODeadline.now() + .seconds(timeout)
        while openConnections > 0, NIODeadline.now() < deadline { usleep(20_000) }
        let left = openConnections
        logger.info("drained", metadata: ["connections_cut": "\(left)"])
        stop()
        return left
    }
}

/// Sent through each connection's pipeline when the service drains.
struct ConnectoidDrain {}

/// One connection: requests in, answers out, in order, with bounded cost.
///
/// - Pipelining: complete requests wait in `queue` until answered. While
///   `maxPipelinedRequests` wait, or while the channel is not writable (its
///   unsent answers passed the write buffer's high-water mark), the handler
///   holds `read()`: nothing more is read from the socket, TCP pushes back
///   on the client, and a client that sends without reading its answers
///   costs at most its own write buffer plus one read of requests. Answers
///   resume when the client takes them (writability comes back).
/// - A body declared (Content-Length) or grown (chunked) past the limit is
///   answered 413 as soon as that is known, after the answers to the
///   requests before it, and the connection is closed: the body is not read
///   (a short, bounded drain after the answer keeps the close from turning
///   into a reset that would destroy the answer in flight).
/// - Malformed HTTP is answered 400 and closed the same way.
/// - The request timeout runs whenever the connection owes the service
///   something: the next request, or taking answers back; it is re-armed by
///   each answer and each time the client takes its answers.
final class ConnectoidHTTPHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// A request as far as answering needs it (the head is not kept: a queue
    /// of pipelined requests stays small).
    struct Request {
        enum Route { case health, metrics, limits, options, post, notAllowed }
        enum Verdict { case normal, tooBig, malformed }
        var route: Route
        var version: HTTPVersion
        var keepAlive: Bool
        var isHead: Bool
        var body: [UInt8] = []
        /// Body bytes received (kept only for POST).
        var received = 0
        var verdict: Verdict = .normal
        /// The client a trusted proxy names (last X-Forwarded-For address).
        var forwarded: String?

        init(_ head: HTTPRequestHead) {
            let path =
                head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init)
                ?? "/"
            switch (head.method, path) {
            case (.GET, "/healthz"): route = .health
            case (.GET, "/metrics"): route = .metrics
            case (.GET, _), (.HEAD, _): route = .limits
            case (.OPTIONS, _): route = .options
            case (.POST, _): route = .post
            default: route = .notAllowed
            }
            version = head.version
            keepAlive = head.isKeepAlive
            isHead = head.method == .HEAD
            if let last = head.headers["x-forwarded-for"].last?.split(separator: ",").last {
                forwarded = last.split(separator: " ").first.map(String.init)
            }
        }

        private init(route: Route, verdict: Verdict) {
            self.route = route
            version = .http1_1
            keepAlive = false
            isHead = false
            self.verdict = verdict
        }

        /// What malformed HTTP is answered as (400, then the connection is closed).
        static let malformed = Request(route: .notAllowed, verdict: .malformed)

        /// The connection ends with this request's answer.
        var isFinal: Bool { !keepAlive || verdict != .normal }
    }

    /// After a final answer (413, 400, Connection: close) the output is shut and
    /// what the client still sends is drained, for at most this long and this much.
    /// Closing with unread bytes sends a reset, and a reset can discard the answer
    /// before the client reads it: the bound covers what a client streaming a body
    /// can have in flight in socket buffers by then (loopback: several MiB).
    static let lingerSeconds: Int64 = 2
    static let lingerBytes = 8 << 20

    let service: ConnectoidService
    let client: String
    private let maxBody: Int
    private let maxPipelined: Int
    /// The request being read (head seen, end not yet).
    private var current: Request?
    /// Complete requests not answered yet, in order.
    private var queue = CircularBuffer<Request>(initialCapacity: 4)
    /// A read() held back while the connection is over its bounds.
    private var readPending = false
    /// A final request is queued: nothing after it is taken.
    private var closing = false
    /// The final answer went out: draining before the close.
    private var lingering = false
    private var drained = 0
    private var answering = false
    private var deadline: Scheduled<Void>?

    /// A request is being answered on the thread pool (blocking store).
    private var waiting = false
    private let pool: NIOThreadPool?

    /// The connection comes from a trusted proxy.
    private let trusted: Bool

    init(service: ConnectoidService, client: String, pool: NIOThreadPool? = nil, address: String = "") {
        self.service = service
        self.client = client
        self.pool = pool
        trusted = service.configuration.trustedProxies.contains(address)
        maxBody = service.maxBodyBytes
        maxPipelined = max(1, service.configuration.maxPipelinedRequests)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        armDeadline(context, seconds: service.configuration.requestTimeoutSeconds)
    }

    func handlerRemoved(context: ChannelHandlerContext) { deadline?.cancel() }

    /// Close the connection unless it makes progress within `seconds`.
    private func armDeadline(_ context: ChannelHandlerContext, seconds: Int64) {
        deadline?.cancel()
        let channel = context.channel
        let metrics = service.metrics
        let lingering = self.lingering
        deadline = context.eventLoop.scheduleTask(in: .seconds(seconds)) {
            if !lingering { metrics.timedOut.increment() }
            channel.close(promise: nil)
        }
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        guard !closing else {
            // Past a final request: dropped unread (while lingering, a bounded amount).
            if case .body(let chunk) = part { drained += chunk.readableBytes } else { drained += 512 }
            if lingering && drained > Self.lingerBytes { context.close(promise: nil) }
            return
        }
        switch part {
        case .head(let head):
            var request = Request(head)
            // A body declared past the limit: answered now, never read.
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > maxBody {
                request.verdict = .tooBig
                enqueue(context, request)
                return
            }
            current = request
        case .body(let chunk):
            guard current != nil else { return }
            current!.received += chunk.readableBytes
            if current!.received > maxBody {
                // Chunked (or otherwise undeclared) past the limit: answered now.
                var request = current!
                current = nil
                request.body = []
                request.verdict = .tooBig
                enqueue(context, request)
                return
            }
            if current!.route == .post { current!.body.append(contentsOf: chunk.readableBytesView) }
        case .end:
            guard let request = current else { return }
            current = nil
            enqueue(context, request)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // Malformed HTTP: answered 400 after the requests before it, then closed.
        if !closing, error is HTTPParserError {
            current = nil
            enqueue(context, .malformed)
            return
        }
        // Bytes the decoder refuses after its error: part of the drain.
        if closing, case ByteToMessageDecoderError.dataReceivedInErrorState(_, let buffer) = error {
            drained += buffer.readableBytes
            if !lingering || drained <= Self.lingerBytes { return }
        }
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ConnectoidDrain else { return context.fireUserInboundEventTriggered(event) }
        guard !closing else { return }
        if current != nil { return }  // the request being read becomes the last (see enqueue)
        if queue.isEmpty && !waiting {
            context.close(promise: nil)  // idle keep-alive connection
            return
        }
        // The last request queued gets the last answer.
        if var last = queue.popLast() {
            last.keepAlive = false
            queue.append(last)
            closing = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            // The client took its answers: progress.
            if !lingering { armDeadline(context, seconds: service.configuration.requestTimeoutSeconds) }
            answerQueued(context)
        }
        context.fireChannelWritabilityChanged()
    }

    private func enqueue(_ context: ChannelHandlerContext, _ request: Request) {
        var request = request
        if service.isDraining { request.keepAlive = false }
        queue.append(request)
        if request.isFinal { closing = true }
        answerQueued(context)
    }

    // MARK: outbound

    private var canRead: Bool {
        if lingering { return true }
        return !closing && queue.count < maxPipelined && !answering && !waiting
    }

    func read(context: ChannelHandlerContext) {
        if canRead && (lingering || context.channel.isWritable) {
            context.read()
        } else {
            readPending = true
        }
    }

    private func resumeReading(_ context: ChannelHandlerContext) {
        guard readPending, canRead, lingering || context.channel.isWritable else { return }
        readPending = false
        context.read()
    }

    /// Answer queued requests in order while the client takes answers.
    private func answerQueued(_ context: ChannelHandlerContext) {
        guard !answering, !waiting else { return }
        answering = true
        // A flush may make the channel writable again (the kernel took the
        // bytes): loop rather than recurse from channelWritabilityChanged.
        outer: while !lingering, context.channel.isActive, context.channel.isWritable, !queue.isEmpty {
            while !lingering, context.channel.isWritable, var request = queue.popFirst() {
                lastIfDraining(&request)
                if let pool, request.verdict == .normal, request.route == .post || request.route == .metrics {
                    // A blocking store: answered on the pool, then back here in order.
                    offload(context, request, pool)
                    break outer
                }
                respond(context, request)
                answered(context, request)
            }
            context.flush()
        }
        answering = false
        resumeReading(context)
    }

    /// Draining, and nothing else asked on this connection: its answer closes it.
    private func lastIfDraining(_ request: inout Request) {
        if service.isDraining, queue.isEmpty, current == nil, request.keepAlive {
            request.keepAlive = false
            closing = true
        }
    }

    private func answered(_ context: ChannelHandlerContext, _ request: Request) {
        if request.isFinal {
            queue.removeAll()
            finish(context)
        } else {
            armDeadline(context, seconds: service.configuration.requestTimeoutSeconds)
        }
    }

    private func offload(_ context: ChannelHandlerContext, _ request: Request, _ pool: NIOThreadPool) {
        waiting = true
        let service = self.service
        let client = clientKey(request)
        let body = request.body
        let route = request.route
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        pool.runIfActive(eventLoop: context.eventLoop) { () -> (ConnectoidResponse?, String?) in
            route == .metrics ? (nil, service.metricsText()) : (service.handle(body: body, client: client), nil)
        }.whenComplete { result in
            let (handler, context) = bound.value
            handler.waiting = false
            guard context.channel.isActive else { return }
            var request = request
            handler.lastIfDraining(&request)
            switch result {
            case .success((let response?, _)): handler.respond(context, request, post: response)
            case .success((nil, let text)):
                handler.send(context, request, .ok, Array((text ?? "").utf8), "text/plain; version=0.0.4")
            case .failure:
                handler.respond(
                    context, request, post: ConnectoidResponse(ConnectoidError(.unavailable, "the service is stopping"))
                )
            }
            handler.answered(context, request)
            context.flush()
            handler.answerQueued(context)
        }
    }

    /// The final answer is written: shut the output once it is sent, drain what
    /// the client still sends (bounded), close.
    private func finish(_ context: ChannelHandlerContext) {
        lingering = true
        drained = 0
        armDeadline(context, seconds: Self.lingerSeconds)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { result in
            guard case .success = result else { channel.close(promise: nil); return }
            channel.close(mode: .output).whenFailure { _ in channel.close(promise: nil) }
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ request: Request) {
        switch request.verdict {
        case .tooBig:
            service.metrics.count("", ok: false, code: .tooBig)
            send(context, request, .payloadTooLarge, json(ConnectoidResponse(.tooBig)), "application/json")
            return
        case .malformed:
            service.metrics.count("", ok: false, code: .badRequest)
            send(
                context, request, .badRequest,
                Array("{\"ok\":false,\"error\":\"Malformed HTTP request\",\"code\":\"bad_request\"}".utf8),
                "application/json")
            return
        case .normal: break
        }
        switch request.route {
        case .health:
            if service.isDraining {
                send(context, request, .serviceUnavailable, Array("draining\n".utf8), "text/plain")
            } else {
                send(context, request, .ok, Array("ok\n".utf8), "text/plain")
            }
        case .metrics: send(context, request, .ok, Array(service.metricsText().utf8), "text/plain; version=0.0.4")
        case .limits: send(context, request, .ok, service.limitsJSON(), "application/json")
        case .options: send(context, request, .noContent, [], "text/plain")
        case .post:
            respond(context, request, post: service.handle(body: request.body, client: clientKey(request)))
        case .notAllowed:
            send(
                context, request, .methodNotAllowed,
                Array("{\"ok\":false,\"error\":\"Method not allowed\",\"code\":\"bad_request\"}".utf8),
                "application/json")
        }
    }

    /// Whom the rate limits count a request against: the connection's
    /// address, or, from a trusted proxy (--trust-proxy), the client it names.
    private func clientKey(_ request: Request) -> String {
        guard trusted, let forwarded = request.forwarded, !forwarded.isEmpty else { return client }
        let configuration = service.configuration
        return ClientKey.of(forwarded, v4Prefix: configuration.ipv4Prefix, v6Prefix: configuration.ipv6Prefix)
    }

    private func respond(_ context: ChannelHandlerContext, _ request: Request, post response: ConnectoidResponse) {
        let status: HTTPResponseStatus =
            response.ok
            ? .ok
            : .init(statusCode: response.code.flatMap(ConnectoidError.Code.init(rawValue:))?.httpStatus ?? 400)
        send(context, request, status, json(response), "application/json")
    }

    private func json(_ response: ConnectoidResponse) -> [UInt8] {
        (try? JSONEncoder().encode(response)).map(Array.init) ?? Array("{\"ok\":false}".utf8)
    }

    /// Head and body of an answer; its end too unless it is the final one (`finish` writes that).
    private func send(
        _ context: ChannelHandlerContext, _ request: Request, _ status: HTTPResponseStatus, _ bytes: [UInt8],
        _ type: String
    ) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: type)
        headers.add(name: "content-length", value: String(bytes.count))
        headers.add(name: "access-control-allow-origin", value: "*")
        headers.add(name: "access-control-allow-methods", value: "GET, POST, OPTIONS")
        headers.add(name: "access-control-allow-headers", value: "content-type")
        headers.add(name: "cache-control", value: "no-store")
        headers.add(name: "connection", value: request.isFinal ? "close" : "keep-alive")
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))),
            promise: nil)
        if !bytes.isEmpty && !request.isHead {
            context.write(
                wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
        }
        if !request.isFinal { context.write(wrapOutboundOut(.end(nil)), promise: nil) }
    }
}
