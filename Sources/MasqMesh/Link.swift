import MasqCrypto
import NIOCore

/// Messages on a link, after a Noise XX handshake between the two nodes'
/// X25519 keys (each side's signed record rides in the handshake, binding
/// the X25519 key to the node's identity and address):
///
///     wire    = u16 length ‖ message                 (handshake: the Noise message)
///     message = u16 c ‖ clear (c bytes) ‖ Noise ciphertext of records,
///               AD = u16 c ‖ clear
///     record  = u16 n ‖ frame (n bytes)
///     frame   = u8 type ‖ body
///       1 GOSSIP  JSON [SignedRecord]
///       2 INTRO   JSON [descriptor]         ("meet these nodes")
///       3 CELL    u32 circuit ‖ u8 command ‖ payload (cell size, fixed; a JUMBO
///                 DATA cell is `jumboCells` cells' size)
///       4 PING    5 PONG
///       6 BYE     UTF-8 reason
///
/// The frames written in one turn of the event loop travel in one message
/// (up to 64 KiB): one AEAD call and one socket write for many cells.
/// A DATA cell's record holds only its header (circuit, command); its payload
/// rides in the clear part, in record order, authenticated by the message's
/// tag but not encrypted a second time: it is already the ciphertext of this
/// hop's onion layer (different on every link, random to an observer). The
/// tag stays: a byte altered on the link fails the whole message and closes
/// the link, as TLS does for Tor; without it, someone on the path could kill
/// one chosen circuit at a time (the onion layers and tags would catch the
/// cell, but only that circuit would die). Every other frame (CREATE and
/// DESTROY cells included) is encrypted.
enum FrameType: UInt8 { case gossip = 1, intro = 2, cell = 3, ping = 4, pong = 5, bye = 6 }
/// `jumbo`: a DATA cell of `jumboCells` cells' size, for bulk data (see `MeshNode.sendToExit`).
enum CellCommand: UInt8 { case create = 1, data = 2, destroy = 3, jumbo = 4 }

/// A JUMBO cell is this many cells' size (and counts as that many cells).
let jumboCells = 4

/// Splits the byte stream into u16-length-prefixed messages.
struct LengthPrefixDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
            buffer.readableBytes >= 2 + Int(length)
        else {
            return .needMoreData
        }
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

/// Splits the byte stream into u16-length-prefixed messages, as
/// `LengthPrefixDecoder` does, without NIO's cumulation: that copies every read
/// onto the part message left by the one before (a link's whole traffic, once
/// more, at every node). Here the messages a read holds whole go on as slices
/// of it, and only a message cut by the read's end is copied (at most 64 KiB).
final class LengthPrefixSplitter: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    /// A message begun in an earlier read, its length prefix included.
    private var partial: ByteBuffer?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if var kept = partial {
            partial = nil
            if kept.readableBytes < 2 {
                var head = bytes.readSlice(length: min(2 - kept.readableBytes, bytes.readableBytes))!
                kept.writeBuffer(&head)
                guard kept.readableBytes == 2 else { partial = kept; return }
            }
            let whole = 2 + Int(kept.getInteger(at: kept.readerIndex, as: UInt16.self)!)
            var rest = bytes.readSlice(length: min(whole - kept.readableBytes, bytes.readableBytes))!
            kept.writeBuffer(&rest)
            guard kept.readableBytes == whole else { partial = kept; return }
            kept.moveReaderIndex(forwardBy: 2)
            context.fireChannelRead(wrapInboundOut(kept))
        }
        while context.channel.isActive, let length = bytes.getInteger(at: bytes.readerIndex, as: UInt16.self),
            bytes.readableBytes >= 2 + Int(length)
        {
            bytes.moveReaderIndex(forwardBy: 2)
            context.fireChannelRead(wrapInboundOut(bytes.readSlice(length: Int(length))!))
        }
        if bytes.readableBytes > 0, context.channel.isActive {
            var kept = context.channel.allocator.buffer(capacity: 2 + Int(UInt16.max))
            kept.writeBuffer(&bytes)
            partial = kept
        }
    }
}

/// One TCP link to another node. Lives on the node's event loop.
final class Link {
    /// The largest length field: with it, a whole message fits in 64 KiB.
    static let maxMessage = 65_534
    /// A message's fixed cost: its length, the clear part's length, the tag.
    static let messageOverhead = 2 + 2 + 16
    /// The most a single (encrypted) frame may hold.
    static let maxFrame = maxMessage - messageOverhead - 2

