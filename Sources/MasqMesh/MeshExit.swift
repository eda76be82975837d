import MasqCrypto
import NIOCore
import NIOPosix

/// The exit's half of a route: the forward circuit it ends, the return
/// circuit it built from the origin's return onion, and the streams the
/// origin opened through it (one target connection each).
final class ExitCircuit: @unchecked Sendable {
    let inEnd: CircuitEnd
    let keys: Onion.Keys
    let previousAddress: String
    /// When the forward circuit was made: its return circuit must follow within the set-up timeout.
    let created: UInt64
    var forwardCounter: UInt64 = 0
    var returnEnd: CircuitEnd?
    var returnCounter: UInt64 = 0
    var returnAssembly: [UInt8] = []
    var streams: [UInt16: ExitStream] = [:]
    var payer: String?

    init(inEnd: CircuitEnd, keys: Onion.Keys, previousAddress: String, created: UInt64) {
        self.inEnd = inEnd
        self.keys = keys
        self.previousAddress = previousAddress
        self.created = created
    }
}

/// One stream at the exit: its connection to the target and its window.
final class ExitStream: @unchecked Sendable {
    let id: UInt16
    let target: String
    var channel: Channel?
    /// Bytes for the target gathered this turn (or until it is connected), and their cells.
    var toTarget: ByteBuffer?
    var toTargetCells = 0
    /// Cells sent to the origin and not yet acknowledged; cells the target took.
    var inFlight = 0
    var received = 0
    /// Cells from the origin the target has not taken yet (bounded by the window).
    var unacknowledged = 0
    var ended = false

    init(id: UInt16, target: String) {
        self.id = id
        self.target = target
    }
}

extension MeshNode {
    /// A DATA cell at the exit: remove its layer, open the origin's AEAD, act on the message.
    func exitCell(_ exit: ExitCircuit, _ payload: UnsafeRawBufferPointer) {
        let counter = exit.forwardCounter
        guard payload.count == configuration.cellBytes else {
            counters.cellsRejected += 1
            return destroyed(exit.inEnd, notify: true)
        }
        var banned = false
        let opened: Bool = withUnsafeTemporaryAllocation(byteCount: payload.count, alignment: 16) { cell in
            // The relays' layers are off: what is left is the origin's AEAD (the exit has no layer of its own).
            // A forward cell: the relays' tag region, then the box.
            let body = UnsafeMutableRawBufferPointer(rebasing: cell[Onion.tagRegion...])
            body.copyMemory(from: UnsafeRawBufferPointer(rebasing: payload[Onion.tagRegion...]))
            guard Onion.openCell(exit.keys.exitForward, counter: counter, body) else { return false }
            exit.forwardCounter += 1
            let units = cellUnits(payload.count)
            if let payer = exit.payer, let accountant {
                guard !accountant.isBanned(payer) else { banned = true; return true }
                accountant.earn(payer, exitCharge(configuration.rates) * UInt128(units), now: Self.wallClock())
            }
            exitMessage(exit, UnsafeRawBufferPointer(rebasing: body[0..<(body.count - 16)]), units: units)
            return true
        }
        if !opened { counters.cellsRejected += 1 }
        if banned { logger.info("circuit dropped: the consumer is banned for debt") }
        if !opened || banned { destroyed(exit.inEnd, notify: true) }
    }

