import ArgumentParser
import MasqKernel
#if canImport(Glibc)
    import Glibc
#endif

/// `masq pair`: offer a one-time link (and QR code), wait for the other device.
struct Pair: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "Offer a one-time pairing link and QR code, then wait for another device to join.")

    @OptionGroup var store: StoreOptions
    @Option(
        help: ArgumentHelp("Where to wait for the joining device (IPv4:PORT; 0 picks a port).", valueName: "address"))
    var listen = "127.0.0.1:0"
    @Option(help: ArgumentHelp("Seconds the link stays valid.", valueName: "seconds"))
    var ttl: UInt64 = Store.defaultPairingTTL
    @Option(help: ArgumentHelp("Also write the QR code as a PGM image here.", valueName: "file"))
    var qrPgm: String?
    @Flag(help: "Do not draw the QR code in the terminal.") var noQr = false
    @Option(
        help: ArgumentHelp(
            "Meet through this relay (default: the relay in the config; without one, a direct TCP rendezvous on --listen).",
            valueName: "ws-url"))
    var relay: String?
    @Option(
        help: ArgumentHelp(
            "Also print the link as an https URL of this web app (a page using masq.js in peer mode), with the pairing in its fragment; the QR code then carries it, so a phone's camera opens the app and joins.",
            valueName: "url"))
    var web: String?

    func execute() throws {
        try store.withStore { s in
            if let (transport, url) = s.config.relayTransport(explicit: relay) {
                let device = try guarded { () throws(MasqError) in
                    try PairingRendezvous.offer(
                        store: s, transport: transport, url: url, ttl: ttl,
                        onLink: { link in
                            show(link)
                        }, onFailure: { error in writeError("masq: a pairing attempt failed: \(error.message)\n") })
                }
                report(device)
                try rememberRelay(url, s, store.configPath)
                return
            }
            let listener = try Listener(listen)
            let link = try guarded { () throws(MasqError) in try s.createPairingOffer(via: listener.endpoint, ttl: ttl)
            }
            show(link)
            let deadline = monotonicSeconds() + Double(ttl)
            while let connection = listener.accept(until: deadline) {
                do {
                    let device = try run(PairingFlow(offering: link, store: s), over: connection)
                    report(device)
                    return
                } catch let error as CLIError {
                    writeError("masq: a pairing attempt failed: \(error.description)\n")
                }
            }
            throw CLIError("the pairing link expired before another device joined")
        }
    }

    /// Print the link and its QR code (and write the PGM if asked).
    private func show(_ link: PairingLink) {
        let webLink = web.flatMap { try? link.webURL(base: $0) }
        if let qr = try? QRCode(webLink ?? link.string) {
            if let qrPgm { try? FileSystem.writeFile(qrPgm, qr.pgm()) }
            if !noQr { print(qr.terminalText()) }
        }
        print("pairing link (valid \(ttl) s, single use):")
        print(link.string)
        print("on the other device: masq join '<link>'")
        if let webLink {
            print("web link (open it on the phone, or scan the QR code with its camera):")
            print(webLink)
        } else if let web {
            print("(no web link: \(web) is not an http(s) URL without a fragment)")
        }
        fflush(nil)  // the link must reach a pipe reader before we block
    }

    /// Answer one connection until paired; refusals are sent to the peer.
    private func run(_ flow: PairingFlow, over connection: FrameSocket) throws -> PairedDevice {
        while true {
            let frame = try connection.receive()
            do {
                switch try flow.receive(frame) {
                case .send(let reply):
                    try connection.send(reply)
                case .paired(let device, let final):
                    if let final { try connection.send(final) }
                    return device
                }
            } catch let error as MasqError {
                try? connection.send(PairingFlow.refusal(error.message))
                throw CLIError(error.message)
            }
        }
    }
}

/// `masq join <link>`.
struct Join: MasqSubcommand {
    static let configuration = CommandConfiguration(abstract: "Pair with the device that printed a pairing link.")

    @OptionGroup var store: StoreOptions
    @Argument(help: "The masq://pair/... link (quote it: it contains '#').") var link: String

