import CMasq
import CMasqSupport
#if canImport(Glibc)
    import Glibc
#endif

/// The three kinds of plugin (masq_plugin_descriptor.kind).
public enum PluginKind: UInt32, Sendable, CaseIterable {
    case storage = 1, transport = 2, wallet = 3

    public var label: String {
        switch self {
        case .storage: "storage"
        case .transport: "transport"
        case .wallet: "wallet"
        }
    }

    init?(label: String) {
        guard let kind = PluginKind.allCases.first(where: { $0.label == label }) else { return nil }
        self = kind
    }
}

/// A plugin shared object that passed validation. Never unloaded: Swift
/// plugins cannot be (the runtime keeps pointers into the image), so the
/// loader uses RTLD_NODELETE and keeps one of these per file for the process.
public final class LoadedPlugin: @unchecked Sendable {
    public let path: String
    public let kind: PluginKind
    public let name: String
    public let version: String
    public let summary: String
    public let abiVersion: UInt32
    let vtable: UnsafeRawPointer

    init(
        path: String, kind: PluginKind, name: String, version: String, summary: String, abiVersion: UInt32,
        vtable: UnsafeRawPointer
    ) {
        self.path = path
        self.kind = kind
        self.name = name
        self.version = version
        self.summary = summary
        self.abiVersion = abiVersion
        self.vtable = vtable
    }

    /// The vtable as this kernel's struct: members the plugin's (possibly
    /// older, shorter) table lacks read as zero/NULL.
    func vtable<T>(as type: T.Type, zero: T) -> T {
        var copy = zero
        let declared = Int(vtable.load(as: UInt32.self))
        withUnsafeMutableBytes(of: &copy) { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: vtable, count: min(declared, dst.count)))
        }
        return copy
    }
}

/// What `masq plugins` and masq_plugins_scan report about one file.
public struct PluginReport: Sendable {
    public var path: String
    public var status: MasqStatus
    public var message: String
    public var kind: PluginKind?
    public var name: String?
    public var version: String?
    public var summary: String?
    public var abiVersion: UInt32
}

/// Finds, loads and validates plugins. Every failure is a MasqError naming
/// the file and what is wrong; nothing in a plugin is called before its
/// descriptor passed the ABI check.
public enum PluginLoader {
    private static let lock = Lock()
    nonisolated(unsafe) private static var loaded: [String: LoadedPlugin] = [:]

    /// The file a plugin of `kind` named `name` lives in.
    public static func fileName(kind: PluginKind, name: String) -> String {
        "libmasq_\(kind.label)_\(name).so"
    }

    /// Directories searched, in order: the config's plugin_path, then
    /// MASQ_PLUGIN_PATH, then the install location next to the library.
    public static func searchPath(config: MasqConfig?, environment: String? = environmentPath()) -> [String] {
        var dirs = config?.pluginPath ?? []
        if let environment {
            let cwd = FileSystem.currentDirectory()
            dirs += environment.split(separator: ":").map { FileSystem.absolute(String($0), base: cwd) }
        }
        dirs += installLocations()
        var seen = Set<String>()
        return dirs.filter { seen.insert($0).inserted }
    }

    /// MASQ_PLUGIN_PATH, if set.
    public static func environmentPath() -> String? {
        getenv("MASQ_PLUGIN_PATH").map { String(cString: $0) }
    }

    /// <dir of the image holding the kernel>/masq/plugins, ../lib/masq/plugins
    /// (for an executable in bin/), and the directory itself (a build tree).
    static func installLocations() -> [String] {
        var buffer = [CChar](repeating: 0, count: 4096)
        guard masqsupport_image_path(&buffer, buffer.count) == 0 else { return [] }
        let file = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let dir = FileSystem.directoryName(FileSystem.absolute(file, base: FileSystem.currentDirectory()))
        return [dir + "/masq/plugins", FileSystem.absolute("../lib/masq/plugins", base: dir), dir]
    }

