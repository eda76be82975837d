// The localhost WebSocket transport plugin: a server on loopback addresses
// only, through which apps on this computer — native programs, or web pages
// in any browser — reach the daemon. Every connection is a peer ("c1",
// "c2", …) whose Origin, Host, path and address reach the host through
// peer_up_info, so the daemon can bind consent to an origin. Plain GET
// requests are answered from static directories (the daemon's pages and the
// JS client). Every request must name a loopback host in its Host header,
// which defeats DNS rebinding. It sees nothing of Masq but
// include/masq_plugin.h.
import CMasqPlugin
import CMasqSockDiag
import MasqHandshakeGate
import MasqPluginSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

#if canImport(Glibc)
    import Glibc
#endif

private let pluginName: StaticString = "localws"
private let pluginVersion: StaticString = "1.0.0"
private let pluginSummary: StaticString =
    "WebSocket server on 127.0.0.1/::1 for local apps (origin reported, static pages)"

/// One plugin instance: listeners, live connections, limits.
final class LocalWebSocketTransport: PluginTransport, @unchecked Sendable {
    struct Options {
        var staticDirectories: [String] = []
        var maxMessageBytes = 1 << 20
        var maxConnections = 256
        /// Bytes queued for a connection that does not read before it is closed.
        var maxQueuedBytes = 8 << 20
        var pingIntervalSeconds: Int64 = 30
        var idleTimeoutSeconds: Int64 = 120
        /// A connection must finish its WebSocket upgrade (or its one HTTP
        /// request) this soon after it is accepted, or it is closed; at most
        /// `maxHandshakes` may be in that state (the oldest makes room), so
        /// idle or trickling sockets cannot hold slots (HandshakeGate).
        var handshakeTimeoutSeconds: Int64 = 10
        var maxHandshakes = 64
        /// Event loop threads. One is best for a local daemon: measured with
        /// 50 apps, two threads lost a fifth of the throughput to hand-offs.
        var threads = 1
        /// Serve only clients whose socket this OS user owns (nil: anyone).
        var allowedUID: UInt32?
    }

    struct Counters {
        var connections: UInt64 = 0
        var framesReceived: UInt64 = 0
        var framesSent: UInt64 = 0
        var framesRejected: UInt64 = 0
        var refusedUpgrades: UInt64 = 0
        var refusedUsers: UInt64 = 0
        var slowClosed: UInt64 = 0

        var json: String {
            "{\"connections\": \(connections), \"frames_received\": \(framesReceived), \"frames_sent\": \(framesSent), "
                + "\"frames_rejected\": \(framesRejected), \"refused_upgrades\": \(refusedUpgrades), \"refused_users\": \(refusedUsers), "
                + "\"slow_closed\": \(slowClosed)}"
        }
    }

    let host: UnsafePointer<masq_host>
    let options: Options
    let group: MultiThreadedEventLoopGroup
    let counters = NIOLockedValueBox(Counters())
    var statsJSON: String {
        let gate = handshakes.counts
        let json = counters.withLockedValue { $0.json }
        return String(json.dropLast())
            + ", \"handshakes_pending\": \(gate.pending), \"handshakes_evicted\": \(gate.evicted), \"handshakes_timed_out\": \(gate.timedOut)}"
    }
    let handshakes: HandshakeGate
    private let state = NIOLockedValueBox(State())

    struct State {
        var listeners: [Channel] = []
        var peers: [String: Channel] = [:]
        var nextPeer = 1
        var open = 0
        var stopped = false
    }

    init(host: UnsafePointer<masq_host>, options: Options) {
        self.host = host
        self.options = options
        handshakes = HandshakeGate(capacity: options.maxHandshakes, timeout: .seconds(options.handshakeTimeoutSeconds))
        group = MultiThreadedEventLoopGroup(numberOfThreads: options.threads)
    }

    // MARK: plugin entry points (any thread)

    func start() -> Int32 { MASQ_OK }

    func stop() -> Int32 {
        let channels = state.withLockedValue { s -> [Channel] in
            guard !s.stopped else { return [] }
            s.stopped = true
            return s.listeners + Array(s.peers.values)
        }
        for channel in channels { try? channel.close().wait() }
        try? group.syncShutdownGracefully()
        return MASQ_OK
    }