    let id: Int
    let channel: Channel
    let initiator: Bool
    let cellBytes: Int
    /// The descriptor dialed (initiator side).
    let dialed: NodeDescriptor?
    var handshake: Noise.Handshake?
    var sendCipher: Noise.CipherState?
    var receiveCipher: Noise.CipherState?
    var peer: NodeKey?
    var peerAddress: String
    /// The peer's address as the socket sees it (neighbour and hop groups, bans).
    let remoteIP: IPAddress?
    /// Where the peer listens, and its signed link record, from its handshake (a neighbour's only).
    var listenAddress: String?
    /// Whether the host the peer's link record names is the address its
    /// connection comes from: only then is it introduced to others (who will
    /// dial that host), so nobody makes the network dial a third party.
    var listensWhereItComesFrom = false
    var linkRecord: SignedRecord?
    var established = false
    /// When the connection was opened: a handshake must end within
    /// `handshakeTimeoutMilliseconds` of it, however it trickles.
    let opened: UInt64
    /// When the link became a neighbour link (0 until then): its age for
    /// anchors, and the grace a young link has from shedding.
    var upAt: UInt64 = 0
    /// Nodes this node introduced to the far end (at most 16, the newest):
    /// whom, when, and whether a record of theirs has named the far end
    /// since. A far end that links to nobody it is sent (a squatter dialing
    /// newcomers under other keys) soon gets nobody (`MeshNode.introduce`).
    var introductions: [(peer: String, at: UInt64, linked: Bool)] = []
    /// The nodes the far end's last INTRO named (at most 4): when a seed this
    /// node dialed answers a refused dial, its INTRO (the settled neighbours
    /// it names) comes just before its BYE "full", which makes them `reverse`
    /// entries (the seed's descriptors, whatever others introduced before).
    var namedInLastIntro: [NodeDescriptor] = []
    /// Where an inbound connection comes from, as the handshake table counts
    /// it (MeshNode.addressPrefix: an IPv4 address, an IPv6 /64).
    let prefix: String
    var lastHeard: UInt64
    /// Gossip records this peer may still have decoded and verified (a token
    /// bucket: `gossipRecordsPerSecond`, up to two seconds' worth).
    var gossipCredit: Double = 0
    var gossipCreditAt: UInt64
    var penalty = 0
    var nextCircuit: UInt32
    /// Called when frames start to wait in `pending` (the node flushes after its turn).
    var onPending: ((Link) -> Void)?
    private var announced = false
    /// The message being assembled: u16 length and u16 c reserved, then the clear part.
    private var pending: ByteBuffer?
    /// Its records (encrypted when the message is sealed).
    private var records: [UInt8] = []
    /// Sealed messages waiting for the socket (NIO's queue toward this peer).
    var queuedBytes: Int { queue.bytes }
    /// Counted in a box of its own, which the write callbacks hold: a weak
    /// reference to the link would give it a side table, and every retain and
    /// release of it (several per cell) would take the runtime's slow path.
    private let queue = QueueGauge()
    final class QueueGauge { var bytes = 0 }

    init(
        id: Int, channel: Channel, initiator: Bool, dialed: NodeDescriptor?, handshake: Noise.Handshake, cellBytes: Int,
        now: UInt64
    ) {
        self.id = id
        self.channel = channel
        self.initiator = initiator
        self.dialed = dialed
        self.handshake = handshake
        self.cellBytes = cellBytes
        lastHeard = now
        opened = now
        gossipCreditAt = now
        prefix = MeshNode.addressPrefix(channel.remoteAddress)
        remoteIP = channel.remoteAddress?.ipAddress.flatMap { IPAddress($0) }
        peerAddress = dialed?.address ?? channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
        // Each side numbers the circuits it opens in its own half of the space.
        nextCircuit = initiator ? 1 : 0x8000_0001
    }

    /// Refill the gossip credit for the time since the last refill.
    func refillGossipCredit(now: UInt64, perSecond: Int) {
        let burst = Double(perSecond) * 2
        gossipCredit = min(burst, gossipCredit + Double(now &- gossipCreditAt) * Double(perSecond) / 1_000)
        gossipCreditAt = now
    }

    func allocateCircuit() -> UInt32 {
        defer { nextCircuit = nextCircuit & 0x8000_0000 | ((nextCircuit + 1) & 0x7FFF_FFFF) }
        return nextCircuit
    }

