/// The relay's wire protocol: binary WebSocket messages (docs/PROTOCOL.md).
///
///   frame    = u8 version(1) · u8 type · body
///   JOIN     (1) client→relay  u8 roomLen · room
///   LEAVE    (2) client→relay  u8 roomLen · room
///   SEND     (3) client→relay  u8 roomLen · room · payload
///   DELIVER  (4) relay→client  u8 roomLen · room · payload
///   ERROR    (5) relay→client  u16 code · UTF-8 message
///   PRESENCE (6) relay→client  u8 roomLen · room · u32 members   (after a join or leave)
///
/// Rooms are 1...64 opaque bytes (Masq uses 16-byte hashes). The relay looks
/// at the room, never inside payloads: they are ciphertext to it.
public enum RelayFrame: Equatable, Sendable {
    case join(room: [UInt8])
    case leave(room: [UInt8])
    case send(room: [UInt8], payload: [UInt8])
    case deliver(room: [UInt8], payload: [UInt8])
    case error(code: RelayErrorCode, message: String)
    case presence(room: [UInt8], members: UInt32)

    public static let version: UInt8 = 1
    public static let maxRoomLength = 64

    public func encoded() -> [UInt8] {
        switch self {
        case .join(let room): return [RelayFrame.version, 1, UInt8(room.count)] + room
        case .leave(let room): return [RelayFrame.version, 2, UInt8(room.count)] + room
        case .send(let room, let payload):
            return RelayFrame.header(3, room: room, payloadCount: payload.count) + payload
        case .deliver(let room, let payload):
            return RelayFrame.header(4, room: room, payloadCount: payload.count) + payload
        case .error(let code, let message):
            let text = Array(message.utf8.prefix(512))
            return [RelayFrame.version, 5, UInt8(code.rawValue >> 8), UInt8(code.rawValue & 0xFF)] + text
        case .presence(let room, let members):
            return [RelayFrame.version, 6, UInt8(room.count)] + room
                + [
                    UInt8(members >> 24), UInt8(truncatingIfNeeded: members >> 16),
                    UInt8(truncatingIfNeeded: members >> 8), UInt8(truncatingIfNeeded: members)
                ]
        }
    }

    /// The bytes in front of a SEND/DELIVER payload (so a relay can forward
    /// a payload without copying it into a new array).
    public static func header(_ type: UInt8, room: [UInt8], payloadCount: Int) -> [UInt8] {
        var out: [UInt8] = [RelayFrame.version, type, UInt8(room.count)]
        out.reserveCapacity(3 + room.count + payloadCount)
        out += room
        return out
    }

    /// Check a frame's header and find its room without copying anything:
    /// what a relay needs to forward a SEND. Every check `decode` makes except
    /// reading the body is made here, so the two always agree. ERROR frames
    /// have no room (an empty range).
    public static func peek(_ bytes: UnsafeRawBufferPointer) throws(RelayProtocolError) -> (
        type: UInt8, room: Range<Int>
    ) {
        guard bytes.count >= 2 else { throw .malformed("frame shorter than its header") }
        guard bytes[0] == version else { throw .unsupportedVersion(bytes[0]) }
        let type = bytes[1]
        switch type {
        case 1...4, 6:
            guard bytes.count >= 3 else { throw .malformed("missing room length") }
            let length = Int(bytes[2])
            guard length >= 1 && length <= maxRoomLength else {
                throw .malformed("room length \(length) is not 1...\(maxRoomLength)")
            }
            guard bytes.count >= 3 + length else { throw .malformed("truncated room") }
            let end = 3 + length
            if type <= 2 && end != bytes.count { throw .malformed("trailing bytes after the room") }
            if type == 6 && bytes.count != end + 4 { throw .malformed("presence frame has the wrong length") }
            return (type, 3..<end)
        case 5:
            guard bytes.count >= 4 else { throw .malformed("truncated error frame") }
            return (type, 2..<2)
        default:
            throw .malformed("unknown frame type \(type)")
        }
    }

    /// Decode with every length checked; nil-free: errors say what is wrong.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(RelayProtocolError) -> RelayFrame {
        let (type, range) = try peek(bytes)
        let room = Array(bytes[range])
        switch type {
        case 1: return .join(room: room)
        case 2: return .leave(room: room)
        case 3: return .send(room: room, payload: Array(bytes[range.upperBound...]))
        case 4: return .deliver(room: room, payload: Array(bytes[range.upperBound...]))
        case 5:
            let code = RelayErrorCode(rawValue: UInt16(bytes[2]) << 8 | UInt16(bytes[3])) ?? .protocolError
            return .error(code: code, message: String(decoding: bytes[4...], as: UTF8.self))
        default:
            let end = range.upperBound
            let members =
                UInt32(bytes[end]) << 24 | UInt32(bytes[end + 1]) << 16 | UInt32(bytes[end + 2]) << 8
                | UInt32(bytes[end + 3])
            return .presence(room: room, members: members)
        }
    }

    public static func decode(_ bytes: [UInt8]) throws(RelayProtocolError) -> RelayFrame {
        let result: Result<RelayFrame, RelayProtocolError> = bytes.withUnsafeBytes { raw in
            Result { () throws(RelayProtocolError) in try decode(raw) }
        }
        return try result.get()
    }
}

/// Machine-readable reasons in ERROR frames.
public enum RelayErrorCode: UInt16, Sendable {
    case protocolError = 1
    case unsupportedVersion = 2
    case frameTooLarge = 3
    case tooManyRooms = 4
    case rateLimited = 5
    case notInRoom = 6
    case tooManyConnections = 7
}

public enum RelayProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformed(String)
    case unsupportedVersion(UInt8)

    public var description: String {
        switch self {
        case .malformed(let m): "malformed relay frame: \(m)"
        case .unsupportedVersion(let v):
            "relay frame version \(v) is not supported (this relay speaks \(RelayFrame.version))"
        }
    }
}