    /// Locate and load the plugin a config entry names.
    public static func load(_ reference: PluginReference, kind: PluginKind, searchPath: [String]) throws(MasqError)
        -> LoadedPlugin
    {
        if let explicit = reference.path {
            return try load(path: explicit, expecting: kind, name: reference.name)
        }
        let file = fileName(kind: kind, name: reference.name)
        for dir in searchPath where FileSystem.exists(dir + "/" + file) {
            return try load(path: dir + "/" + file, expecting: kind, name: reference.name)
        }
        let looked = searchPath.isEmpty ? "(empty search path)" : searchPath.joined(separator: ", ")
        throw .plugin(
            "\(kind.label) plugin '\(reference.name)' not found: no \(file) in \(looked); set plugin_path in the config or MASQ_PLUGIN_PATH"
        )
    }

    /// Load one file and validate it. `expecting`/`name` (when given) must match the descriptor.
    public static func load(path: String, expecting: PluginKind?, name: String?) throws(MasqError) -> LoadedPlugin {
        let plugin = try lock.withLock { () throws(MasqError) -> LoadedPlugin in
            if let cached = loaded[path] { return cached }
            let fresh = try open(path: path)
            loaded[path] = fresh
            return fresh
        }
        if let expecting, plugin.kind != expecting {
            throw .plugin("\(path): is a \(plugin.kind.label) plugin, not a \(expecting.label) plugin")
        }
        if let name, plugin.name != name {
            throw .plugin("\(path): the plugin calls itself '\(plugin.name)', but the config asks for '\(name)'")
        }
        return plugin
    }

    /// Every libmasq_*.so on the search path, each loaded and validated.
    public static func scan(searchPath: [String]) -> [PluginReport] {
        var reports: [PluginReport] = []
        var seen = Set<String>()
        for dir in searchPath {
            for file in FileSystem.listDirectory(dir) where file.hasPrefix("libmasq_") && file.hasSuffix(".so") {
                let path = dir + "/" + file
                guard seen.insert(realPath(path)).inserted else { continue }
                var report = PluginReport(path: path, status: .ok, message: "", abiVersion: 0)
                do {
                    let plugin = try load(path: path, expecting: nil, name: nil)
                    report.kind = plugin.kind
                    report.name = plugin.name
                    report.version = plugin.version
                    report.summary = plugin.summary
                    report.abiVersion = plugin.abiVersion
                    if fileName(kind: plugin.kind, name: plugin.name) != file {
                        report.status = .plugin
                        report.message =
                            "file name does not match the plugin: rename it \(fileName(kind: plugin.kind, name: plugin.name))"
                    }
                } catch {
                    report.status = error.status
                    report.message = error.message
                    report.abiVersion = peekABIVersion(path)
                }
                reports.append(report)
            }
        }
        return reports
    }

    static func realPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// The ABI version a refused plugin declared, for reports (0 if none).
    private static func peekABIVersion(_ path: String) -> UInt32 {
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) else { return 0 }
        guard let symbol = dlsym(handle, MASQ_PLUGIN_ENTRY_SYMBOL) else { return 0 }
        let entry = unsafeBitCast(symbol, to: masq_plugin_entry_fn.self)
        guard let d = entry() else { return 0 }
        return d.pointee.struct_size >= 8 ? d.pointee.abi_version : 0
    }

    private static func open(path: String) throws(MasqError) -> LoadedPlugin {
        guard FileSystem.exists(path) else { throw .plugin("\(path): plugin file not found") }
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown reason"
            throw .plugin("\(path): cannot load shared object: \(reason)")
        }
        guard let symbol = dlsym(handle, MASQ_PLUGIN_ENTRY_SYMBOL) else {
            throw .plugin("\(path): not a Masq plugin (no \(MASQ_PLUGIN_ENTRY_SYMBOL) symbol)")
        }
        let entry = unsafeBitCast(symbol, to: masq_plugin_entry_fn.self)
        guard let descriptor = entry() else { throw .plugin("\(path): \(MASQ_PLUGIN_ENTRY_SYMBOL)() returned NULL") }

        // Only struct_size and abi_version may be read before these checks.
        let size = Int(descriptor.pointee.struct_size)
        guard size >= 8 else { throw .plugin("\(path): descriptor too short (\(size) bytes)") }
        let abi = descriptor.pointee.abi_version
        guard abi == UInt32(MASQ_PLUGIN_ABI_VERSION) else {
            throw MasqError(
                .abi,
                "\(path): built for plugin ABI \(abi), but this kernel speaks ABI \(MASQ_PLUGIN_ABI_VERSION); rebuild it against this version of masq_plugin.h"
            )
        }
        guard size >= MemoryLayout<masq_plugin_descriptor>.size else {
            throw .plugin(
                "\(path): descriptor too short (\(size) bytes; ABI \(abi) needs \(MemoryLayout<masq_plugin_descriptor>.size))"
            )
        }
        let d = descriptor.pointee
        guard let kind = PluginKind(rawValue: d.kind) else { throw .plugin("\(path): unknown plugin kind \(d.kind)") }
        guard let namePointer = d.name, let name = String(validatingCString: namePointer), PluginName.isValid(name)
        else {
            throw .plugin("\(path): descriptor name is missing or not [a-z0-9_]{1,64}")
        }
        guard let versionPointer = d.version, let version = String(validatingCString: versionPointer), !version.isEmpty
        else {
            throw .plugin("\(path): descriptor version is missing or not UTF-8")
        }
        let summary = d.description.flatMap { String(validatingCString: $0) } ?? ""
        guard let vtable = d.vtable else { throw .plugin("\(path): \(kind.label) plugin '\(name)' has a NULL vtable") }
        let plugin = LoadedPlugin(
            path: path, kind: kind, name: name, version: version, summary: summary, abiVersion: abi, vtable: vtable)
        try VTableCheck.validate(plugin)
        return plugin
    }
}

