import ArgumentParser
import MasqKernel

/// `masq init`: write a config and create the store (and its replica id).
struct Init: MasqSubcommand {
    static let configuration = CommandConfiguration(abstract: "Create a config file and an empty store.")

    @OptionGroup var store: StoreOptions

    @Option(name: .long, help: ArgumentHelp("Data directory (default: ~/.local/share/masq).", valueName: "dir"))
    var dataDir: String?

    @Option(name: .long, help: ArgumentHelp("Storage plugin name.", valueName: "name"))
    var storage = "sqlite"

    @Flag(name: .long, help: "Overwrite an existing config file.")
    var force = false

    @Flag(name: .long, help: "Encrypt the store at rest with a passphrase (asked, or MASQ_NEW_PASSPHRASE).")
    var passphrase = false

    @Option(name: .long, help: ArgumentHelp("The name other devices see (default: host name).", valueName: "name"))
    var name: String?

    func execute() throws {
        let path = store.configPath
        if FileSystem.exists(path) && !force {
            throw CLIError("a config already exists at \(path) (use --force to overwrite it)")
        }
        let cwd = FileSystem.currentDirectory()
        let data = dataDir.map { FileSystem.absolute(FileSystem.expandHome($0), base: cwd) } ?? Paths.dataHome + "/masq"
        var config = MasqConfig.defaults(dataDir: data)
        config.storage = PluginReference(name: storage)
        let secret: [UInt8]? = passphrase ? try Secrets.new() : nil
        try guarded { () throws(MasqError) in
            try FileSystem.makeDirectories(FileSystem.directoryName(path))
            // Open first: a bad plugin name fails before any file is written.
            let opened = try Store(config: config, passphrase: secret)
            defer { try? opened.close() }
            if let name { try opened.setDeviceName(name) }
            let me = try opened.requireIdentity().publicKeys
            try FileSystem.writeFile(path, Array(config.json().utf8))
            print("config:      \(path)")
            print("data:        \(data)\(secret == nil ? "" : " (encrypted at rest)")")
            print("storage:     \(storage)")
            print("device:      \(opened.deviceName) (\(me.deviceID))")
            print("fingerprint: \(me.fingerprint.digits)  \(me.fingerprint.emoji)")
        }
    }
}