    /// Listen on a loopback endpoint: 127.0.0.1:PORT, [::1]:PORT or
    /// localhost:PORT (both). Port 0 picks one; the bound endpoint(s) go to
    /// `bound`, comma-separated.
    func listen(_ endpoint: String, bound: (String) -> Void) -> Int32 {
        guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]),
            (0...65_535).contains(port)
        else {
            return fail(
                .init(MASQ_E_INVALID, "endpoint must be 127.0.0.1:PORT, [::1]:PORT or localhost:PORT, not \(endpoint)"))
        }
        let name = String(endpoint[..<colon])
        let addresses: [String]
        switch name {
        case "127.0.0.1": addresses = ["127.0.0.1"]
        case "[::1]", "::1": addresses = ["::1"]
        case "localhost": addresses = ["127.0.0.1", "::1"]
        default:
            return fail(.init(MASQ_E_INVALID, "the localws transport listens on loopback addresses only, not \(name)"))
        }
        var results: [String] = []
        var chosen = port
        for address in addresses {
            do {
                let channel = try bootstrap().bind(host: address, port: chosen).wait()
                chosen = channel.localAddress?.port ?? chosen
                state.withLockedValue { $0.listeners.append(channel) }
                results.append(address.contains(":") ? "[\(address)]:\(chosen)" : "\(address):\(chosen)")
            } catch {
                // "localhost": one family may be missing (no IPv6); the other is enough.
                if addresses.count == 1 || (address == addresses.last && results.isEmpty) {
                    return fail(.init(MASQ_E_IO, "cannot listen on \(address):\(chosen): \(error)"))
                }
                log(MASQ_LOG_WARN, "cannot listen on \(address):\(chosen): \(error)")
            }
        }
        bound(results.joined(separator: ","))
        return MASQ_OK
    }

    /// Send one message to a peer: a text frame when it is UTF-8 (what
    /// browsers expect of JSON), else binary.
    func send(_ peer: String, _ bytes: UnsafeRawBufferPointer) -> Int32 {
        guard !state.withLockedValue({ $0.stopped }) else {
            return fail(.init(MASQ_E_CLOSED, "the transport is stopped"))
        }
        guard let channel = state.withLockedValue({ $0.peers[peer] }) else {
            return fail(.init(MASQ_E_NOT_FOUND, "no connection \(peer)"))
        }
        guard bytes.count <= options.maxMessageBytes else {
            return fail(.init(MASQ_E_TOO_LARGE, "message of \(bytes.count) bytes exceeds max_message_bytes"))
        }
        var made = channel.allocator.buffer(capacity: bytes.count)
        made.writeBytes(bytes)
        let buffer = made
        let text = String(validating: bytes, as: UTF8.self) != nil
        let limit = options.maxQueuedBytes
        let transport = self
        let write = {
            // A client that stops reading is closed, not buffered without bound.
            if let pending = try? channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes), pending > limit
            {
                transport.counters.withLockedValue { $0.slowClosed += 1 }
                transport.close(channel, code: .policyViolation, reason: "too many unread messages")
                return
            }
            channel.writeAndFlush(WebSocketFrame(fin: true, opcode: text ? .text : .binary, data: buffer), promise: nil)
        }
        // An answer written from the loop's own thread (the host answered
        // within frame_received) goes out at once; others hop to the loop.
        if channel.eventLoop.inEventLoop { write() } else { channel.eventLoop.execute(write) }
        counters.withLockedValue { $0.framesSent += 1 }
        return MASQ_OK
    }

    func disconnect(_ peer: String, reason: String) -> Int32 {
        guard let channel = state.withLockedValue({ $0.peers[peer] }) else {
            return fail(.init(MASQ_E_NOT_FOUND, "no connection \(peer)"))
        }
        channel.eventLoop.execute { self.close(channel, code: .policyViolation, reason: reason) }
        return MASQ_OK
    }

    // MARK: connections (event loop)

    private func bootstrap() -> ServerBootstrap {
        let transport = self
        return ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 256)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                do {
                    guard let uid = transport.admit(channel) else {
                        return channel.close()
                    }
                    try transport.configure(channel, uid: uid)
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            }
    }

    /// Admission at accept, before a byte is read: another OS user's socket is
    /// closed at once (one exact sock_diag query), and every other one enters
    /// the handshake gate until its upgrade completes. Returns the client's
    /// uid (inner nil: unknown) or nil to refuse.
    fileprivate func admit(_ channel: Channel) -> UInt32?? {
        let uid = SocketOwner.uid(of: channel)
        // Another OS user's program gets no slot (Linux: the socket's owner).
        if let allowed = options.allowedUID, uid != allowed {
            counters.withLockedValue { $0.refusedUsers += 1 }
            return nil
        }
        handshakes.admit(channel)
        return .some(uid)
    }

    private func configure(_ channel: Channel, uid: UInt32?) throws {
        let transport = self
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: options.maxMessageBytes,
            shouldUpgrade: { channel, head in
                guard transport.loopbackHost(head.headers, channel) else {
                    transport.counters.withLockedValue { $0.refusedUpgrades += 1 }
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                let admitted = transport.state.withLockedValue { s -> Bool in
                    guard !s.stopped, s.open < transport.options.maxConnections else { return false }
                    s.open += 1
                    return true
                }
                if admitted {
                    // The slot is the channel's until it closes, on every path (an
                    // upgrade reset before the peer handler exists releases it too).
                    channel.closeFuture.whenComplete { _ in transport.state.withLockedValue { $0.open -= 1 } }
                } else {
                    transport.counters.withLockedValue { $0.refusedUpgrades += 1 }
                }
                return channel.eventLoop.makeSucceededFuture(admitted ? HTTPHeaders() : nil)
            },
            upgradePipelineHandler: { channel, head in
                transport.handshakes.passed(channel)
                do {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(
                        NIOWebSocketFrameAggregator(
                            minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 64,
                            maxAccumulatedFrameSize: transport.options.maxMessageBytes))
                    try sync.addHandler(IdleStateHandler(readTimeout: .seconds(transport.options.idleTimeoutSeconds)))
                    try sync.addHandler(PeerHandler(transport: transport, request: head, uid: uid))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
            })
        let files = StaticFileHandler(transport: self)
        let bound = NIOLoopBound(files, eventLoop: channel.eventLoop)
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withServerUpgrade: (
                upgraders: [upgrader],
                completionHandler: { context in
                    context.pipeline.syncOperations.removeHandler(bound.value, promise: nil)
                }
            ))
        try channel.pipeline.syncOperations.addHandler(files)
    }

    /// The Host header names a loopback address with this listener's port:
    /// a page on another name that resolves to 127.0.0.1 (DNS rebinding)
    /// is refused.
    func loopbackHost(_ headers: HTTPHeaders, _ channel: Channel) -> Bool {
        guard let value = headers["host"].first, headers["host"].count == 1 else { return false }
        let port = channel.localAddress?.port ?? -1
        for name in ["127.0.0.1", "localhost", "[::1]"] where value == "\(name):\(port)" { return true }
        return false
    }

    fileprivate func opened(_ channel: Channel, _ request: HTTPRequestHead, uid: UInt32?) -> String {
        let peer = state.withLockedValue { s -> String in
            let id = "c\(s.nextPeer)"
            s.nextPeer += 1
            s.peers[id] = channel
            return id
        }
        counters.withLockedValue { $0.connections += 1 }
        var info: [(String, String)] = [("host", request.headers["host"].first ?? ""), ("path", request.uri)]
        if let origin = request.headers["origin"].first { info.append(("origin", origin)) }
        if let remote = channel.remoteAddress, let ip = remote.ipAddress, let port = remote.port {
            info.append(("remote", ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"))
        }
        if let uid { info.append(("uid", String(uid))) }
        let json = "{" + info.map { "\(jsonString($0.0)): \(jsonString($0.1))" }.joined(separator: ", ") + "}"
        if hostHas(host, \.peer_up_info), let upInfo = host.pointee.peer_up_info {
            upInfo(host, peer, json)
        } else {
            host.pointee.peer_event(host, peer, MASQ_PEER_UP)
        }
        return peer
    }

    fileprivate func closed(_ peer: String) {
        let known = state.withLockedValue { s -> Bool in s.peers.removeValue(forKey: peer) != nil }
        if known { host.pointee.peer_event(host, peer, MASQ_PEER_DOWN) }
    }

    fileprivate func received(_ peer: String, _ data: ByteBuffer) {
        counters.withLockedValue { $0.framesReceived += 1 }
        data.withUnsafeReadableBytes { raw in
            host.pointee.frame_received(
                host, peer, nil, raw.baseAddress?.assumingMemoryBound(to: UInt8.self), raw.count)
        }
    }

    fileprivate func rejected(_ why: String) {
        counters.withLockedValue { $0.framesRejected += 1 }
        log(MASQ_LOG_INFO, "closed a connection: \(why)")
    }

    fileprivate func close(_ channel: Channel, code: WebSocketErrorCode, reason: String) {
        var buffer = channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        buffer.write(webSocketErrorCode: code)
        buffer.writeString(String(reason.utf8.prefix(120)) ?? "")
        channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: buffer)).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    func log(_ level: Int32, _ message: String) { host.pointee.log(host, level, message) }

    func fail(_ failure: PluginFailure) -> Int32 { report(host, failure) }
}

