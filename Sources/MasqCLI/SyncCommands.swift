import ArgumentParser
import MasqKernel
import MasqSharing
#if canImport(Glibc)
    import Glibc
#endif

/// `masq sync`: keep this store in sync with the paired devices (until
/// stopped), or catch up once and exit.
struct Sync: MasqSubcommand {
    static let configuration = CommandConfiguration(
        abstract: "Sync with paired devices through the configured relay (until Ctrl-C, or --once).")

    @OptionGroup var store: StoreOptions
    @Flag(help: "Catch up with every present device, then exit (status 1 on timeout).") var once = false
    @Option(help: "Seconds --once may take.") var timeout: Double = 120
    @Flag(help: "No progress bar.") var quiet = false

    func execute() throws {
        try store.withStore { s in
            let hasShares = !(try guarded { () throws(MasqError) in try s.shares() }).isEmpty
            let sharing = hasShares ? ShareService(store: s) : nil
            sharing?.onEvent = { line in
                print(line); fflush(nil)
            }
            // Shares with other people run beside device sync, or alone.
            if let sharing, s.config.transports.isEmpty {
                try guarded { () throws(MasqError) in try sharing.start() }
                defer { sharing.stop() }
                if once {
                    guard waitSettled(sharing, until: monotonicSeconds() + timeout) else {
                        throw CLIError("shares not settled after \(Int(timeout)) s")
                    }
                    print("shares settled")
                    return
                }
                print("syncing shares; Ctrl-C to stop")
                fflush(nil)
                while true { sleep(5) }
            }
            let service = try guarded { () throws(MasqError) in try SyncService(store: s) }
            let bar = ProgressBar(enabled: !quiet && isatty(2) != 0)
            service.engine.onProgress = { p in bar.update(received: p.received, remaining: p.remaining) }
            if let sharing { try guarded { () throws(MasqError) in try sharing.start() } }
            defer { sharing?.stop() }
            if once {
                let started = monotonicSeconds()
                let done = try guarded { () throws(MasqError) in try service.syncOnce(timeout: timeout) }
                bar.finish()
                let status = try guarded { () throws(MasqError) in try service.status() }
                var problems = status.devices.compactMap { d in d.problem.map { "\(d.name): \($0)" } }
                // Nothing seen in this run: what an earlier run recorded (e.g. a device that cannot store).
                if problems.isEmpty {
                    for d in status.devices {
                        if let p = try? s.syncProblem(device: d.deviceID) {
                            problems.append("\(d.name): \(p.text) (since \(formatTime(p.since)))")
                        }
                    }
                }
                if let full = s.storageProblem() { problems.insert("this device: \(full)", at: 0) }
                guard done else {
                    let why =
                        problems.isEmpty
                        ? "are the other devices online and on the same relay?" : problems.joined(separator: "; ")
                    throw CLIError("not caught up after \(Int(timeout)) s (\(why))")
                }
                let reached = status.devices.filter(\.present).count
                // A script must be able to tell that nothing was synced.
                if reached == 0 && !status.devices.isEmpty {
                    throw CLIError(
                        "no paired device answered (\(status.connected ? "none is online in the room" : "the transport is not connected")); nothing was synced"
                    )
                }
                for problem in problems { print("warning: \(problem)") }
                print("in sync with \(reached) of \(status.devices.count) device(s)")
                if let sharing {
                    guard waitSettled(sharing, until: started + timeout) else {
                        throw CLIError("shares not settled after \(Int(timeout)) s")
                    }
                    print("shares settled")
                }
                return
            }
            try guarded { () throws(MasqError) in try service.start() }
            print(
                "syncing (room \(try guarded { () throws(MasqError) in try service.status() }.room.prefix(8))…); Ctrl-C to stop"
            )
            fflush(nil)
            while true {
                sleep(5)
                if let status = try? service.status(), !quiet {
                    let here = status.devices.filter(\.present).map(\.name)
                    bar.note(
                        "\(status.connected ? "connected" : "reconnecting"); present: \(here.isEmpty ? "nobody" : here.joined(separator: ", ")); pending \(status.pending)"
                    )
                }
            }
        }
    }

