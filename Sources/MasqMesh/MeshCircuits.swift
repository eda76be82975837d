import MasqCrypto
import NIOCore
import NIOPosix

/// One end of a circuit on one link.
struct CircuitEnd: Hashable {
    let link: Int
    let circuit: UInt32
}

/// A relay's half of a circuit: cells arriving on the inbound end lose (or,
/// on a return route, gain) this hop's layer and go out on the other end.
/// Only DESTROY travels the other way.
final class RelayHop {
    let other: CircuitEnd
    let key: SecureBytes?
    let forward: Bool
    var payer: String?
    var counter: UInt64 = 0
    let previousAddress: String
    let nextAddress: String

    init(other: CircuitEnd, key: SecureBytes?, forward: Bool, previousAddress: String, nextAddress: String) {
        self.other = other
        self.key = key
        self.forward = forward
        self.previousAddress = previousAddress
        self.nextAddress = nextAddress
    }
}

/// The exit's state: its forward circuit, the return circuit it built from
/// the origin's return onion, and the connection to the target.
final class ExitCircuit: @unchecked Sendable {
    let inEnd: CircuitEnd
    let keys: Onion.Keys
    let previousAddress: String
    var forwardCounter: UInt64 = 0
    var returnEnd: CircuitEnd?
    var returnCounter: UInt64 = 0
    var returnAssembly: [UInt8] = []
    var target: String?
    var targetChannel: Channel?
    /// Bytes for the target gathered this turn (or until it is connected), and their cells.
    var toTarget: ByteBuffer?
    var toTargetCells = 0
    var inFlight = 0
    var received = 0
    var ended = false
    var payer: String?

    init(inEnd: CircuitEnd, keys: Onion.Keys, previousAddress: String) {
        self.inEnd = inEnd
        self.keys = keys
        self.previousAddress = previousAddress
    }
}

/// A stream this node originates (a SOCKS connection) over a forward and a return circuit.
final class OriginCircuit: @unchecked Sendable {
    enum Phase { case building, open, closed }
    let id: UInt64
    let host: String
    let port: Int
    let client: SocksHandler
    var phase = Phase.building
    var attempts = 0
    var started: UInt64 = 0
    var forwardEnd: CircuitEnd?
    var forwardKeys: [SecureBytes] = []
    var exitKeys: Onion.Keys?
    var forwardCounter: UInt64 = 0
    var returnKeys: [SecureBytes] = []
    var returnEnd: CircuitEnd?
    var returnCounter: UInt64 = 0
    var token: [UInt8] = []
    var route: [NodeKey] = []
    var returnRoute: [NodeKey] = []
    var inFlight = 0
    var received = 0
    /// Bytes for the client gathered this turn, and their cells.
    var toClient: ByteBuffer?
    var toClientCells = 0
    /// What each DATA cell costs, by earning wallet: forward cells (relays and
    /// exit) and return cells (return relays and exit).
    var forwardCharges: [(String, UInt128)] = []
    var returnCharges: [(String, UInt128)] = []
    var target: String { "\(host):\(port)" }
    var routeText: String { route.map(\.description).joined(separator: ">") + " back " + returnRoute.map(\.description).joined(separator: ">") }

    init(id: UInt64, host: String, port: Int, client: SocksHandler) {
        self.id = id
        self.host = host
        self.port = port
        self.client = client
    }
}

/// Messages between origin and exit, inside the exit AEAD:
/// u8 command ‖ u16 length ‖ data ‖ zero padding.
enum StreamCommand: UInt8 { case returnRoute = 1, connect = 2, connected = 3, data = 4, end = 5, sendme = 6 }

extension MeshNode {
    /// A stream's socket gets at most this much per write (one turn of the
    /// loop may read megabytes from links; buffers this size are reused by
    /// malloc instead of mapped and unmapped).
    static let streamWriteBytes = 256 << 10
    var cellPlaintext: Int { configuration.cellBytes - 16 }
    var cellData: Int { cellPlaintext - 3 }

    // MARK: - charges

    /// Both sides use the same formula: a packet rate plus a byte rate times the cell size.
    func routingCharge(_ rates: RatePack) -> UInt128 { UInt128(rates.routingPacket) + UInt128(rates.routingByte) * UInt128(configuration.cellBytes) }
    func exitCharge(_ rates: RatePack) -> UInt128 { UInt128(rates.exitPacket) + UInt128(rates.exitByte) * UInt128(configuration.cellBytes) }