/// One app connection after the upgrade.
final class PeerHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame
    let transport: LocalWebSocketTransport
    let request: HTTPRequestHead
    let uid: UInt32?
    private var peer: String?
    private var pingTask: Scheduled<Void>?

    init(transport: LocalWebSocketTransport, request: HTTPRequestHead, uid: UInt32?) {
        self.transport = transport
        self.request = request
        self.uid = uid
    }

    func handlerAdded(context: ChannelHandlerContext) {
        peer = transport.opened(context.channel, request, uid: uid)
        schedulePing(context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        pingTask?.cancel()
        if let peer { transport.closed(peer) }
        peer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            if let peer { transport.received(peer, frame.unmaskedData) }
        case .ping:
            context.writeAndFlush(
                wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .connectionClose:
            transport.close(context.channel, code: .normalClosure, reason: "")
        default:
            break
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            transport.close(context.channel, code: .goingAway, reason: "idle")
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// Oversized or malformed frames: counted, and the connection closed.
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        transport.rejected("\(error)")
        transport.close(
            context.channel, code: error is NIOWebSocketError ? .messageTooLarge : .protocolError, reason: "bad frame")
    }

    private func schedulePing(_ context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        pingTask = context.eventLoop.scheduleTask(in: .seconds(transport.options.pingIntervalSeconds)) {
            let (handler, context) = bound.value
            guard handler.peer != nil else { return }
            context.writeAndFlush(
                handler.wrapOutboundOut(
                    WebSocketFrame(fin: true, opcode: .ping, data: context.channel.allocator.buffer(capacity: 0))),
                promise: nil)
            handler.schedulePing(context)
        }
    }
}

/// GET and HEAD for files in the static directories; anything else 404,
/// 405, or 403 for a Host that is not loopback.
final class StaticFileHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let transport: LocalWebSocketTransport
    private var head: HTTPRequestHead?

    init(transport: LocalWebSocketTransport) { self.transport = transport }

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
            respond(context, head)
        }
    }

    private func respond(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        var headers = HTTPHeaders()
        let status: HTTPResponseStatus
        var body: [UInt8] = []
        if !transport.loopbackHost(head.headers, context.channel) {
            (status, body) = (
                .forbidden, Array("this server answers only to 127.0.0.1, localhost or [::1] with its port\n".utf8)
            )
        } else if head.headers["upgrade"].contains(where: { $0.lowercased() == "websocket" }) {
            (status, body) = (
                .serviceUnavailable, Array("too many connections, or not a valid WebSocket upgrade\n".utf8)
            )
        } else if head.method != .GET && head.method != .HEAD {
            (status, body) = (.methodNotAllowed, Array("GET only\n".utf8))
        } else if let (file, type) = lookup(head.uri) {
            (status, body) = (.ok, file)
            headers.add(name: "Content-Type", value: type)
            // The JS client is imported by app pages from other origins.
            if type.hasPrefix("text/javascript") { headers.add(name: "Access-Control-Allow-Origin", value: "*") }
        } else {
            (status, body) = (.notFound, Array("not found\n".utf8))
        }
        if headers["content-type"].isEmpty { headers.add(name: "Content-Type", value: "text/plain; charset=utf-8") }
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        headers.add(name: "X-Frame-Options", value: "DENY")
        headers.add(name: "Referrer-Policy", value: "no-referrer")
        headers.add(
            name: "Content-Security-Policy",
            value:
                "default-src 'self'; img-src 'self' data:; style-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        )
        headers.add(name: "Connection", value: "close")
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
            promise: nil)
        if head.method != .HEAD {
            var buffer = context.channel.allocator.buffer(capacity: body.count)
            buffer.writeBytes(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    /// A file under one of the static directories: the path may hold only
    /// [A-Za-z0-9._-/] and no ".." segment; "/" is index.html.
    private func lookup(_ uri: String) -> ([UInt8], String)? {
        var path = String(uri.prefix { $0 != "?" && $0 != "#" })
        if path.hasSuffix("/") { path += "index.html" }
        let allowed = path.utf8.allSatisfy { c in
            (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 46 || c == 95 || c == 45
                || c == 47
        }
        guard allowed, path.hasPrefix("/"),
            !path.split(separator: "/").contains(where: { $0 == ".." || $0.hasPrefix(".") })
        else { return nil }
        let type: String
        switch path.split(separator: ".").last ?? "" {
        case "html": type = "text/html; charset=utf-8"
        case "js", "mjs": type = "text/javascript; charset=utf-8"
        case "css": type = "text/css; charset=utf-8"
        case "svg": type = "image/svg+xml"
        case "png": type = "image/png"
        case "json": type = "application/json"
        case "ico": type = "image/x-icon"
        default: type = "application/octet-stream"
        }
        for directory in transport.options.staticDirectories {
            if let bytes = readFile(directory + path, limit: 16 << 20) { return (bytes, type) }
        }
        return nil
    }
}

/// A regular file's bytes (nil for anything else or beyond `limit`).
func readFile(_ path: String, limit: Int) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, Int(info.st_size) <= limit else { return nil }
    var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, $0.count - done) }
        guard n > 0 else { return nil }
        done += n
    }
    return bytes
}

