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
    let key: Onion.Layer?
    let forward: Bool
    /// A relay on a forward circuit: every cell's tag is checked (`Onion.checkTag`).
    let checksTags: Bool
    var payer: String?
    var counter: UInt64 = 0
    let previousAddress: String
    let nextAddress: String

    init(
        other: CircuitEnd, key: Onion.Layer?, forward: Bool, checksTags: Bool = false, previousAddress: String,
        nextAddress: String
    ) {
        self.other = other
        self.key = key
        self.forward = forward
        self.checksTags = checksTags
        self.previousAddress = previousAddress
        self.nextAddress = nextAddress
    }
}

/// Messages between origin and exit, inside the exit AEAD of one cell:
///
///     u8 command ‖ u16 stream ‖ u16 length ‖ data ‖ zero padding
///
/// A route (forward and return circuit) carries many streams, numbered by
/// the origin (1...65535; 0 for the route itself: RETURN_ROUTE).
enum StreamCommand: UInt8 { case returnRoute = 1, connect = 2, connected = 3, data = 4, end = 5, sendme = 6 }

extension MeshNode {
    /// A stream's socket gets at most this much per write (one turn of the
    /// loop may read megabytes from links; buffers this size are reused by
    /// malloc instead of mapped and unmapped).
    static let streamWriteBytes = 256 << 10
    static let messageHeader = 5
    /// Every cell of a return circuit is a JUMBO cell (`jumboCells` cells'
    /// size, counted and charged as that many cells), every cell of a forward
    /// circuit a single one, and relays refuse the other size: the sizes are
    /// fixed by the circuit, so nobody (an exit least of all) can write a
    /// pattern of sizes for a colluding hop to read. Bulk data mostly flows
    /// back, where one set of crypto calls and one record per four cells'
    /// data pays a hop's per-cell cost (a third of its CPU) a quarter as
    /// often; requests and uploads keep single cells. Cells above ~16 KB
    /// have no JUMBO form (it would not fit a link message).
    var returnCellBytes: Int {
        let jumbo = jumboCells * configuration.cellBytes
        return jumbo + 64 <= Link.maxMessage ? jumbo : configuration.cellBytes
    }
    /// A return cell's plaintext and data (the box fills the cell).
    var cellPlaintext: Int { returnCellBytes - 16 }
    var cellData: Int { cellPlaintext - Self.messageHeader }
    /// A forward cell's (its body: after the relays' tag region).
    var forwardCellPlaintext: Int { configuration.cellBytes - Onion.tagRegion - 16 }
    var forwardCellData: Int { forwardCellPlaintext - Self.messageHeader }

    /// How many cells a DATA or JUMBO cell's payload counts for (windows, charges).
    func cellUnits(_ payload: Int) -> Int { payload / configuration.cellBytes }
    /// Cells a stream's sender may have unacknowledged: the window, plus what
    /// one socket read (up to 256 KiB) adds before the sender pauses.
    var forwardFlowControlLimit: Int { configuration.window + (256 << 10) / forwardCellData + 2 }
    /// The same back, in cell units (a JUMBO cell counts for `jumboCells`).
    var returnFlowControlLimit: Int {
        configuration.window + cellUnits(returnCellBytes) * ((256 << 10) / cellData + 2)
    }

    // MARK: - charges

    /// Both sides use the same formula: a packet rate plus a byte rate times the cell size.
    func routingCharge(_ rates: RatePack) -> UInt128 {
        UInt128(rates.routingPacket) + UInt128(rates.routingByte) * UInt128(configuration.cellBytes)
    }
    func exitCharge(_ rates: RatePack) -> UInt128 {
        UInt128(rates.exitPacket) + UInt128(rates.exitByte) * UInt128(configuration.cellBytes)
    }

