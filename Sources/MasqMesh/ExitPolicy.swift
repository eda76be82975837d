import Dispatch
#if canImport(Glibc)
    import Glibc
#endif

/// An IPv4 or IPv6 address (IPv4-mapped IPv6 is IPv4).
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// 4 bytes (IPv4) or 16 (IPv6).
    public let bytes: [UInt8]

    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        if bytes.count == 16 && bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
            self.bytes = Array(bytes[12..<16])
        } else {
            self.bytes = bytes
        }
    }

    /// A numeric address (`inet_pton`: dotted quad, or IPv6 with or without brackets).
    public init?(_ text: String) {
        var t = Substring(text)
        if t.hasPrefix("[") && t.hasSuffix("]") { t = t.dropFirst().dropLast() }
        var v4 = in_addr()
        if inet_pton(AF_INET, String(t), &v4) == 1 {
            self.init(bytes: withUnsafeBytes(of: v4) { Array($0) })
            return
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, String(t), &v6) == 1 {
            self.init(bytes: withUnsafeBytes(of: v6) { Array($0) })
            return
        }
        return nil
    }

    public var isV4: Bool { bytes.count == 4 }

    public var description: String {
        var out = [CChar](repeating: 0, count: 64)
        if isV4 {
            var a = in_addr()
            withUnsafeMutableBytes(of: &a) { $0.copyBytes(from: bytes) }
            inet_ntop(AF_INET, &a, &out, 64)
        } else {
            var a = in6_addr()
            withUnsafeMutableBytes(of: &a) { $0.copyBytes(from: bytes) }
            inet_ntop(AF_INET6, &a, &out, 64)
        }
        return String(cString: out)
    }

    /// The first `bits` bits, as a group name ("v4:10.1.0.0/16"): how the node
    /// counts neighbours per address and keeps adjacent hops apart.
    public func prefix(_ bits: Int) -> String {
        let width = bytes.count * 8
        let n = max(0, min(bits, width))
        var masked = bytes
        for i in 0..<masked.count {
            let keep = max(0, min(8, n - 8 * i))
            masked[i] &= keep == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
        }
        return (isV4 ? "v4:" : "v6:") + (IPAddress(bytes: masked)?.description ?? "?") + "/\(n)"
    }
}

/// A block of addresses: an address and a prefix length.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let bits: Int

    public init?(_ address: IPAddress, bits: Int) {
        guard (0...(address.bytes.count * 8)).contains(bits) else { return nil }
        self.address = address
        self.bits = bits
    }

    /// `10.0.0.0/8`, `fd00::/8`, `[fd00::]/8`, or a single address.
    public init?(_ text: String) {
        var addressText = Substring(text), bitsText: Substring?
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            addressText = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix("/") else { return nil }
                bitsText = rest.dropFirst()
            }
        } else if let slash = text.firstIndex(of: "/") {
            addressText = text[..<slash]
            bitsText = text[text.index(after: slash)...]
        }
        guard let address = IPAddress(String(addressText)) else { return nil }
        var bits = address.bytes.count * 8
        if let bitsText {
            guard let n = Int(bitsText) else { return nil }
            // An IPv4-mapped block written in IPv6 (::ffff:10.0.0.0/104) is the IPv4 block.
            bits = address.isV4 && addressText.contains(":") ? n - 96 : n
        }
        self.init(address, bits: bits)
    }

    public func contains(_ other: IPAddress) -> Bool {
        guard other.bytes.count == address.bytes.count else { return false }
        var left = bits
        for i in 0..<address.bytes.count where left > 0 {
            let n = min(8, left)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - n))
            if address.bytes[i] & mask != other.bytes[i] & mask { return false }
            left -= n
        }
        return true
    }

    public var description: String { (address.isV4 ? address.description : "[\(address)]") + "/\(bits)" }
}

/// Where an exit connects for others. A rule is an address block (or `*`,
/// any address) and a port range:
///
///     RULE  = ADDRESS[/BITS][:PORTS] | [IPV6][/BITS][:PORTS] | IPV6[/BITS] | *[:PORTS]
///     PORTS = N | N-M | *
///
/// A destination — the address actually connected, after the exit resolved
/// the name itself — is refused when a deny rule matches; allowed when an
/// allow rule matches; refused when it is in one of the blocks below or is
/// one of the node's own addresses; allowed otherwise. So an allow rule is
/// an exception to the built-in refusals (a service on the exit's LAN meant
/// for the mesh), a deny rule is refused whatever else says.
///
/// Built in: unspecified (0.0.0.0/8, ::), loopback (127/8, ::1), private
/// (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16 — cloud
/// metadata at 169.254.169.254 —, fe80::/10), multicast (224/4, ff00::/8),
/// and beside them shared (100.64/10, carrier NAT; some clouds' metadata),
/// IETF and benchmarking blocks (192.0.0/24, 198.18/15), reserved and
/// broadcast (240/4), deprecated site-local (fec0::/10), IPv4-compatible
/// IPv6 (::/96), discard-only (100::/64), NAT64 (64:ff9b::/96 whose
/// embedded IPv4 address is refused, 64:ff9b:1::/48). IPv4-mapped IPv6
/// (::ffff:a.b.c.d) is its IPv4 address.
public struct ExitPolicy: Sendable, Equatable {
    public struct Rule: Sendable, Equatable, CustomStringConvertible {
        /// nil: any address.
        public var network: IPNetwork?
        public var ports: ClosedRange<Int>

