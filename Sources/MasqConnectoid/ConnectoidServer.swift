import FoundationEssentials
import Logging
import MasqConnectoidWire
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// HTTP front of a `ConnectoidService`: POST of JSON to the service URL (any
/// path but the two below), GET of it for the published limits, GET /healthz,
/// GET /metrics; CORS so web apps can call it. Keep-alive; bodies beyond the
/// limit are refused with 413 before they are read whole.
public final class ConnectoidServer: @unchecked Sendable {
    public let service: ConnectoidService
    let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private var channel: Channel?
    /// Open connections (a slot is released when its channel closes, on every path).
    let open = NIOLockedValueBox(0)

    public init(service: ConnectoidService, logger: Logger = Logger(label: "masq.connectoid")) {
        self.service = service
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, service.configuration.threads))
    }

    /// Bind and serve; returns the bound port.
    public func start() throws -> Int {
        let configuration = service.configuration
        let tls: NIOSSLContext?
        if let certificate = configuration.tlsCertificatePath, let key = configuration.tlsKeyPath {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
            tls = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))))
        } else {
            tls = nil
        }
        let service = self.service
        let open = self.open
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 1024)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let admitted = open.withLockedValue { count -> Bool in
                    guard count < configuration.maxConnections else { return false }
                    count += 1
                    return true
                }
                guard admitted else {
                    service.metrics.refusedConnections.increment()
                    return channel.close()
                }
                channel.closeFuture.whenComplete { _ in open.withLockedValue { $0 -= 1 } }
                do {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(ConnectoidHTTPHandler(service: service))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        let bound = try bootstrap.bind(host: configuration.host, port: configuration.port).wait()
        channel = bound
        let port = bound.localAddress?.port ?? configuration.port
        logger.info("connectoid listening", metadata: ["address": "\(configuration.host):\(port)", "tls": "\(tls != nil)"])
        return port
    }

    public func wait() throws { try channel?.closeFuture.wait() }

    public func stop() {
        try? channel?.close().wait()
        try? group.syncShutdownGracefully()
    }
}

final class ConnectoidHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let service: ConnectoidService
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooBig = false

    private var deadline: Scheduled<Void>?

    init(service: ConnectoidService) { self.service = service }

    func handlerAdded(context: ChannelHandlerContext) { armDeadline(context) }

    func handlerRemoved(context: ChannelHandlerContext) { deadline?.cancel() }

    /// The next request must be complete within the timeout (see ConnectoidConfiguration).
    private func armDeadline(_ context: ChannelHandlerContext) {
        deadline?.cancel()
        let channel = context.channel
        let metrics = service.metrics
        deadline = context.eventLoop.scheduleTask(in: .seconds(service.configuration.requestTimeoutSeconds)) {
            metrics.timedOut.increment()
            channel.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body.removeAll(keepingCapacity: true)
            tooBig = false
            if let length = h.headers.first(name: "content-length").flatMap(Int.init), length > service.maxBodyBytes { tooBig = true }
        case .body(var chunk):
            guard !tooBig else { return }
            if body.count + chunk.readableBytes > service.maxBodyBytes { tooBig = true; body = []; return }
            body += chunk.readBytes(length: chunk.readableBytes) ?? []
        case .end:
            guard let head else { return }
            self.head = nil
            respond(context, head)
            armDeadline(context)
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        switch (head.method, path) {
        case (.GET, "/healthz"): send(context, head, .ok, Array("ok\n".utf8), "text/plain")
        case (.GET, "/metrics"): send(context, head, .ok, Array(service.metricsText().utf8), "text/plain; version=0.0.4")
        case (.GET, _), (.HEAD, _): send(context, head, .ok, service.limitsJSON(), "application/json")
        case (.OPTIONS, _): send(context, head, .noContent, [], "text/plain")
        case (.POST, _):
            let response: ConnectoidResponse
            if tooBig {
                response = ConnectoidResponse(.tooBig)
            } else {
                let address = context.channel.remoteAddress?.ipAddress ?? "unknown"
                let client = ClientKey.of(address, v4Prefix: service.configuration.ipv4Prefix, v6Prefix: service.configuration.ipv6Prefix)
                response = service.handle(body: body, client: client)
            }
            let status: HTTPResponseStatus = response.ok ? .ok
                : .init(statusCode: response.code.flatMap(ConnectoidError.Code.init(rawValue:))?.httpStatus ?? 400)
            let json = (try? JSONEncoder().encode(response)).map(Array.init) ?? Array("{\"ok\":false}".utf8)
            send(context, head, status, json, "application/json", close: tooBig)
        default:
            send(context, head, .methodNotAllowed, Array("{\"ok\":false,\"error\":\"Method not allowed\",\"code\":\"bad_request\"}".utf8), "application/json")
        }
        body = []
    }

    private func send(_ context: ChannelHandlerContext, _ head: HTTPRequestHead, _ status: HTTPResponseStatus, _ bytes: [UInt8], _ type: String, close: Bool = false) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: type)
        headers.add(name: "content-length", value: String(bytes.count))
        headers.add(name: "access-control-allow-origin", value: "*")
        headers.add(name: "access-control-allow-methods", value: "GET, POST, OPTIONS")
        headers.add(name: "access-control-allow-headers", value: "content-type")
        headers.add(name: "cache-control", value: "no-store")
        let keepAlive = head.isKeepAlive && !close
        headers.add(name: "connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if !bytes.isEmpty && head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in if !keepAlive { channel.close(promise: nil) } }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