    /// Shares are settled when, after the mailboxes were polled for a while,
    /// nothing is in flight three checks in a row.
    private func waitSettled(_ sharing: ShareService, until deadline: Double) -> Bool {
        let earliest = monotonicSeconds() + 1.5
        var quiet = 0
        while monotonicSeconds() < deadline {
            usleep(300_000)
            quiet = sharing.settled() ? quiet + 1 : 0
            if quiet >= 3 && monotonicSeconds() >= earliest { return true }
        }
        return false
    }
}

/// `masq status`: this device, its paired devices and what each still lacks.
struct Status: MasqSubcommand {
    static let configuration = CommandConfiguration(abstract: "Show peers, when each last synced, and pending changes.")
    @OptionGroup var store: StoreOptions

    func execute() throws {
        try store.withStore { s in
            try guarded { () throws(MasqError) in
                let me = try s.requireIdentity().publicKeys
                let (applied, _) = try s.syncVectors()
                print("this device: \(s.deviceName) (\(me.deviceID)), \(applied[s.replicaID]) local commits")
                if s.config.transports.isEmpty {
                    print("no relay configured (masq join adds the relay of the link; or edit \"transports\")")
                } else {
                    for t in s.config.transports {
                        print("transport: \(t.name) \(t.options.first { $0.key == "url" }?.value ?? "")")
                    }
                }
                let devices = try s.devices()
                if devices.isEmpty { print("no paired devices") }
                for d in devices {
                    guard let ack = try s.acknowledgement(of: d.deviceID) else {
                        print("\(d.name) (\(d.deviceID)): never synced")
                        continue
                    }
                    let pending = applied.entries.reduce(UInt64(0)) {
                        $0 + ($1.value > ack.vector[$1.key] ? $1.value - ack.vector[$1.key] : 0)
                    }
                    print(
                        "\(d.name) (\(d.deviceID)): last sync \(ack.at == 0 ? "unknown" : formatTime(ack.at)), \(pending) change(s) pending for it"
                    )
                }
                if let full = s.storageProblem() { print("  this device: \(full)") }
                for d in devices {
                    if let problem = try s.syncProblem(device: d.deviceID) {
                        print("  \(d.name): \(problem.text) (since \(formatTime(problem.since)))")
                    }
                }
            }
        }
    }
}

/// `masq clock`: the store's clock beside the wall clock; `--repair` re-stamps
/// what lies in the future (docs/PROTOCOL.md, "Rollback and clock repair").
struct ClockCommand: MasqSubcommand {
    static let configuration = CommandConfiguration(
        commandName: "clock",
        abstract:
            "Show the store's clock beside this computer's; --repair re-stamps writes made while the clock was ahead.",
        discussion: """
            Sync repairs a clock that ran ahead by itself once a paired device refuses its writes while the two             clocks agree. Use --repair when you know this computer's clock is right now (and it was ahead before).
            """)
    @OptionGroup var store: StoreOptions
    @Flag(help: "Re-stamp, under a new replica id, every write stamped more than the clock bound ahead of now.")
    var repair = false

    func execute() throws {
        try store.withStore { s in
            try guarded { () throws(MasqError) in
                let (storeClock, ahead) = try s.clockReading()
                print("store clock: \(formatTime(storeClock)); this computer: \(formatTime(Clock.wallMilliseconds()))")
                if ahead > Store.defaultClockBound {
                    print("the store's clock is \(ahead / 60_000) minute(s) ahead of this computer's")
                } else {
                    print("the store's clock agrees with this computer's")
                }
                guard repair else { return }
                if try s.repairClockIfNeeded() {
                    print(
                        "repaired: writes stamped in the future were re-stamped; this store is now replica \(String(s.replicaID, radix: 16))"
                    )
                } else {
                    print("nothing to repair")
                }
            }
        }
    }
}

/// A one-line progress bar on stderr.
final class ProgressBar: @unchecked Sendable {
    let enabled: Bool
    private var drawn = false
    init(enabled: Bool) { self.enabled = enabled }

    func update(received: UInt64, remaining: UInt64) {
        guard enabled else { return }
        let total = received + remaining
        let fraction = total == 0 ? 1 : Double(received) / Double(total)
        let width = 30
        let filled = Int(fraction * Double(width))
        writeError(
            "\r[\(String(repeating: "#", count: filled))\(String(repeating: ".", count: width - filled))] \(received)/\(total) commits"
        )
        drawn = true
    }

    func note(_ text: String) {
        writeError((drawn ? "\n" : "") + text + "\n")
        drawn = false
    }

    func finish() { if drawn { writeError("\n") } }
}