func jsonString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

/// Which OS user owns the client end of a loopback TCP connection. Linux
/// answers one exact sock_diag query per connection (cost independent of the
/// machine's other sockets); where that is unavailable, /proc/net/tcp and tcp6
/// list every socket with its owner's uid: the client's socket is the one whose
/// local port is the connection's remote port and whose remote port is ours.
/// nil when not found (then a listener restricted to one user refuses the
/// connection).
enum SocketOwner {
    static func uid(of channel: Channel) -> UInt32? {
        guard let client = channel.remoteAddress, let server = channel.localAddress else { return nil }
        switch diag(client, server) {
        case .found(let uid): return uid
        case .notFound: return nil
        case .unavailable: return scan(client: client.port, server: server.port)
        }
    }

    private enum Answer { case found(UInt32), notFound, unavailable }

    /// One sock_diag request for exactly this connection's client socket.
    private static func diag(_ client: SocketAddress, _ server: SocketAddress) -> Answer {
        func parts(_ address: SocketAddress) -> (Int32, [UInt8], UInt16)? {
            switch address {
            case .v4(let a):
                var raw = a.address.sin_addr
                return (AF_INET, withUnsafeBytes(of: &raw) { Array($0) }, UInt16(bigEndian: a.address.sin_port))
            case .v6(let a):
                var raw = a.address.sin6_addr
                return (AF_INET6, withUnsafeBytes(of: &raw) { Array($0) }, UInt16(bigEndian: a.address.sin6_port))
            default:
                return nil
            }
        }
        guard let (family, clientAddress, clientPort) = parts(client),
            let (_, serverAddress, serverPort) = parts(server)
        else { return .notFound }
        var uid: UInt32 = 0
        switch masqsockdiag_tcp_owner(family, clientAddress, clientPort, serverAddress, serverPort, &uid) {
        case 0: return .found(uid)
        case -2: return .unavailable
        default: return .notFound
        }
    }

