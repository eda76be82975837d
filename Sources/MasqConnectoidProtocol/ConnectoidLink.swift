import MasqCrypto

/// A Connectoid link: `BASE?connectoid=PUB.URL.EXT#SECRET`.
///
/// - PUB: base64url of the mailbox's P-384 public key, compressed (49 bytes:
///   a 66-character part instead of 130 for the uncompressed point).
/// - URL: base64url of the service URL, or of several separated by single
///   spaces (redundancy: messages go to all of them).
/// - EXT: the mailbox extension, opaque app data (may be empty). The service
///   names a mailbox by (PUB, EXT) and receives both in every request exactly
///   as they appear in the link.
/// - SECRET (fragment; browsers and messengers do not send it to servers):
///   what the sharer's side needs to trust the first claimant. Optional in
///   the format, required by Masq's share flow.
public struct ConnectoidLink: Equatable, Sendable {
    /// Compressed SEC1 point, 49 bytes.
    public var pub: [UInt8]
    public var services: [String]
    public var ext: String
    public var secret: [UInt8]?
    public var base: String

    public static let defaultBase = "masq://share/"
    public static let maxServices = 8

    public init(
        pub: [UInt8], services: [String], ext: String = "", secret: [UInt8]? = nil,
        base: String = ConnectoidLink.defaultBase
    ) {
        self.pub = pub
        self.services = services
        self.ext = ext
        self.secret = secret
        self.base = base
    }

    /// The mailbox part, `PUB.URL.EXT`, which also names a mailbox to transports.
    public var mailbox: String {
        Base64URL.encode(pub) + "." + Base64URL.encode(Array(services.joined(separator: " ").utf8)) + "." + ext
    }

    public var pubText: String { Base64URL.encode(pub) }

    public var text: String {
        let separator = base.contains("?") ? "&" : "?"
        var out = base + separator + "connectoid=" + mailbox
        if let secret { out += "#" + Base64URL.encode(secret) }
        return out
    }

    /// Parse a whole link (any base; the `connectoid` query parameter and the
    /// fragment are read) or a bare `PUB.URL.EXT`.
    public static func parse(_ text: String) throws(ConnectoidError) -> ConnectoidLink {
        guard text.utf8.count <= 8_192 else { throw .badRequest("link longer than 8192 bytes") }
        var rest = Substring(text)
        var secret: [UInt8]?
        if let hash = rest.firstIndex(of: "#") {
            let fragment = String(rest[rest.index(after: hash)...])
            rest = rest[..<hash]
            if !fragment.isEmpty {
                guard let bytes = Base64URL.decode(fragment) else {
                    throw .badRequest("the link's fragment is not base64url")
                }
                secret = bytes
            }
        }
        var base = ConnectoidLink.defaultBase
        var value = rest
        if let question = rest.firstIndex(of: "?") {
            base = String(rest[..<question])
            let query = rest[rest.index(after: question)...]
            guard let parameter = query.split(separator: "&").first(where: { $0.hasPrefix("connectoid=") }) else {
                throw .badRequest("the link has no connectoid= parameter")
            }
            value = parameter.dropFirst("connectoid=".count)
        } else if rest.contains("://") {
            throw .badRequest("the link has no connectoid= parameter")
        }
        let parts = value.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3 else {
            throw .badRequest("connectoid= must be PUB.URL or PUB.URL.EXT")
        }
        let pub = try checkedPublicKey(String(parts[0]))
        guard let urlBytes = Base64URL.decode(String(parts[1])), let urls = String(validating: urlBytes, as: UTF8.self)
        else {
            throw .badRequest("the link's URL part is not base64url of UTF-8")
        }
        let services = urls.split(separator: " ").map(String.init)
        guard !services.isEmpty, services.count <= maxServices else {
            throw .badRequest("the link names no service or more than \(maxServices)")
        }
        for service in services { try checkServiceURL(service) }
        let ext = parts.count == 3 ? String(parts[2]) : ""
        try checkExt(ext)
        return ConnectoidLink(pub: pub, services: services, ext: ext, secret: secret, base: base)
    }

    /// A base64url P-384 point (either SEC1 form) → its compressed form.
    public static func checkedPublicKey(_ text: String) throws(ConnectoidError) -> [UInt8] {
        guard text.utf8.count <= 200, let bytes = Base64URL.decode(text) else {
            throw .badRequest("pub is not base64url")
        }
        guard bytes.count == 49 || bytes.count == 97, let compressed = try? P384.compress(bytes) else {
            throw .badKey("pub is not a P-384 public key")
        }
        return compressed
    }

    public static func checkServiceURL(_ url: String) throws(ConnectoidError) {
        guard url.utf8.count <= 2_048, url.hasPrefix("http://") || url.hasPrefix("https://"),
            !url.contains(where: { $0 == " " || $0.isNewline })
        else {
            throw .badRequest("service URL must be http:// or https:// without spaces")
        }
    }

    /// EXT: up to 256 base64url characters (empty allowed).
    public static func checkExt(_ ext: String) throws(ConnectoidError) {
        guard ext.utf8.count <= 256, ext.utf8.allSatisfy({ Base64URL.values[$0] != nil }) else {
            throw .badRequest("ext must be at most 256 base64url characters")
        }
    }
}