    private func exitMessage(_ exit: ExitCircuit, _ plain: UnsafeRawBufferPointer, units: Int) {
        guard let (command, id, data) = Self.unpack(plain) else { return destroyed(exit.inEnd, notify: true) }
        if command == .data {
            // Gathered and written once per turn; acknowledged once the target took it.
            // (A stream the exit already closed may still receive cells in flight.)
            guard let stream = exit.streams[id], !stream.ended else { counters.cellsDropped += 1; return }
            // The origin may have a window of cells unacknowledged (plus one read of its client):
            // beyond that it ignores flow control, and its route goes before it fills our memory.
            stream.unacknowledged += units
            guard stream.unacknowledged <= forwardFlowControlLimit else {
                counters.flowControlViolations += 1
                logger.info("exit: a route ignores flow control; destroyed")
                return destroyed(exit.inEnd, notify: true)
            }
            if let gathered = stream.toTarget?.readableBytes, gathered + data.count > Self.streamWriteBytes {
                writeToTarget(exit, stream)
            }
            if stream.toTarget == nil {
                stream.toTarget = ByteBufferAllocator().buffer(capacity: Self.streamWriteBytes)
            }
            stream.toTarget!.writeBytes(data)
            stream.toTargetCells += units
            dirtyExits[ObjectIdentifier(stream)] = (exit, stream)
            return
        }
        switch command {
        case .returnRoute:
            // One return onion per route, exactly its size (the first hop's key and the onion):
            // more is a protocol violation, and the route goes before it costs memory.
            let size = 32 + configuration.cellBytes
            guard exit.returnEnd == nil, exit.returnAssembly.count + data.count <= size else {
                counters.cellsRejected += 1
                logger.info("exit: a route sent more than one return onion; destroyed")
                return destroyed(exit.inEnd, notify: true)
            }
            exit.returnAssembly += data
            guard exit.returnAssembly.count == size else { return }
            let first = NodeKey(Array(exit.returnAssembly[0..<32]))
            let onion = Array(exit.returnAssembly[32..<size])
            exit.returnAssembly = []
            guard let link = neighbours[first], circuitCount(link.id) < configuration.maxCircuitsPerLink else {
                return destroyed(exit.inEnd, notify: true)
            }
            let end = CircuitEnd(link: link.id, circuit: link.allocateCircuit())
            exit.returnEnd = end
            exitByReturn[end] = exit.inEnd
            noteEnd(end)
            sendCell(end, .create, onion)
        case .connect:
            // A reused or zero number breaks the protocol; a bad target or a full exit fails the stream only.
            guard id != 0, exit.streams[id] == nil else { return destroyed(exit.inEnd, notify: true) }
            guard let text = String(validating: data, as: UTF8.self), let colon = text.lastIndex(of: ":"),
                let port = Int(text[text.index(after: colon)...]), (1...65_535).contains(port)
            else {
                return sendToOrigin(exit, .end, id, Array("1".utf8))
            }
            guard exit.streams.count < configuration.streamsPerRoute,
                exits.values.reduce(0, { $0 + $1.streams.count }) < configuration.maxExitStreams
            else {
                logger.info("exit: stream refused, at the limit of streams")
                return sendToOrigin(exit, .end, id, Array("1".utf8))
            }
            var host = String(text[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            connectTarget(exit, ExitStream(id: id, target: text), host: host, port: port)
        case .end:
            // What the origin sent before its END reaches the target first.
            guard let stream = exit.streams.removeValue(forKey: id) else { return }
            stream.ended = true
            if let channel = stream.channel {
                let rest = stream.toTarget ?? channel.allocator.buffer(capacity: 0)
                stream.toTarget = nil
                channel.writeAndFlush(rest).whenComplete { _ in channel.close(promise: nil) }
            }
        case .sendme:
            guard let stream = exit.streams[id] else { return }
            stream.inFlight = max(0, stream.inFlight - configuration.sendmeEvery)
            if stream.inFlight < configuration.window {
                _ = stream.channel?.setOption(ChannelOptions.autoRead, value: true)
            }
        case .connected, .data:
            destroyed(exit.inEnd, notify: true)
        }
    }

    /// Resolve the target here (off the loop), keep the addresses the exit
    /// policy allows — checked on the very address that will be connected,
    /// so a name cannot be made to point elsewhere between the check and the
    /// connection — and connect to the first that answers. Nothing allowed:
    /// the stream ends with SOCKS reply 2 ("not allowed by ruleset").
    private func connectTarget(_ exit: ExitCircuit, _ stream: ExitStream, host: String, port: Int) {
        exit.streams[stream.id] = stream
        // (Never the previous hop beside the target in a log line; at debug level only.)
        logger.debug("exit: connecting", metadata: ["target": "\(stream.target)"])
        let node = self
        let policy = configuration.exitPolicy
        let local = IPAddress(configuration.host)
        ExitPolicy.resolver.async {
            let resolved = ExitPolicy.resolve(host)
            node.loop.execute {
                guard !stream.ended, exit.streams[stream.id] === stream else { return }
                let allowed = resolved.filter { policy.refusal($0, port: port, own: node.ownAddresses) == nil }
                // Connections leave from the node's own address: only addresses of its family.
                let usable = allowed.filter { local == nil || $0.isV4 == local!.isV4 }
                guard !usable.isEmpty else {
                    exit.streams[stream.id] = nil
                    stream.ended = true
                    var code: UInt8 = 4
                    if !resolved.isEmpty && allowed.isEmpty {
                        code = 2
                        node.counters.exitRefused += 1
                        node.logger.info("exit: a destination refused by the exit policy")
                    }
                    node.sendToOrigin(exit, .end, stream.id, Array("\(code)".utf8))
                    node.flush()
                    return
                }
                node.connectTarget(exit, stream, Array(usable.prefix(4)), port: port)
            }
        }
    }

    private func connectTarget(_ exit: ExitCircuit, _ stream: ExitStream, _ addresses: [IPAddress], port: Int) {
        let node = self
        guard let address = addresses.first, let target = try? SocketAddress(ipAddress: address.description, port: port)
        else {
            exit.streams[stream.id] = nil
            stream.ended = true
            return sendToOrigin(exit, .end, stream.id, Array("1".utf8))
        }
        let end = exit.inEnd
        var bootstrap = ClientBootstrap(group: loop)
        // The target sees the exit's own address.
        if let local = try? SocketAddress(ipAddress: configuration.host, port: 0) {
            bootstrap = bootstrap.bind(to: local)
        }
        bootstrap
            .connectTimeout(.seconds(5))
            .channelOption(ChannelOptions.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                do {
                    try channel.pipeline.syncOperations.addHandler(
                        StreamHandler(node: node, end: end, stream: stream.id))
                    return channel.eventLoop.makeSucceededVoidFuture()
                } catch { return channel.eventLoop.makeFailedFuture(error) }
            }
            .connect(to: target)
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    guard !stream.ended, exit.streams[stream.id] === stream else { channel.close(promise: nil); return }
                    stream.channel = channel
                    node.sendToOrigin(exit, .connected, stream.id, [])
                    node.dirtyExits[ObjectIdentifier(stream)] = (exit, stream)
                case .failure(let error):
                    guard exit.streams[stream.id] === stream, !stream.ended else { return }
                    if addresses.count > 1 {
                        return node.connectTarget(exit, stream, Array(addresses.dropFirst()), port: port)
                    }
                    exit.streams[stream.id] = nil
                    stream.ended = true
                    node.sendToOrigin(exit, .end, stream.id, Array("\(Self.socksCode(for: error))".utf8))
                }
                node.flush()
            }
    }

