#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif
import Dispatch
import MasqKernel
#if canImport(Glibc)
    import Glibc
#endif

/// Backups from the manager (docs/APP-PROTOCOL.md, "Backups"): masqd writes
/// a profile's backup into `<home>/backups/` (0700) and the page fetches it
/// in pieces; a backup the page uploads in pieces there is restored as a new
/// profile. The file format, the keys and what a restore does are the
/// kernel's (Store+Backup.swift, docs/BACKUP.md). App approvals and grants
/// (`apps.json`) are masqd's own state, not the store's: a restored profile
/// starts with none, and its apps ask again.
///
///   backup.create  {profile?, passphrase | recovery: true} → {file, size, entries, recovery_key}
///   backup.read    {file, offset}                         → {data (base64), offset, size, done}
///   backup.upload  {file?, offset, data (base64)}         → {file, size}   (in order; file named by the first answer)
///   backup.restore {file, profile (new name), passphrase (or the recovery key)} → {profile, protected, locked, entries}
///   backup.delete  {file}                                 → {}
///   backup.list    {}                                     → {files: [{file, size}], piece (bytes per read/upload)}
extension Daemon {
    /// Bytes per backup.read answer / backup.upload request: as base64 in JSON, under max_message_bytes.
    var backupPiece: Int { min(1 << 20, max(4096, (options.maxMessageBytes - 1024) / 4 * 3)) }

    var backupDirectory: String { options.home + "/backups" }