    /// A hop with an earning wallet serves only circuits with a valid, fresh
    /// payer proof: signed by the consumer's pseudonym at this hop (the name
    /// this node keeps its debts, bans and payments under; it never sees the
    /// consumer's wallet, unless a binding says which wallet pays for the
    /// pseudonym), from a consumer that is not banned.
    private func payerAccepted(_ peeled: Onion.Peeled) -> (ok: Bool, payer: String?) {
        guard let earning = configuration.earningWallet, let accountant else { return (true, nil) }
        guard let proof = peeled.payer, let pseudonym = Pseudonyms.publicKey(proof.payer),
            accountant.acceptProof(
                payer: proof.payer, nonce: proof.nonce, timestamp: proof.timestamp,
                message: PayerProofMessage.make(nonce: proof.nonce, timestamp: proof.timestamp, hop: key),
                signature: proof.signature, now: Self.wallClock(),
                verify: { _, message, signature in Ed25519.verify(signature, message: message, publicKey: pseudonym) })
        else {
            logger.info("circuit refused: no valid payer proof")
            return (false, nil)
        }
        // A binding is taken even from a banned pseudonym: it is how a consumer that paid gets credited.
        if let binding = proof.binding,
            earning.verify(
                address: binding.wallet, message: PayerProofMessage.binding(pseudonym: pseudonym, hop: key),
                signature: binding.signature)
        {
            bindPayer(wallet: binding.wallet, pseudonym: proof.payer)
        }
        guard !accountant.isBanned(proof.payer) else {
            logger.info("circuit refused: the consumer is banned for debt")
            return (false, nil)
        }
        return (true, proof.payer)
    }

    // MARK: - cells from links

    /// A CREATE or DESTROY cell (`frame[0]` is the frame type). DATA cells
    /// arrive through `data` with their payload in the message's clear part.
    func receiveCell(_ link: Link, _ frame: [UInt8]) {
        guard frame.count == 6 + configuration.cellBytes, let command = CellCommand(rawValue: frame[5]),
            command != .data, command != .jumbo
        else {
            counters.cellsRejected += 1
            return penalize(link, 5, "a cell of the wrong size or command")
        }
        let circuit = UInt32(frame[1]) << 24 | UInt32(frame[2]) << 16 | UInt32(frame[3]) << 8 | UInt32(frame[4])
        let end = CircuitEnd(link: link.id, circuit: circuit)
        switch command {
        case .create: create(link, end, Array(frame[6...]))
        case .destroy: destroyed(end, notify: false)
        case .data, .jumbo: break
        }
    }

    /// A CREATE or DESTROY cell (encrypted on the link with its payload).
    func sendCell(_ end: CircuitEnd, _ command: CellCommand, _ payload: [UInt8]) {
        links[end.link]?.writeCell(end.circuit, command, payload)
    }

    /// Lay out a stream message in a cell: u8 command ‖ u16 stream ‖ u16
    /// length ‖ data ‖ zeros, leaving the last 16 bytes for the AEAD tag.
    func layOut(
        _ cell: UnsafeMutableRawBufferPointer, _ command: StreamCommand, _ stream: UInt16,
        _ data: UnsafeRawBufferPointer
    ) {
        let h = Self.messageHeader
        let plaintext = cell.count - 16
        precondition(data.count <= plaintext - h)
        cell[0] = command.rawValue
        cell[1] = UInt8(stream >> 8)
        cell[2] = UInt8(stream & 0xff)
        cell[3] = UInt8(data.count >> 8)
        cell[4] = UInt8(data.count & 0xff)
        if data.count > 0 { UnsafeMutableRawBufferPointer(rebasing: cell[h..<(h + data.count)]).copyMemory(from: data) }
        UnsafeMutableRawBufferPointer(rebasing: cell[(h + data.count)..<plaintext]).initializeMemory(
            as: UInt8.self, repeating: 0)
    }

    /// The command, stream and data of an opened cell's plaintext, if well formed.
    static func unpack(_ plain: UnsafeRawBufferPointer) -> (StreamCommand, UInt16, UnsafeRawBufferPointer)? {
        let h = Self.messageHeader
        guard plain.count >= h, let command = StreamCommand(rawValue: plain[0]) else { return nil }
        let stream = UInt16(plain[1]) << 8 | UInt16(plain[2])
        let length = Int(plain[3]) << 8 | Int(plain[4])
        guard length <= plain.count - h else { return nil }
        return (command, stream, UnsafeRawBufferPointer(rebasing: plain[h..<(h + length)]))
    }

