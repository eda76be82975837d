import MasqCrypto
import NIOCore

/// A route this node originates: a forward circuit to an exit and a return
/// circuit back, carrying up to `streamsPerRoute` streams. Streams reuse a
/// route while it is younger than `routeMaxAgeMilliseconds` and their SOCKS
/// credentials match (isolation, as Tor does); an idle route closes after
/// `routeIdleMilliseconds`.
final class OriginRoute: @unchecked Sendable {
    enum Phase { case building, open, closed }
    let id: UInt64
    let isolation: String
    let created: UInt64
    var phase = Phase.building
    var attempts = 0
    var started: UInt64 = 0
    var forwardEnd: CircuitEnd?
    /// The forward relays' layers (not the exit's: it has only the AEAD), and the return relays'.
    var forwardKeys: [Onion.Layer] = []
    /// The keystream that fills the unused start of forward cells' tag region (new with every build).
    var fillKey = SecureBytes(Random.bytes(32))
    var exitKeys: Onion.Keys?
    var forwardCounter: UInt64 = 0
    var returnKeys: [Onion.Layer] = []
    var returnEnd: CircuitEnd?
    var returnCounter: UInt64 = 0
    var token: [UInt8] = []
    var route: [NodeKey] = []
    var returnRoute: [NodeKey] = []
    var streams: [UInt16: OriginStream] = [:]
    var nextStream: UInt16 = 1
    var idleSince: UInt64?
    /// What each DATA cell costs, by earning wallet: forward cells (relays and
    /// exit) and return cells (return relays and exit).
    var forwardCharges: [(String, UInt128)] = []
    var returnCharges: [(String, UInt128)] = []
    /// The creditor whose binding this route carries, if any, until the route's return circuit proves it arrived.
    var bindingSent: String?
    /// A node the route must pass through (a binding route: see `deliverBindings`).
    var required: NodeKey?
    var routeText: String {
        route.map(\.description).joined(separator: ">") + " back "
            + returnRoute.map(\.description).joined(separator: ">")
    }

    init(id: UInt64, isolation: String, created: UInt64) {
        self.id = id
        self.isolation = isolation
        self.created = created
    }
}

/// A stream this node originates: one SOCKS connection, on a route.
final class OriginStream: @unchecked Sendable {
    enum Phase { case connecting, open, closed }
    let id: UInt64
    let host: String
    let port: Int
    let client: SocksHandler
    let isolation: String
    var phase = Phase.connecting
    var route: OriginRoute?
    /// Its number on the route.
    var number: UInt16 = 0
    var attempts = 0
    var started: UInt64 = 0
    var inFlight = 0
    var received = 0
    /// Cells from the exit the client has not taken yet (bounded by the window).
    var unacknowledged = 0
    /// Bytes for the client gathered this turn, and their cells.
    var toClient: ByteBuffer?
    var toClientCells = 0
    var target: String { "\(host):\(port)" }

    init(id: UInt64, host: String, port: Int, client: SocksHandler, isolation: String) {
        self.id = id
        self.host = host
        self.port = port
        self.client = client
        self.isolation = isolation
    }
}

extension MeshNode {
    // MARK: - streams

    /// Open a stream to host:port for a SOCKS client.
    func openStream(host: String, port: Int, client: SocksHandler, isolation: String) {
        let stream = OriginStream(id: nextStream, host: host, port: port, client: client, isolation: isolation)
        nextStream += 1
        streams[stream.id] = stream
        client.origin = stream.id
        counters.streamsOpened += 1
        attach(stream)
    }

    /// Put a stream on a route: a young enough one of the same isolation with
    /// room, or a new one.
    private func attach(_ stream: OriginStream) {
        let now = Self.now()
        stream.attempts += 1
        stream.started = now
        stream.phase = .connecting
        let reusable = routes.values.filter {
            $0.phase != .closed && $0.isolation == stream.isolation
                && now - $0.created < configuration.routeMaxAgeMilliseconds
                && $0.streams.count < configuration.streamsPerRoute
        }
        if let route = reusable.max(by: { $0.created < $1.created }) {
            join(stream, route)
            flush()
            return
        }
        let route = OriginRoute(id: nextRoute, isolation: stream.isolation, created: now)
        nextRoute += 1
        routes[route.id] = route
        join(stream, route)
        build(route)
    }