/// Per-kind vtable rules: a minimum size (through the last required member)
/// and which members must be non-NULL.
enum VTableCheck {
    static func validate(_ plugin: LoadedPlugin) throws(MasqError) {
        let declared = Int(plugin.vtable.load(as: UInt32.self))
        let required: Int
        var missing: [String] = []
        switch plugin.kind {
        case .storage:
            required = end(\masq_storage_vtable.scan)
            if declared >= required {
                let v = plugin.vtable(as: masq_storage_vtable.self, zero: masq_storage_vtable())
                missing = names([
                    ("open", v.open == nil), ("close", v.close == nil), ("begin", v.begin == nil),
                    ("commit", v.commit == nil), ("rollback", v.rollback == nil), ("get", v.get == nil),
                    ("put", v.put == nil), ("del", v.del == nil), ("scan", v.scan == nil)
                ])
            }
        case .transport:
            required = end(\masq_transport_vtable.send)
            if declared >= required {
                let v = plugin.vtable(as: masq_transport_vtable.self, zero: masq_transport_vtable())
                missing = names([
                    ("create", v.create == nil), ("destroy", v.destroy == nil), ("start", v.start == nil),
                    ("stop", v.stop == nil), ("send", v.send == nil),
                    ("listen", v.flags & MASQ_TRANSPORT_LISTEN != 0 && v.listen == nil),
                    ("connect", v.flags & MASQ_TRANSPORT_CONNECT != 0 && v.connect == nil),
                    ("join", v.flags & MASQ_TRANSPORT_ROOMS != 0 && v.join == nil),
                    ("leave", v.flags & MASQ_TRANSPORT_ROOMS != 0 && v.leave == nil)
                ])
            }
        case .wallet:
            required = end(\masq_wallet_vtable.verify_payment)
            if declared >= required {
                let v = plugin.vtable(as: masq_wallet_vtable.self, zero: masq_wallet_vtable())
                missing = names([
                    ("create", v.create == nil), ("destroy", v.destroy == nil), ("address", v.address == nil),
                    ("balance", v.balance == nil), ("pay", v.pay == nil), ("sign", v.sign == nil),
                    ("verify", v.verify == nil), ("verify_payment", v.verify_payment == nil)
                ])
            }
        }
        guard declared >= required else {
            throw .plugin(
                "\(plugin.path): \(plugin.kind.label) vtable too short (struct_size \(declared); ABI \(MASQ_PLUGIN_ABI_VERSION) needs at least \(required))"
            )
        }
        guard missing.isEmpty else {
            throw .plugin(
                "\(plugin.path): \(plugin.kind.label) vtable member(s) \(missing.joined(separator: ", ")) are NULL but required"
            )
        }
    }

    private static func end<T, F>(_ member: KeyPath<T, F>) -> Int {
        MemoryLayout<T>.offset(of: member)! + MemoryLayout<F>.size
    }

    private static func names(_ checks: [(String, Bool)]) -> [String] {
        checks.filter { $0.1 }.map { $0.0 }
    }
}
