import MasqCrypto
import NIOCore

/// Frames on a link, after a Noise XX handshake between the two nodes'
/// X25519 keys (each side's signed record rides in the handshake, binding
/// the X25519 key to the node's identity and address):
///
///     wire  = u16 length ‖ Noise ciphertext
///     frame = u8 type ‖ body
///       1 GOSSIP  JSON [SignedRecord]
///       2 INTRO   JSON [descriptor]         ("meet these nodes")
///       3 CELL    u32 circuit ‖ u8 command ‖ payload (cell size, fixed)
///       4 PING    5 PONG
///       6 BYE     UTF-8 reason
enum FrameType: UInt8 { case gossip = 1, intro = 2, cell = 3, ping = 4, pong = 5, bye = 6 }
enum CellCommand: UInt8 { case create = 1, data = 2, destroy = 3 }

/// Splits the byte stream into u16-length-prefixed messages.
struct LengthPrefixDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self), buffer.readableBytes >= 2 + Int(length) else {
            return .needMoreData
        }
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

/// One TCP link to another node. Lives on the node's event loop.
final class Link {
    let id: Int
    let channel: Channel
    let initiator: Bool
    /// The descriptor dialed (initiator side).
    let dialed: NodeDescriptor?
    var handshake: Noise.Handshake?
    var sendCipher: Noise.CipherState?
    var receiveCipher: Noise.CipherState?
    var peer: NodeKey?
    var peerAddress: String
    var established = false
    var lastHeard: UInt64
    var penalty = 0
    var nextCircuit: UInt32

    init(id: Int, channel: Channel, initiator: Bool, dialed: NodeDescriptor?, handshake: Noise.Handshake, now: UInt64) {
        self.id = id
        self.channel = channel
        self.initiator = initiator
        self.dialed = dialed
        self.handshake = handshake
        lastHeard = now
        peerAddress = dialed?.address ?? channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
        // Each side numbers the circuits it opens in its own half of the space.
        nextCircuit = initiator ? 1 : 0x8000_0001
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

    /// Encrypt and queue one frame (flushed by the node after the current batch).
    func write(_ type: FrameType, _ body: [UInt8]) { writeFrame([type.rawValue] + body) }

    /// Encrypt and queue a frame already laid out (type byte first).
    func writeFrame(_ frame: [UInt8]) {
        guard let sendCipher, channel.isActive else { return }
        guard let sealed = try? sendCipher.encrypt(ad: [], plaintext: frame) else { return }
        var buffer = channel.allocator.buffer(capacity: sealed.count + 2)
        buffer.writeInteger(UInt16(sealed.count))
        buffer.writeBytes(sealed)
        channel.write(buffer, promise: nil)
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
        var buffer = unwrapInboundIn(data)
        node.linkMessage(link, buffer.readBytes(length: buffer.readableBytes) ?? [])
    }

    func channelReadComplete(context: ChannelHandlerContext) { node.flush() }

    func channelInactive(context: ChannelHandlerContext) {
        if let link { node.linkClosed(link) }
        link = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}
