import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A small HTTP client for plugins (Connectoid mailboxes, JSON-RPC).
/// One HTTP/1.1 POST per connection (`Connection: close`): a poller that
/// wakes every interval keeps nothing open between polls, which is what a
/// phone's battery wants. https:// goes through NIOSSL with the system's
/// trust store.
public struct HTTPEndpoint: Sendable {
    public let tls: Bool
    public let host: String
    public let port: Int
    public let path: String

    public init?(_ url: String) {
        let rest: Substring
        if url.hasPrefix("http://") {
            tls = false; rest = url.dropFirst(7)
        } else if url.hasPrefix("https://") {
            tls = true; rest = url.dropFirst(8)
        } else {
            return nil
        }
        let authority = rest.prefix { $0 != "/" }
        path = rest.count > authority.count ? String(rest.dropFirst(authority.count)) : "/"
        if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            guard after.isEmpty || after.hasPrefix(":") else { return nil }
            guard let p = after.isEmpty ? (tls ? 443 : 80) : Int(after.dropFirst()) else { return nil }
            port = p
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]) else { return nil }
            port = p
        } else {
            host = String(authority)
            port = tls ? 443 : 80
        }
        guard !host.isEmpty, (1...65_535).contains(port) else { return nil }
    }

    public var hostHeader: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

public struct HTTPResult: Sendable {
    public let status: Int
    public let body: [UInt8]
}

public enum HTTPClient {
    public static func post(
        _ endpoint: HTTPEndpoint, body: [UInt8], group: EventLoopGroup, tls: NIOSSLContext?,
        timeout: TimeAmount, maxResponseBytes: Int
    ) -> EventLoopFuture<HTTPResult> {
        let loop = group.next()
        let promise = loop.makePromise(of: HTTPResult.self)
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(timeout)
            .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                do {
                    if endpoint.tls, let tls {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tls, serverHostname: endpoint.host))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(
                        ResponseCollector(promise: promise, limit: maxResponseBytes))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
        bootstrap.connect(host: endpoint.host, port: endpoint.port).whenComplete { result in
            switch result {
            case .failure(let error): promise.fail(error)
            case .success(let channel):
                var headers = HTTPHeaders()
                headers.add(name: "host", value: endpoint.hostHeader)
                headers.add(name: "content-type", value: "application/json")
                headers.add(name: "content-length", value: String(body.count))
                headers.add(name: "connection", value: "close")
                let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: endpoint.path, headers: headers)
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                channel.write(
                    HTTPClientRequestPart.body(.byteBuffer(channel.allocator.buffer(bytes: body))), promise: nil)
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                let deadline = loop.scheduleTask(in: timeout) {
                    promise.fail(ChannelError.connectTimeout(timeout))
                    channel.close(promise: nil)
                }
                promise.futureResult.whenComplete { _ in
                    deadline.cancel()
                    channel.close(promise: nil)
                }
            }
        }
        return promise.futureResult
    }
}

private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<HTTPResult>
    let limit: Int
    var status = 0
    var body: [UInt8] = []

    init(promise: EventLoopPromise<HTTPResult>, limit: Int) {
        self.promise = promise
        self.limit = limit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body(var chunk):
            guard body.count + chunk.readableBytes <= limit else {
                promise.fail(ChannelError.inputClosed)
                context.close(promise: nil)
                return
            }
            body += chunk.readBytes(length: chunk.readableBytes) ?? []
        case .end: promise.succeed(HTTPResult(status: status, body: body))
        }
    }

    func channelInactive(context: ChannelHandlerContext) { promise.fail(ChannelError.ioOnClosedChannel) }
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise.fail(error)
        context.close(promise: nil)
    }
}