        public init(network: IPNetwork?, ports: ClosedRange<Int> = 1...65_535) {
            self.network = network
            self.ports = ports
        }

        public init?(_ text: String) {
            var addressPart = Substring(text), portPart: Substring?
            if text.hasPrefix("[") {
                // [IPV6][/BITS][:PORTS]
                guard let close = text.firstIndex(of: "]") else { return nil }
                let rest = text[text.index(after: close)...]
                if let colon = rest.firstIndex(of: ":") {
                    addressPart = text[..<colon]
                    portPart = rest[rest.index(after: colon)...]
                }
            } else if text.filter({ $0 == ":" }).count == 1 {
                // IPV4[/BITS]:PORTS or *:PORTS
                let colon = text.firstIndex(of: ":")!
                addressPart = text[..<colon]
                portPart = text[text.index(after: colon)...]
            }
            if addressPart == "*" {
                network = nil
            } else {
                guard let n = IPNetwork(String(addressPart)) else { return nil }
                network = n
            }
            guard let parsed = Self.ports(portPart) else { return nil }
            ports = parsed
        }

        private static func ports(_ text: Substring?) -> ClosedRange<Int>? {
            guard let text, text != "*" else { return 1...65_535 }
            let parts = text.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(parts.count), let low = Int(parts[0]), let high = Int(parts.last!), 1 <= low,
                low <= high, high <= 65_535
            else {
                return nil
            }
            return low...high
        }

        func matches(_ address: IPAddress, _ port: Int) -> Bool {
            ports.contains(port) && (network?.contains(address) ?? true)
        }

        public var description: String {
            let p =
                ports == 1...65_535
                ? "*"
                : ports.lowerBound == ports.upperBound
                    ? "\(ports.lowerBound)" : "\(ports.lowerBound)-\(ports.upperBound)"
            return (network?.description ?? "*") + ":" + p
        }
    }

    public var allow: [Rule] = []
    public var deny: [Rule] = []

    public init(allow: [Rule] = [], deny: [Rule] = []) {
        self.allow = allow
        self.deny = deny
    }

    static let refusedBlocks: [IPNetwork] = [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
        "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
        "::/96", "100::/64", "64:ff9b:1::/48", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8"
    ].map { IPNetwork($0)! }
    static let nat64 = IPNetwork("64:ff9b::/96")!

    /// Why a destination is refused (nil: allowed). `own`: the node's addresses.
    public func refusal(_ address: IPAddress, port: Int, own: Set<IPAddress>) -> String? {
        if deny.contains(where: { $0.matches(address, port) }) { return "a deny rule" }
        if allow.contains(where: { $0.matches(address, port) }) { return nil }
        if own.contains(address) { return "the node's own address" }
        if Self.refusedBlocks.contains(where: { $0.contains(address) }) {
            return "a loopback, private, link-local, multicast or reserved address"
        }
        if Self.nat64.contains(address), let inner = IPAddress(bytes: Array(address.bytes[12..<16])),
            Self.refusedBlocks.contains(where: { $0.contains(inner) }) || own.contains(inner)
        {
            return "a NAT64 address of a refused IPv4 address"
        }
        return nil
    }

    /// The addresses of this machine's interfaces (`getifaddrs`), and `host`.
    public static func ownAddresses(host: String) -> Set<IPAddress> {
        var out: Set<IPAddress> = []
        if let a = IPAddress(host) { out.insert(a) }
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return out }
        defer { freeifaddrs(list) }
        var cursor = list
        while let entry = cursor {
            if let sa = entry.pointee.ifa_addr {
                switch Int32(sa.pointee.sa_family) {
                case AF_INET:
                    let a = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                        withUnsafeBytes(of: p.pointee.sin_addr) { Array($0) }
                    }
                    if let ip = IPAddress(bytes: a) { out.insert(ip) }
                case AF_INET6:
                    let a = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                        withUnsafeBytes(of: p.pointee.sin6_addr) { Array($0) }
                    }
                    if let ip = IPAddress(bytes: a) { out.insert(ip) }
                default: break
                }
            }
            cursor = entry.pointee.ifa_next
        }
        return out
    }

    /// Resolve `host` with the system's resolver (a numeric address in any
    /// form it accepts, or a name): every address, at most 16. Blocking: run
    /// it off the event loop.
    public static func resolve(_ host: String) -> [IPAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0 else { return [] }
        defer { freeaddrinfo(result) }
        var out: [IPAddress] = []
        var cursor = result
        while let entry = cursor, out.count < 16 {
            if let sa = entry.pointee.ai_addr {
                var ip: IPAddress?
                switch entry.pointee.ai_family {
                case AF_INET:
                    ip = sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { p in
                        IPAddress(bytes: withUnsafeBytes(of: p.pointee.sin_addr) { Array($0) })
                    }
                case AF_INET6:
                    ip = sa.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                        IPAddress(bytes: withUnsafeBytes(of: p.pointee.sin6_addr) { Array($0) })
                    }
                default: break
                }
                if let ip, !out.contains(ip) { out.append(ip) }
            }
            cursor = entry.pointee.ai_next
        }
        return out
    }

    /// Names are resolved here, off the node's loop (getaddrinfo blocks).
    static let resolver = DispatchQueue(label: "masq.exit.resolve", attributes: .concurrent)
}
