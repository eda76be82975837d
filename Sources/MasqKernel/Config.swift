#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Size and count limits the kernel enforces on every call. All configurable
/// (config key "limits"); each has a hard ceiling the format imposes.
public struct Limits: Sendable, Equatable {
    public var maxKeyBytes = 1024
    public var maxValueBytes = 1 << 20
    public var maxNamespaceBytes = 128
    public var maxBatchEntries = 100_000

    public init() {}

    /// Ceilings: namespace length is stored in one byte; keys and values are
    /// bounded so a record always fits the engines' and sync frames' limits.
    static var ceilings: [(String, WritableKeyPath<Limits, Int>, Int)] {
        [
            ("max_key_bytes", \.maxKeyBytes, 65_535),
            ("max_value_bytes", \.maxValueBytes, 64 << 20),
            ("max_namespace_bytes", \.maxNamespaceBytes, 255),
            ("max_batch_entries", \.maxBatchEntries, 10_000_000)
        ]
    }
}

/// A plugin named in the config: by name (found on the search path) or by
/// explicit path, with options passed through to the plugin as strings.
public struct PluginReference: Sendable, Equatable {
    public var name: String
    public var path: String?
    public var options: [(key: String, value: String)]

    public init(name: String, path: String? = nil, options: [(key: String, value: String)] = []) {
        self.name = name
        self.path = path
        self.options = options
    }

    public static func == (a: PluginReference, b: PluginReference) -> Bool {
        a.name == b.name && a.path == b.path && a.options.elementsEqual(b.options, by: { $0 == $1 })
    }
}

/// Where shares with other people go: the Connectoid services new share
/// links name, the transport plugin that polls mailboxes, and how long an
/// unacknowledged message waits before it is sent again.
public struct SharingConfig: Sendable, Equatable {
    public var services: [String] = []
    public var transport = PluginReference(name: "connectoid")
    public var resendMilliseconds = 30_000
    public init() {}

    /// The link format's rules for services (ConnectoidLink in
    /// MasqConnectoidProtocol, which the kernel does not depend on; sharing
    /// checks them again with ConnectoidLink when it makes a link): at most 8,
    /// each an http(s) URL of at most 2048 bytes without spaces or newlines.
    static let maxServices = 8

    static func isServiceURL(_ url: String) -> Bool {
        url.utf8.count <= 2_048 && (url.hasPrefix("http://") || url.hasPrefix("https://"))
            && !url.contains(where: { $0 == " " || $0.isNewline })
    }
}

/// The parsed, validated configuration of one store (docs/CONFIG.md).
/// Every path in it is absolute.
public struct MasqConfig: Sendable, Equatable {
    public static let formatVersion = 1

    public var dataDir: String
    public var pluginPath: [String]
    public var storage: PluginReference
    public var transports: [PluginReference]
    public var wallet: PluginReference?
    /// Sharing with other people (Connectoid mailboxes).
    public var sharing = SharingConfig()
    /// Selective sync and blob fetching (SyncFilter.swift).
    public var sync = SyncConfig()
    public var limits: Limits
    public var logLevel: LogLevel?
    /// scrypt cost (N = 2^scryptLogN) when a passphrase is set; recorded in the keyring.
    public var scryptLogN: UInt8 = KeyRing.defaultLogN

    /// The configuration `masq init` writes: SQLite in `dataDir`.
    public static func defaults(dataDir: String) -> MasqConfig {
        MasqConfig(
            dataDir: dataDir, pluginPath: [], storage: PluginReference(name: "sqlite"),
            transports: [], wallet: nil, limits: Limits(), logLevel: nil, scryptLogN: KeyRing.defaultLogN)
    }