    static func socksCode(for error: Error) -> UInt8 {
        let text = "\(error)".lowercased()
        if text.contains("refused") { return 5 }
        if text.contains("timeout") || text.contains("timed out") { return 4 }
        if text.contains("resolve") || text.contains("unknown host") || text.contains("name") { return 4 }
        return 1
    }

    /// Write the bytes gathered for a target; SENDMEs go back as the target takes them.
    func writeToTarget(_ exit: ExitCircuit, _ stream: ExitStream) {
        guard let channel = stream.channel, !stream.ended, let bytes = stream.toTarget else { return }
        let cells = stream.toTargetCells
        stream.toTarget = nil
        stream.toTargetCells = 0
        channel.writeAndFlush(bytes).whenComplete { [weak self] _ in
            guard let self, !stream.ended else { return }
            stream.unacknowledged -= cells
            let before = stream.received
            stream.received += cells
            let every = self.configuration.sendmeEvery
            for _ in 0..<(stream.received / every - before / every) { self.sendToOrigin(exit, .sendme, stream.id, []) }
            self.flush()
        }
    }

    func sendToOrigin(_ exit: ExitCircuit, _ command: StreamCommand, _ stream: UInt16, _ data: [UInt8]) {
        data.withUnsafeBytes { sendToOrigin(exit, command, stream, $0) }
    }

