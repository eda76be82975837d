import ArgumentParser
#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import MasqKernel
#if canImport(Glibc)
    import Glibc
#endif

/// `masq apps`: the apps a running masqd knows, and the user's decisions
/// about them — the same as the manager page, from a terminal.
struct Apps: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "List, approve, deny or revoke the apps of a running masqd, and grant access between them.",
        subcommands: [List.self, Approve.self, Deny.self, Revoke.self, Grant.self, Ungrant.self],
        defaultSubcommand: List.self)

    func execute() throws {}

    struct Target: ParsableArguments {
        @Option(
            help: ArgumentHelp(
                "masqd's home (default: ~/.local/share/masq/masqd); its masqd.json says where it listens.",
                valueName: "dir"))
        var home: String?
        @Option(help: ArgumentHelp("Profile (default: the active one).", valueName: "name"))
        var profile: String?

        func connect() throws -> DaemonConnection {
            let dataHome = getenv("XDG_DATA_HOME").map { String(cString: $0) } ?? Paths.dataHome
            let dir = FileSystem.expandHome(home ?? dataHome + "/masq/masqd")
            struct Runtime: Decodable { let url: String; let admin_secret: String }
            let bytes: [UInt8]
            do { bytes = try FileSystem.readFile(dir + "/masqd.json", limit: 4096) } catch {
                throw CLIError("no running masqd found (\(dir)/masqd.json): start masqd, or give --home")
            }
            guard let runtime = try? JSONDecoder().decode(Runtime.self, from: Data(bytes)) else {
                throw CLIError("\(dir)/masqd.json is not masqd's")
            }
            let connection = try DaemonConnection(url: runtime.url)
            struct Admin: Decodable { let admin: Bool }
            _ = try connection.call(["op": "admin", "secret": runtime.admin_secret], as: Admin.self)
            return connection
        }

        func request(_ op: String, _ fields: [String: String] = [:]) -> [String: String] {
            var r = fields
            r["op"] = op
            if let profile { r["profile"] = profile }
            return r
        }
    }

    struct List: MasqSubcommand {
        static let configuration = CommandConfiguration(
            commandName: "list", abstract: "List apps and grants (the default).")
        @OptionGroup var target: Target

        func execute() throws {
            struct Asking: Decodable { let request: String; let remote: String? }
            struct Row: Decodable { let id, name, state: String; let connections: Int; let requests: [Asking]? }
            struct Granted: Decodable { let app, target, access: String }
            struct Listing: Decodable { let profile: String; let apps: [Row]; let grants: [Granted] }
            let connection = try target.connect()
            let listing = try connection.call(target.request("apps.list"), as: Listing.self)
            print("profile \(listing.profile)")
            if listing.apps.isEmpty { print("no apps yet") }
            for app in listing.apps {
                print(
                    "\(app.state.padding(8))  \(app.id)  \"\(app.name)\"\(app.connections > 0 ? "  (\(app.connections) connected)" : "")"
                )
                for q in app.requests ?? [] {
                    print("          asking: request \(q.request)\(q.remote.map { " from \($0)" } ?? "")")
                }
            }
            for g in listing.grants {
                print("grant: \(g.app) may \(g.access == "write" ? "read and write" : "read") \(g.target)")
            }
        }
    }

    struct Approve: MasqSubcommand {
        static let configuration = CommandConfiguration(
            abstract: "Approve an app's request (that connection alone gets its token).")
        @OptionGroup var target: Target
        @Argument(help: "The app id `masq apps` shows (web:ORIGIN or native:NAME).") var app: String
        @Option(help: "The request to approve, when several connections ask as this app (`masq apps` lists them).")
        var request: String?
        func execute() throws { try decide(target, "apps.approve", app, "approved", request: request) }
    }

    struct Deny: MasqSubcommand {
        static let configuration = CommandConfiguration(abstract: "Deny an app's request.")
        @OptionGroup var target: Target
        @Argument(help: "The app id.") var app: String
        @Option(help: "The request to deny (default: the app's only one).") var request: String?
        func execute() throws { try decide(target, "apps.deny", app, "denied", request: request) }
    }

    struct Revoke: MasqSubcommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke an app: its token stops working and its connections close.")
        @OptionGroup var target: Target
        @Argument(help: "The app id.") var app: String
        func execute() throws { try decide(target, "apps.revoke", app, "revoked") }
    }

    struct Grant: MasqSubcommand {
        static let configuration = CommandConfiguration(
            abstract: "Let APP read (or with --write, read and write) TARGET's data.")
        @OptionGroup var target: Target
        @Argument(help: "The app that gets access.") var app: String
        @Argument(help: "The app whose namespace it may use.") var namespaceOf: String
        @Flag(help: "Read and write (default: read only).") var write = false
        func execute() throws {
            struct Empty: Decodable {}
            _ = try target.connect().call(
                target.request("apps.grant", ["app": app, "target": namespaceOf, "access": write ? "write" : "read"]),
                as: Empty.self)
            print("\(app) may now \(write ? "read and write" : "read") \(namespaceOf)")
        }
    }

    struct Ungrant: MasqSubcommand {
        static let configuration = CommandConfiguration(abstract: "Remove a grant.")
        @OptionGroup var target: Target
        @Argument(help: "The app that had access.") var app: String
        @Argument(help: "The app whose namespace it used.") var namespaceOf: String
        func execute() throws {
            struct Empty: Decodable {}
            _ = try target.connect().call(
                target.request("apps.ungrant", ["app": app, "target": namespaceOf]), as: Empty.self)
            print("removed the grant")
        }
    }
}