    /// Fallback where sock_diag is not available: read the whole tables (time
    /// grows with every TCP socket on the machine).
    private static func scan(client: Int?, server: Int?) -> UInt32? {
        guard let client, let server else { return nil }
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = readSmallFile(table) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                // sl local_address rem_address st tx:rx tr:when retrnsmt uid ...
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count > 7, port(fields[1]) == client, port(fields[2]) == server else { continue }
                return UInt32(fields[7])
            }
        }
        return nil
    }

    /// "0100007F:1F90" -> 8080 (the port is hex, big-endian).
    private static func port(_ field: Substring) -> Int? {
        guard let colon = field.lastIndex(of: ":") else { return nil }
        return Int(field[field.index(after: colon)...], radix: 16)
    }

    private static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while out.count < 64 << 20 {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { break }
            out += chunk[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }
}

// MARK: - the C face

private func parseOptions(_ list: UnsafePointer<masq_plugin_option>?, _ count: Int) throws(PluginFailure)
    -> LocalWebSocketTransport.Options
{
    var options = LocalWebSocketTransport.Options()
    let pairs = try pluginOptions(list, count)
    for (key, value) in pairs {
        func number(_ range: ClosedRange<Int>) throws(PluginFailure) -> Int { try optionNumber(key, value, range) }
        switch key {
        case "data_dir": break
        case "static_dir": options.staticDirectories += value.split(separator: ":").map(String.init)
        case "max_message_bytes": options.maxMessageBytes = try number(256...(64 << 20))
        case "max_connections": options.maxConnections = try number(1...100_000)
        case "max_queued_bytes": options.maxQueuedBytes = try number(4096...(1 << 30))
        case "ping_interval": options.pingIntervalSeconds = Int64(try number(1...3600))
        case "idle_timeout": options.idleTimeoutSeconds = Int64(try number(1...86_400))
        case "handshake_timeout": options.handshakeTimeoutSeconds = Int64(try number(1...3600))
        case "max_handshakes": options.maxHandshakes = try number(1...100_000)
        case "threads": options.threads = try number(1...64)
        case "allowed_uid": options.allowedUID = UInt32(try number(0...Int(UInt32.max - 1)))
        default:
            throw .init(
                MASQ_E_CONFIG,
                "unknown option \"\(key)\" (known: static_dir, max_message_bytes, max_connections, max_queued_bytes, ping_interval, idle_timeout, handshake_timeout, max_handshakes, threads, allowed_uid)"
            )
        }
    }
    return options
}