    /// One cell on the return circuit (`returnCellBytes`): sealed for the
    /// origin straight into the link's message. Returns how many cells it
    /// counts for.
    @discardableResult
    func sendToOrigin(_ exit: ExitCircuit, _ command: StreamCommand, _ stream: UInt16, _ data: UnsafeRawBufferPointer)
        -> Int
    {
        let size = returnCellBytes
        let units = cellUnits(size)
        guard let end = exit.returnEnd, let link = links[end.link] else { return units }
        let counter = exit.returnCounter
        link.writeDataCell(end.circuit, size: size) { cell in
            layOut(cell, command, stream, data)
            _ = Onion.sealCell(exit.keys.exitBack, counter: counter, cell)
        }
        exit.returnCounter += 1
        if let payer = exit.payer, let accountant {
            accountant.earn(payer, exitCharge(configuration.rates) * UInt128(units), now: Self.wallClock())
        }
        return units
    }

    /// Bytes from a target: to the origin, within the stream's window.
    func exitTargetData(_ end: CircuitEnd, _ id: UInt16, _ bytes: ByteBuffer) {
        guard let exit = exits[end], let stream = exit.streams[id], !stream.ended else { return }
        bytes.withUnsafeReadableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = min(raw.count - offset, cellData)
                stream.inFlight += sendToOrigin(
                    exit, .data, id, UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + n)]))
                offset += n
            }
        }
        if stream.inFlight >= configuration.window {
            _ = stream.channel?.setOption(ChannelOptions.autoRead, value: false)
        }
    }

    func exitTargetClosed(_ end: CircuitEnd, _ id: UInt16) {
        guard let exit = exits[end], let stream = exit.streams[id], !stream.ended else { return }
        stream.ended = true
        exit.streams[id] = nil
        sendToOrigin(exit, .end, id, Array("0".utf8))
        flush()
    }

    /// The route is gone: every target connection closes.
    func closeStreams(_ exit: ExitCircuit) {
        for stream in exit.streams.values {
            stream.ended = true
            stream.channel?.close(promise: nil)
        }
        exit.streams = [:]
    }
}

/// The exit's connection to a target.
final class StreamHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let node: MeshNode
    let end: CircuitEnd
    let stream: UInt16

    init(node: MeshNode, end: CircuitEnd, stream: UInt16) {
        self.node = node
        self.end = end
        self.stream = stream
    }

    /// Reads of a burst cut into full cells; a part cell waits for the burst's end.
    private var cells = CellGatherer()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        cells.add(unwrapInboundIn(data), cellData: node.cellData, allocator: context.channel.allocator) {
            node.exitTargetData(end, stream, $0)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        cells.finish { node.exitTargetData(end, stream, $0) }
        node.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        cells.finish { node.exitTargetData(end, stream, $0) }
        node.exitTargetClosed(end, stream)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}

/// Cuts the bytes of a burst of socket reads into whole cells' worth
/// (`cellData` each): a read of 64 KiB is 16 cells and a part; the part is
/// completed from the next read of the burst instead of travelling as a cell
/// of its own (every cell costs a pass of each layer at every hop), and what
/// is left goes at the burst's end (`finish`, from channelReadComplete: the
/// same turn of the loop, so no byte waits longer than it did).
struct CellGatherer {
    private var part: ByteBuffer?

    /// Hands `send` the bytes of `bytes` that make whole cells, after the part kept from before.
    mutating func add(_ bytes: ByteBuffer, cellData: Int, allocator: ByteBufferAllocator, _ send: (ByteBuffer) -> Void)
    {
        var bytes = bytes
        if var kept = part {
            part = nil
            // At most one cell's worth is copied to complete it.
            let take = min(cellData - kept.readableBytes, bytes.readableBytes)
            var head = bytes.readSlice(length: take)!
            kept.writeBuffer(&head)
            guard kept.readableBytes == cellData else { part = kept; return }
            send(kept)
        }
        let whole = bytes.readableBytes - bytes.readableBytes % cellData
        if whole > 0 { send(bytes.readSlice(length: whole)!) }
        if bytes.readableBytes > 0 {
            var kept = allocator.buffer(capacity: cellData)
            kept.writeBuffer(&bytes)
            part = kept
        }
    }

    /// Hands `send` the part kept, if any.
    mutating func finish(_ send: (ByteBuffer) -> Void) {
        guard let kept = part else { return }
        part = nil
        send(kept)
    }
}
