import ArgumentParser
import MasqKernel
import MasqSharing
#if canImport(Glibc)
    import Glibc
#endif

/// `masq share`: share a namespace with another person by link.
struct Share: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "Share a namespace with another person: prints a single-use link and its QR code.",
        discussion: """
            Send the link through any messenger. Keep `masq sync` running (or run it later): it answers the \
            other person's claim, then keeps the namespace in sync. Compare the fingerprint `masq shares` \
            shows with your contact's to be sure nobody sits in between.
            """)

    @OptionGroup var store: StoreOptions
    @Argument(help: "The namespace to share.") var namespace: String
    @Flag(help: "The other person may read but not change it.") var readOnly = false
    @Option(
        help: ArgumentHelp(
            "A Connectoid service for the link (repeat for redundancy; default: the config's sharing.services).",
            valueName: "url"))
    var service: [String] = []
    @Option(
        help: ArgumentHelp(
            "The page the link opens (the connectoid= parameter and the #secret are appended).", valueName: "url"))
    var base = "masq://share/"
    @Option(help: ArgumentHelp("Also write the QR code as a PGM image here.", valueName: "file")) var qrPgm: String?
    @Flag(help: "Do not draw the QR code in the terminal.") var noQr = false
    @Option(
        help: ArgumentHelp(
            "What you call the other person (kept with the share, shown by `masq shares`).", valueName: "name"))
    var nickname: String?

    func execute() throws {
        try store.withStore { s in
            let link = try guarded { () throws(MasqError) in
                let ns = try NamespaceName(namespace, limits: s.limits)
                return try ShareService(store: s).create(
                    namespace: ns, readOnly: readOnly, services: service.isEmpty ? nil : service, base: base,
                    nickname: nickname)
            }
            if let qr = try? QRCode(link.text) {
                if let qrPgm { try? FileSystem.writeFile(qrPgm, qr.pgm()) }
                if !noQr { print(qr.terminalText()) }
            }
            print("share link for namespace \(namespace) (\(readOnly ? "read-only" : "read-write"), single use):")
            print(link.text)
            print("share id: \(String(link.pubText.prefix(10))); the other person runs: masq accept '<link>'")
            print("keep `masq sync` running so their claim is answered")
        }
    }
}

/// `masq accept`: accept a share link.
struct Accept: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "Accept another person's share link and receive the namespace.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The link, quoted (it contains # and &).") var link: String
    @Option(
        name: .customLong("as"),
        help: ArgumentHelp(
            "Keep it under this namespace, which must not exist yet (default: \"shared:\" + the owner's name for it).",
            valueName: "namespace"))
    var local: String?
    @Flag(
        help: "Merge the other person's records into the existing namespace named by --as (and send its keys to them).")
    var merge = false
    @Option(help: "Seconds to wait for the owner's answer.") var wait: Double = 60
    @Option(help: ArgumentHelp("What you call the person who sent the link (kept with the share).", valueName: "name"))
    var nickname: String?

    func execute() throws {
        try store.withStore { s in
            let service = ShareService(store: s)
            service.onEvent = { line in
                print(line); fflush(nil)
            }
            try guarded { () throws(MasqError) in try service.start() }
            defer { service.stop() }
            let state = try guarded { () throws(MasqError) in
                try service.accept(
                    link, as: try local.map { (n) throws(MasqError) in try NamespaceName(n, limits: s.limits) },
                    merge: merge,
                    nickname: nickname)
            }
            print("claim sent for share \(state.shortID); waiting for the owner (up to \(Int(wait)) s)")
            fflush(nil)
            let deadline = monotonicSeconds() + wait
            while monotonicSeconds() < deadline {
                usleep(100_000)
                guard let now = try? s.share(state.id) else { continue }
                switch now.status {
                case .intercepted:
                    throw CLIError(
                        "share \(state.shortID) was intercepted: someone used the link before you; ask for a new link")
                case .active:
                    // Take the first records too, within the same wait.
                    while monotonicSeconds() < deadline && ((try? s.share(state.id))??.recordsReceived ?? 0) == 0 {
                        usleep(100_000)
                    }
                    while monotonicSeconds() < deadline && !service.settled() { usleep(200_000) }
                    let count = (try? s.getAll(try NamespaceName(now.namespace, limits: s.limits)).count) ?? 0
                    print(
                        "accepted: namespace \(now.namespace) (\(now.access.rawValue)), \(count) key(s); fingerprint \(now.fingerprint ?? "")"
                    )
                    print("keep `masq sync` running to stay in sync")
                    return
                default: continue
                }
            }
            throw CLIError(
                "no answer from the owner within \(Int(wait)) s; the claim stays pending and `masq sync` completes it")
        }
    }
}

/// `masq shares`: list shares with other people.
struct Shares: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "List shares with other people: namespace, role, rights, state, fingerprint, warnings.")
    @OptionGroup var store: StoreOptions

    func execute() throws {
        try store.withStore { s in
            let shares = try guarded { () throws(MasqError) in try s.shares() }
            if shares.isEmpty { print("no shares"); return }
            for share in shares {
                let role = share.role == .owner ? "shared by you" : "shared with you"
                var line =
                    "\(share.shortID)  \(share.namespace.isEmpty ? "(pending)" : share.namespace)  \(role)  \(share.access.rawValue)  \(share.status.rawValue)"
                if let nickname = share.nickname { line += "  with \(nickname)" }
                if let fingerprint = share.fingerprint {
                    line += "  fingerprint \(fingerprint)  \(share.fingerprintEmoji ?? "")"
                }
                if share.lastHeard > 0 { line += "  last heard \(formatTime(share.lastHeard))" }
                if share.rejected > 0 { line += "  \(share.rejected) message(s) refused" }
                print(line)
                for warning in share.warnings { print("    warning: \(warning)") }
            }
        }
    }
}

/// `masq unshare`: end a share on both sides.
struct Unshare: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "End a share: tell the other side and delete its keys here.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The share id (or its first characters) from `masq shares`.") var id: String

    func execute() throws {
        try store.withStore { s in
            let service = ShareService(store: s)
            try guarded { () throws(MasqError) in try service.start() }
            let state = try guarded { () throws(MasqError) in try service.unshare(id) }
            service.stop()  // waits for the UNSHARE request under way
            print("ended share \(state.shortID) of namespace \(state.namespace); its keys are deleted (the data stays)")
        }
    }
}