    /// A hop with an earning wallet serves only circuits with a valid, fresh
    /// payer proof from a consumer that is not banned.
    private func payerAccepted(_ peeled: Onion.Peeled) -> (ok: Bool, payer: String?) {
        guard let earning = configuration.earningWallet, let accountant else { return (true, nil) }
        guard let proof = peeled.payer,
              accountant.acceptProof(payer: proof.payer, nonce: proof.nonce, timestamp: proof.timestamp,
                                     message: PayerProofMessage.make(nonce: proof.nonce, timestamp: proof.timestamp, hop: key),
                                     signature: proof.signature, now: Self.wallClock(),
                                     verify: { earning.verify(address: $0, message: $1, signature: $2) }) else {
            logger.info("circuit refused: no valid payer proof")
            return (false, nil)
        }
        guard !accountant.isBanned(proof.payer) else {
            logger.info("circuit refused: the consumer is banned for debt", metadata: ["wallet": "\(proof.payer.prefix(16))"])
            return (false, nil)
        }
        return (true, proof.payer)
    }

    // MARK: - cells from links

    /// A CREATE or DESTROY cell (`frame[0]` is the frame type). DATA cells
    /// arrive through `data` with their payload in the message's clear part.
    func receiveCell(_ link: Link, _ frame: [UInt8]) {
        guard frame.count == 6 + configuration.cellBytes, let command = CellCommand(rawValue: frame[5]), command != .data else {
            counters.cellsRejected += 1
            return penalize(link, 5, "a cell of the wrong size or command")
        }
        let circuit = UInt32(frame[1]) << 24 | UInt32(frame[2]) << 16 | UInt32(frame[3]) << 8 | UInt32(frame[4])
        let end = CircuitEnd(link: link.id, circuit: circuit)
        switch command {
        case .create: create(link, end, Array(frame[6...]))
        case .destroy: destroyed(end, notify: false)
        case .data: break
        }
    }

    /// A CREATE or DESTROY cell (encrypted on the link with its payload).
    func sendCell(_ end: CircuitEnd, _ command: CellCommand, _ payload: [UInt8]) {
        links[end.link]?.writeCell(end.circuit, command, payload)
    }

    /// Lay out a stream message in a cell: u8 command ‖ u16 length ‖ data ‖
    /// zeros, leaving the last 16 bytes for the AEAD tag.
    private func layOut(_ cell: UnsafeMutableRawBufferPointer, _ command: StreamCommand, _ data: UnsafeRawBufferPointer) {
        precondition(data.count <= cellData)
        cell[0] = command.rawValue
        cell[1] = UInt8(data.count >> 8)
        cell[2] = UInt8(data.count & 0xff)
        if data.count > 0 { UnsafeMutableRawBufferPointer(rebasing: cell[3..<(3 + data.count)]).copyMemory(from: data) }
        UnsafeMutableRawBufferPointer(rebasing: cell[(3 + data.count)..<cellPlaintext]).initializeMemory(as: UInt8.self, repeating: 0)
    }

    /// The command and data of an opened cell's plaintext, if well formed.
    private func unpack(_ plain: UnsafeRawBufferPointer) -> (StreamCommand, UnsafeRawBufferPointer)? {
        guard plain.count >= 3, let command = StreamCommand(rawValue: plain[0]) else { return nil }
        let length = Int(plain[1]) << 8 | Int(plain[2])
        guard length <= plain.count - 3 else { return nil }
        return (command, UnsafeRawBufferPointer(rebasing: plain[3..<(3 + length)]))
    }

    private func destroy(_ end: CircuitEnd) { sendCell(end, .destroy, Random.bytes(configuration.cellBytes)) }