    func destroy(_ end: CircuitEnd) { sendCell(end, .destroy, Random.bytes(configuration.cellBytes)) }

    /// Circuit ends on a link (`maxCircuitsPerLink`): recounted every tick,
    /// counted up as circuits are made in between (so it may overcount by what
    /// closed since the last tick, never undercount).
    func circuitCount(_ link: Int) -> Int { circuitEnds[link] ?? 0 }

    func noteEnd(_ end: CircuitEnd) { circuitEnds[end.link, default: 0] += 1 }

    func recountCircuitEnds() {
        var counts: [Int: Int] = [:]
        for end in relays.keys { counts[end.link, default: 0] += 1 }
        for end in exits.keys { counts[end.link, default: 0] += 1 }
        for end in exitByReturn.keys { counts[end.link, default: 0] += 1 }
        for end in routeByForward.keys { counts[end.link, default: 0] += 1 }
        for end in routeByReturn.keys { counts[end.link, default: 0] += 1 }
        circuitEnds = counts
    }

    private func create(_ link: Link, _ end: CircuitEnd, _ onion: [UInt8]) {
        // The neighbour numbers the circuits it opens in its own half of the space (`Link.allocateCircuit`):
        // a CREATE on a number of this node's half, or on a circuit in use, is the neighbour's own doing.
        let theirs = (end.circuit & 0x8000_0000 != 0) == link.initiator
        guard link.peer != nil, theirs, relays[end] == nil, exits[end] == nil, routeByForward[end] == nil,
            routeByReturn[end] == nil, exitByReturn[end] == nil
        else {
            counters.cellsRejected += 1
            return penalize(link, 5, "a CREATE on a used circuit or on one of this node's numbers")
        }
        // Before any work on the onion: a link full of circuits takes no more.
        guard circuitCount(link.id) < configuration.maxCircuitsPerLink else {
            counters.circuitsRefused += 1
            logger.info(
                "circuit refused: the link carries its limit of circuits",
                metadata: ["limit": "\(configuration.maxCircuitsPerLink)"])
            return destroy(end)
        }
        let peeled: Onion.Peeled
        do {
            peeled = try Onion.peel(
                onion, privateKey: identity.agreement.privateKey, publicKey: identity.agreement.publicKey)
        } catch {
            // Counted, never held against the link: the neighbour forwards bytes it cannot check,
            // and an origin could otherwise get the link between two honest relays banned.
            counters.cellsRejected += 1
            return destroy(end)
        }
        // A layer seen before is a replayed set-up (never an honest retransmission).
        switch replayCache.admit(peeled.eph, timestamp: peeled.timestamp, now: Self.wallClock()) {
        case .fresh: break
        case .stale:
            counters.createsStale += 1
            logger.info("circuit refused: its onion was made too long ago (or the clocks differ)")
            return destroy(end)
        case .replayed:
            // Not held against the link either (the replaying relay may be hops before it).
            counters.createsReplayed += 1
            logger.info("circuit refused: a replayed set-up")
            return destroy(end)
        }
        if peeled.kind != .terminal {
            let (ok, _) = payerAccepted(peeled)
            guard ok else { return destroy(end) }
        }
        let payer = peeled.payer?.payer
        switch peeled.kind {
        case .relay, .forwardRelay:
            guard !configuration.client, let next = neighbours[peeled.next] else {
                logger.debug("circuit refused: the next hop is not a neighbour")
                return destroy(end)
            }
            // No two adjacent hops in one network (an IPv4 /16): one operator there would see both sides of this node.
            if let before = hopGroup(link), before == hopGroup(next) {
                counters.circuitsRefusedSameNetwork += 1
                logger.debug("circuit refused: the previous and next hops are in one network")
                return destroy(end)
            }
            guard circuitCount(next.id) < configuration.maxCircuitsPerLink else {
                counters.circuitsRefused += 1
                logger.info(
                    "circuit refused: the next link carries its limit of circuits",
                    metadata: ["limit": "\(configuration.maxCircuitsPerLink)"])
                return destroy(end)
            }
            let out = CircuitEnd(link: next.id, circuit: next.allocateCircuit())
            noteEnd(end)
            noteEnd(out)
            let previous = link.peerAddress, following = next.peerAddress
            relays[end] = RelayHop(
                other: out, key: peeled.keys.layer, forward: true, checksTags: peeled.kind == .forwardRelay,
                previousAddress: previous, nextAddress: following)
            relays[end]?.payer = configuration.earningWallet == nil ? nil : payer
            relays[out] = RelayHop(
                other: end, key: nil, forward: false, previousAddress: previous, nextAddress: following)
            counters.circuitsRelayed += 1
            logger.debug("relaying a circuit", metadata: ["previous": "\(previous)", "next": "\(following)"])
            sendCell(out, .create, peeled.inner)
        case .exit:
            guard configuration.exit else {
                logger.info("circuit refused: not an exit")
                return destroy(end)
            }
            let exit = ExitCircuit(
                inEnd: end, keys: peeled.keys, previousAddress: link.peerAddress, created: Self.now())
            noteEnd(end)
            exit.payer = configuration.earningWallet == nil ? nil : payer
            exits[end] = exit
            counters.circuitsExited += 1
        case .terminal:
            guard let id = routeByToken.removeValue(forKey: peeled.token), let route = routes[id],
                route.returnEnd == nil
            else {
                return destroy(end)
            }
            route.returnEnd = end
            routeByReturn[end] = id
            noteEnd(end)
            // The return circuit came back: every hop of the route opened its layer (a binding in one arrived).
            if let creditor = route.bindingSent { bound.insert(creditor) }
            route.bindingSent = nil
            if route.isolation == Self.bindingIsolation && route.streams.isEmpty {
                // Its work is done: it closes at the next round.
                route.phase = .open
                route.idleSince = 0
            }
        }
    }

