import ArgumentParser
import MasqKernel
#if canImport(Glibc)
    import Glibc
#endif

/// `masq put <namespace> <key> [value]` (value from stdin when omitted).
struct Put: MasqSubcommand {
    static let configuration = CommandConfiguration(abstract: "Set a key (the value comes from stdin when omitted).")

    @OptionGroup var store: StoreOptions
    @Argument(help: "Namespace (an application's name).") var namespace: String
    @Argument(help: "Key.") var key: String
    @Argument(help: "Value (default: read from standard input).") var value: String?

    func execute() throws {
        let bytes = try value.map { Array($0.utf8) } ?? readStandardInput()
        try store.withStore { s in
            try guarded { () throws(MasqError) in
                try s.put(NamespaceName(namespace, limits: s.limits), key: Array(key.utf8), value: bytes)
            }
        }
    }

    private func readStandardInput() throws -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw CLIError("cannot read standard input") }
            if n == 0 { return out }
            out += chunk[0..<n]
        }
    }
}

/// `masq get <namespace> <key>`: the value's bytes on stdout.
struct Get: MasqSubcommand {
    static let configuration = CommandConfiguration(abstract: "Print a key's value (exit status 2 if absent).")

    @OptionGroup var store: StoreOptions
    @Argument(help: "Namespace.") var namespace: String
    @Argument(help: "Key.") var key: String

    func execute() throws {
        let value = try store.withStore { s in
            try guarded { () throws(MasqError) in
                try s.get(NamespaceName(namespace, limits: s.limits), key: Array(key.utf8))
            }
        }
        guard let value else { throw CLIError("no key '\(key)' in namespace '\(namespace)'", code: 2) }
        writeOut(value)
        if isatty(1) != 0 { writeOut([0x0A]) }
    }
}

/// `masq del <namespace> <key>`.
struct Del: MasqSubcommand {
    static let configuration = CommandConfiguration(abstract: "Delete a key (deleting an absent key is not an error).")

    @OptionGroup var store: StoreOptions
    @Argument(help: "Namespace.") var namespace: String
    @Argument(help: "Key.") var key: String

    func execute() throws {
        try store.withStore { s in
            try guarded { () throws(MasqError) in
                try s.delete(NamespaceName(namespace, limits: s.limits), key: Array(key.utf8))
            }
        }
    }
}

/// `masq ls [namespace]`: namespaces, or a namespace's keys.
struct List: MasqSubcommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List namespaces, or the keys of one namespace.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "Namespace (omit to list namespaces).") var namespace: String?
    @Option(name: .long, help: "Only keys starting with this prefix.") var prefix: String = ""
    @Flag(name: .shortAndLong, help: "Print values too (key<TAB>value).") var values = false

    func execute() throws {
        try store.withStore { s in
            try guarded { () throws(MasqError) in
                guard let namespace else {
                    for name in try s.namespaces() { print(name) }
                    return
                }
                try s.list(NamespaceName(namespace, limits: s.limits), prefix: Array(prefix.utf8), keysOnly: !values) {
                    key, value in
                    var line = key
                    if let value { line += [0x09] + value }
                    writeOut(line + [0x0A])
                    return true
                }
            }
        }
    }
}

/// `masq counter <namespace> <key> [delta]`: add to a counter (or show it).
struct Counter: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "Add to a counter (concurrent additions on several devices all count), or print it.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "Namespace.") var namespace: String
    @Argument(help: "Key.") var key: String
    @Argument(help: "Amount to add (may be negative; omit to print the total).") var delta: Int64?

    func execute() throws {
        let total = try store.withStore { s in
            try guarded { () throws(MasqError) -> Int64 in
                let ns = try NamespaceName(namespace, limits: s.limits)
                if let delta { try s.counterAdd(ns, key: Array(key.utf8), delta: delta) }
                return try s.counterGet(ns, key: Array(key.utf8))
            }
        }
        print(total)
    }
}

