import Testing
@testable import MasqKernel

@Suite struct ConfigTests {
    @Test func defaultsAndRelativePaths() throws {
        let config = try MasqConfig.parse(
            #"{"data_dir": "data", "plugin_path": ["p", "/abs"], "storage": {"plugin": "memory"}}"#,
            baseDir: "/etc/masq")
        #expect(config.dataDir == "/etc/masq/data")
        #expect(config.pluginPath == ["/etc/masq/p", "/abs"])
        #expect(config.storage.name == "memory")
        #expect(config.limits == Limits())
        let empty = try MasqConfig.parse("{}", baseDir: "/x")
        #expect(empty.storage.name == "sqlite" && empty.dataDir == "/x")
    }

    @Test func optionsArePassedAsStrings() throws {
        let config = try MasqConfig.parse(
            #"{"storage": {"plugin": "sqlite", "options": {"synchronous": "normal", "busy_timeout_ms": 250, "flag": true}}}"#,
            baseDir: "/")
        #expect(
            config.storage.options.map { "\($0.key)=\($0.value)" } == [
                "busy_timeout_ms=250", "flag=true", "synchronous=normal"
            ])
    }

    @Test func limitsAreReadAndBounded() throws {
        let config = try MasqConfig.parse(
            #"{"limits": {"max_key_bytes": 64, "max_value_bytes": 10, "max_namespace_bytes": 8, "max_batch_entries": 3}}"#,
            baseDir: "/")
        #expect(config.limits.maxKeyBytes == 64 && config.limits.maxValueBytes == 10)
        #expect(config.limits.maxNamespaceBytes == 8 && config.limits.maxBatchEntries == 3)
        let e = expectMasqError(.config) {
            _ = try MasqConfig.parse(#"{"limits": {"max_namespace_bytes": 300}}"#, baseDir: "/")
        }
        #expect(e?.message.contains("limits.max_namespace_bytes") == true)
        expectMasqError(.config) { _ = try MasqConfig.parse(#"{"limits": {"max_key_bytes": 0}}"#, baseDir: "/") }
        expectMasqError(.config) { _ = try MasqConfig.parse(#"{"limits": {"max_key_bytes": 1.5}}"#, baseDir: "/") }
    }

    @Test(arguments: [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("[]", "must be an object"),
        (#"{"storag": {}}"#, "storag: unknown key"),
        (#"{"storage": {"plugin": "Bad Name"}}"#, "is not a plugin name"),
        (#"{"storage": {}}"#, "missing \"plugin\""),
        (#"{"storage": {"plugin": "x", "options": {"a": [1]}}}"#, "storage.options.a"),
        (#"{"data_dir": 5}"#, "data_dir: must be a string"),
        (#"{"masq": 2}"#, "newer than this library"),
        (#"{"plugin_path": "x"}"#, "plugin_path"),
        (#"{"log_level": "loud"}"#, "log_level")
    ])
    func badConfigsNameTheProblem(_ text: String, _ fragment: String) {
        let error = expectMasqError(.config) { _ = try MasqConfig.parse(text, baseDir: "/", source: "test.json") }
        #expect(error?.message.contains(fragment) == true, "message was: \(error?.message ?? "")")
        #expect(error?.message.hasPrefix("test.json") == true)
    }

    @Test func missingFileIsAConfigError() {
        let e = expectMasqError(.config) { _ = try MasqConfig.load(path: "/nonexistent/masq.json") }
        #expect(e?.message.contains("/nonexistent/masq.json") == true)
    }

    @Test func writtenConfigParsesBackIdentically() throws {
        var config = MasqConfig.defaults(dataDir: "/data/with \"quotes\"")
        config.storage = PluginReference(name: "memory", options: [("max_bytes", "100")])
        config.limits.maxKeyBytes = 99
        let parsed = try MasqConfig.parse(config.json(), baseDir: "/elsewhere")
        #expect(parsed == config)
    }
}