    /// A DATA cell; `payload` lies in the link message (read only).
    func data(_ link: Link, _ end: CircuitEnd, _ payload: UnsafeRawBufferPointer) {
        if let hop = relays[end] {
            guard hop.forward, let key = hop.key else { return penalize(link, 5, "data against a circuit's direction") }
            // A cell of the other size, or whose tag does not verify, goes no further and is not
            // charged; its circuit is destroyed both ways. No penalty: the neighbour may have relayed
            // it faithfully (an origin can make the hops of its own circuit disagree), and a link
            // is never closed for one circuit's cell (an origin could cut links between honest hops).
            guard payload.count == (hop.checksTags ? configuration.cellBytes : returnCellBytes) else {
                counters.cellsRejected += 1
                logger.info("relay: a cell of the wrong size for its circuit; circuit destroyed")
                return destroyed(end, notify: true)
            }
            guard !hop.checksTags || Onion.checkTag(key, counter: hop.counter, payload) else {
                counters.cellsRejected += 1
                logger.info("relay: a cell whose tag does not verify; circuit destroyed")
                return destroyed(end, notify: true)
            }
            if let payer = hop.payer, let accountant {
                guard !accountant.isBanned(payer) else {
                    logger.info("circuit dropped: the consumer is banned for debt")
                    return destroyed(end, notify: true)
                }
                let units = UInt128(cellUnits(payload.count))
                accountant.earn(payer, routingCharge(configuration.rates) * units, now: Self.wallClock())
            }
            guard let next = links[hop.other.link] else { counters.cellsDropped += 1; return }
            // A slow next hop: past the cap, the circuit pushing into it goes (never this node's memory).
            guard next.queuedBytes < configuration.maxLinkQueueBytes else {
                counters.queueOverflows += 1
                logger.info(
                    "relay: the queue toward the next hop is full; circuit destroyed",
                    metadata: ["queued": "\(next.queuedBytes)"])
                return destroyed(end, notify: true)
            }
            // This hop's layer is removed (or added) on the way into the next link's message.
            let counter = hop.counter
            let checked = hop.checksTags
            next.writeDataCell(hop.other.circuit, size: payload.count) { cell in
                if checked {
                    Onion.relayForward(key, counter: counter, from: payload, into: cell)
                } else {
                    Onion.unwrap(key, counter: counter, from: payload, into: cell)
                }
            }
            hop.counter += 1
            counters.cellsRelayed += 1
        } else if let exit = exits[end] {
            exitCell(exit, payload)
        } else if let id = routeByReturn[end], let route = routes[id] {
            originCell(route, payload)
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
            // This node's own decision: the hop this end leads to hears of it too.
            if notify { destroy(end) }
        }
        if let exit = exits[end] ?? exitByReturn[end].flatMap({ exits[$0] }) {
            exits[exit.inEnd] = nil
            if let r = exit.returnEnd { exitByReturn[r] = nil }
            closeStreams(exit)
            if exit.inEnd != end { destroy(exit.inEnd) }
            if let r = exit.returnEnd, r != end { destroy(r) }
            if notify && exit.inEnd == end { destroy(end) }
        }
        if let id = routeByForward[end] ?? routeByReturn[end], let route = routes[id] {
            fail(route, "a node on the route went away")
        }
    }

