import Testing
@testable import MasqKernel

/// Every way a plugin can be wrong gets its own clear error; none crashes.
@Suite struct PluginLoaderTests {
    static var bad: String { Fixtures.pluginDirectory + "/bad" }

    @Test(arguments: [
        ("badabi", MasqStatus.abi, "built for plugin ABI 99"),
        ("wrongkind", .plugin, "is a transport plugin, not a storage plugin"),
        ("nullvtable", .plugin, "NULL vtable"),
        ("shortvtable", .plugin, "vtable too short"),
        ("nullmember", .plugin, "get are NULL"),
        ("nulldescriptor", .plugin, "returned NULL"),
        ("noentry", .plugin, "no masq_plugin_entry symbol"),
        ("notelf", .plugin, "cannot load shared object"),
        ("namemismatch", .plugin, "calls itself 'namemismatch_real'")
    ])
    func brokenPluginsAreRefused(_ name: String, _ status: MasqStatus, _ fragment: String) throws {
        var config = Fixtures.config(name)
        config.pluginPath = [Self.bad]
        let error = expectMasqError(status) { _ = try Store(config: config) }
        #expect(error?.message.contains(fragment) == true, "message was: \(error?.message ?? "")")
        #expect(error?.message.contains("libmasq_storage_\(name).so") == true)
    }

    @Test func missingPluginListsWhereItLooked() {
        var config = Fixtures.config("nosuch")
        config.pluginPath = ["/nonexistent/dir"]
        let e = expectMasqError(.plugin) { _ = try Store(config: config) }
        #expect(e?.message.contains("libmasq_storage_nosuch.so") == true)
        #expect(e?.message.contains("/nonexistent/dir") == true)
    }

    @Test func explicitPathWins() throws {
        var config = Fixtures.config("memory")
        config.pluginPath = []
        config.storage.path = Fixtures.pluginDirectory + "/libmasq_storage_memory.so"
        let store = try Store(config: config)
        #expect(store.storagePlugin.name == "memory")
        try store.close()
        config.storage.path = "/nonexistent/libmasq_storage_memory.so"
        let e = expectMasqError(.plugin) { _ = try Store(config: config) }
        #expect(e?.message.contains("not found") == true)
    }

    @Test func searchPathOrderIsConfigThenEnvironmentThenInstall() {
        var config = MasqConfig.defaults(dataDir: "/tmp")
        config.pluginPath = ["/from/config"]
        let path = PluginLoader.searchPath(config: config, environment: "/from/env1:/from/env2")
        #expect(Array(path.prefix(3)) == ["/from/config", "/from/env1", "/from/env2"])
        #expect(path.last == Fixtures.buildDirectory)
    }

    @Test func scanReportsGoodAndBadPlugins() {
        let reports = PluginLoader.scan(searchPath: [Fixtures.pluginDirectory, Self.bad, Fixtures.buildDirectory])
        let byFile = Dictionary(reports.map { (FileSystem.baseName($0.path), $0) }, uniquingKeysWith: { a, _ in a })
        #expect(byFile["libmasq_storage_memory.so"]?.status == .ok)
        #expect(byFile["libmasq_storage_memory.so"]?.version == "1.0.0")
        #expect(byFile["libmasq_storage_sqlite.so"]?.status == .ok)
        #expect(byFile["libmasq_storage_badabi.so"]?.status == .abi)
        #expect(byFile["libmasq_storage_badabi.so"]?.abiVersion == 99)
        #expect(byFile["libmasq_storage_wrongkind.so"]?.kind == .transport)
        #expect(byFile["libmasq_storage_wrongkind.so"]?.status == .plugin)
        #expect(byFile["libmasq_storage_notelf.so"]?.status == .plugin)
        #expect(reports.filter { $0.path.hasPrefix(Self.bad + "/") }.count == 9)
    }
}
