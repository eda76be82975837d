import ArgumentParser
import Logging
import MasqConnectoid
import MasqConnectoidPostgres
#if canImport(Glibc)
    import Glibc
#endif

/// `masq connectoid serve`: run a Connectoid mailbox service.
struct Connectoid: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The Connectoid store-and-forward mailbox service.",
        subcommands: [Serve.self])

    struct Serve: MasqSubcommand {
        static let configuration = CommandConfiguration(
            abstract: "Serve mailboxes: POST JSON send/check/receive; GET publishes the limits; /healthz, /metrics.",
            discussion:
                "Messages are kept for --retention seconds after arrival; a mailbox nobody checks for --mailbox-idle seconds is deleted. They live in a SQLite file (--db, one instance) or in PostgreSQL (--store postgres://user@host:port/db), which several instances behind a load balancer share: quotas hold across them, and one of them runs each collection."
        )

        @Option(help: "Address to listen on.") var host = "127.0.0.1"
        @Option(help: "Port (0 picks one; the bound port is printed).") var port = 7080
        @Option(help: ArgumentHelp("The SQLite file of mailboxes and messages.", valueName: "path")) var db =
            "connectoid.sqlite3"
        @Option(
            help: ArgumentHelp(
                "Where mailboxes live: a SQLite path (as --db), or postgres://user[:password]@host[:port]/database[?sslmode=disable|prefer|require] shared by a fleet (the password may come from PGPASSWORD instead).",
                valueName: "url")) var store: String?
        @Option(
            help: ArgumentHelp(
                "A reverse proxy's address (repeatable): its X-Forwarded-For names the client that rate limits count.",
                valueName: "address")) var trustProxy: [String] = []
        @Option(help: "Connections to PostgreSQL (and threads running requests against it).") var storeConnections = 16
        @Option(
            help:
                "On SIGTERM or SIGINT: seconds open connections get to finish the requests they sent (no new connection is accepted meanwhile)."
        ) var drainTimeout: Int64 = 10
        @Option(help: "Seconds a message is kept after it arrives.") var retention: Int64 = 3_600
        @Option(help: "Seconds without a check after which a mailbox is deleted.") var mailboxIdle: Int64 = 30 * 86_400
        @Option(help: "Seconds a challenge stays valid.") var challengeTtl: Int64 = 60
        @Option(help: "Largest message in bytes (decoded).") var maxMessageBytes = 65_536 + 4_096
        @Option(help: "Messages one mailbox may hold.") var maxMessages = 1_000
        @Option(help: "Bytes one mailbox may hold.") var maxMailboxBytes = 16 << 20
        @Option(help: "Client rate limits apply per IPv4 prefix of this length.") var ipv4Prefix = 32
        @Option(help: "Client rate limits apply per IPv6 prefix of this length (one subscriber usually holds a /64).")
        var ipv6Prefix = 64
        @Option(help: "Keys each rate limiter holds before evicting its least recently used half.") var maxLimiterKeys =
            100_000
        @Option(help: "Connections open at once.") var maxConnections = 10_000
        @Option(
            help: ArgumentHelp(
                "Connections open at once from one address (its --ipv4-prefix/--ipv6-prefix); more are closed at once. Behind a reverse proxy, raise it.",
                valueName: "n")) var maxConnectionsPerAddress = 32
        @Option(help: "Seconds a connection has to complete each request (slow or idle ones are closed).")
        var requestTimeout: Int64 = 20
        @Option(help: "Largest receive limit.") var maxReceive = 100
        @Option(help: "Sends per mailbox per minute.") var mailboxRate = 120
        @Option(help: "Bursts above the mailbox rate.") var mailboxBurst = 30
        @Option(help: "Requests per client address per second.") var clientRate = 50
        @Option(help: "Bursts above the client rate.") var clientBurst = 100
        @Option(help: "PRAGMA synchronous of the file (OFF, NORMAL, FULL).") var synchronous = "NORMAL"
        @Option(help: "PEM certificate chain (enables TLS).") var tlsCert: String?
        @Option(help: "PEM private key.") var tlsKey: String?
        @Option(help: "Event loop threads (the default is the number of cores).") var threads = max(
            1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        @Option(help: "Log level (error, warning, info, debug).") var logLevel = "info"

        func execute() throws {
            guard (tlsCert == nil) == (tlsKey == nil) else { throw CLIError("--tls-cert and --tls-key go together") }
            guard (0...65_535).contains(port), retention >= 1, mailboxIdle >= 1, challengeTtl >= 1,
                maxMessageBytes >= 256, maxMessages >= 1,
                maxReceive >= 1, mailboxRate >= 1, mailboxBurst >= 1, clientRate >= 1, clientBurst >= 1,
                (1...64).contains(threads)
            else {
                throw CLIError(
                    "limits must be positive (--max-message-bytes at least 256, the port 0...65535, threads 1...64)")
            }
            guard maxMailboxBytes >= maxMessageBytes, (0...32).contains(ipv4Prefix), (0...128).contains(ipv6Prefix),
                maxLimiterKeys >= 16, maxConnections >= 1, requestTimeout >= 1
            else {
                throw CLIError(
                    "--max-mailbox-bytes must be at least --max-message-bytes; --ipv4-prefix 0...32, --ipv6-prefix 0...128, --max-limiter-keys at least 16"
                )
            }
            guard drainTimeout >= 0, (1...256).contains(storeConnections) else {
                throw CLIError("--drain-timeout must be 0 or more, --store-connections 1...256")
            }
            guard maxConnectionsPerAddress >= 1 else {
                throw CLIError("--max-connections-per-address must be at least 1")
            }
            guard ["OFF", "NORMAL", "FULL"].contains(synchronous.uppercased()) else {
                throw CLIError("--synchronous must be OFF, NORMAL or FULL")
            }
            try bootstrapServerLogging(logLevel)
            var config = ConnectoidConfiguration()
            config.host = host
            config.port = port
            config.databasePath = db
            config.synchronous = synchronous.uppercased()
            config.limits.retentionSeconds = retention
            config.limits.mailboxIdleSeconds = mailboxIdle
            config.limits.challengeSeconds = challengeTtl
            config.limits.maxMessageBytes = maxMessageBytes
            config.limits.maxMessagesPerMailbox = maxMessages
            config.limits.maxBytesPerMailbox = maxMailboxBytes
            config.ipv4Prefix = ipv4Prefix
            config.ipv6Prefix = ipv6Prefix
            config.maxLimiterKeys = maxLimiterKeys
            config.maxConnections = maxConnections
            config.maxConnectionsPerAddress = maxConnectionsPerAddress
            config.requestTimeoutSeconds = requestTimeout
            config.limits.maxReceiveLimit = maxReceive
            config.limits.sendsPerMailboxPerMinute = mailboxRate
            config.limits.requestsPerClientPerSecond = clientRate
            config.mailboxBurst = mailboxBurst
            config.clientBurst = clientBurst
            config.collectEverySeconds = min(60, max(1, retention / 4))
            config.tlsCertificatePath = tlsCert
            config.tlsKeyPath = tlsKey
            config.threads = threads
            config.storeThreads = storeConnections
            config.trustedProxies = Set(trustProxy)
            config.drainSeconds = drainTimeout
            let service: ConnectoidService
            let where_ = store ?? db
            do {
                if PostgresLocation.matches(where_) {
                    var location = try PostgresLocation(where_)
                    if location.password == nil, let env = getenv("PGPASSWORD") {
                        location.password = String(cString: env)
                    }
                    let backend = try PostgresMailboxStore(location: location, maxConnections: storeConnections)
                    service = try ConnectoidService(configuration: config, backend: backend)
                    Logger(label: "masq.connectoid").info(
                        "mailboxes in PostgreSQL", metadata: ["store": "\(location.redacted)"])
                } else {
                    config.databasePath = where_
                    service = try ConnectoidService(configuration: config)
                }
            } catch {
                throw CLIError(
                    "cannot open the store \(PostgresLocation.matches(where_) ? ((try? PostgresLocation(where_))?.redacted ?? "postgres://…") : where_): \(error.message)"
                )
            }
            let server = ConnectoidServer(service: service)
            let bound: Int
            do { bound = try server.start() } catch { throw CLIError("cannot listen on \(host):\(port): \(error)") }
            print("connectoid listening on \(tlsCert == nil ? "http" : "https")://\(host):\(bound)/")
            fflush(nil)
            let timeout = drainTimeout
            let terminating = onTermination { server.drain(timeout: timeout) }
            try server.wait()
            while terminating() { pause() }
        }
    }
}