private func decide(_ target: Apps.Target, _ op: String, _ app: String, _ word: String, request: String? = nil) throws {
    struct Empty: Decodable {}
    var fields = ["app": app]
    if let request { fields["request"] = request }
    _ = try target.connect().call(target.request(op, fields), as: Empty.self)
    print("\(app) \(word)")
}

private extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}

/// A blocking WebSocket client for masqd's JSON protocol (loopback only):
/// enough for the CLI's requests; the daemon's events are skipped.
final class DaemonConnection {
    private let socket: FrameSocket
    private var buffered: [UInt8] = []
    private var nextID = 1

    init(url: String) throws {
        // http://HOST:PORT/ (the runtime file) or ws://HOST:PORT/
        var rest = Substring(url)
        for scheme in ["http://", "ws://"] where rest.hasPrefix(scheme) { rest = rest.dropFirst(scheme.count) }
        let hostPort = String(rest.prefix { $0 != "/" })
        guard let (host, port) = try? FrameSocket.endpoint("tcp:" + hostPort.replacingLocalhost()) else {
            throw CLIError("cannot reach masqd at \(url)")
        }
        socket = try FrameSocket.connect("tcp:\(host.contains(":") ? "[\(host)]" : host):\(port)")
        let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        let request =
            "GET / HTTP/1.1\r\nHost: \(hostPort)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        try socket.writeRaw(Array(request.utf8))
        while true {
            buffered += try socket.readSome()
            if let end = buffered.firstRange(of: Array("\r\n\r\n".utf8)) {
                let head = String(decoding: buffered[..<end.lowerBound], as: UTF8.self)
                guard head.hasPrefix("HTTP/1.1 101") else {
                    throw CLIError("masqd refused the connection: \(head.prefix(80))")
                }
                buffered.removeSubrange(..<end.upperBound)
                break
            }
            guard buffered.count < 16_384 else { throw CLIError("masqd answered with something else than a WebSocket") }
        }
    }

    /// Send a request; decode its result, or throw the daemon's error.
    func call<T: Decodable>(_ fields: [String: String], as type: T.Type) throws -> T {
        let id = nextID
        nextID += 1
        var body = fields.map { "\(jsonText($0.key)): \(jsonText($0.value))" }
        body.append("\"id\": \(id)")
        try sendText("{" + body.joined(separator: ", ") + "}")
        while true {
            let message = try receiveText()
            guard let answer = try? JSONDecoder().decode(DaemonAnswer.self, from: Data(message)), answer.id == id,
                let ok = answer.ok
            else { continue }
            guard ok else {
                throw CLIError("masqd: \(answer.error?.message ?? "request failed") (\(answer.error?.code ?? "?"))")
            }
            do { return try JSONDecoder().decode(DaemonResult<T>.self, from: Data(message)).result } catch {
                throw CLIError("masqd answered in an unexpected form: \(error)")
            }
        }
    }

    private func sendText(_ text: String) throws {
        let payload = Array(text.utf8)
        var frame: [UInt8] = [0x81]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else if payload.count <= 65_535 {
            frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        } else {
            frame.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) {
                frame.append(UInt8(truncatingIfNeeded: payload.count >> shift))
            }
        }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        try socket.writeRaw(frame)
    }

    /// The next text or binary message (control frames handled: ping answered, close ends).
    private func receiveText() throws -> [UInt8] {
        while true {
            if let (opcode, payload, used) = parseFrame() {
                buffered.removeSubrange(..<used)
                switch opcode {
                case 1, 2: return payload
                case 8: throw CLIError("masqd closed the connection")
                case 9:
                    var pong: [UInt8] = [0x8A, 0x80 | UInt8(min(payload.count, 125)), 0, 0, 0, 0]
                    pong += payload.prefix(125)
                    try socket.writeRaw(pong)
                default: continue
                }
            } else {
                buffered += try socket.readSome()
            }
        }
    }

    private func parseFrame() -> (UInt8, [UInt8], Int)? {
        guard buffered.count >= 2 else { return nil }
        var length = Int(buffered[1] & 0x7F)
        var offset = 2
        if length == 126 {
            guard buffered.count >= 4 else { return nil }
            length = Int(buffered[2]) << 8 | Int(buffered[3])
            offset = 4
        } else if length == 127 {
            guard buffered.count >= 10 else { return nil }
            length = buffered[2..<10].reduce(0) { $0 << 8 | Int($1) }
            offset = 10
        }
        guard length <= 64 << 20, buffered.count >= offset + length else { return nil }
        return (buffered[0] & 0x0F, Array(buffered[offset..<(offset + length)]), offset + length)
    }
}

private struct DaemonFailure: Decodable { let code: String; let message: String }
private struct DaemonAnswer: Decodable { let id: Int?; let ok: Bool?; let error: DaemonFailure? }
private struct DaemonResult<R: Decodable>: Decodable { let result: R }

private extension String {
    /// "localhost:PORT" -> "127.0.0.1:PORT" (masqd listens on both).
    func replacingLocalhost() -> String { hasPrefix("localhost:") ? "127.0.0.1:" + dropFirst(10) : self }
}

private func jsonText(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}