    /// Write a raw handshake message.
    func writeRaw(_ bytes: [UInt8]) {
        var buffer = channel.allocator.buffer(capacity: bytes.count + 2)
        buffer.writeInteger(UInt16(bytes.count))
        buffer.writeBytes(bytes)
        channel.writeAndFlush(buffer, promise: nil)
    }

    /// Queue one frame (sealed and written by `flush`). False when it is too
    /// large for a message (the caller's bug: frames are bounded).
    @discardableResult
    func write(_ type: FrameType, _ body: [UInt8]) -> Bool {
        guard sendCipher != nil, channel.isActive, 1 + body.count <= Self.maxFrame else { return false }
        room(records: 3 + body.count, clear: 0)
        records.append(contentsOf: [
            UInt8(truncatingIfNeeded: (1 + body.count) >> 8), UInt8(truncatingIfNeeded: 1 + body.count), type.rawValue
        ])
        records.append(contentsOf: body)
        announce()
        return true
    }

    /// Queue a cell other than DATA (encrypted with its payload).
    func writeCell(_ circuit: UInt32, _ command: CellCommand, _ payload: [UInt8]) {
        write(.cell, Self.cellHeader(circuit, command) + payload)
    }

    /// Queue a DATA cell: `fill` writes its payload (the onion layer's
    /// ciphertext; `size` bytes: `cellBytes`, or `jumboCells` times that for
    /// a JUMBO cell) straight into the message being assembled.
    func writeDataCell(_ circuit: UInt32, size: Int, fill: (UnsafeMutableRawBufferPointer) -> Void) {
        precondition(size == cellBytes || size == jumboCells * cellBytes)
        guard sendCipher != nil, channel.isActive else { return }
        room(records: 8, clear: size)
        // The record: u16 6 ‖ CELL ‖ u32 circuit ‖ DATA.
        records.append(0); records.append(6); records.append(FrameType.cell.rawValue)
        records.append(UInt8(circuit >> 24)); records.append(UInt8(circuit >> 16 & 0xff))
        records.append(UInt8(circuit >> 8 & 0xff)); records.append(UInt8(circuit & 0xff))
        records.append(size == cellBytes ? CellCommand.data.rawValue : CellCommand.jumbo.rawValue)
        pending!.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { raw in
            fill(UnsafeMutableRawBufferPointer(rebasing: raw[0..<size]))
            return size
        }
        announce()
    }

    private func announce() {
        guard !announced else { return }
        announced = true
        onPending?(self)
    }

    static func cellHeader(_ c: UInt32, _ command: CellCommand) -> [UInt8] {
        [UInt8(c >> 24), UInt8(c >> 16 & 0xff), UInt8(c >> 8 & 0xff), UInt8(c & 0xff), command.rawValue]
    }

    /// Make room for `records` more record bytes and `clear` more clear bytes,
    /// sealing the current message first when they would not fit.
    private func room(records more: Int, clear: Int) {
        // The length field counts everything after itself: u16 c, clear, records, tag.
        // (No `if let` here: a second reference would make sealing copy the message.)
        let used = pending?.writerIndex ?? 0
        if used > 0 && used - 2 + records.count + more + clear + 16 > Self.maxMessage { seal() }
        if pending == nil {
            // A message of cells fills up within the turn: room for a whole one at once.
            var buffer = channel.allocator.buffer(capacity: clear > 0 ? 2 + Self.maxMessage : 512)
            // (NIO grows a buffer to the next power of two: 64 KiB stays within malloc's reuse.)
            buffer.writeInteger(UInt32(0))
            pending = buffer
        }
    }

    /// Encrypt the records of the message being assembled and queue it on the socket.
    private func seal() {
        guard let clearEnd = pending?.writerIndex, let sendCipher else { return }
        defer { records.removeAll(keepingCapacity: true) }
        let clear = clearEnd - 4
        let sealed = records.count + 16
        // Mutated in place (a copy here would make NIO copy the whole message).
        pending!.setInteger(UInt16(2 + clear + sealed), at: 0)
        pending!.setInteger(UInt16(clear), at: 2)
        pending!.reserveCapacity(minimumWritableBytes: sealed)
        let ok = pending!.withVeryUnsafeMutableBytes { base in
            records.withUnsafeBytes { plain in
                (try? sendCipher.encrypt(
                    ad: UnsafeRawBufferPointer(rebasing: base[2..<(4 + clear)]), plaintext: plain,
                    into: UnsafeMutableRawBufferPointer(rebasing: base[(4 + clear)..<(4 + clear + sealed)]))) != nil
            }
        }
        guard ok else { pending = nil; return }
        pending!.moveWriterIndex(forwardBy: sealed)
        let message = pending!
        pending = nil
        // Bytes handed to the socket and not yet written: a slow peer makes them pile up.
        let size = message.readableBytes
        let queue = self.queue
        queue.bytes += size
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenComplete { _ in queue.bytes -= size }
        channel.write(message, promise: written)
    }