    private func create(_ link: Link, _ end: CircuitEnd, _ onion: [UInt8]) {
        guard link.peer != nil, relays[end] == nil, exits[end] == nil else { return penalize(link, 5, "a CREATE on a used circuit") }
        let peeled: Onion.Peeled
        do { peeled = try Onion.peel(onion, privateKey: identity.agreement.privateKey, publicKey: identity.agreement.publicKey) } catch {
            counters.cellsRejected += 1
            destroy(end)
            return penalize(link, 5, "an onion that does not open")
        }
        if peeled.kind != .terminal {
            let (ok, _) = payerAccepted(peeled)
            guard ok else { return destroy(end) }
        }
        let payer = peeled.payer?.payer
        switch peeled.kind {
        case .relay:
            guard !configuration.client, let next = neighbours[peeled.next] else {
                logger.debug("circuit refused: the next hop is not a neighbour")
                return destroy(end)
            }
            let out = CircuitEnd(link: next.id, circuit: next.allocateCircuit())
            let previous = link.peerAddress, following = next.peerAddress
            relays[end] = RelayHop(other: out, key: peeled.keys.data, forward: true, previousAddress: previous, nextAddress: following)
            relays[end]?.payer = configuration.earningWallet == nil ? nil : payer
            relays[out] = RelayHop(other: end, key: nil, forward: false, previousAddress: previous, nextAddress: following)
            counters.circuitsRelayed += 1
            logger.info("relaying a circuit", metadata: ["previous": "\(previous)", "next": "\(following)"])
            sendCell(out, .create, peeled.inner)
        case .exit:
            guard configuration.exit else {
                logger.info("circuit refused: not an exit")
                return destroy(end)
            }
            let exit = ExitCircuit(inEnd: end, keys: peeled.keys, previousAddress: link.peerAddress)
            exit.payer = configuration.earningWallet == nil ? nil : payer
            exits[end] = exit
            counters.circuitsExited += 1
        case .terminal:
            guard let id = originByToken.removeValue(forKey: peeled.token), let origin = origins[id], origin.returnEnd == nil else {
                return destroy(end)
            }
            origin.returnEnd = end
            originByReturn[end] = id
        }
    }

    /// A DATA cell; `payload` lies in the link message (read only).
    func data(_ link: Link, _ end: CircuitEnd, _ payload: UnsafeRawBufferPointer) {
        if let hop = relays[end] {
            guard hop.forward, let key = hop.key else { return penalize(link, 5, "data against a circuit's direction") }
            if let payer = hop.payer, let accountant {
                guard !accountant.isBanned(payer) else { return destroyed(end, notify: true) }
                accountant.earn(payer, routingCharge(configuration.rates), now: Self.wallClock())
            }
            guard let next = links[hop.other.link] else { counters.cellsDropped += 1; return }
            // This hop's layer is removed (or added) on the way into the next link's message.
            let counter = hop.counter
            next.writeDataCell(hop.other.circuit) { cell in Onion.xor(key, counter: counter, from: payload, into: cell) }
            hop.counter += 1
            counters.cellsRelayed += 1
        } else if let exit = exits[end] {
            let counter = exit.forwardCounter
            let opened: Bool = withUnsafeTemporaryAllocation(byteCount: payload.count, alignment: 16) { cell in
                Onion.xor(exit.keys.data, counter: counter, from: payload, into: cell)
                guard Onion.openCell(exit.keys.exitForward, counter: counter, cell) else { return false }
                exit.forwardCounter += 1
                if let payer = exit.payer, let accountant {
                    guard !accountant.isBanned(payer) else { return true }
                    accountant.earn(payer, exitCharge(configuration.rates), now: Self.wallClock())
                }
                exitMessage(exit, UnsafeRawBufferPointer(rebasing: cell[0..<cellPlaintext]))
                return true
            }
            if !opened {
                counters.cellsRejected += 1
                destroyed(end, notify: true)
            } else if let payer = exit.payer, accountant?.isBanned(payer) == true {
                destroyed(end, notify: true)
            }
        } else if let id = originByReturn[end], let origin = origins[id], let keys = origin.exitKeys {
            let counter = origin.returnCounter
            let opened: Bool = withUnsafeTemporaryAllocation(byteCount: payload.count, alignment: 16) { cell in
                // The return relays' layers, then the exit's AEAD.
                if let first = origin.returnKeys.first {
                    Onion.xor(first, counter: counter, from: payload, into: cell)
                    for key in origin.returnKeys.dropFirst() { Onion.xor(key, counter: counter, from: UnsafeRawBufferPointer(cell), into: cell) }
                } else {
                    cell.copyMemory(from: payload)
                }
                guard Onion.openCell(keys.exitBack, counter: counter, cell) else { return false }
                origin.returnCounter += 1
                if let accountant {
                    let now = Self.wallClock()
                    for (wallet, amount) in origin.returnCharges { accountant.owe(wallet, amount, now: now) }
                }
                originMessage(origin, UnsafeRawBufferPointer(rebasing: cell[0..<cellPlaintext]))
                return true
            }
            if !opened {
                counters.cellsRejected += 1
                fail(origin, "a cell from the exit does not open", socksCode: 1)
            }
        } else {
            // Cells already in flight when a circuit was torn down: dropped, not held against the sender.
            counters.cellsDropped += 1
        }
    }

