import ArgumentParser
import CMasqSupport
import MasqKernel
#if canImport(Glibc)
    import Glibc
#endif

/// `masq`: the command-line face of the kernel. Thin: it parses arguments
/// and calls MasqKernel; every failure is one line on stderr and a non-zero
/// exit status (1: error, 2: key or namespace not found, 64: bad usage).
@main
struct MasqCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "masq",
        abstract: "Keep application data on your own devices.",
        version: "\(MasqVersion.string)",
        subcommands: [
            Init.self, Put.self, Get.self, Del.self, List.self, Import.self, Export.self, Counter.self, Blob.self,
            Pair.self, Join.self, Devices.self,
            Sync.self, Status.self, Check.self, ClockCommand.self, Passphrase.self, Backup.self, Restore.self,
            Share.self, Accept.self, Shares.self, Unshare.self,
            Relay.self, Connectoid.self, Node.self, Wallet.self, Accounts.self, Plugins.self, Apps.self
        ]
    )

    /// Every command keeps freed heap memory for reuse (masqsupport_keep_freed_memory):
    /// sync, blob transfers and servers allocate and free MiB-sized buffers at a
    /// high rate, and glibc would otherwise fault each one in afresh (bench/blobs:
    /// a quarter of the sender's CPU).
    static func main() {
        masqsupport_keep_freed_memory()
        main(nil)
    }
}

/// Options every command that touches a store shares.
struct StoreOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp("Config file (default: $MASQ_CONFIG, else ~/.config/masq/config.json).", valueName: "path"))
    var config: String?

    var configPath: String {
        if let config { return FileSystem.absolute(FileSystem.expandHome(config), base: FileSystem.currentDirectory()) }
        if let env = getenv("MASQ_CONFIG"), env.pointee != 0 {
            return FileSystem.absolute(String(cString: env), base: FileSystem.currentDirectory())
        }
        return Paths.configHome + "/masq/config.json"
    }

    /// Open the configured store (unlocking it if it has a passphrase), run `body`, close it.
    func withStore<T>(unlock: Bool = true, _ body: (Store) throws -> T) throws -> T {
        let path = configPath
        guard FileSystem.exists(path) else {
            throw CLIError("no config at \(path); run `masq init` first (or pass --config)")
        }
        let store = try guarded { () throws(MasqError) in try Store(configPath: path) }
        defer { try? store.close() }
        if unlock && store.isLocked {
            let passphrase = try Secrets.current()
            try guarded { () throws(MasqError) in try store.unlock(passphrase) }
        }
        return try body(store)
    }
}

enum Paths {
    static var home: String { getenv("HOME").map { String(cString: $0) } ?? "/" }
    static var configHome: String { getenv("XDG_CONFIG_HOME").map { String(cString: $0) } ?? home + "/.config" }
    static var dataHome: String { getenv("XDG_DATA_HOME").map { String(cString: $0) } ?? home + "/.local/share" }
}

/// A failure reported as "masq: <message>" with an exit status.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    let code: Int32
    init(_ message: String, code: Int32 = 1) {
        description = message
        self.code = code
    }
}

/// Run kernel code, turning a MasqError into a CLIError.
func guarded<T>(_ body: () throws(MasqError) -> T) throws -> T {
    do {
        return try body()
    } catch {
        throw CLIError(error.message, code: error.status == .notFound ? 2 : 1)
    }
}

extension ParsableCommand {
    /// Print the error on one line and exit with its status.
    static func exit(for error: any Error) -> Never {
        if let cli = error as? CLIError {
            writeError("masq: \(cli.description)\n")
            Glibc.exit(cli.code)
        }
        Self.exit(withError: error)
    }
}

func writeError(_ text: String) {
    var bytes = Array(text.utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

func writeOut(_ bytes: [UInt8]) {
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(1, $0.baseAddress! + offset, bytes.count - offset) }
        if n <= 0 { return }
        offset += n
    }
}

/// Every subcommand's body runs through this so errors print as one line.
protocol MasqSubcommand: ParsableCommand {
    func execute() throws
}

extension MasqSubcommand {
    func run() throws {
        do {
            try execute()
        } catch let error as CLIError {
            Self.exit(for: error)
        }
    }
}
