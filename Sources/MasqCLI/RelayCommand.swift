import ArgumentParser
import Dispatch
import Logging
import MasqRelay
#if canImport(Glibc)
    import Glibc
#endif

/// `masq relay`: run a relay (WebSocket rooms that forward ciphertext).
struct Relay: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a relay: devices meet in rooms; it forwards ciphertext and stores nothing.",
        discussion:
            "Serves ws://HOST:PORT/ (wss:// with --tls-cert/--tls-key), GET /healthz and GET /metrics (Prometheus).")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port (0 picks one; the bound port is printed).") var port = 7070
    @Option(help: "Largest message in bytes.") var maxFrameBytes = 1 << 20
    @Option(help: "Rooms one connection may join.") var maxRooms = 16
    @Option(help: "Members one room may hold.") var maxRoomMembers = 256
    @Option(help: "Connections the relay accepts.") var maxConnections = 20_000
    @Option(
        help: "Connections still in their HTTP request or WebSocket upgrade (the oldest makes room for a newcomer).")
    var maxHandshakes = 1_024
    @Option(help: "Seconds a connection may take to finish its HTTP request or WebSocket upgrade.")
    var handshakeTimeout: Int64 = 10
    @Option(
        help:
            "Frames per second per connection, of any kind (past it: one ERROR, and reading pauses until the budget refills)."
    ) var rate = 2_000
    @Option(help: "Bytes queued for one connection before deliveries to it are dropped (and a reply closes it).")
    var sendBuffer = 1 << 20
    @Option(help: "Seconds of silence before a connection is closed.") var idleTimeout: Int64 = 120
    @Option(help: "Seconds between pings.") var pingInterval: Int64 = 30
    @Option(help: "PEM certificate chain (enables TLS).") var tlsCert: String?
    @Option(help: "PEM private key.") var tlsKey: String?
    @Option(help: "Event loop threads (default: one per core).") var threads = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    @Option(help: "Log level (error, warning, info, debug).") var logLevel = "info"
    @Option(
        help:
            "On SIGTERM or SIGINT: seconds members get to take what is queued for them after the relay tells them it is going away (it accepts no one meanwhile)."
    ) var drainTimeout: Int64 = 10

    func execute() throws {
        guard drainTimeout >= 0 else { throw CLIError("--drain-timeout must be 0 or more") }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw CLIError("--tls-cert and --tls-key go together") }
        guard (0...65_535).contains(port), maxFrameBytes >= 64, maxRooms >= 1, maxRoomMembers >= 2, maxConnections >= 1,
            maxHandshakes >= 1, handshakeTimeout >= 1, rate >= 1, sendBuffer >= 1024, idleTimeout >= 1,
            pingInterval >= 1
        else {
            throw CLIError("limits must be positive, --send-buffer at least 1024 (and the port 0...65535)")
        }
        try bootstrapServerLogging(logLevel)
        var config = RelayConfiguration()
        config.host = host
        config.port = port
        config.maxFrameBytes = maxFrameBytes
        config.maxRoomsPerConnection = maxRooms
        config.maxMembersPerRoom = maxRoomMembers
        config.maxConnections = maxConnections
        config.maxPendingHandshakes = maxHandshakes
        config.handshakeTimeoutSeconds = handshakeTimeout
        config.messagesPerSecond = rate
        config.sendBufferBytes = sendBuffer
        config.idleTimeoutSeconds = idleTimeout
        config.pingIntervalSeconds = pingInterval
        config.tlsCertificatePath = tlsCert
        config.tlsKeyPath = tlsKey
        config.threads = max(1, threads)
        let server = RelayServer(configuration: config)
        let bound: Int
        do { bound = try server.start() } catch {
            throw CLIError("cannot start the relay on \(host):\(port): \(error)")
        }
        print("relay listening on \(tlsCert == nil ? "ws" : "wss")://\(host):\(bound)/")
        fflush(nil)
        let timeout = drainTimeout
        let terminating = onTermination { server.drain(timeout: timeout) }
        try server.wait()
        // The listener closed: when a drain is under way, it ends the process.
        while terminating() { pause() }
    }
}

/// Graceful shutdown: the first SIGTERM or SIGINT runs `drain` on its own
/// thread, then the process exits 0; a second one exits at once.
/// Returns whether a drain has begun.
@discardableResult
func onTermination(_ drain: @escaping @Sendable () -> Void) -> @Sendable () -> Bool {
    let queue = DispatchQueue(label: "masq.signals")
    let started = NIOLockedFlag()
    for sig in [SIGTERM, SIGINT] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
        source.setEventHandler {
            guard started.set() else { exit(1) }
            Thread.detach {
                drain()
                fflush(nil)
                exit(0)
            }
        }
        source.resume()
        signalSources.append(source)
    }
    return { started.isSet }
}

nonisolated(unsafe) private var signalSources: [any DispatchSourceSignal] = []

/// Set once.
private final class NIOLockedFlag: @unchecked Sendable {
    private var value = false
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    var isSet: Bool {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return value
    }

    /// True the first time.
    func set() -> Bool {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if value { return false }
        value = true
        return true
    }
}

private enum Thread {
    static func detach(_ body: @escaping @Sendable () -> Void) {
        final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        pthread_create(
            &thread, nil,
            { raw in
                let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                box.body()
                return nil
            }, box)
        pthread_detach(thread)
    }
}