    func circuitsLost(on link: Link) {
        let ends = Set(
            relays.keys.filter { $0.link == link.id } + exits.keys.filter { $0.link == link.id }
                + exitByReturn.keys.filter { $0.link == link.id }
                + routeByForward.keys.filter { $0.link == link.id } + routeByReturn.keys.filter { $0.link == link.id })
        for end in ends { destroyed(end, notify: false) }
    }

    // MARK: - routes

    /// Undirected links both ends advertise, plus this node's own.
    private func graph() -> [NodeKey: Set<NodeKey>] {
        var claims: [NodeKey: Set<NodeKey>] = [:]
        // Clients relay nothing: they are never part of anyone else's route.
        for (k, known) in records where !known.record.isClient {
            claims[k] = Set(known.record.neighbours.compactMap(NodeKey.init(text:)))
        }
        claims[key] = Set(neighbours.keys)
        var edges: [NodeKey: Set<NodeKey>] = [:]
        for (a, list) in claims where a != key {
            for b in list where a != b && b != key && (claims[b]?.contains(a) ?? false) {
                edges[a, default: []].insert(b)
            }
        }
        // This node's own links are edges whatever the other end advertises
        // (a node does not advertise its clients).
        for b in neighbours.keys where records[b]?.record.isClient != true {
            edges[key, default: []].insert(b)
            edges[b, default: []].insert(key)
        }
        return edges
    }

    /// The most a route pays a node per cell: the configured bounds, else ten times MASQ's default rates.
    var routingBound: UInt128 { configuration.maxRoutingCharge ?? 10 * routingCharge(RatePack()) }
    var exitBound: UInt128 { configuration.maxExitCharge ?? 10 * exitCharge(RatePack()) }

    /// A node may carry a route: known, not a client, its rates within the bound.
    private func acceptable(_ k: NodeKey, exit: Bool) -> Bool {
        guard let record = records[k]?.record, !record.isClient else { return false }
        return exit ? record.exit && exitCharge(record.rates) <= exitBound : routingCharge(record.rates) <= routingBound
    }

    /// Two nodes of one operator: each names the other in its record's family.
    func sameFamily(_ a: NodeKey, _ b: NodeKey) -> Bool {
        guard a != b, let fa = records[a]?.record.family, let fb = records[b]?.record.family else { return false }
        return fa.contains(b.text) && fb.contains(a.text)
    }

    /// A forward route (origin → … → exit: `hops` links, more only when the
    /// topology has no such route; the exit not a neighbour of this node) and
    /// a return route of as many links whose relays avoid the forward route's
    /// when the topology allows. Each is drawn **at random among every
    /// acceptable route** of the fewest links: rates only bound what is
    /// acceptable (a node advertising nothing gains no routes by it), no two
    /// nodes of one family (where records say so) share a route, and each
    /// relay refuses to join two hops of one network (`hopPrefixV4`).
    /// `including`: a node the route must pass through (forward or back), for a binding route.
    func chooseRoutes(including required: NodeKey? = nil) -> (forward: [NodeKey], back: [NodeKey])? {
        // Nodes of recently failed routes are avoided, unless nothing else is left.
        chooseRoutes(avoiding: Set(failedNodes.keys), including: required)
            ?? (failedNodes.isEmpty ? nil : chooseRoutes(avoiding: [], including: required))
    }

