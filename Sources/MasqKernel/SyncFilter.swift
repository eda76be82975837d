/// Selective sync (docs/PROTOCOL.md, "Selective sync"; docs/CONFIG.md, `sync`):
/// which namespaces a device keeps, and whether it fetches blob contents as
/// soon as it learns of them or only when asked.
///
/// A filtered device (one that does not keep every namespace):
///   - declares its filter in HELLO, so peers leave the records of other
///     namespaces out of the commits and snapshots they send it (each commit
///     still travels, possibly empty: its vector entry advances and it is
///     acknowledged like any other, so nobody resends it);
///   - drops records of namespaces it does not keep from whatever it
///     receives (a peer that ignores the declaration changes nothing);
///   - sends others only the commits it made itself, and snapshots only of
///     its own records, because it holds other devices' commits incompletely:
///     relaying them would let a full device take a partial commit for a
///     whole one and never receive the rest.
public struct NamespaceFilter: Sendable, Equatable {
    /// Names (or prefixes, written with a trailing `*`) kept; nil: every namespace.
    public var include: [String]?
    /// Names (or prefixes) never kept, even when `include` names them.
    public var exclude: [String] = []

    public init(include: [String]? = nil, exclude: [String] = []) {
        self.include = include
        self.exclude = exclude
    }

    /// Keeps every namespace (no filter).
    public var keepsAll: Bool { include == nil && exclude.isEmpty }

    public func keeps(_ namespace: String) -> Bool {
        if let include, !include.contains(where: { Self.matches($0, namespace) }) { return false }
        return !exclude.contains { Self.matches($0, namespace) }
    }

    /// A pattern is an exact name, or a prefix followed by `*`.
    static func matches(_ pattern: String, _ name: String) -> Bool {
        if pattern.hasSuffix("*") { return name.utf8.starts(with: pattern.utf8.dropLast()) }
        return pattern.utf8.elementsEqual(name.utf8)
    }

    static let maxPatterns = 256

    /// u8 has include · [varint n · patterns] · varint m · patterns; pattern = varint len (1–255) · UTF-8.
    func encode(into out: inout [UInt8]) {
        func list(_ items: [String]) {
            out.appendVarint(UInt64(items.count))
            for item in items {
                let bytes = Array(item.utf8)
                out.appendVarint(UInt64(bytes.count))
                out += bytes
            }
        }
        if let include {
            out.append(1)
            list(include)
        } else {
            out.append(0)
        }
        list(exclude)
    }

    static func decode(_ r: inout ByteReader) throws(MasqError) -> NamespaceFilter {
        func list() throws(MasqError) -> [String] {
            let n = try r.varint()
            guard n <= UInt64(maxPatterns) else { throw .invalid("a namespace filter of \(n) patterns") }
            var out: [String] = []
            for _ in 0..<n {
                let length = try r.varint()
                guard length >= 1 && length <= 255 else { throw .invalid("a namespace pattern of \(length) bytes") }
                guard let text = String(validating: try r.bytes(Int(length)), as: UTF8.self) else {
                    throw .invalid("a namespace pattern is not UTF-8")
                }
                out.append(text)
            }
            return out
        }
        let hasInclude = try r.byte()
        guard hasInclude <= 1 else { throw .invalid("bad namespace filter flag") }
        let include = hasInclude == 1 ? try list() : nil
        return NamespaceFilter(include: include, exclude: try list())
    }

    /// As the config writes it (for status).
    var json: String {
        "{\"namespaces\": " + (include.map { "[" + $0.map(jsonString).joined(separator: ", ") + "]" } ?? "null")
            + ", \"exclude\": [" + exclude.map(jsonString).joined(separator: ", ") + "]}"
    }
}

/// The config's "sync" section.
public struct SyncConfig: Sendable, Equatable {
    public enum BlobMode: String, Sendable { case eager, onDemand = "on_demand" }
    public var filter = NamespaceFilter()
    /// eager (default): fetch the contents of every blob referenced in a kept
    /// namespace as soon as the reference arrives; on_demand: only those asked
    /// for (masq_blob_fetch, or a read that finds them missing).
    public var blobs = BlobMode.eager
    public init() {}

