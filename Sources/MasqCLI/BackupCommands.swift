import ArgumentParser
import MasqKernel
#if canImport(Glibc)
    import Glibc
#endif

/// `masq backup FILE`: an encrypted backup of the store, under a passphrase
/// (MASQ_BACKUP_PASSPHRASE, or asked twice) or a new recovery key printed once.
struct Backup: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an encrypted backup of the store (consistent even while other processes write to it).",
        discussion: """
            The backup holds everything: data, history, this device's keys, paired devices, shares. \
            It is encrypted under a passphrase (MASQ_BACKUP_PASSPHRASE, or typed twice) or, with --recovery-key, \
            under a random key printed once. Restore it with `masq restore FILE` on a new machine; \
            check it with `masq restore --verify FILE`.
            """)

    @OptionGroup var store: StoreOptions
    @Argument(help: "The backup file to write (must not exist).") var file: String
    @Flag(name: .long, help: "Encrypt under a new random recovery key (printed once) instead of a passphrase.")
    var recoveryKey = false

    func execute() throws {
        let path = FileSystem.absolute(FileSystem.expandHome(file), base: FileSystem.currentDirectory())
        guard !FileSystem.exists(path) else {
            throw CLIError("\(file) exists: a backup never replaces a file (remove it, or choose another name)")
        }
        var passphrase: [UInt8] = []
        if !recoveryKey {
            passphrase = try BackupSecrets.newPassphrase()
        }
        defer { for i in passphrase.indices { passphrase[i] = 0 } }
        // A locked store can be backed up as it is (its secrets stay sealed in the backup).
        let summary = try store.withStore(unlock: false) { s in
            try guarded { () throws(MasqError) in
                try s.backup(to: path, key: recoveryKey ? .newRecoveryKey : .passphrase(passphrase))
            }
        }
        print(
            "backup:  \(file) (\(summary.bytes) bytes; \(summary.manifest.entries) entries\(summary.manifest.protected ? "; the store's own passphrase opens the restored store" : ""))"
        )
        if let key = summary.recoveryKey {
            print("recovery key (shown once; write it down — without it this backup cannot be opened):")
            print("  \(key)")
        }
    }
}