    /// Paths from `starts` by `edges`: `length` nodes, each acceptable to
    /// `allowed`, complete when `complete` says so; one drawn uniformly at
    /// random among them (reservoir sampling over a walk in random order,
    /// bounded in work).
    private func drawPath(
        from starts: [NodeKey], length: Int, edges: [NodeKey: Set<NodeKey>],
        allowed: (NodeKey, [NodeKey]) -> Bool, complete: ([NodeKey]) -> Bool
    ) -> [NodeKey]? {
        var seen = 0, visits = 0
        var pick: [NodeKey]?
        func walk(_ path: [NodeKey]) {
            visits += 1
            guard visits < 200_000 else { return }
            if path.count == length {
                if complete(path) {
                    seen += 1
                    if Int.random(in: 0..<seen) == 0 { pick = path }
                }
                return
            }
            for next in (edges[path.last!] ?? []).shuffled()
            where next != key && !path.contains(next) && allowed(next, path) {
                walk(path + [next])
            }
        }
        for first in starts.shuffled() { walk([first]) }
        return pick
    }

    private func chooseRoutes(avoiding avoid: Set<NodeKey>, including required: NodeKey?) -> (
        forward: [NodeKey], back: [NodeKey]
    )? {
        // A required node goes on the forward route if it can, else on the return route.
        for inForward in required == nil ? [false] : [true, false] {
            if let found = chooseRoutes(avoiding: avoid, including: required, inForward: inForward) { return found }
        }
        return nil
    }

    private func chooseRoutes(avoiding avoid: Set<NodeKey>, including required: NodeKey?, inForward: Bool) -> (
        forward: [NodeKey], back: [NodeKey]
    )? {
        let edges = graph()
        let hops = configuration.hops
        let longest = min(6, max(hops, hops + 2))
        let firsts = neighbours.keys.filter { !avoid.contains($0) && records[$0] != nil && !clientPeers.contains($0) }
        // Relays must be acceptable relays; the last node an acceptable exit; no two of one family.
        func fits(_ next: NodeKey, _ path: [NodeKey]) -> Bool {
            !avoid.contains(next) && records[next] != nil && !path.contains(where: { sameFamily($0, next) })
        }
        var chosen: [NodeKey]?
        for length in hops...longest where chosen == nil {
            chosen = drawPath(
                from: firsts.filter { length == 1 || acceptable($0, exit: false) }, length: length, edges: edges,
                allowed: { next, path in
                    fits(next, path) && (path.count + 1 == length || self.acceptable(next, exit: false))
                },
                complete: { path in
                    let last = path.last!
                    return self.acceptable(last, exit: true)
                        && (hops < 3 && self.configuration.allowShortRoutes || self.neighbours[last] == nil)
                        && (!inForward || required.map(path.contains) == true)
                })
        }
        logger.debug(
            "routes",
            metadata: [
                "edges": "\(edges.mapValues { $0.map(\.description) })",
                "exits": "\(records.values.filter(\.record.exit).count)"
            ])
        guard let forward = chosen else { return nil }
        let exit = forward.last!
        if hops == 1, neighbours[exit] != nil { return required == nil || inForward ? (forward, []) : nil }
        let backNeeds = inForward ? nil : required
        // Return: exit → r1 → … → this node, at least `hops` links; relays disjoint from the forward relays if possible.
        let forwardRelays = Set(forward.dropLast())
        for strict in [true, false] {
            for length in hops...longest {
                // [exit, r1 … rk]: k + 1 links with the last one to this node.
                let path = drawPath(
                    from: [exit], length: length, edges: edges,
                    allowed: { next, path in
                        fits(next, path) && self.acceptable(next, exit: false)
                            && (!strict || !forwardRelays.contains(next))
                            && !forward.contains(where: { self.sameFamily($0, next) })
                    },
                    complete: { path in
                        (path.count == 1
                            || (edges[path.last!]?.contains(self.key) == true && self.neighbours[path.last!] != nil))
                            && (backNeeds == nil || path.dropFirst().contains(backNeeds!))
                    })
                if let path, path.count > 1 { return (forward, Array(path.dropFirst())) }
            }
        }
        return nil
    }
}