@inline(__always)
private func transport(_ raw: UnsafeMutableRawPointer?) -> LocalWebSocketTransport? {
    raw.map { Unmanaged<LocalWebSocketTransport>.fromOpaque($0).takeUnretainedValue() }
}

nonisolated(unsafe) private let vtable: UnsafeMutablePointer<masq_transport_vtable> = {
    let v = UnsafeMutablePointer<masq_transport_vtable>.allocate(capacity: 1)
    var t = transportVTable(flags: MASQ_TRANSPORT_LISTEN)
    t.create = { host, options, count, out in
        guard let host, let out else { return MASQ_E_INVALID }
        guard hostHas(host, \.frame_received), hostHas(host, \.peer_event) else { return MASQ_E_ABI }
        return handOver(host, out) { () throws(PluginFailure) in
            LocalWebSocketTransport(host: host, options: try parseOptions(options, count))
        }
    }
    t.listen = { raw, endpoint, sink, ctx in
        guard let t = transport(raw), let endpoint else { return MASQ_E_INVALID }
        return t.listen(String(cString: endpoint)) { bound in
            guard let sink else { return }
            let bytes = Array(bound.utf8)
            _ = bytes.withUnsafeBufferPointer { sink(ctx, $0.baseAddress, $0.count) }
        }
    }
    t.send = { raw, destination, frame, length in
        guard let t = transport(raw), let destination, frame != nil || length == 0 else { return MASQ_E_INVALID }
        return t.send(String(cString: destination), UnsafeRawBufferPointer(start: frame, count: length))
    }
    t.disconnect = { raw, peer, reason in
        guard let t = transport(raw), let peer else { return MASQ_E_INVALID }
        return t.disconnect(String(cString: peer), reason: reason.map { String(cString: $0) } ?? "")
    }
    v.initialize(to: t)
    return v
}()

nonisolated(unsafe) private let descriptor = pluginDescriptor(
    kind: MASQ_PLUGIN_TRANSPORT, name: pluginName, version: pluginVersion,
    summary: pluginSummary, vtable: UnsafeRawPointer(vtable))

@c @implementation
public func masq_plugin_entry() -> UnsafePointer<masq_plugin_descriptor>! {
    UnsafePointer(descriptor)
}