    /// Number the stream on the route; CONNECT goes out now if the route's
    /// circuits exist, else once they are built.
    private func join(_ stream: OriginStream, _ route: OriginRoute) {
        var number = route.nextStream
        while number == 0 || route.streams[number] != nil { number &+= 1 }
        route.nextStream = number &+ 1
        stream.number = number
        stream.route = route
        route.streams[number] = stream
        route.idleSince = nil
        if route.forwardEnd != nil { sendToExit(route, .connect, number, Array(stream.target.utf8)) }
    }

    /// The stream leaves its route (closed by either side or failed).
    private func detach(_ stream: OriginStream) {
        stream.phase = .closed
        streams[stream.id] = nil
        guard let route = stream.route else { return }
        stream.route = nil
        route.streams[stream.number] = nil
        guard route.streams.isEmpty, route.phase != .closed else { return }
        // A route too old for new streams closes with its last one.
        if Self.now() - route.created >= configuration.routeMaxAgeMilliseconds {
            teardown(route)
        } else {
            route.idleSince = Self.now()
        }
    }

    /// Bytes from the SOCKS client, toward the exit.
    func originClientData(_ id: UInt64, _ bytes: ByteBuffer) {
        guard let stream = streams[id], stream.phase == .open, let route = stream.route else { return }
        bytes.withUnsafeReadableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = min(raw.count - offset, forwardCellData)
                stream.inFlight += sendToExit(
                    route, .data, stream.number, UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + n)]))
                offset += n
            }
        }
        if stream.inFlight >= configuration.window { stream.client.pause() }
    }

    /// The SOCKS client went away: the exit closes its side too.
    func originClientClosed(_ id: UInt64) {
        guard let stream = streams[id] else { return }
        if let route = stream.route, route.phase != .closed { sendToExit(route, .end, stream.number, []) }
        detach(stream)
        flush()
    }

    /// The target closed (or the exit could not connect): the client is told.
    private func ended(_ stream: OriginStream, code: UInt8) {
        if stream.phase == .open {
            writeToClient(stream)
            detach(stream)
            stream.client.finish()
        } else {
            detach(stream)
            stream.client.failed(code == 0 ? 1 : code)
        }
    }

    // MARK: - cells to and from the exit

    func sendToExit(_ route: OriginRoute, _ command: StreamCommand, _ stream: UInt16, _ data: [UInt8]) {
        data.withUnsafeBytes { sendToExit(route, command, stream, $0) }
    }

    /// One cell on the forward circuit: sealed for the exit, then one layer
    /// per hop, straight into the first link's message. Returns how many
    /// cells it counts for (one: forward circuits carry single cells).
    @discardableResult
    func sendToExit(_ route: OriginRoute, _ command: StreamCommand, _ stream: UInt16, _ data: UnsafeRawBufferPointer)
        -> Int
    {
        let units = 1
        guard let end = route.forwardEnd, let keys = route.exitKeys, let link = links[end.link] else { return units }
        let counter = route.forwardCounter
        link.writeDataCell(end.circuit, size: configuration.cellBytes) { cell in
            let body = UnsafeMutableRawBufferPointer(rebasing: cell[Onion.tagRegion...])
            layOut(body, command, stream, data)
            _ = Onion.sealCell(keys.exitForward, counter: counter, body)
            Onion.wrapForward(route.forwardKeys, counter: counter, fill: route.fillKey, cell)
        }
        route.forwardCounter += 1
        if let accountant {
            let now = Self.wallClock()
            for (wallet, amount) in route.forwardCharges { accountant.owe(wallet, amount * UInt128(units), now: now) }
        }
        return units
    }

    /// A DATA cell on a return circuit: the return relays' layers come off, then the exit's AEAD.
    func originCell(_ route: OriginRoute, _ payload: UnsafeRawBufferPointer) {
        guard let keys = route.exitKeys else { return }
        guard payload.count == returnCellBytes else {
            counters.cellsRejected += 1
            return fail(route, "a cell of the wrong size from the exit")
        }
        let counter = route.returnCounter
        let opened: Bool = withUnsafeTemporaryAllocation(byteCount: payload.count, alignment: 16) { cell in
            cell.copyMemory(from: payload)
            // Each return relay removed its layer (`unwrap`): wrapping undoes it, the last relay's first.
            for key in route.returnKeys.reversed() { Onion.wrap(key, counter: counter, cell) }
            guard Onion.openCell(keys.exitBack, counter: counter, cell) else { return false }
            route.returnCounter += 1
            let units = cellUnits(payload.count)
            if let accountant {
                let now = Self.wallClock()
                for (wallet, amount) in route.returnCharges {
                    accountant.owe(wallet, amount * UInt128(units), now: now)
                }
            }
            originMessage(route, UnsafeRawBufferPointer(rebasing: cell[0..<(cell.count - 16)]), units: units)
            return true
        }
        if !opened {
            counters.cellsRejected += 1
            fail(route, "a cell from the exit does not open")
        }
    }

    private func originMessage(_ route: OriginRoute, _ plain: UnsafeRawBufferPointer, units: Int) {
        guard let (command, number, data) = Self.unpack(plain) else {
            return fail(route, "a malformed message from the exit")
        }
        // Any well-formed message proves the return circuit (a first stream may have been refused).
        if route.phase == .building { route.phase = .open }
        // Messages for a stream closed meanwhile (cells in flight) are dropped.
        guard let stream = route.streams[number] else {
            if command == .data { counters.cellsDropped += 1 }
            return
        }
        switch command {
        case .data:
            // Gathered and written once per turn; acknowledged once the client took it,
            // so a slow reader slows the exit.
            guard stream.phase == .open else { return fail(route, "data for a stream not open") }
            // The exit may have a window of cells unacknowledged (plus what one read of the
            // target adds): beyond that it ignores flow control, and the route goes.
            stream.unacknowledged += units
            guard stream.unacknowledged <= returnFlowControlLimit else {
                counters.flowControlViolations += 1
                return fail(route, "the exit ignores flow control")
            }
            if let gathered = stream.toClient?.readableBytes, gathered + data.count > Self.streamWriteBytes {
                writeToClient(stream)
            }
            if stream.toClient == nil {
                stream.toClient = ByteBufferAllocator().buffer(capacity: Self.streamWriteBytes)
            }
            stream.toClient!.writeBytes(data)
            stream.toClientCells += units
            dirtyOrigins[stream.id] = stream
        case .connected:
            guard stream.phase == .connecting else { return fail(route, "a second CONNECTED for a stream") }
            route.phase = .open
            stream.phase = .open
            logger.info(
                "stream open",
                metadata: ["route": "\(route.id)", "hops": "\(route.routeText)", "ms": "\(Self.now() - stream.started)"]
            )
            stream.client.connected()
        case .end:
            ended(stream, code: UInt8(String(decoding: data, as: UTF8.self)) ?? 1)
        case .sendme:
            stream.inFlight = max(0, stream.inFlight - configuration.sendmeEvery)
            if stream.inFlight < configuration.window { stream.client.resume() }
        case .returnRoute, .connect:
            fail(route, "an unexpected message from the exit")
        }
    }

    /// Write the bytes gathered for the client; SENDMEs go to the exit as it takes them.
    func writeToClient(_ stream: OriginStream) {
        guard let bytes = stream.toClient else { return }
        let cells = stream.toClientCells
        stream.toClient = nil
        stream.toClientCells = 0
        stream.client.write(bytes) { [weak self, weak stream] in
            guard let self, let stream, stream.phase == .open, let route = stream.route else { return }
            stream.unacknowledged -= cells
            let before = stream.received
            stream.received += cells
            let every = self.configuration.sendmeEvery
            for _ in 0..<(stream.received / every - before / every) {
                self.sendToExit(route, .sendme, stream.number, [])
            }
            self.flush()
        }
    }

    // MARK: - routes

    func build(_ route: OriginRoute) {
        route.attempts += 1
        route.started = Self.now()
        route.phase = .building
        counters.circuitsOriginated += 1
        guard let (forward, back) = chooseRoutes(including: route.required) else {
            counters.routeFailures += 1
            // Every exit may be a neighbour (an exit must not be): part from one and
            // try again once gossip has spread the new topology.
            if route.attempts < configuration.routeAttempts + 2, neighbours.count > 1,
                route.required == nil || chooseRoutes() == nil,
                let exitNeighbour = neighbours.keys.sorted().first(where: { records[$0]?.record.exit == true })
            {
                keepApart[exitNeighbour] = Self.now() + 60_000
                logger.info(
                    "parting from an exit neighbour so that it can serve as an exit",
                    metadata: ["node": "\(exitNeighbour)"])
                if let link = neighbours[exitNeighbour] {
                    link.write(.bye, Array("route diversity".utf8))
                    link.flush()
                    link.channel.close(promise: nil)
                }
                let delay = Int64(configuration.gossipMilliseconds * 3)
                loop.scheduleTask(in: .milliseconds(delay)) { [weak self] in
                    guard let self, route.phase == .building, self.routes[route.id] === route else { return }
                    self.build(route)
                }
                return
            }
            if route.required != nil {
                return fail(route, "no route through a creditor to tell it who pays", retry: false)
            }
            return fail(
                route, "no route of \(configuration.hops) hops to an exit (known nodes: \(records.count))",
                socksCode: 3, retry: false)
        }
        do {
            var hops = try forward.enumerated().map { (i, k) throws(MeshError) -> Onion.Hop in
                guard let agreement = records[k]?.record.agreementKey else { throw .noRoute("a hop without a record") }
                let last = i == forward.count - 1
                return Onion.Hop(
                    agreement: agreement, kind: last ? .exit : .forwardRelay, next: last ? nil : forward[i + 1],
                    token: [UInt8](repeating: 0, count: 8))
            }
            // At most one binding per route (forward and return): no identifier common to two hops.
            var binding = route.phase == .building
            for i in hops.indices { hops[i].payer = try payerProof(for: forward[i], route: route, binding: &binding) }
            route.forwardCharges = forward.enumerated().compactMap { (i, k) in
                guard let record = records[k]?.record, let wallet = record.wallet else { return nil }
                return (wallet, i == forward.count - 1 ? exitCharge(record.rates) : routingCharge(record.rates))
            }
            route.returnCharges = (back + [forward.last!]).compactMap { k in
                guard let record = records[k]?.record, let wallet = record.wallet else { return nil }
                return (wallet, k == forward.last! ? exitCharge(record.rates) : routingCharge(record.rates))
            }
            let (onion, keys) = try Onion.build(hops, payload: [], size: configuration.cellBytes)
            route.token = Random.bytes(8)
            var backHops: [Onion.Hop] = []
            for (i, k) in back.enumerated() {
                guard let agreement = records[k]?.record.agreementKey else {
                    throw MeshError.noRoute("a hop without a record")
                }
                backHops.append(
                    Onion.Hop(
                        agreement: agreement, kind: .relay, next: i == back.count - 1 ? key : back[i + 1],
                        token: [UInt8](repeating: 0, count: 8),
                        payer: try payerProof(for: k, route: route, binding: &binding)))
            }
            backHops.append(
                Onion.Hop(agreement: identity.agreement.publicKey, kind: .terminal, next: nil, token: route.token))
            let (returnOnion, returnKeys) = try Onion.build(backHops, payload: [], size: configuration.cellBytes)
            guard let first = neighbours[forward[0]] else {
                throw MeshError.noRoute("the first hop is no longer a neighbour")
            }
            route.route = forward
            route.returnRoute = back
            route.forwardKeys = keys.dropLast().map(\.layer)
            route.exitKeys = keys.last
            route.returnKeys = returnKeys.dropLast().map(\.layer)
            route.forwardCounter = 0
            route.returnCounter = 0
            route.fillKey = SecureBytes(Random.bytes(32))
            let end = CircuitEnd(link: first.id, circuit: first.allocateCircuit())
            route.forwardEnd = end
            routeByForward[end] = route.id
            noteEnd(end)
            routeByToken[route.token] = route.id
            sendCell(end, .create, onion)
            let routeData = (back.first ?? key).bytes + returnOnion
            var offset = 0
            while offset < routeData.count {
                let chunk = Array(routeData[offset..<min(routeData.count, offset + forwardCellData)])
                sendToExit(route, .returnRoute, 0, chunk)
                offset += chunk.count
            }
            for stream in route.streams.values.sorted(by: { $0.number < $1.number }) where stream.phase == .connecting {
                sendToExit(route, .connect, stream.number, Array(stream.target.utf8))
            }
            flush()
        } catch {
            fail(route, "\(error)")
        }
    }

    /// A fresh proof, by this node's pseudonym at `hop`, that it pays `hop`
    /// for a circuit. With `binding` (at most one hop of a route), a hop whose
    /// earning wallet this node paid learns which wallet pays for the pseudonym.
    private func payerProof(for hop: NodeKey, route: OriginRoute, binding: inout Bool) throws(MeshError) -> Onion
        .PayerProof?
    {
        guard let wallet = configuration.consumingWallet, pseudonyms != nil else { return nil }
        let (privateKey, publicKey) = try pseudonyms!.key(for: hop)
        let nonce = Random.bytes(16)
        // Not the same millisecond at every hop (nor the layer's time): nothing common to the hops.
        let timestamp = Self.wallClock() - UInt64.random(in: 0..<Onion.timeJitter)
        guard
            let signature = try? Ed25519.sign(
                PayerProofMessage.make(nonce: nonce, timestamp: timestamp, hop: hop), privateKey: privateKey)
        else {
            throw .failed("the pseudonym cannot sign")
        }
        var proof = Onion.PayerProof(
            payer: Pseudonyms.name(publicKey), nonce: nonce, timestamp: timestamp, signature: signature)
        if binding, let earning = records[hop]?.record.wallet, bindingsDue.contains(earning),
            let signed = try? wallet.sign(PayerProofMessage.binding(pseudonym: publicKey, hop: hop))
        {
            proof.binding = Onion.Binding(wallet: wallet.address, signature: signed)
            binding = false
            bindingsDue.remove(earning)
            route.bindingSent = earning
        }
        return proof
    }

    /// No SOCKS client has this isolation: routes of their own that carry bindings.
    static let bindingIsolation = "\u{1}binding"

    /// A creditor this node is about to pay learns which wallet pays for the
    /// pseudonym it knows this node by from a binding in its layer of a route
    /// (the payment waits until it arrived). Bindings due ride the routes
    /// built for streams; when none is being built, a route of its own (no
    /// streams, closed once its return circuit came back) passes through one
    /// creditor due one. Called every round.
    func deliverBindings() {
        guard !bindingsDue.isEmpty, pseudonyms != nil, !routes.values.contains(where: { $0.phase == .building }) else {
            return
        }
        let nodes = records.filter {
            !$0.value.record.isClient && $0.value.record.wallet.map(bindingsDue.contains) == true
        }.map(\.key)
        guard let target = nodes.randomElement() else { return }
        let now = Self.now()
        let route = OriginRoute(id: nextRoute, isolation: Self.bindingIsolation, created: now)
        nextRoute += 1
        route.required = target
        route.idleSince = now
        routes[route.id] = route
        build(route)
    }

    /// Close a route's circuits (its streams are gone or failed).
    private func teardown(_ route: OriginRoute) {
        route.phase = .closed
        routes[route.id] = nil
        routeByToken[route.token] = nil
        if let end = route.forwardEnd { routeByForward[end] = nil; destroy(end) }
        if let end = route.returnEnd { routeByReturn[end] = nil; destroy(end) }
        route.forwardEnd = nil
        route.returnEnd = nil
    }

    /// A route failed: its streams that had not opened try another route
    /// (the failed one's nodes avoided for a while); open ones are closed
    /// (a clear end, never a hang).
    func fail(_ route: OriginRoute, _ why: String, socksCode: UInt8 = 1, retry: Bool = true) {
        guard route.phase != .closed else { return }
        // A binding on a route that never opened may not have arrived: sent again on another.
        if let earning = route.bindingSent { bindingsDue.insert(earning) }
        logger.info("route failed", metadata: ["route": "\(route.id)", "why": "\(why)", "attempt": "\(route.attempts)"])
        teardown(route)
        let until = Self.now() + 10_000
        // Every hop is blamed, the first and the last included: any of them may have tampered with a cell.
        for node in route.route + route.returnRoute { failedNodes[node] = until }
        let affected = route.streams.values.sorted { $0.number < $1.number }
        route.streams = [:]
        for stream in affected {
            stream.route = nil
            if stream.phase == .open {
                streams[stream.id] = nil
                stream.phase = .closed
                stream.client.finish()
            } else if retry && stream.attempts < configuration.routeAttempts {
                counters.routeFailures += 1
                attach(stream)
            } else {
                streams[stream.id] = nil
                stream.phase = .closed
                stream.client.failed(socksCode)
            }
        }
    }

    /// Routes that take too long to build fail (their streams retry); streams
    /// the exit does not answer fail; idle routes close.
    func circuitTimeouts(_ now: UInt64) {
        let timeout = configuration.setupTimeoutMilliseconds
        for route in routes.values {
            if route.phase == .building && now > route.started + timeout {
                fail(route, "route set-up timed out")
            } else if route.streams.isEmpty, let idle = route.idleSince,
                now > idle + configuration.routeIdleMilliseconds
            {
                teardown(route)
            }
        }
        // An exit's route whose return circuit never came (a return onion never sent in full).
        for exit in exits.values where exit.returnEnd == nil && now > exit.created + timeout {
            destroyed(exit.inEnd, notify: true)
        }
        for stream in streams.values where stream.phase == .connecting && now > stream.started + timeout {
            if let route = stream.route, route.phase == .open {
                sendToExit(route, .end, stream.number, [])
                detach(stream)
                stream.client.failed(4)
            }
        }
    }
}
