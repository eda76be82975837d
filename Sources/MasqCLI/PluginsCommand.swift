import ArgumentParser
import MasqKernel

/// `masq plugins`: what the search path holds, and why a file cannot load.
struct Plugins: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "List plugins on the search path (config plugin_path, MASQ_PLUGIN_PATH, install location).")

    @OptionGroup var store: StoreOptions

    func execute() throws {
        let path = store.configPath
        let config =
            FileSystem.exists(path) ? try guarded { () throws(MasqError) in try MasqConfig.load(path: path) } : nil
        let search = PluginLoader.searchPath(config: config)
        print("search path: \(search.joined(separator: ":"))")
        let reports = PluginLoader.scan(searchPath: search)
        if reports.isEmpty { print("no plugins found") }
        for r in reports {
            let kind = r.kind?.label ?? "?"
            let name = r.name ?? "?"
            let version = r.version ?? "?"
            let state = r.status == .ok ? "ok" : "\(r.status.name): \(r.message)"
            print("\(pad(kind, 10)) \(pad(name, 12)) \(pad(version, 8)) abi \(pad(String(r.abiVersion), 3)) \(state)")
            print("    \(r.path)\(r.summary.map { $0.isEmpty ? "" : " — \($0)" } ?? "")")
        }
    }

    private func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
    }
}
