#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import MasqKernel

/// A JSON value to send (the daemon writes JSON; it decodes requests with
/// `Request`). Small and explicit: objects keep their key order.
enum JSON {
    case string(String)
    case int(Int64)
    case bool(Bool)
    case null
    case array([JSON])
    case object([(String, JSON)])
    /// Already-serialized JSON (a request id echoed back).
    case raw(String)

    var text: String {
        var out = ""
        write(&out)
        return out
    }

    func write(_ out: inout String) {
        switch self {
        case .string(let s): out += quoted(s)
        case .int(let n): out += String(n)
        case .bool(let b): out += b ? "true" : "false"
        case .null: out += "null"
        case .raw(let r): out += r
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(&out)
            }
            out += "]"
        case .object(let fields):
            out += "{"
            for (i, (key, value)) in fields.enumerated() {
                if i > 0 { out += "," }
                out += quoted(key)
                out += ":"
                value.write(&out)
            }
            out += "}"
        }
    }

    static func uint(_ n: UInt64) -> JSON { .int(Int64(clamping: n)) }
}

/// A JSON string literal (RFC 8259 escapes).
func quoted(_ s: String) -> String {
    var out = "\""
    out.reserveCapacity(s.utf8.count + 2)
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 || scalar.value == 0x2028 || scalar.value == 0x2029 {
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

/// A request id as the app sent it (number or string), echoed verbatim.
struct RequestID: Decodable {
    let json: String

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let n = try? container.decode(Int64.self) {
            json = String(n)
        } else if let s = try? container.decode(String.self), s.utf8.count <= 64 {
            json = quoted(s)
        } else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "id must be an integer or a string of at most 64 bytes")
        }
    }
}

/// One entry of set_all: a null value deletes the key.
struct EntryField: Decodable {
    var key: String
    var value: String?
}

/// Every field any request may carry (docs/APP-PROTOCOL.md). Unknown
/// fields are ignored; each operation checks the ones it needs.
struct Request: Decodable {
    var id: RequestID?
    var op: String
    // apps
    var token: String?
    var app_id: String?
    var name: String?
    var description: String?
    var icon: String?
    // data
    var ns: String?
    var key: String?
    var value: String?
    var encoding: String?
    var prefix: String?
    var keys_only: Bool?
    var entries: [EntryField]?
    var replace: Bool?
    var delta: Int64?
    var watch: UInt64?
    var limit: Int?
    /// A write's id chosen by the client: a retry with the same id is applied once.
    var request_id: String?
    // blobs (BlobOperations.swift)
    var upload: String?
    var data: String?
    var offset: UInt64?
    var length: UInt64?
    var content_type: String?
    // the manager
    var secret: String?
    var profile: String?
    var passphrase: String?
    var new_passphrase: String?
    var app: String?
    /// An approval request (apps.approve, apps.deny): the one the user saw.
    var request: String?
    var target: String?
    var access: String?
    var device: String?
    var relay: String?
    var link: String?
    // sharing with other people (ShareOperations.swift)
    var nickname: String?
    var read_only: Bool?
    var share: String?
    var base: String?
    // backups (BackupOperations.swift)
    var file: String?  // offset and data are shared with blobs above
    var recovery: Bool?

    /// Decode one message, refusing nesting deeper than `maxDepth` before
    /// the parser sees it (so no input can exhaust a thread's stack).
    static func decode(_ bytes: [UInt8], maxDepth: Int = 16) throws(DaemonError) -> Request {
        var depth = 0, inString = false, escaped = false
        for byte in bytes {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                }
                continue
            }
            switch byte {
            case UInt8(ascii: "\""): inString = true
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > maxDepth { throw DaemonError(.badRequest, "JSON nested deeper than \(maxDepth) levels") }
            case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
            default: break
            }
        }
        do {
            return try JSONDecoder().decode(Request.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw DaemonError(.badRequest, describe(error))
        } catch {
            throw DaemonError(.badRequest, "not a JSON object with an \"op\"")
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let p = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "the message" : "\"\(p)\""
        }
        switch error {
        case .keyNotFound(let key, _): return "missing \"\(key.stringValue)\""
        case .typeMismatch(let type, let context): return "\(path(context)) must be \(typeName(type))"
        case .valueNotFound(let type, let context): return "\(path(context)) must be \(typeName(type)), not null"
        case .dataCorrupted(let context):
            return context.codingPath.isEmpty ? "not valid JSON" : "\(path(context)): \(context.debugDescription)"
        @unknown default: return "malformed request"
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        case is Int64.Type, is Int.Type, is UInt64.Type: "an integer"
        case is [EntryField].Type: "an array of {\"key\", \"value\"}"
        default: "a \(type)"
        }
    }
}

/// What an app (or the manager) is told when a request fails: a stable
/// code and a message for people.
struct DaemonError: Error {
    enum Code: String {
        case badRequest = "bad_request"
        case unknownOp = "unknown_op"
        case unauthorized = "unauthorized"
        case denied = "denied"
        case locked = "locked"
        case rateLimited = "rate_limited"
        case alreadyRegistered = "already_registered"
        case notFound = "not_found"
        case invalid = "invalid"
        case tooLarge = "too_large"
        case busy = "busy"
        case unavailable = "unavailable"
        case timeout = "timeout"
        case failed = "failed"
    }

    let code: Code
    let message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    init(_ error: MasqError) {
        switch error.status {
        case .notFound: code = .notFound
        case .invalid, .config: code = .invalid
        case .tooLarge: code = .tooLarge
        case .denied: code = .locked
        case .busy: code = .busy
        case .unavailable: code = .unavailable
        case .timeout: code = .timeout
        default: code = .failed
        }
        message = error.message
    }
}

/// Bytes for the wire: the UTF-8 text, or base64 when asked (binary values).
enum ValueEncoding: String {
    case utf8, base64

    init(_ name: String?) throws(DaemonError) {
        guard let value = ValueEncoding(rawValue: name ?? "utf8") else {
            throw DaemonError(.badRequest, "\"encoding\" must be \"utf8\" or \"base64\"")
        }
        self = value
    }

    func decode(_ text: String, _ field: String) throws(DaemonError) -> [UInt8] {
        switch self {
        case .utf8: return Array(text.utf8)
        case .base64:
            guard let data = Data(base64Encoded: text) else {
                throw DaemonError(.badRequest, "\"\(field)\" is not base64")
            }
            return Array(data)
        }
    }

    /// The value as this encoding; UTF-8 values that are not valid UTF-8
    /// come back as base64 under a "_b64" name, so nothing is mangled.
    func field(_ name: String, _ bytes: [UInt8]) -> (String, JSON) {
        switch self {
        case .base64: return (name, .string(Data(bytes).base64EncodedString()))
        case .utf8:
            if let text = String(validating: bytes, as: UTF8.self) { return (name, .string(text)) }
            return (name + "_b64", .string(Data(bytes).base64EncodedString()))
        }
    }
}