/// `masq import <namespace>`: many keys at once, one transaction per 1,000.
struct Import: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "Set many keys from standard input: one 'key<TAB>value' per line ('key' alone deletes).")

    @OptionGroup var store: StoreOptions
    @Argument(help: "Namespace.") var namespace: String
    @Option(help: "Keys per transaction.") var batch = 1_000

    func execute() throws {
        var pending: [(key: [UInt8], value: [UInt8]?)] = []
        var total = 0
        try store.withStore { s in
            let ns = try guarded { () throws(MasqError) in try NamespaceName(namespace, limits: s.limits) }
            func flush() throws {
                guard !pending.isEmpty else { return }
                try guarded { () throws(MasqError) in try s.setAll(ns, pending) }
                total += pending.count
                pending.removeAll(keepingCapacity: true)
            }
            while let line = readLine(strippingNewline: true) {
                guard !line.isEmpty else { continue }
                let parts = line.split(separator: "\t", maxSplits: 1, omittingEmptySubsequences: false)
                pending.append((Array(parts[0].utf8), parts.count > 1 ? Array(parts[1].utf8) : nil))
                if pending.count >= max(batch, 1) { try flush() }
            }
            try flush()
        }
        print("\(total) key(s) written")
    }
}

/// `masq check`: verify the whole store (checksums, counts, change log).
struct Check: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Verify the store: every record's checksum, every namespace's record count, the change log (exit status 1 if damaged).",
        discussion: """
            With --repair (stop `masq sync` and masqd on this store first): a store on disk is rebuilt — everything \
            that still reads back and verifies is copied into a fresh store, the damaged one is kept aside — and the \
            next `masq sync` fetches a whole copy from a paired device; a store in memory has its damaged records removed.
            """)
    @OptionGroup var store: StoreOptions
    @Flag(help: "Rebuild the store from what verifies and ask paired devices for a whole copy at the next sync.")
    var repair = false

    func execute() throws {
        // A store damaged where opening reads (its format, replica, clock) does not open at all.
        if FileSystem.exists(store.configPath) {
            do throws(MasqError) {
                try Store(configPath: store.configPath).close()
            } catch  where error.status == .corrupt || error.status == .io {
                print("damaged: the store does not open: \(error.message)")
                guard repair else {
                    throw CLIError(
                        "the store is damaged: `masq check --repair` rebuilds it from what verifies and fetches the rest again from a paired device"
                    )
                }
                return try rebuild()
            } catch {}  // other reasons (locked, no config…) are reported below as usual
        }
        // nil: sound; true: damaged, repairable by a rebuild (on disk); false: repaired in place already.
        let needsRebuild: Bool? = try store.withStore { s in
            let report = try guarded { () throws(MasqError) in try s.check() }
            print(
                "\(report.namespaces) namespace(s), \(report.records) record(s), \(report.logEntries) change-log entr(y/ies)"
                    + (report.unchecksummed > 0
                        ? "; \(report.unchecksummed) record(s) from an older version carry no checksum" : ""))
            if report.ok {
                print("ok: no damage found")
                return nil
            }
            for problem in report.problems { print("damaged: \(problem)") }
            guard repair else {
                throw CLIError(
                    "the store is damaged: `masq check --repair` rebuilds it from what verifies and fetches the rest again from a paired device"
                )
            }
            if s.isOnDisk { return true }
            let removed = try guarded { () throws(MasqError) in try s.repairDamage() }
            print(
                "repaired: removed \(removed) damaged record(s); run `masq sync` with a paired device online to fetch them again"
            )
            return false
        }
        guard needsRebuild == true else { return }
        try rebuild()
    }

    private func rebuild() throws {
        let config = try guarded { () throws(MasqError) in try MasqConfig.load(path: store.configPath) }
        let rebuilt = try guarded { () throws(MasqError) in try Store.rebuild(config: config) }
        print(
            "rebuilt: kept \(rebuilt.kept) entries; dropped \(rebuilt.dropped) damaged; skipped \(rebuilt.unreadable) unreadable place(s); "
                + (rebuilt.fromPairingCopy > 0
                    ? "took \(rebuilt.fromPairingCopy) pairing entr(y/ies) back from the pairing copy; " : "")
                + (rebuilt.newReplica ? "continues under a new replica id; " : "")
                + "the damaged store is kept in \(rebuilt.damagedCopy)")
        try store.withStore { s in
            let report = try guarded { () throws(MasqError) in try s.check() }
            guard report.ok else {
                for problem in report.problems { print("still damaged: \(problem)") }
                throw CLIError("the rebuilt store is still damaged")
            }
            print("ok: run `masq sync` with a paired device online to fetch what was lost")
        }
    }
}
