import MasqCrypto
import NIOCore

/// The SOCKS5 front (RFC 1928): no authentication, CONNECT only, IPv4, IPv6
/// or a domain name (resolved at the exit, so the origin's resolver learns
/// nothing). Bytes after the reply pass through untouched (TLS included:
/// the exit sees only the client's ciphertext).
final class SocksHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    enum Phase { case greeting, authentication, request, connecting, open, closed }
    let node: MeshNode
    var phase = Phase.greeting
    var buffer: [UInt8] = []
    var origin: UInt64?
    /// Streams share routes only with streams of the same credentials
    /// (RFC 1929 username and password, accepted whatever they are).
    var isolation = ""
    var context: ChannelHandlerContext?

    init(node: MeshNode) { self.node = node }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let incoming = unwrapInboundIn(data)
        if phase == .open, let origin {
            cells.add(incoming, cellData: node.forwardCellData, allocator: context.channel.allocator) {
                node.originClientData(origin, $0)
            }
            return
        }
        buffer += incoming.readableBytesView
        guard buffer.count <= 1_024 else { return reply(1) }
        parse(context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if let origin { cells.finish { node.originClientData(origin, $0) } }
        node.flush()
    }

    /// Reads of a burst cut into full cells; a part cell waits for the burst's end.
    private var cells = CellGatherer()

    private func parse(_ context: ChannelHandlerContext) {
        if phase == .greeting {
            guard buffer.count >= 2 else { return }
            guard buffer[0] == 5 else { return context.close(promise: nil) }
            let n = Int(buffer[1])
            guard buffer.count >= 2 + n else { return }
            let methods = buffer[2..<(2 + n)]
            buffer.removeFirst(2 + n)
            if methods.contains(2) {
                send([5, 2])
                phase = .authentication
            } else if methods.contains(0) {
                send([5, 0])
                phase = .request
            } else {
                send([5, 0xFF])
                return context.close(promise: nil)
            }
        }
        if phase == .authentication {
            // RFC 1929: 1 ‖ u8 n ‖ username ‖ u8 m ‖ password.
            guard buffer.count >= 2 else { return }
            guard buffer[0] == 1 else { return context.close(promise: nil) }
            let n = Int(buffer[1])
            guard buffer.count >= 3 + n else { return }
            let m = Int(buffer[2 + n])
            guard buffer.count >= 3 + n + m else { return }
            isolation =
                Base64URL.encode(Array(buffer[2..<(2 + n)])) + ":"
                + Base64URL.encode(Array(buffer[(3 + n)..<(3 + n + m)]))
            buffer.removeFirst(3 + n + m)
            send([1, 0])
            phase = .request
        }
        if phase == .request {
            guard buffer.count >= 5 else { return }
            guard buffer[0] == 5 else { return context.close(promise: nil) }
            guard buffer[1] == 1 else { return reply(7) }  // CONNECT only
            let host: String
            var at: Int
            switch buffer[3] {
            case 1:
                guard buffer.count >= 10 else { return }
                host = buffer[4..<8].map(String.init).joined(separator: ".")
                at = 8
            case 3:
                let n = Int(buffer[4])
                guard buffer.count >= 5 + n + 2 else { return }
                guard n > 0, let name = String(validating: buffer[5..<(5 + n)], as: UTF8.self) else { return reply(1) }
                host = name
                at = 5 + n
            case 4:
                guard buffer.count >= 22 else { return }
                host =
                    "["
                    + stride(from: 4, to: 20, by: 2).map {
                        String(UInt16(buffer[$0]) << 8 | UInt16(buffer[$0 + 1]), radix: 16)
                    }.joined(separator: ":") + "]"
                at = 20
            default: return reply(8)
            }
            let port = Int(buffer[at]) << 8 | Int(buffer[at + 1])
            at += 2
            buffer.removeFirst(at)
            phase = .connecting
            node.openStream(host: host, port: port, client: self, isolation: isolation)
        }
    }

    private func send(_ bytes: [UInt8]) {
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
    }

    private func reply(_ code: UInt8) {
        send([5, code, 0, 1, 0, 0, 0, 0, 0, 0])
        if code != 0 { phase = .closed; context?.close(promise: nil) }
    }

    // Called by the node.
    func connected() {
        reply(0)
        phase = .open
        if !buffer.isEmpty, let origin {
            let early = buffer
            buffer = []
            node.originClientData(origin, ByteBuffer(bytes: early))
        }
    }

    func failed(_ code: UInt8) { reply(code) }

    /// Write to the client; `taken` runs once the bytes left for the socket.
    func write(_ bytes: ByteBuffer, taken: @escaping () -> Void) {
        guard let context else { return }
        let done = NIOLoopBound(taken, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(bytes)).whenSuccess { done.value() }
    }

    func finish() {
        phase = .closed
        guard let context else { return }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(capacity: 0))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    func pause() { _ = context?.channel.setOption(ChannelOptions.autoRead, value: false) }
    func resume() { _ = context?.channel.setOption(ChannelOptions.autoRead, value: true) }

    func channelInactive(context: ChannelHandlerContext) {
        if let origin {
            cells.finish { node.originClientData(origin, $0) }
            node.originClientClosed(origin)
        }
        self.context = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}
