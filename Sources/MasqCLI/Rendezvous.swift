import MasqKernel
#if canImport(Glibc)
    import Glibc
#endif

/// A direct TCP rendezvous for pairing: `tcp:HOST:PORT` in a link's `via`.
/// Frames are a u32 big-endian length then the bytes. It is the stand-in
/// transport until the relay transport exists; the pairing flow itself is
/// transport-agnostic (PairingFlow in the kernel).
final class FrameSocket {
    let fd: Int32
    static let timeoutSeconds = 30

    init(fd: Int32) {
        self.fd = fd
        var tv = timeval(tv_sec: FrameSocket.timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ frame: [UInt8]) throws {
        let n = UInt32(frame.count)
        try writeAll(
            [
                UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8),
                UInt8(truncatingIfNeeded: n)
            ] + frame)
    }

    func receive() throws -> [UInt8] {
        let header = try readExactly(4)
        let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        guard length > 0 && length <= PairingFlow.maxFrame else {
            throw CLIError("the other device sent a malformed frame (\(length) bytes)")
        }
        return try readExactly(length)
    }

    /// Raw bytes (a protocol on top frames them itself).
    func writeRaw(_ bytes: [UInt8]) throws { try writeAll(bytes) }

    /// Whatever arrives next (at least one byte).
    func readSome() throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                throw CLIError("the other side stopped answering (timeout)")
            }
            guard n > 0 else { throw CLIError("the other side closed the connection") }
            return Array(out[0..<n])
        }
    }

    private func writeAll(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw CLIError("connection lost while sending: \(String(cString: strerror(errno)))") }
            offset += n
        }
    }

    private func readExactly(_ count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let n = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + offset, count - offset, 0) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                throw CLIError("the other device stopped answering (timeout)")
            }
            guard n > 0 else { throw CLIError("the other device closed the connection") }
            offset += n
        }
        return out
    }

    /// Parse "tcp:HOST:PORT" (IPv4 or [IPv6]).
    static func endpoint(_ via: String) throws -> (host: String, port: UInt16) {
        guard via.hasPrefix("tcp:"), let colon = via.lastIndex(of: ":"), colon > via.index(via.startIndex, offsetBy: 3),
            let port = UInt16(via[via.index(after: colon)...])
        else {
            throw CLIError("cannot reach '\(via)': this version pairs over tcp:HOST:PORT only")
        }
        var host = String(via[via.index(via.startIndex, offsetBy: 4)..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    static func connect(_ via: String) throws -> FrameSocket {
        let (host, port) = try endpoint(via)
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else {
            throw CLIError("cannot resolve \(host)")
        }
        defer { freeaddrinfo(result) }
        let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
        guard fd >= 0 else { throw CLIError("cannot create a socket: \(String(cString: strerror(errno)))") }
        guard Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw CLIError("cannot reach the pairing device at \(host):\(port): \(reason)")
        }
        return FrameSocket(fd: fd)
    }
}

/// A listening TCP socket for `masq pair`.
final class Listener {
    let fd: Int32
    let endpoint: String

    init(_ address: String) throws {
        let parts = address.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let port = UInt16(parts[1]) else {
            throw CLIError("--listen takes IPV4:PORT, e.g. 127.0.0.1:0")
        }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, String(parts[0]), &addr.sin_addr) == 1 else {
            throw CLIError("--listen: '\(parts[0])' is not an IPv4 address")
        }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CLIError("cannot create a socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(fd, 4) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw CLIError("cannot listen on \(address): \(reason)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.fd = fd
        endpoint = "tcp:\(parts[0]):\(UInt16(bigEndian: actual.sin_port))"
    }

    deinit { close(fd) }

    /// The next connection, or nil once `deadline` (monotonic seconds) passes.
    func accept(until deadline: Double) -> FrameSocket? {
        while true {
            let remaining = deadline - monotonicSeconds()
            if remaining <= 0 { return nil }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(min(remaining, 1) * 1000))
            if ready > 0 {
                let client = Glibc.accept(fd, nil, nil)
                if client >= 0 { return FrameSocket(fd: client) }
            }
        }
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