    func performBackup(_ c: Connection, _ r: Request) throws(DaemonError) -> JSON? {
        func run<T>(_ body: () throws(MasqError) -> T) throws(DaemonError) -> T {
            do throws(MasqError) { return try body() } catch { throw DaemonError(error) }
        }
        try run { () throws(MasqError) in try FileSystem.makeDirectories(backupDirectory) }
        let peer = c.peer, requestID = r.id?.json

        switch r.op {
        case "backup.create":
            let p = try profiles.profile(r.profile ?? active)
            let key: BackupKeySource
            if r.recovery == true {
                key = .newRecoveryKey
            } else {
                guard let passphrase = r.passphrase, !passphrase.isEmpty else {
                    throw DaemonError(.badRequest, "give the backup a \"passphrase\", or ask for \"recovery\": true")
                }
                key = .passphrase(Array(passphrase.utf8))
            }
            let name = "\(p.name)-\(Self.fileStamp()).masqbackup"
            let path = backupDirectory + "/" + name
            // Off the daemon's queue: the key derivation and the copy take a while.
            DispatchQueue(label: "masqd.backup").async { [self] in
                let result: Result<BackupSummary, MasqError>
                do throws(MasqError) { result = .success(try p.store.backup(to: path, key: key)) } catch {
                    result = .failure(error)
                }
                queue.async { [self] in
                    switch result {
                    case .success(let s):
                        reply(
                            peer, requestID,
                            ok: .object([
                                ("file", .string(name)), ("size", .uint(s.bytes)), ("piece", .int(Int64(backupPiece))),
                                ("entries", .int(Int64(s.manifest.entries))),
                                ("recovery_key", s.recoveryKey.map(JSON.string) ?? .null)
                            ]))
                    case .failure(let error):
                        reply(peer, requestID, error: Self.backupError(error))
                    }
                }
            }
            return nil

        case "backup.read":
            let path = try backupPath(r.file)
            guard let offset = Int64(exactly: r.offset ?? 0) else {
                throw DaemonError(.badRequest, "\"offset\" is out of range")
            }
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw DaemonError(.notFound, "no backup \(r.file ?? "")") }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw DaemonError(.failed, "cannot read the backup") }
            let size = Int64(st.st_size)
            guard offset >= 0, offset <= size else {
                throw DaemonError(.badRequest, "\"offset\" is beyond the backup's \(size) bytes")
            }
            var piece = [UInt8](repeating: 0, count: Int(min(Int64(backupPiece), size - offset)))
            var got = 0
            while got < piece.count {
                let n = piece.withUnsafeMutableBytes {
                    pread(fd, $0.baseAddress! + got, $0.count - got, off_t(offset) + off_t(got))
                }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw DaemonError(.failed, "cannot read the backup") }
                got += n
            }
            return .object([
                ("data", .string(Data(piece).base64EncodedString())), ("offset", .int(offset)), ("size", .int(size)),
                ("done", .bool(offset + Int64(piece.count) == size))
            ])

        case "backup.upload":
            guard let text = r.data, let data = Data(base64Encoded: text) else {
                throw DaemonError(.badRequest, "\"data\" must be base64")
            }
            guard data.count <= backupPiece else {
                throw DaemonError(.tooLarge, "at most \(backupPiece) bytes per piece")
            }
            guard let offset = Int64(exactly: r.offset ?? 0) else {
                throw DaemonError(.badRequest, "\"offset\" is out of range")
            }
            let name: String
            let fd: Int32
            if r.file == nil {
                guard offset == 0 else {
                    throw DaemonError(
                        .badRequest, "the first piece starts at offset 0 (then name the \"file\" it answered)")
                }
                name = "upload-\(Self.fileStamp())-\(String(UInt32.random(in: 0...UInt32.max), radix: 16)).masqbackup"
                fd = open(backupDirectory + "/" + name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            } else {
                name = r.file!
                let path = try backupPath(name)
                guard name.hasPrefix("upload-") else { throw DaemonError(.denied, "only uploads are appended to") }
                fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
            }
            guard fd >= 0 else {
                throw DaemonError(.failed, "cannot write the upload: \(String(cString: strerror(errno)))")
            }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0, Int64(st.st_size) == offset else {
                throw DaemonError(
                    .badRequest,
                    "pieces go in order: the upload holds \(st.st_size) bytes, this piece starts at \(offset)")
            }
            let bytes = [UInt8](data)
            var written = 0
            while written < bytes.count {
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    throw DaemonError(.failed, "cannot write the upload: \(String(cString: strerror(errno)))")
                }
                written += n
            }
            return .object([("file", .string(name)), ("size", .int(offset + Int64(bytes.count)))])

        case "backup.restore":
            let path = try backupPath(r.file)
            guard let name = r.profile, ProfileManager.validName(name) else {
                throw DaemonError(.invalid, "name the new profile: 1-32 of a-z, 0-9, - and _")
            }
            let directory = options.home + "/profiles/" + name
            guard profiles.profiles[name] == nil, !FileSystem.exists(directory) else {
                throw DaemonError(.invalid, "profile \(name) exists")
            }
            guard let secretText = r.passphrase, !secretText.isEmpty else {
                throw DaemonError(.badRequest, "give the backup's \"passphrase\" (or its recovery key)")
            }
            let secret = Array(secretText.utf8)
            let storage = options.storage
            let upload = r.file!.hasPrefix("upload-")
            DispatchQueue(label: "masqd.restore").async { [self] in
                var written: MasqConfig?
                let result: Result<BackupManifest, MasqError>
                do throws(MasqError) {
                    let manifest = try Store.restore(from: path, secret: secret) {
                        (manifest) throws(MasqError) -> MasqConfig in
                        if let written { return written }
                        var config = try manifest.config(dataDir: directory + "/data")
                        config.storage = PluginReference(name: storage)
                        written = config
                        return config
                    }
                    try FileSystem.writeFile(directory + "/config.json", Array(written!.json().utf8))
                    result = .success(manifest)
                } catch {
                    if FileSystem.listDirectory(directory).allSatisfy({ $0 == "config.json" }) {
                        unlink(directory + "/config.json")
                        rmdir(directory)
                    }
                    result = .failure(error)
                }
                queue.async { [self] in
                    switch result {
                    case .success(let manifest):
                        do throws(DaemonError) {
                            let profile = try profiles.adopt(name)
                            watchShares(profile)  // as at start (Daemon.init)
                            profile.startSync()
                            if upload { unlink(path) }
                            notifyAdmins(.object([("event", .string("profile")), ("active", .string(active))]))
                            reply(
                                peer, requestID,
                                ok: .object([
                                    ("profile", .string(name)), ("protected", .bool(profile.store.isProtected)),
                                    ("locked", .bool(profile.store.isLocked)),
                                    ("entries", .int(Int64(manifest.entries)))
                                ]))
                        } catch {
                            reply(peer, requestID, error: error)
                        }
                    case .failure(let error):
                        reply(peer, requestID, error: Self.backupError(error))
                    }
                }
            }
            return nil

        case "backup.list":
            let files = FileSystem.listDirectory(backupDirectory).filter { $0.hasSuffix(".masqbackup") }.map {
                name -> JSON in
                var st = stat()
                _ = stat(backupDirectory + "/" + name, &st)
                return .object([("file", .string(name)), ("size", .int(Int64(st.st_size)))])
            }
            return .object([("files", .array(files)), ("piece", .int(Int64(backupPiece)))])

        case "backup.delete":
            let path = try backupPath(r.file)
            guard unlink(path) == 0 else { throw DaemonError(.notFound, "no backup \(r.file ?? "")") }
            return .object([])

        default:
            throw DaemonError(.unknownOp, "unknown op \"\(r.op.prefix(40))\"")
        }
    }

    /// A wrong passphrase is "denied" here (elsewhere MASQ_E_DENIED means a locked profile).
    static func backupError(_ error: MasqError) -> DaemonError {
        error.status == .denied ? DaemonError(.denied, error.message) : DaemonError(error)
    }

    /// A file of the backups directory, by its bare name (no path can be given).
    private func backupPath(_ name: String?) throws(DaemonError) -> String {
        guard let name, !name.isEmpty, name.utf8.count <= 128, !name.hasPrefix("."),
            name.utf8.allSatisfy({ c in
                (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c == 45 || c == 95 || c == 46
            })
        else {
            throw DaemonError(.badRequest, "\"file\" is the name of a backup masqd gave (letters, digits, - _ .)")
        }
        let path = backupDirectory + "/" + name
        guard FileSystem.exists(path) else { throw DaemonError(.notFound, "no backup \(name)") }
        return path
    }

    private static func fileStamp() -> String {
        var seconds = time_t(DaemonClock.unixMilliseconds() / 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        strftime(&buffer, buffer.count, "%Y%m%d-%H%M%S", &parts)
        let ms = String(DaemonClock.unixMilliseconds() % 1000)
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            + String(repeating: "0", count: 3 - ms.count) + ms
    }
}
