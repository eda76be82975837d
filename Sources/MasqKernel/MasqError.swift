import CMasq

/// Status codes of the C API (masq.h), as a Swift type. The raw values are
/// the header's MASQ_* macros; a test checks the two never drift apart.
public enum MasqStatus: Int32, Sendable, CaseIterable {
    case ok = 0
    case invalid = 1
    case notFound = 2
    case tooLarge = 3
    case config = 4
    case plugin = 5
    case abi = 6
    case io = 7
    case corrupt = 8
    case closed = 9
    case busy = 10
    case noMemory = 11
    case unsupported = 12
    case denied = 13
    case badSignature = 14
    case funds = 15
    case unavailable = 16
    case timeout = 17
    case `internal` = 18

    /// The C name, e.g. "MASQ_E_NOT_FOUND".
    public var name: String {
        switch self {
        case .ok: "MASQ_OK"
        case .invalid: "MASQ_E_INVALID"
        case .notFound: "MASQ_E_NOT_FOUND"
        case .tooLarge: "MASQ_E_TOO_LARGE"
        case .config: "MASQ_E_CONFIG"
        case .plugin: "MASQ_E_PLUGIN"
        case .abi: "MASQ_E_ABI"
        case .io: "MASQ_E_IO"
        case .corrupt: "MASQ_E_CORRUPT"
        case .closed: "MASQ_E_CLOSED"
        case .busy: "MASQ_E_BUSY"
        case .noMemory: "MASQ_E_NOMEM"
        case .unsupported: "MASQ_E_UNSUPPORTED"
        case .denied: "MASQ_E_DENIED"
        case .badSignature: "MASQ_E_BAD_SIGNATURE"
        case .funds: "MASQ_E_FUNDS"
        case .unavailable: "MASQ_E_UNAVAILABLE"
        case .timeout: "MASQ_E_TIMEOUT"
        case .internal: "MASQ_E_INTERNAL"
        }
    }
}

/// Every failure in the kernel: a status for the C API and a message a
/// person can act on. Messages never contain stored values or secrets.
public struct MasqError: Error, CustomStringConvertible, Sendable, Equatable {
    public let status: MasqStatus
    public let message: String

    public init(_ status: MasqStatus, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { message }

    package static func invalid(_ m: String) -> MasqError { MasqError(.invalid, m) }
    package static func config(_ m: String) -> MasqError { MasqError(.config, m) }
    package static func plugin(_ m: String) -> MasqError { MasqError(.plugin, m) }
    package static func corrupt(_ m: String) -> MasqError { MasqError(.corrupt, m) }
    package static func tooLarge(_ m: String) -> MasqError { MasqError(.tooLarge, m) }
}