    /// A circuit end went away (DESTROY received, or its link closed).
    func destroyed(_ end: CircuitEnd, notify: Bool) {
        if let hop = relays.removeValue(forKey: end) {
            relays[hop.other] = nil
            destroy(hop.other)
        }
        if let exit = exits[end] ?? exits.values.first(where: { $0.returnEnd == end }) {
            exits[exit.inEnd] = nil
            exit.ended = true
            exit.targetChannel?.close(promise: nil)
            if exit.inEnd != end { destroy(exit.inEnd) }
            if let r = exit.returnEnd, r != end { destroy(r) }
            if notify && exit.inEnd == end { destroy(end) }
        }
        if let id = originByForward[end] ?? originByReturn[end], let origin = origins[id] {
            fail(origin, "a node on the route went away", socksCode: 1)
        }
    }

    func circuitsLost(on link: Link) {
        let ends = Set(relays.keys.filter { $0.link == link.id } + exits.keys.filter { $0.link == link.id }
                       + exits.values.compactMap(\.returnEnd).filter { $0.link == link.id }
                       + originByForward.keys.filter { $0.link == link.id } + originByReturn.keys.filter { $0.link == link.id })
        for end in ends { destroyed(end, notify: false) }
    }

    func circuitTimeouts(_ now: UInt64) {
        for origin in origins.values where origin.phase == .building && now - origin.started > configuration.setupTimeoutMilliseconds {
            fail(origin, "route set-up timed out", socksCode: 1)
        }
    }

    // MARK: - exit side

