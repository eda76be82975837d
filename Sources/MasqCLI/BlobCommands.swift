import ArgumentParser
import MasqKernel
#if canImport(Glibc)
    import Glibc
#endif

/// `masq blob put|get|info|gc`: files of any size under ordinary keys
/// (docs/STORAGE-FORMAT.md, "Blobs").
struct Blob: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Store files of any size under keys (blobs), read them back, see what is here, collect unreferenced chunks.",
        discussion: """
            A blob is stored in 1 MiB chunks (each stored once, however many keys or files share it); the key holds a \
            small reference that syncs like any value, and sync brings the chunks. With "sync": {"blobs": "on_demand"} \
            in the config a device fetches a blob's chunks only when asked (`masq blob get --fetch`).
            """,
        subcommands: [Put.self, Get.self, Info.self, Collect.self])

    struct Put: MasqSubcommand {
        static let configuration = CommandConfiguration(
            abstract: "Store FILE (read 1 MiB at a time; '-' for standard input) as a blob under KEY.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "Namespace.") var namespace: String
        @Argument(help: "Key.") var key: String
        @Argument(help: "File ('-': standard input).") var file: String
        @Option(name: .customLong("type"), help: ArgumentHelp("Content type, e.g. image/jpeg.", valueName: "type"))
        var contentType: String?
        @Option(help: "The blob's name (default: the file's name).") var name: String?

        func execute() throws {
            let info = try store.withStore { s in
                try guarded { () throws(MasqError) -> BlobInfo in
                    let ns = try NamespaceName(namespace, limits: s.limits)
                    if file == "-" {
                        return try s.writeBlob(
                            ns, key: Array(key.utf8), contentType: contentType ?? "", name: name ?? ""
                        ) { (buffer) throws(MasqError) -> Int in
                            while true {
                                let n = read(0, buffer.baseAddress, buffer.count)
                                if n < 0 && errno == EINTR { continue }
                                guard n >= 0 else { throw MasqError(.io, "cannot read standard input") }
                                return n
                            }
                        }
                    }
                    return try s.writeBlob(
                        ns, key: Array(key.utf8), path: file, contentType: contentType ?? "", name: name)
                }
            }
            print(
                "stored \(info.reference.size) bytes in \(info.reference.chunkCount) chunk(s), \(info.newChunks) new (blob \(info.reference.id.prefix(12)))"
            )
        }
    }

    struct Get: MasqSubcommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the blob under KEY to FILE ('-': standard output); exit status 2 if the key is absent.",
            discussion:
                "FILE is written under a temporary name and renamed when whole. When chunks are missing, --fetch syncs until they arrived."
        )
        @OptionGroup var store: StoreOptions
        @Argument(help: "Namespace.") var namespace: String
        @Argument(help: "Key.") var key: String
        @Argument(help: "File ('-': standard output).") var file: String
        @Option(help: "First byte.") var offset: UInt64 = 0
        @Option(help: "Bytes (default: to the end).") var length: UInt64?
        @Flag(help: "If chunks are missing here, sync with the other devices until they arrived.") var fetch = false
        @Option(help: "Seconds --fetch may take.") var timeout: Double = 600

        func execute() throws {
            try store.withStore { s in
                let ns = try guarded { () throws(MasqError) in try NamespaceName(namespace, limits: s.limits) }
                let k = Array(key.utf8)
                if fetch {
                    let info = try guarded { () throws(MasqError) in try s.blobInfo(ns, key: k) }
                    if !info.complete { try fetchBlob(s, ns, k, info) }
                }
                try guarded { () throws(MasqError) in
                    if file == "-" {
                        try s.readBlob(ns, key: k, offset: offset, length: length) { (bytes) throws(MasqError) in
                            writeOut(Array(bytes))
                        }
                    } else {
                        try s.readBlob(ns, key: k, toFile: file, offset: offset, length: length)
                    }
                }
            }
        }

        private func fetchBlob(_ s: Store, _ ns: NamespaceName, _ key: [UInt8], _ info: BlobInfo) throws {
            try guarded { () throws(MasqError) in try s.fetchBlob(ns, key: key) }
            let service = try guarded { () throws(MasqError) in try SyncService(store: s) }
            try guarded { () throws(MasqError) in try service.start() }
            defer { service.stop() }
            let bar = isatty(2) != 0
            let deadline = monotonicSeconds() + timeout
            while monotonicSeconds() < deadline {
                usleep(200_000)
                let now = try guarded { () throws(MasqError) in try s.blobInfo(ns, key: key) }
                if bar { writeError("\r\(now.presentBytes >> 20)/\(now.reference.size >> 20) MiB") }
                if now.complete {
                    if bar { writeError("\n") }
                    return
                }
            }
            if bar { writeError("\n") }
            let problem = (try? service.status())?.blobs.first { $0.id == info.reference.id }?.problem
            throw CLIError("blob not fetched after \(Int(timeout)) s\(problem.map { " (\($0))" } ?? "")")
        }
    }

    struct Info: MasqSubcommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a blob's size, name, type and how much of it is on this device (JSON).")
        @OptionGroup var store: StoreOptions
        @Argument(help: "Namespace.") var namespace: String
        @Argument(help: "Key.") var key: String

        func execute() throws {
            let info = try store.withStore { s in
                try guarded { () throws(MasqError) in
                    try s.blobInfo(NamespaceName(namespace, limits: s.limits), key: Array(key.utf8))
                }
            }
            print(info.json)
        }
    }

    struct Collect: MasqSubcommand {
        static let configuration = CommandConfiguration(
            commandName: "gc", abstract: "Delete chunks no key references any more (JSON report).")
        @OptionGroup var store: StoreOptions

        func execute() throws {
            let report = try store.withStore { s in try guarded { () throws(MasqError) in try s.collectBlobs() } }
            print(report.json)
        }
    }
}