    /// Parse the "sync" member of a config; `fail(path, message)` makes the error.
    static func parse(_ value: JSONValue, fail: (String, String) -> MasqError) throws(MasqError) -> SyncConfig {
        guard case .object(let members) = value else {
            throw fail("sync", "must be an object, found \(value.typeName)")
        }
        let allowed: Set<String> = ["namespaces", "exclude", "blobs"]
        if let unknown = members.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw fail("sync.\(unknown)", "unknown key (expected one of: \(allowed.sorted().joined(separator: ", ")))")
        }
        func patterns(_ key: String) throws(MasqError) -> [String] {
            guard case .array(let items) = members[key]! else {
                throw fail("sync.\(key)", "must be an array of namespace names")
            }
            guard items.count <= NamespaceFilter.maxPatterns else {
                throw fail("sync.\(key)", "at most \(NamespaceFilter.maxPatterns) names")
            }
            var out: [String] = []
            for (i, item) in items.enumerated() {
                guard case .string(let s) = item, (1...255).contains(s.utf8.count),
                    !s.unicodeScalars.contains(where: { $0.value < 0x20 })
                else {
                    throw fail(
                        "sync.\(key)[\(i)]",
                        "must be a namespace name of 1 to 255 bytes (a trailing * matches any suffix)")
                }
                out.append(s)
            }
            return out
        }
        var config = SyncConfig()
        if members["namespaces"] != nil, members["namespaces"] != .null {
            let names = try patterns("namespaces")
            guard !names.isEmpty else {
                throw fail("sync.namespaces", "must name at least one namespace (omit it to keep every namespace)")
            }
            config.filter.include = names
        }
        if members["exclude"] != nil { config.filter.exclude = try patterns("exclude") }
        if let mode = members["blobs"] {
            guard case .string(let text) = mode, let parsed = BlobMode(rawValue: text) else {
                throw fail("sync.blobs", "must be \"eager\" or \"on_demand\"")
            }
            config.blobs = parsed
        }
        return config
    }

    /// The JSON `masq init` writes (only when not the default).
    var json: String {
        var parts: [String] = []
        if let include = filter.include {
            parts.append("\"namespaces\": [" + include.map(jsonString).joined(separator: ", ") + "]")
        }
        if !filter.exclude.isEmpty {
            parts.append("\"exclude\": [" + filter.exclude.map(jsonString).joined(separator: ", ") + "]")
        }
        if blobs != .eager { parts.append("\"blobs\": \(jsonString(blobs.rawValue))") }
        return "{ " + parts.joined(separator: ", ") + " }"
    }
}

extension Store {
    static let metaSyncFilter: [UInt8] = [RecordFormat.meta] + Array("syncfilter".utf8)

    /// Remember the namespaces sync runs with. When they may include one the
    /// last run left out, ask the paired devices for a whole copy (HELLO's
    /// snapshot request): this device's vector already covers the commits
    /// whose records of that namespace it never received.
    func noteSyncFilter(_ filter: NamespaceFilter) throws(MasqError) {
        try localTransaction { () throws(MasqError) in
            let old = try Store.getMeta(engine, Store.metaSyncFilter)
            var encoded: [UInt8] = []
            filter.encode(into: &encoded)
            if filter.keepsAll {
                guard old != nil else { return }
                try Store.metaSyncFilter.withBytes { (k) throws(MasqError) in try engine.delete(k) }
            } else {
                guard old != encoded else { return }
                try Store.putMeta(engine, Store.metaSyncFilter, encoded)
            }
            if old != nil {
                try Store.putMeta(engine, Store.metaWantsSnapshot, [1])
                Log.info("sync", "the namespaces kept changed; asking the other devices for a whole copy")
            }
        }
    }
}