    private func exitMessage(_ exit: ExitCircuit, _ plain: UnsafeRawBufferPointer) {
        guard let (command, data) = unpack(plain) else { return destroyed(exit.inEnd, notify: true) }
        if command == .data {
            // Gathered and written once per turn; acknowledged once the target took it.
            if let gathered = exit.toTarget?.readableBytes, gathered + data.count > Self.streamWriteBytes { writeToTarget(exit) }
            if exit.toTarget == nil { exit.toTarget = ByteBufferAllocator().buffer(capacity: Self.streamWriteBytes) }
            exit.toTarget!.writeBytes(data)
            exit.toTargetCells += 1
            dirtyExits[exit.inEnd] = exit
            return
        }
        let body = Array(data)
        switch command {
        case .returnRoute:
            exit.returnAssembly += body
            guard exit.returnAssembly.count >= 32 + configuration.cellBytes, exit.returnEnd == nil else { return }
            let first = NodeKey(Array(exit.returnAssembly[0..<32]))
            let onion = Array(exit.returnAssembly[32..<(32 + configuration.cellBytes)])
            exit.returnAssembly = []
            guard let link = neighbours[first] else { return destroyed(exit.inEnd, notify: true) }
            let end = CircuitEnd(link: link.id, circuit: link.allocateCircuit())
            exit.returnEnd = end
            sendCell(end, .create, onion)
        case .connect:
            guard exit.target == nil, let text = String(validating: body, as: UTF8.self), let colon = text.lastIndex(of: ":"),
                  let port = Int(text[text.index(after: colon)...]), (1...65_535).contains(port) else { return destroyed(exit.inEnd, notify: true) }
            var host = String(text[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            exit.target = text
            logger.info("exit: connecting", metadata: ["target": "\(text)", "previous": "\(exit.previousAddress)"])
            let node = self
            var bootstrap = ClientBootstrap(group: loop)
            // The target sees the exit's own address.
            if let local = try? SocketAddress(ipAddress: configuration.host, port: 0) { bootstrap = bootstrap.bind(to: local) }
            bootstrap
                .connectTimeout(.seconds(5))
                .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    do {
                        try channel.pipeline.syncOperations.addHandler(StreamHandler(node: node, side: .exit(exit.inEnd)))
                        return channel.eventLoop.makeSucceededVoidFuture()
                    } catch { return channel.eventLoop.makeFailedFuture(error) }
                }
                .connect(host: host, port: port)
                .whenComplete { result in
                    switch result {
                    case .success(let channel):
                        guard !exit.ended else { channel.close(promise: nil); return }
                        exit.targetChannel = channel
                        node.sendToOrigin(exit, .connected, [])
                        node.dirtyExits[exit.inEnd] = exit
                    case .failure(let error):
                        node.sendToOrigin(exit, .end, Array("\(Self.socksCode(for: error))".utf8))
                    }
                    node.flush()
                }
        case .data: break
        case .end:
            // What the origin sent before its END reaches the target first.
            exit.ended = true
            if let channel = exit.targetChannel {
                let rest = exit.toTarget ?? channel.allocator.buffer(capacity: 0)
                exit.toTarget = nil
                channel.writeAndFlush(rest).whenComplete { _ in channel.close(promise: nil) }
            }
        case .sendme:
            exit.inFlight = max(0, exit.inFlight - configuration.sendmeEvery)
            if exit.inFlight < configuration.window { _ = exit.targetChannel?.setOption(ChannelOptions.autoRead, value: true) }
        case .connected:
            destroyed(exit.inEnd, notify: true)
        }
    }

    static func socksCode(for error: Error) -> UInt8 {
        let text = "\(error)".lowercased()
        if text.contains("refused") { return 5 }
        if text.contains("timeout") || text.contains("timed out") { return 4 }
        if text.contains("resolve") || text.contains("unknown host") || text.contains("name") { return 4 }
        return 1
    }

    /// Write the bytes gathered for the target; SENDMEs go back as the target takes them.
    func writeToTarget(_ exit: ExitCircuit) {
        guard let channel = exit.targetChannel, !exit.ended, let bytes = exit.toTarget else { return }
        let cells = exit.toTargetCells
        exit.toTarget = nil
        exit.toTargetCells = 0
        channel.writeAndFlush(bytes).whenComplete { [weak self] _ in
            guard let self, !exit.ended else { return }
            let before = exit.received
            exit.received += cells
            let every = self.configuration.sendmeEvery
            for _ in 0..<(exit.received / every - before / every) { self.sendToOrigin(exit, .sendme, []) }
            self.flush()
        }
    }

    func sendToOrigin(_ exit: ExitCircuit, _ command: StreamCommand, _ data: [UInt8]) {
        data.withUnsafeBytes { sendToOrigin(exit, command, $0) }
    }

    /// One cell on the return circuit: sealed for the origin straight into the link's message.
    func sendToOrigin(_ exit: ExitCircuit, _ command: StreamCommand, _ data: UnsafeRawBufferPointer) {
        guard let end = exit.returnEnd, let link = links[end.link] else { return }
        let counter = exit.returnCounter
        link.writeDataCell(end.circuit) { cell in
            layOut(cell, command, data)
            _ = Onion.sealCell(exit.keys.exitBack, counter: counter, cell)
        }
        exit.returnCounter += 1
        if let payer = exit.payer, let accountant { accountant.earn(payer, exitCharge(configuration.rates), now: Self.wallClock()) }
    }

    /// Bytes from the target: to the origin, within the window.
    func exitTargetData(_ end: CircuitEnd, _ bytes: ByteBuffer) {
        guard let exit = exits[end] else { return }
        bytes.withUnsafeReadableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = min(raw.count - offset, cellData)
                sendToOrigin(exit, .data, UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + n)]))
                exit.inFlight += 1
                offset += n
            }
        }
        if exit.inFlight >= configuration.window { _ = exit.targetChannel?.setOption(ChannelOptions.autoRead, value: false) }
    }

    func exitTargetClosed(_ end: CircuitEnd) {
        guard let exit = exits[end], !exit.ended else { return }
        exit.ended = true
        sendToOrigin(exit, .end, Array("0".utf8))
        flush()
    }

    // MARK: - origin side

    /// Open a stream to host:port for a SOCKS client.
    func openStream(host: String, port: Int, client: SocksHandler) {
        let origin = OriginCircuit(id: nextOrigin, host: host, port: port, client: client)
        nextOrigin += 1
        origins[origin.id] = origin
        client.origin = origin.id
        counters.circuitsOriginated += 1
        build(origin)
    }

    func build(_ origin: OriginCircuit) {
        origin.attempts += 1
        origin.started = Self.now()
        origin.phase = .building
        guard let (forward, back) = chooseRoutes() else {
            counters.routeFailures += 1
            // Every exit may be a neighbour (an exit must not be): part from one and
            // try again once gossip has spread the new topology.
            if origin.attempts < configuration.routeAttempts + 2, neighbours.count > 1,
               let exitNeighbour = neighbours.keys.sorted().first(where: { records[$0]?.record.exit == true }) {
                keepApart[exitNeighbour] = Self.now() + 60_000
                logger.info("parting from an exit neighbour so that it can serve as an exit", metadata: ["node": "\(exitNeighbour)"])
                if let link = neighbours[exitNeighbour] {
                    link.write(.bye, Array("route diversity".utf8))
                    link.flush()
                    link.channel.close(promise: nil)
                }
                let delay = Int64(configuration.gossipMilliseconds * 3)
                loop.scheduleTask(in: .milliseconds(delay)) { [weak self] in
                    guard let self, origin.phase == .building, self.origins[origin.id] != nil else { return }
                    self.build(origin)
                }
                return
            }
            return fail(origin, "no route of \(configuration.hops) hops to an exit (known nodes: \(records.count))", socksCode: 3, retry: false)
        }
        do {
            var hops = try forward.enumerated().map { (i, k) throws(MeshError) -> Onion.Hop in
                guard let agreement = records[k]?.record.agreementKey else { throw .noRoute("a hop without a record") }
                let last = i == forward.count - 1
                return Onion.Hop(agreement: agreement, kind: last ? .exit : .relay, next: last ? nil : forward[i + 1], token: [UInt8](repeating: 0, count: 8))
            }
            for i in hops.indices { hops[i].payer = try payerProof(for: forward[i]) }
            origin.forwardCharges = forward.enumerated().compactMap { (i, k) in
                guard let record = records[k]?.record, let wallet = record.wallet else { return nil }
                return (wallet, i == forward.count - 1 ? exitCharge(record.rates) : routingCharge(record.rates))
            }
            origin.returnCharges = (back + [forward.last!]).compactMap { k in
                guard let record = records[k]?.record, let wallet = record.wallet else { return nil }
                return (wallet, k == forward.last! ? exitCharge(record.rates) : routingCharge(record.rates))
            }
            let (onion, keys) = try Onion.build(hops, payload: [], size: configuration.cellBytes)
            origin.token = Random.bytes(8)
            var backHops: [Onion.Hop] = []
            for (i, k) in back.enumerated() {
                guard let agreement = records[k]?.record.agreementKey else { throw MeshError.noRoute("a hop without a record") }
                backHops.append(Onion.Hop(agreement: agreement, kind: .relay, next: i == back.count - 1 ? key : back[i + 1], token: [UInt8](repeating: 0, count: 8),
                                          payer: try payerProof(for: k)))
            }
            backHops.append(Onion.Hop(agreement: identity.agreement.publicKey, kind: .terminal, next: nil, token: origin.token))
            let (returnOnion, returnKeys) = try Onion.build(backHops, payload: [], size: configuration.cellBytes)
            guard let first = neighbours[forward[0]] else { throw MeshError.noRoute("the first hop is no longer a neighbour") }
            origin.route = forward
            origin.returnRoute = back
            origin.forwardKeys = keys.map(\.data)
            origin.exitKeys = keys.last
            origin.returnKeys = returnKeys.dropLast().map(\.data)
            origin.forwardCounter = 0
            origin.returnCounter = 0
            origin.inFlight = 0
            origin.received = 0
            let end = CircuitEnd(link: first.id, circuit: first.allocateCircuit())
            origin.forwardEnd = end
            originByForward[end] = origin.id
            originByToken[origin.token] = origin.id
            sendCell(end, .create, onion)
            let routeData = (back.first ?? key).bytes + returnOnion
            var offset = 0
            while offset < routeData.count {
                let chunk = Array(routeData[offset..<min(routeData.count, offset + cellData)])
                sendToExit(origin, .returnRoute, chunk)
                offset += chunk.count
            }
            sendToExit(origin, .connect, Array(origin.target.utf8))
            flush()
        } catch {
            fail(origin, "\(error)", socksCode: 1)
        }
    }

    /// A fresh proof that this node's consuming wallet pays `hop` for a circuit.
    private func payerProof(for hop: NodeKey) throws(MeshError) -> Onion.PayerProof? {
        guard let wallet = configuration.consumingWallet else { return nil }
        let nonce = Random.bytes(16)
        let timestamp = Self.wallClock()
        guard let signature = try? wallet.sign(PayerProofMessage.make(nonce: nonce, timestamp: timestamp, hop: hop)) else {
            throw .failed("the consuming wallet cannot sign")
        }
        return Onion.PayerProof(payer: wallet.address, nonce: nonce, timestamp: timestamp, signature: signature)
    }

    func sendToExit(_ origin: OriginCircuit, _ command: StreamCommand, _ data: [UInt8]) {
        data.withUnsafeBytes { sendToExit(origin, command, $0) }
    }

    /// One cell on the forward circuit: sealed for the exit, then one layer
    /// per hop, straight into the first link's message.
    func sendToExit(_ origin: OriginCircuit, _ command: StreamCommand, _ data: UnsafeRawBufferPointer) {
        guard let end = origin.forwardEnd, let keys = origin.exitKeys, let link = links[end.link] else { return }
        let counter = origin.forwardCounter
        link.writeDataCell(end.circuit) { cell in
            layOut(cell, command, data)
            _ = Onion.sealCell(keys.exitForward, counter: counter, cell)
            for key in origin.forwardKeys { Onion.xor(key, counter: counter, from: UnsafeRawBufferPointer(cell), into: cell) }
        }
        origin.forwardCounter += 1
        if let accountant {
            let now = Self.wallClock()
            for (wallet, amount) in origin.forwardCharges { accountant.owe(wallet, amount, now: now) }
        }
    }

    private func originMessage(_ origin: OriginCircuit, _ plain: UnsafeRawBufferPointer) {
        guard let (command, data) = unpack(plain) else { return fail(origin, "a malformed message from the exit", socksCode: 1) }
        switch command {
        case .connected:
            origin.phase = .open
            logger.info("stream open", metadata: ["route": "\(origin.routeText)", "ms": "\(Self.now() - origin.started)"])
            origin.client.connected()
        case .data:
            // Gathered and written once per turn; acknowledged once the client took it,
            // so a slow reader slows the exit.
            if let gathered = origin.toClient?.readableBytes, gathered + data.count > Self.streamWriteBytes { writeToClient(origin) }
            if origin.toClient == nil { origin.toClient = ByteBufferAllocator().buffer(capacity: Self.streamWriteBytes) }
            origin.toClient!.writeBytes(data)
            origin.toClientCells += 1
            dirtyOrigins[origin.id] = origin
        case .end:
            let code = UInt8(String(decoding: data, as: UTF8.self)) ?? 1
            if origin.phase == .open { close(origin) } else { fail(origin, "the exit could not connect to \(origin.target)", socksCode: code == 0 ? 1 : code, retry: false) }
        case .sendme:
            origin.inFlight = max(0, origin.inFlight - configuration.sendmeEvery)
            if origin.inFlight < configuration.window { origin.client.resume() }
        default:
            fail(origin, "an unexpected message from the exit", socksCode: 1)
        }
    }

    /// Write the bytes gathered for the client; SENDMEs go to the exit as it takes them.
    func writeToClient(_ origin: OriginCircuit) {
        guard let bytes = origin.toClient else { return }
        let cells = origin.toClientCells
        origin.toClient = nil
        origin.toClientCells = 0
        origin.client.write(bytes) { [weak self, weak origin] in
            guard let self, let origin, origin.phase == .open else { return }
            let before = origin.received
            origin.received += cells
            let every = self.configuration.sendmeEvery
            for _ in 0..<(origin.received / every - before / every) { self.sendToExit(origin, .sendme, []) }
            self.flush()
        }
    }

    /// Bytes from the SOCKS client, toward the exit.
    func originClientData(_ id: UInt64, _ bytes: ByteBuffer) {
        guard let origin = origins[id], origin.phase == .open else { return }
        bytes.withUnsafeReadableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = min(raw.count - offset, cellData)
                sendToExit(origin, .data, UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + n)]))
                origin.inFlight += 1
                offset += n
            }
        }
        if origin.inFlight >= configuration.window { origin.client.pause() }
    }

    func originClientClosed(_ id: UInt64) {
        guard let origin = origins[id] else { return }
        if origin.phase == .open { sendToExit(origin, .end, []) }
        teardown(origin)
        flush()
    }

    private func close(_ origin: OriginCircuit) {
        writeToClient(origin)
        origin.client.finish()
        teardown(origin)
    }

    private func teardown(_ origin: OriginCircuit) {
        origin.phase = .closed
        origins[origin.id] = nil
        originByToken[origin.token] = nil
        if let end = origin.forwardEnd { originByForward[end] = nil; destroy(end) }
        if let end = origin.returnEnd { originByReturn[end] = nil; destroy(end) }
        origin.forwardEnd = nil
        origin.returnEnd = nil
    }

    /// A route failed: before the stream opened, try another route (avoiding
    /// the failed one's nodes for a while); after, close the client (a clear
    /// error, never a hang).
    func fail(_ origin: OriginCircuit, _ why: String, socksCode: UInt8, retry: Bool = true) {
        guard origin.phase != .closed else { return }
        logger.info("route failed", metadata: ["why": "\(why)", "attempt": "\(origin.attempts)"])
        let wasOpen = origin.phase == .open
        if let end = origin.forwardEnd { originByForward[end] = nil; destroy(end) }
        if let end = origin.returnEnd { originByReturn[end] = nil; destroy(end) }
        originByToken[origin.token] = nil
        origin.forwardEnd = nil
        origin.returnEnd = nil
        let until = Self.now() + 10_000
        for node in origin.route.dropFirst() + origin.returnRoute.dropLast() { failedNodes[node] = until }
        if !wasOpen && retry && origin.attempts < configuration.routeAttempts {
            counters.routeFailures += 1
            return build(origin)
        }
        origin.phase = .closed
        origins[origin.id] = nil
        if wasOpen { origin.client.finish() } else { origin.client.failed(socksCode) }
    }

    // MARK: - routes

    /// Undirected links both ends advertise, plus this node's own.
    private func graph() -> [NodeKey: Set<NodeKey>] {
        var claims: [NodeKey: Set<NodeKey>] = [:]
        // Clients relay nothing: they are never part of anyone else's route.
        for (k, known) in records where !known.record.isClient { claims[k] = Set(known.record.neighbours.compactMap(NodeKey.init(text:))) }
        claims[key] = Set(neighbours.keys)
        var edges: [NodeKey: Set<NodeKey>] = [:]
        for (a, list) in claims where a != key {
            for b in list where a != b && b != key && (claims[b]?.contains(a) ?? false) { edges[a, default: []].insert(b) }
        }
        // This node's own links are edges whatever the other end advertises
        // (a node does not advertise its clients).
        for b in neighbours.keys where records[b]?.record.isClient != true {
            edges[key, default: []].insert(b)
            edges[b, default: []].insert(key)
        }
        return edges
    }

    private func cost(_ k: NodeKey, exit: Bool) -> UInt64 {
        guard let rates = records[k]?.record.rates else { return .max / 16 }
        let bytes = UInt64(configuration.cellBytes)
        return exit ? rates.exitPacket + rates.exitByte * bytes : rates.routingPacket + rates.routingByte * bytes
    }

    /// The cheapest forward route (origin → … → exit, `hops` links, exit not
    /// a neighbour of this node) and a return route of as many links whose
    /// relays avoid the forward route's when the topology allows.
    func chooseRoutes() -> (forward: [NodeKey], back: [NodeKey])? {
        // Nodes of recently failed routes are avoided, unless nothing else is left.
        chooseRoutes(avoiding: Set(failedNodes.keys)) ?? (failedNodes.isEmpty ? nil : chooseRoutes(avoiding: []))
    }

    private func chooseRoutes(avoiding avoid: Set<NodeKey>) -> (forward: [NodeKey], back: [NodeKey])? {
        let edges = graph()
        let hops = configuration.hops
        // At least `hops` links; up to two more when the topology needs them (the cost decides).
        let longest = min(6, hops + 2)
        var best: (UInt64, [[NodeKey]]) = (.max, [])
        func walk(_ path: [NodeKey], _ spent: UInt64) {
            guard let last = path.last else { return }
            if path.count >= hops, records[last]?.record.exit == true, hops < 3 && configuration.allowShortRoutes || neighbours[last] == nil {
                let total = spent + cost(last, exit: true)
                if total < best.0 { best = (total, [path]) } else if total == best.0 { best.1.append(path) }
            }
            guard path.count < longest else { return }
            for next in edges[last] ?? [] where next != key && !path.contains(next) && !avoid.contains(next) && records[next] != nil {
                walk(path + [next], spent + cost(last, exit: false))
            }
        }
        for first in neighbours.keys.sorted() where !avoid.contains(first) && records[first] != nil { walk([first], 0) }
        logger.debug("routes", metadata: ["edges": "\(edges.mapValues { $0.map(\.description) })", "exits": "\(records.values.filter(\.record.exit).count)"])
        guard let forward = best.1.randomElement() else { return nil }
        let exit = forward.last!
        // Return: exit → r1 → … → this node, hops links; relays disjoint from the forward relays if possible.
        let forwardRelays = Set(forward.dropLast())
        for strict in [true, false] {
            var options: [[NodeKey]] = []
            func back(_ path: [NodeKey]) {
                guard let last = path.last else { return }
                // exit, r1 … rk: then this node; at least `hops` links in all.
                if path.count >= hops && edges[last]?.contains(key) == true && neighbours[last] != nil {
                    options.append(Array(path.dropFirst()))
                }
                guard path.count < longest else { return }
                for next in edges[last] ?? [] where next != key && !path.contains(next) && !avoid.contains(next) && records[next] != nil
                    && (!strict || !forwardRelays.contains(next)) {
                    back(path + [next])
                }
            }
            back([exit])
            if hops == 1, neighbours[exit] != nil { return (forward, []) }
            // Shortest return routes first.
            if let shortest = options.map(\.count).min(), let choice = options.filter({ $0.count == shortest }).randomElement() { return (forward, choice) }
        }
        return nil
    }
}