    /// Seal what is pending and push it to the socket.
    func flush() {
        announced = false
        if pending != nil { seal() }
        channel.flush()
    }

    /// Open a message: its records and where its clear part lies in `raw`.
    func open(_ raw: UnsafeRawBufferPointer) -> (records: [UInt8], clear: Range<Int>)? {
        guard let receiveCipher, raw.count >= 2 + 16 else { return nil }
        let clear = Int(raw[0]) << 8 | Int(raw[1])
        guard 2 + clear + 16 <= raw.count else { return nil }
        let sealed = raw.count - 2 - clear
        var records = [UInt8](repeating: 0, count: sealed - 16)
        let ok = records.withUnsafeMutableBytes { out in
            (try? receiveCipher.decrypt(
                ad: UnsafeRawBufferPointer(rebasing: raw[0..<(2 + clear)]),
                ciphertext: UnsafeRawBufferPointer(rebasing: raw[(2 + clear)...]), into: out)) != nil
        }
        return ok ? (records, 2..<(2 + clear)) : nil
    }
}

/// The records of an opened link message, split without acting on any:
/// `u16 n ‖ frame` each, where a DATA cell's record is its 6-byte header and
/// its payload lies next in the message's clear part. Pure, so it is fuzzed
/// (Tests/fuzz); a message that fails any check is refused whole.
enum LinkRecords {
    enum Item: Equatable {
        /// A frame other than a DATA cell: its range in the records.
        case frame(Range<Int>)
        /// A DATA cell: its circuit and its payload's range in the raw message.
        case dataCell(circuit: UInt32, payload: Range<Int>)
    }

    static func split(_ records: [UInt8], clear: Range<Int>, cellBytes: Int) -> Result<[Item], MeshError> {
        var items: [Item] = []
        var at = 0
        var clearAt = clear.lowerBound
        while at < records.count {
            guard at + 2 <= records.count else { return .failure(.malformed("a truncated record")) }
            let n = Int(records[at]) << 8 | Int(records[at + 1])
            at += 2
            guard n >= 1, at + n <= records.count else { return .failure(.malformed("a truncated record")) }
            if n == 6, records[at] == FrameType.cell.rawValue,
                records[at + 5] == CellCommand.data.rawValue || records[at + 5] == CellCommand.jumbo.rawValue
            {
                let size = records[at + 5] == CellCommand.data.rawValue ? cellBytes : jumboCells * cellBytes
                guard clearAt + size <= clear.upperBound else {
                    return .failure(.malformed("a DATA cell without its payload"))
                }
                let circuit =
                    UInt32(records[at + 1]) << 24 | UInt32(records[at + 2]) << 16 | UInt32(records[at + 3]) << 8
                    | UInt32(records[at + 4])
                items.append(.dataCell(circuit: circuit, payload: clearAt..<(clearAt + size)))
                clearAt += size
            } else {
                items.append(.frame(at..<(at + n)))
            }
            at += n
        }
        guard clearAt == clear.upperBound else { return .failure(.malformed("clear bytes that belong to no cell")) }
        return .success(items)
    }
}

/// Feeds a link's messages to the node (on the node's loop).
final class LinkHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let node: MeshNode
    let initiator: Bool
    let dialed: NodeDescriptor?
    var link: Link?

    init(node: MeshNode, initiator: Bool, dialed: NodeDescriptor?) {
        self.node = node
        self.initiator = initiator
        self.dialed = dialed
    }

    func channelActive(context: ChannelHandlerContext) {
        link = node.linkOpened(context.channel, initiator: initiator, dialed: dialed)
        if link == nil { context.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let link else { return }
        node.linkMessage(link, unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) { node.flush() }

    func channelInactive(context: ChannelHandlerContext) {
        if let link { node.linkClosed(link) }
        link = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}