/// `masq restore FILE`: rebuild a store from a backup in an empty data directory.
struct Restore: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Rebuild a store from a backup (into a new or empty data directory), or check a backup with --verify.",
        discussion: """
            Without a config, one is written (the backed-up store's transports and settings, the data directory \
            given by --data-dir or the default). With one, its data directory must be empty. The secret is the \
            backup's passphrase (MASQ_BACKUP_PASSPHRASE) or its recovery key (MASQ_RECOVERY_KEY), else asked. \
            The restored device keeps its keys and paired devices; it continues under a new replica id and \
            renews its sessions, and `masq sync` takes back from the other devices what was written after the backup.
            """)

    @OptionGroup var store: StoreOptions
    @Argument(help: "The backup file.") var file: String
    @Option(
        name: .long,
        help: ArgumentHelp("Data directory when no config exists (default: ~/.local/share/masq).", valueName: "dir"))
    var dataDir: String?
    @Option(
        name: .long,
        help: ArgumentHelp("Storage plugin when no config exists (default: the backed-up store's).", valueName: "name"))
    var storage: String?
    @Flag(name: .long, help: "Only decrypt and check the whole backup; write nothing.")
    var verify = false

    func execute() throws {
        let path = FileSystem.absolute(FileSystem.expandHome(file), base: FileSystem.currentDirectory())
        let info = try guarded { () throws(MasqError) in try Store.backupInfo(path: path) }
        let configPath = store.configPath
        let existing = FileSystem.exists(configPath)
        let cwd = FileSystem.currentDirectory()
        let data = dataDir.map { FileSystem.absolute(FileSystem.expandHome($0), base: cwd) } ?? Paths.dataHome + "/masq"
        if !verify {  // a non-empty target fails before the secret is asked for
            try guarded { () throws(MasqError) in
                try Store.checkRestoreTarget(
                    existing ? try MasqConfig.load(path: configPath) : MasqConfig.defaults(dataDir: data))
            }
        }
        var secret = try BackupSecrets.current(info.keyKind)
        defer { for i in secret.indices { secret[i] = 0 } }
        if verify {
            let manifest = try guarded { () throws(MasqError) in try Store.verifyBackup(path: path, secret: secret) }
            print("ok: \(file) is intact (\(manifest.entries) entries, \(manifest.files) files)")
            describe(manifest)
            return
        }
        if existing && (dataDir != nil || storage != nil) {
            throw CLIError(
                "a config exists at \(configPath): --data-dir and --storage apply only when restore writes a new one")
        }
        var written: MasqConfig?
        let manifest = try guarded { () throws(MasqError) in
            try Store.restore(from: path, secret: secret) { (manifest) throws(MasqError) -> MasqConfig in
                if existing { return try MasqConfig.load(path: configPath) }
                if let written { return written }
                var config = try manifest.config(dataDir: data)
                if let storage, storage != config.storage.name { config.storage = PluginReference(name: storage) }
                written = config
                return config
            }
        }
        if let written {
            try guarded { () throws(MasqError) in
                try FileSystem.makeDirectories(FileSystem.directoryName(configPath))
                try FileSystem.writeFile(configPath, Array(written.json().utf8))
            }
            print("config:   \(configPath) (written)")
        }
        let target = existing ? (try? MasqConfig.load(path: configPath))?.dataDir ?? "?" : data
        print("restored: \(manifest.entries) entries into \(target)")
        describe(manifest)
        print(
            "next:     `masq sync` rejoins the other devices: this device continues under a new replica id, renews its sessions, and takes back what was written after the backup"
                + (manifest.protected ? " (the store opens with the passphrase it had)" : ""))
    }

    private func describe(_ manifest: BackupManifest) {
        let name = manifest.deviceName.map { "\($0) " } ?? ""
        print("device:   \(name)\(manifest.deviceID.map { "(\($0))" } ?? "(locked when backed up)")")
        print(
            "taken:    \(formatTime(manifest.createdAt)) by masq \(manifest.masqVersion)\(manifest.protected ? "; the store has a passphrase" : "")"
        )
    }

    private func formatTime(_ ms: UInt64) -> String {
        var seconds = time_t(ms / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M:%S UTC", &parts)
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// `masq export FILE|-`: every live key as JSON lines (docs/EXPORT.md).
struct Export: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Export every live key as JSON lines with base64 keys and values (docs/EXPORT.md); '-' writes to standard output.",
        discussion:
            "An open format to take the data elsewhere. Values are written in clear. There is no import of this format yet."
    )

    @OptionGroup var store: StoreOptions
    @Argument(help: "The file to write (must not exist), or - for standard output.") var file: String

    func execute() throws {
        let count = try store.withStore { s in
            try guarded { () throws(MasqError) -> Int in
                file == "-"
                    ? try s.export(toDescriptor: 1)
                    : try s.export(
                        to: FileSystem.absolute(FileSystem.expandHome(file), base: FileSystem.currentDirectory()))
            }
        }
        writeError("exported \(count) key(s)\(file == "-" ? "" : " to \(file)")\n")
    }
}

/// The backup's secret: from the environment (scripts, tests) or typed.
enum BackupSecrets {
    static func newPassphrase() throws -> [UInt8] {
        if let env = getenv("MASQ_BACKUP_PASSPHRASE") {
            let value = Array(String(cString: env).utf8)
            guard !value.isEmpty else { throw CLIError("MASQ_BACKUP_PASSPHRASE is empty") }
            return value
        }
        let first = try ask("backup passphrase: ")
        guard !first.isEmpty else { throw CLIError("an empty passphrase protects nothing (or use --recovery-key)") }
        guard try ask("again: ") == first else { throw CLIError("the two passphrases differ") }
        return first
    }

    static func current(_ kind: BackupKeyKind) throws -> [UInt8] {
        let variable = kind == .passphrase ? "MASQ_BACKUP_PASSPHRASE" : "MASQ_RECOVERY_KEY"
        if let env = getenv(variable) { return Array(String(cString: env).utf8) }
        return try ask(kind == .passphrase ? "backup passphrase: " : "recovery key: ")
    }

    private static func ask(_ prompt: String) throws -> [UInt8] {
        try Secrets.askSecret(
            prompt,
            otherwise:
                "the backup needs its secret: set MASQ_BACKUP_PASSPHRASE (or MASQ_RECOVERY_KEY) or run on a terminal")
    }
}
