/// Failures of the crypto layer. Messages never contain key material.
public enum CryptoError: Error, Equatable, CustomStringConvertible, Sendable {
    /// Wrong sizes, invalid points or keys, unsupported parameters.
    case invalidInput(String)
    /// An AEAD tag or a signature did not verify; a replay; a wrong PSK.
    case authenticationFailed(String)
    /// A message or state out of the protocol's order or bounds.
    case protocolViolation(String)

    public var description: String {
        switch self {
        case .invalidInput(let m), .authenticationFailed(let m), .protocolViolation(let m): m
        }
    }
}