    /// Read and validate a config file; relative paths are taken from the file's directory.
    public static func load(path: String) throws(MasqError) -> MasqConfig {
        let bytes: [UInt8]
        do {
            bytes = try FileSystem.readFile(path, limit: 1 << 20)
        } catch {
            throw .config("cannot read config file: \(error.message)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .config("\(path): not UTF-8 text")
        }
        let absolute = FileSystem.absolute(path, base: FileSystem.currentDirectory())
        return try parse(text, baseDir: FileSystem.directoryName(absolute), source: path)
    }

    /// Validate a config document; relative paths are taken from baseDir.
    public static func parse(_ text: String, baseDir: String, source: String = "config") throws(MasqError) -> MasqConfig
    {
        let root = try JSONValue.parse(text, source: source)
        var reader = ConfigReader(source: source, baseDir: baseDir)
        return try reader.read(root)
    }

    /// The JSON `masq init` writes (stable key order, two-space indent).
    public func json() -> String {
        var lines = ["{", "  \"masq\": \(MasqConfig.formatVersion),", "  \"data_dir\": \(jsonString(dataDir)),"]
        func plugin(_ p: PluginReference) -> String {
            "{ \"plugin\": \(jsonString(p.name))" + (p.path.map { ", \"path\": \(jsonString($0))" } ?? "")
                + (p.options.isEmpty
                    ? ""
                    : ", \"options\": {"
                        + p.options.map { "\(jsonString($0.key)): \(jsonString($0.value))" }.joined(separator: ", ")
                        + "}") + " }"
        }
        if !pluginPath.isEmpty {
            lines.append("  \"plugin_path\": [" + pluginPath.map(jsonString).joined(separator: ", ") + "],")
        }
        lines.append("  \"storage\": \(plugin(storage)),")
        if !transports.isEmpty {
            lines.append("  \"transports\": [" + transports.map(plugin).joined(separator: ", ") + "],")
        }
        if let wallet { lines.append("  \"wallet\": \(plugin(wallet)),") }
        if sharing != SharingConfig() {
            lines.append(
                "  \"sharing\": { \"services\": [" + sharing.services.map(jsonString).joined(separator: ", ")
                    + "], \"transport\": \(plugin(sharing.transport)), \"resend_ms\": \(sharing.resendMilliseconds) },")
        }
        if sync != SyncConfig() { lines.append("  \"sync\": \(sync.json),") }
        lines.append(
            "  \"limits\": { \"max_key_bytes\": \(limits.maxKeyBytes), \"max_value_bytes\": \(limits.maxValueBytes), \"max_namespace_bytes\": \(limits.maxNamespaceBytes), \"max_batch_entries\": \(limits.maxBatchEntries) },"
        )
        lines.append("  \"security\": { \"scrypt_log_n\": \(scryptLogN) }")
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }
}

package func jsonString(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

/// Walks the JSON tree; every error names the source and the path of the
/// offending member. Unknown keys are errors: a typo must not silently fall
/// back to a default.
private struct ConfigReader {
    let source: String
    let baseDir: String

    func fail(_ path: String, _ message: String) -> MasqError {
        .config("\(source): \(path): \(message)")
    }

    func object(_ v: JSONValue, _ path: String, allowed: Set<String>) throws(MasqError) -> [String: JSONValue] {
        guard case .object(let members) = v else { throw fail(path, "must be an object, found \(v.typeName)") }
        if let unknown = members.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw fail(
                path.isEmpty ? unknown : "\(path).\(unknown)",
                "unknown key (expected one of: \(allowed.sorted().joined(separator: ", ")))")
        }
        return members
    }

    func string(_ v: JSONValue, _ path: String) throws(MasqError) -> String {
        guard case .string(let s) = v else { throw fail(path, "must be a string, found \(v.typeName)") }
        return s
    }

    func integer(_ v: JSONValue, _ path: String, min: Int, max: Int) throws(MasqError) -> Int {
        guard case .number(let d, _) = v, d.rounded() == d, d >= Double(Int.min), d <= Double(Int.max) else {
            throw fail(path, "must be an integer, found \(v.typeName)")
        }
        let i = Int(d)
        guard i >= min && i <= max else { throw fail(path, "must be between \(min) and \(max), found \(i)") }
        return i
    }

    func path(_ v: JSONValue, _ p: String) throws(MasqError) -> String {
        let s = try string(v, p)
        guard !s.isEmpty else { throw fail(p, "must not be empty") }
        return FileSystem.absolute(FileSystem.expandHome(s), base: baseDir)
    }

    mutating func read(_ root: JSONValue) throws(MasqError) -> MasqConfig {
        let top = try object(
            root, "",
            allowed: [
                "masq", "data_dir", "plugin_path", "storage", "transports", "wallet", "sharing", "sync", "limits",
                "log_level", "security"
            ])
        if let version = top["masq"] {
            let v = try integer(version, "masq", min: 1, max: Int.max)
            guard v == MasqConfig.formatVersion else {
                throw fail(
                    "masq", "config format \(v) is newer than this library understands (\(MasqConfig.formatVersion))")
            }
        }
        var config = MasqConfig.defaults(dataDir: baseDir)
        if let d = top["data_dir"] { config.dataDir = try path(d, "data_dir") }
        if let list = top["plugin_path"] {
            guard case .array(let items) = list else { throw fail("plugin_path", "must be an array of strings") }
            config.pluginPath = []
            for (i, item) in items.enumerated() { config.pluginPath.append(try path(item, "plugin_path[\(i)]")) }
        }
        if let s = top["storage"] { config.storage = try plugin(s, "storage") }
        if let t = top["transports"] {
            guard case .array(let items) = t else { throw fail("transports", "must be an array of plugin objects") }
            config.transports = []
            for (i, item) in items.enumerated() { config.transports.append(try plugin(item, "transports[\(i)]")) }
        }
        if let w = top["wallet"], w != .null { config.wallet = try plugin(w, "wallet") }
        if let sharing = top["sharing"] {
            let members = try object(sharing, "sharing", allowed: ["services", "transport", "resend_ms"])
            if let list = members["services"] {
                guard case .array(let items) = list else {
                    throw fail("sharing.services", "must be an array of service URLs")
                }
                for (i, item) in items.enumerated() {
                    let url = try string(item, "sharing.services[\(i)]")
                    guard SharingConfig.isServiceURL(url) else {
                        throw fail("sharing.services[\(i)]", "must be an http:// or https:// URL")
                    }
                    config.sharing.services.append(url)
                }
                guard config.sharing.services.count <= SharingConfig.maxServices else {
                    throw fail("sharing.services", "at most \(SharingConfig.maxServices) services")
                }
            }
            if let t = members["transport"] { config.sharing.transport = try plugin(t, "sharing.transport") }
            if let r = members["resend_ms"] {
                config.sharing.resendMilliseconds = try integer(r, "sharing.resend_ms", min: 100, max: 86_400_000)
            }
        }
        if let s = top["sync"] { config.sync = try SyncConfig.parse(s, fail: fail) }
        if let l = top["limits"] {
            let members = try object(l, "limits", allowed: Set(Limits.ceilings.map { $0.0 }))
            for (key, keyPath, ceiling) in Limits.ceilings {
                if let v = members[key] {
                    config.limits[keyPath: keyPath] = try integer(v, "limits.\(key)", min: 1, max: ceiling)
                }
            }
        }
        if let security = top["security"] {
            let members = try object(security, "security", allowed: ["scrypt_log_n"])
            if let n = members["scrypt_log_n"] {
                config.scryptLogN = UInt8(try integer(n, "security.scrypt_log_n", min: 10, max: 22))
            }
        }
        if let level = top["log_level"] {
            let name = try string(level, "log_level")
            guard let parsed = LogLevel(name: name) else {
                throw fail("log_level", "must be error, warn, info or debug, found \"\(name)\"")
            }
            config.logLevel = parsed
        }
        return config
    }

    func plugin(_ v: JSONValue, _ p: String) throws(MasqError) -> PluginReference {
        let members = try object(v, p, allowed: ["plugin", "path", "options"])
        guard let nameValue = members["plugin"] else {
            throw fail(p, "missing \"plugin\" (the plugin's name, e.g. \"sqlite\")")
        }
        let name = try string(nameValue, "\(p).plugin")
        guard PluginName.isValid(name) else {
            throw fail("\(p).plugin", "\"\(name)\" is not a plugin name ([a-z0-9_], 1 to 64 characters)")
        }
        var reference = PluginReference(name: name)
        if let explicit = members["path"] { reference.path = try path(explicit, "\(p).path") }
        if let options = members["options"] {
            guard case .object(let items) = options else { throw fail("\(p).options", "must be an object") }
            for key in items.keys.sorted() {
                switch items[key]! {
                case .string(let s): reference.options.append((key, s))
                case .number(_, let text): reference.options.append((key, text))
                case .bool(let b): reference.options.append((key, b ? "true" : "false"))
                default:
                    throw fail(
                        "\(p).options.\(key)", "must be a string, number or boolean, found \(items[key]!.typeName)")
                }
            }
        }
        return reference
    }
}

enum PluginName {
    static func isValid(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }
    }
}