    func execute() throws {
        let parsed = try guarded { () throws(MasqError) in try PairingLink(parsing: link) }
        guard let via = parsed.via else {
            throw CLIError("this link does not say where the other device waits (no via=)")
        }
        if via.hasPrefix("ws://") || via.hasPrefix("wss://") {
            try store.withStore { s in
                let (transport, _) = s.config.relayTransport(explicit: via)!
                let device = try guarded { () throws(MasqError) in
                    try PairingRendezvous.join(store: s, link: parsed, transport: transport)
                }
                report(device)
                try rememberRelay(via, s, store.configPath)
            }
            return
        }
        try store.withStore { s in
            let flow = try guarded { () throws(MasqError) in try PairingFlow(joining: parsed, store: s) }
            let connection = try FrameSocket.connect(via)
            try connection.send(try guarded { () throws(MasqError) in try flow.start() })
            while true {
                let frame = try connection.receive()
                let step = try guarded { () throws(MasqError) in try flow.receive(frame) }
                switch step {
                case .send(let reply): try connection.send(reply)
                case .paired(let device, _):
                    report(device)
                    return
                }
            }
        }
    }
}

func report(_ device: PairedDevice) {
    let fp = device.keys.fingerprint
    print("paired with \(device.name) (device \(device.deviceID))")
    print("fingerprint: \(fp.digits)  \(fp.emoji)")
    print("compare it with what `masq devices` shows on that device")
}

/// `masq devices [remove ID | rename NAME]`.
struct Devices: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "List this device and its paired devices, with fingerprints.",
        subcommands: [List.self, Remove.self, Rename.self], defaultSubcommand: List.self)

    func execute() throws {}

    struct List: MasqSubcommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List devices (the default).")
        @OptionGroup var store: StoreOptions

        func execute() throws {
            try store.withStore { s in
                let (me, name, paired) = try guarded { () throws(MasqError) in
                    (try s.requireIdentity().publicKeys, s.deviceName, try s.devices())
                }
                let fp = me.fingerprint
                print("this device: \(name) (device \(me.deviceID))")
                print("  fingerprint: \(fp.digits)  \(fp.emoji)")
                if paired.isEmpty { print("no paired devices (pair one with `masq pair` here and `masq join` there)") }
                for d in paired {
                    let f = d.keys.fingerprint
                    print("\(d.name) (device \(d.deviceID)), paired \(formatTime(d.pairedAt))")
                    print("  fingerprint: \(f.digits)  \(f.emoji)")
                }
            }
        }
    }

    struct Remove: MasqSubcommand {
        static let configuration = CommandConfiguration(
            abstract: "Forget a device: nothing sent afterwards is readable by it.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "The device id `masq devices` shows.") var device: String

        func execute() throws {
            try store.withStore { s in try guarded { () throws(MasqError) in try s.removeDevice(device) } }
            print("removed device \(device)")
        }
    }

    struct Rename: MasqSubcommand {
        static let configuration = CommandConfiguration(abstract: "Set the name other devices see for this one.")
        @OptionGroup var store: StoreOptions
        @Argument(help: "The new name.") var name: String

        func execute() throws {
            try store.withStore { s in try guarded { () throws(MasqError) in try s.setDeviceName(name) } }
        }
    }
}

/// `masq passphrase`: set, change or remove the store's passphrase.
struct Passphrase: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "Set, change or remove the passphrase that encrypts the store at rest.",
        discussion: "Reads MASQ_PASSPHRASE (current) and MASQ_NEW_PASSPHRASE (new) when set, else asks on the terminal."
    )

    @OptionGroup var store: StoreOptions
    @Flag(help: "Remove the passphrase (data is then stored in clear).") var remove = false

    func execute() throws {
        try store.withStore(unlock: false) { s in
            let old: [UInt8]? = s.isProtected ? try Secrets.current(prompt: "current passphrase: ") : nil
            if let old { try guarded { () throws(MasqError) in try s.unlock(old) } }
            let new: [UInt8]? = remove ? nil : try Secrets.new()
            try guarded { () throws(MasqError) in try s.setPassphrase(old: old, new: new) }
            print(remove ? "passphrase removed" : (old == nil ? "store protected" : "passphrase changed"))
        }
    }
}

func formatTime(_ ms: UInt64) -> String {
    var t = time_t(ms / 1000)
    var parts = tm()
    gmtime_r(&t, &parts)
    var buffer = [CChar](repeating: 0, count: 32)
    strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M UTC", &parts)
    return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Record the relay the devices paired through in the config file (when it
/// names no transport yet), so `masq sync` uses it.
func rememberRelay(_ url: String, _ store: Store, _ configPath: String) throws {
    guard let config = store.config.rememberingRelay(url) else { return }
    try guarded { () throws(MasqError) in try FileSystem.writeFile(configPath, Array(config.json().utf8)) }
    print("added the relay \(url) to \(configPath)")
}
