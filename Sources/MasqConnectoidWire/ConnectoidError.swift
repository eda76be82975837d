/// The service's errors: a machine-readable code beside the draft's human
/// strings ("Too often", "Too big").
public struct ConnectoidError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, CaseIterable {
        case badRequest = "bad_request"
        case badKey = "bad_key"
        case tooBig = "too_big"
        case rateLimited = "rate_limited"
        case unknownAction = "unknown_action"
        case noChallenge = "no_challenge"
        case wrongAnswer = "wrong_answer"
        case expiredAnswer = "expired_answer"
        case reusedAnswer = "reused_answer"
        case mailboxFull = "mailbox_full"
        case unavailable = "unavailable"
        case notFound = "not_found"

        /// The HTTP status the service answers with.
        public var httpStatus: Int {
            switch self {
            case .badRequest, .badKey, .unknownAction: 400
            case .tooBig: 413
            case .rateLimited: 429
            case .noChallenge, .wrongAnswer, .expiredAnswer, .reusedAnswer: 403
            case .mailboxFull: 507
            case .unavailable: 503
            case .notFound: 404
            }
        }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public static func badRequest(_ message: String) -> ConnectoidError { .init(.badRequest, message) }
    public static func badKey(_ message: String) -> ConnectoidError { .init(.badKey, message) }
    public static let tooOften = ConnectoidError(.rateLimited, "Too often")
    public static let tooBig = ConnectoidError(.tooBig, "Too big")

    public var description: String { "\(message) (\(code.rawValue))" }
}
