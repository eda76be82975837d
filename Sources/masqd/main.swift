// masqd: the local store daemon. Apps on this computer (native programs,
// or web pages in any browser) reach the store over a localhost WebSocket
// after the user approves them; the manager page it serves handles
// profiles, apps, devices and pairing. See docs/APP-PROTOCOL.md.
import ArgumentParser
import Dispatch
import MasqDaemon
import CMasqSupport
import MasqKernel
#if canImport(Glibc)
    import Glibc
#endif

@main
struct Masqd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "masqd",
        abstract:
            "Run the local store daemon: apps reach the store over a localhost WebSocket once the user approves them.",
        discussion: """
            Prints the manager's URL (with this run's admin secret in its fragment) and writes it, with the \
            port, to HOME/masqd.json (mode 0600) for `masq apps`. Listens on loopback addresses only.
            """)

    @Option(
        help: ArgumentHelp(
            "Profiles and app registries live here (default: ~/.local/share/masq/masqd).", valueName: "dir"))
    var home: String?
    @Option(
        help: ArgumentHelp(
            "localhost:PORT (127.0.0.1 and ::1), 127.0.0.1:PORT or [::1]:PORT; port 0 picks one.", valueName: "endpoint"
        ))
    var listen = "localhost:7071"
    @Option(
        help: ArgumentHelp(
            "Directory of the manager page and masq.js (repeatable; default: the installed or source copy).",
            valueName: "dir"))
    var www: [String] = []
    @Option(help: ArgumentHelp("Extra plugin directory (repeatable).", valueName: "dir"))
    var pluginPath: [String] = []
    @Option(help: "Largest message in bytes (the default carries a 1 MiB value as base64).") var maxMessageBytes =
        2 << 20
    @Option(help: "Connections accepted at once.") var maxConnections = 256
    @Option(help: "Requests per second per connection.") var rate = 1_000
    @Option(
        help:
            "Connections still in their HTTP request or WebSocket upgrade (each has 10 s; the oldest makes room for a newcomer)."
    ) var maxHandshakes = 64
    @Option(help: "Requests one connection may have waiting for their answers (past it, it is closed).")
    var maxWaitingRequests = 256
    @Option(
        help:
            "Bytes of requests waiting for their answers, over all connections (past it, the connection holding most is closed)."
    ) var maxWaitingBytes = 64 << 20
    @Option(help: "Storage plugin of new profiles.") var storage = "sqlite"
    @Option(
        help: ArgumentHelp(
            "A Connectoid service apps' share links name when a profile's config has none (repeatable).",
            valueName: "url"))
    var shareService: [String] = []
    @Option(help: "Log level (error, warn, info, debug).") var logLevel = "warn"
    @Flag(
        help:
            "Serve programs of every OS user of this machine (default: only the user running masqd, checked on each connection's socket)."
    )
    var allowOtherUsers = false

    /// Keep freed heap memory for reuse (masqsupport_keep_freed_memory): apps'
    /// values and blob chunks are MiB-sized buffers allocated and freed at a high rate.
    static func main() {
        masqsupport_keep_freed_memory()
        main(nil)
    }

    func run() throws {
        guard ["error", "warn", "info", "debug"].contains(logLevel) else {
            throw ValidationError("unknown log level \(logLevel)")
        }
        guard maxMessageBytes >= 1024, maxConnections >= 1, rate >= 1, maxWaitingRequests >= 1, maxHandshakes >= 1,
            maxWaitingBytes >= maxMessageBytes
        else {
            throw ValidationError(
                "limits must be positive (messages at least 1024 bytes, --max-waiting-bytes at least one message)")
        }
        setenv("MASQ_LOG", logLevel, 1)
        let dataHome =
            getenv("XDG_DATA_HOME").map { String(cString: $0) }
            ?? (String(cString: getenv("HOME") ?? strdup("/tmp")) + "/.local/share")
        var options = DaemonOptions(
            home: FileSystem.absolute(
                FileSystem.expandHome(home ?? dataHome + "/masq/masqd"), base: FileSystem.currentDirectory()))
        options.listen = listen
        options.staticDirectories = www.isEmpty ? Self.defaultStaticDirectories() : www
        options.pluginPath = pluginPath
        options.maxMessageBytes = maxMessageBytes
        options.maxConnections = maxConnections
        if allowOtherUsers { options.allowedUser = nil }
        options.requestsPerSecond = rate
        options.maxWaitingRequests = maxWaitingRequests
        options.maxHandshakes = maxHandshakes
        options.maxWaitingBytes = maxWaitingBytes
        options.maxWaitingBytesPerConnection = min(16 << 20, maxWaitingBytes)
        options.storage = storage
        for url in shareService where !(url.hasPrefix("http://") || url.hasPrefix("https://")) || url.contains(" ") {
            throw ValidationError("--share-service \(url): an http:// or https:// URL")
        }
        options.shareServices = shareService

        let daemon: Daemon
        let url: String
        do throws(MasqError) {
            daemon = try Daemon(options: options)
            url = try daemon.start()
        } catch {
            FileHandleError.write("masqd: \(error.message)\n")
            throw ExitCode(1)
        }
        let runtime = options.home + "/masqd.json"
        let info = "{\"url\": \"\(url)\", \"admin_secret\": \"\(daemon.adminSecret)\", \"pid\": \(getpid())}\n"
        try? FileSystem.writeFile(runtime, Array(info.utf8), mode: 0o600)
        print("masqd listening on \(url)")
        print("manager: \(url)#admin=\(daemon.adminSecret)")
        fflush(nil)

        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .main)
            source.setEventHandler {
                daemon.stop()
                unlink(runtime)
                Foundation_exit(0)
            }
            source.resume()
            Self.signalSources.append(source)
        }
        dispatchMain()
    }

    nonisolated(unsafe) static var signalSources: [DispatchSourceSignal] = []

    /// The installed copy (<prefix>/share/masq/www beside bin/), else the
    /// source tree's (a development build).
    static func defaultStaticDirectories() -> [String] {
        if let env = getenv("MASQ_WWW") { return String(cString: env).split(separator: ":").map(String.init) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if n > 0 {
            let exe = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let installed = FileSystem.directoryName(FileSystem.directoryName(exe)) + "/share/masq/www"
            if FileSystem.isDirectory(installed) { return [installed] }
        }
        let sources = FileSystem.directoryName(FileSystem.directoryName(FileSystem.directoryName(#filePath)))
        return [sources + "/Sources/MasqDaemon/www", sources + "/bindings/js"]
    }
}

/// Diagnostics go to fd 2.
enum FileHandleError {
    static func write(_ text: String) {
        _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
    }
}

func Foundation_exit(_ code: Int32) -> Never { exit(code) }
