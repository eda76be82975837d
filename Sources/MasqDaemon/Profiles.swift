import MasqKernel
import MasqSharing

/// One user of this computer: a store (its own data, device keys and sync),
/// and the apps that user approved. Lives in `<home>/profiles/<name>/`:
/// `config.json`, `data/`, `apps.json`.
final class Profile: @unchecked Sendable {
    let name: String
    let directory: String
    let store: Store
    let apps: AppRegistry
    var sync: SyncService?
    /// Sharing with other people (ShareOperations.swift), while unlocked.
    var sharing: ShareService?
    /// Called from the sharing service's queue when a share changed.
    var onShareEvent: (@Sendable () -> Void)?

    var configPath: String { directory + "/config.json" }

    init(name: String, directory: String, store: Store, apps: AppRegistry) {
        self.name = name
        self.directory = directory
        self.store = store
        self.apps = apps
    }

    /// Sync through the configured relay while unlocked (no-op without one).
    func startSync() {
        if sharing == nil, !store.isLocked, (try? store.shares())?.isEmpty == false {
            do throws(MasqError) { try startSharing() } catch {
                Log.warn("masqd", "profile \(name): sharing does not start: \(error.message)")
            }
        }
        guard sync == nil, !store.isLocked, !store.config.transports.isEmpty else { return }
        do throws(MasqError) {
            let service = try SyncService(store: store)
            try service.start()
            sync = service
        } catch {
            Log.warn("masqd", "profile \(name): sync does not start: \(error.message)")
        }
    }

    /// Poll this profile's share mailboxes (the config's sharing transport).
    func startSharing() throws(MasqError) {
        guard sharing == nil else { return }
        let service = ShareService(store: store)
        service.onChange = { [weak self] in self?.onShareEvent?() }
        try service.start()
        sharing = service
    }

    func stopSync() {
        sharing?.stop()
        sharing = nil
        sync?.stop()
        sync = nil
    }

    func close() {
        stopSync()
        try? store.close()
    }
}

/// The profiles under `<home>/profiles`, opened at start (protected ones
/// locked until the user gives the passphrase).
final class ProfileManager {
    let home: String
    private(set) var profiles: [String: Profile] = [:]
    private let storage: String

    static func validName(_ name: String) -> Bool {
        (1...32).contains(name.utf8.count)
            && name.utf8.allSatisfy { c in
                (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c == 45 || c == 95
            }
    }

    init(home: String, storage: String = "sqlite") throws(MasqError) {
        self.home = home
        self.storage = storage
        try FileSystem.makeDirectories(home + "/profiles")
        for name in FileSystem.listDirectory(home + "/profiles").sorted() where Self.validName(name) {
            let directory = home + "/profiles/" + name
            guard FileSystem.exists(directory + "/config.json") else { continue }
            do throws(MasqError) {
                let config = try MasqConfig.load(path: directory + "/config.json")
                let store = try Store(config: config)
                profiles[name] = Profile(
                    name: name, directory: directory, store: store,
                    apps: try AppRegistry(path: directory + "/apps.json"))
            } catch {
                Log.warn("masqd", "profile \(name) does not open: \(error.message)")
            }
        }
    }

    var names: [String] { profiles.keys.sorted() }

    /// A new profile; with a passphrase its store is encrypted at rest from
    /// the first byte.
    func create(_ name: String, passphrase: [UInt8]?) throws(DaemonError) -> Profile {
        guard Self.validName(name) else { throw DaemonError(.invalid, "a profile name is 1-32 of a-z, 0-9, - and _") }
        guard profiles[name] == nil, !FileSystem.exists(home + "/profiles/" + name) else {
            throw DaemonError(.invalid, "profile \(name) exists")
        }
        let directory = home + "/profiles/" + name
        var config = MasqConfig.defaults(dataDir: directory + "/data")
        config.storage = PluginReference(name: storage)
        do throws(MasqError) {
            try FileSystem.makeDirectories(directory)
            let store = try Store(config: config, passphrase: passphrase)
            try FileSystem.writeFile(directory + "/config.json", Array(config.json().utf8))
            let profile = Profile(
                name: name, directory: directory, store: store, apps: try AppRegistry(path: directory + "/apps.json"))
            profiles[name] = profile
            return profile
        } catch {
            throw DaemonError(error)
        }
    }

    /// Open a profile whose directory was filled from elsewhere (a restored backup, BackupOperations.swift).
    func adopt(_ name: String) throws(DaemonError) -> Profile {
        let directory = home + "/profiles/" + name
        do throws(MasqError) {
            let store = try Store(config: try MasqConfig.load(path: directory + "/config.json"))
            let profile = Profile(
                name: name, directory: directory, store: store, apps: try AppRegistry(path: directory + "/apps.json"))
            profiles[name] = profile
            return profile
        } catch {
            throw DaemonError(error)
        }
    }

    func profile(_ name: String) throws(DaemonError) -> Profile {
        guard let profile = profiles[name] else { throw DaemonError(.notFound, "no profile \(name)") }
        return profile
    }

    func closeAll() {
        for profile in profiles.values { profile.close() }
    }
}
