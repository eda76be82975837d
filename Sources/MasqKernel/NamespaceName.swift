/// An application's namespace: 1...limits.maxNamespaceBytes bytes of UTF-8
/// without control characters. Validated once at the API boundary.
public struct NamespaceName: Sendable, Hashable, CustomStringConvertible {
    public let string: String
    package let bytes: [UInt8]

    public var description: String { string }

    public init(_ string: String, limits: Limits) throws(MasqError) {
        try self.init(utf8: Array(string.utf8), limits: limits)
    }

    /// Validate raw bytes (from C): UTF-8, no control characters, within the limit.
    public init(utf8 bytes: [UInt8], limits: Limits) throws(MasqError) {
        guard !bytes.isEmpty else { throw .invalid("namespace must not be empty") }
        guard bytes.count <= limits.maxNamespaceBytes else {
            throw .tooLarge(
                "namespace is \(bytes.count) bytes; the limit is \(limits.maxNamespaceBytes) (limits.max_namespace_bytes)"
            )
        }
        guard let string = String(validating: bytes, as: UTF8.self) else {
            throw .invalid("namespace is not valid UTF-8")
        }
        guard !string.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw .invalid("namespace must not contain control characters")
        }
        self.string = string
        self.bytes = bytes
    }

    /// Namespaces read back from the store (already validated when written).
    init(storedBytes bytes: [UInt8]) throws(MasqError) {
        guard !bytes.isEmpty, let string = String(validating: bytes, as: UTF8.self) else {
            throw .corrupt("stored namespace is not valid UTF-8")
        }
        self.string = string
        self.bytes = bytes
    }
}
