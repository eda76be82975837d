import CMasq
import CMasqSupport
import MasqCrypto
#if canImport(Glibc)
    import Glibc
#endif

// The "Backup and restore" part of include/masq.h (Store+Backup.swift does
// the work). Same conventions as CAPI.swift.

/// A caller's secret, copied once (wiped by the caller of this helper).
private func secretIn(_ pointer: UnsafePointer<UInt8>?, _ length: Int, _ what: String) throws(MasqError) -> [UInt8] {
    guard length > 0 else { throw .invalid("\(what) is empty") }
    return Array(try bytes(pointer, length, what))
}

@c @implementation
public func masq_backup(
    _ handle: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ passphrase: UnsafePointer<UInt8>?, _ passphraseLen: Int
) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        let file = try text(path, "path")
        var secret = try secretIn(passphrase, passphraseLen, "passphrase")
        defer { wipe(&secret) }
        _ = try s.backup(to: file, key: .passphrase(secret))
    }
}

@c @implementation
public func masq_backup_with_recovery_key(
    _ handle: OpaquePointer?, _ path: UnsafePointer<CChar>?,
    _ recoveryKeyOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    recoveryKeyOut?.pointee = nil
    return api { () throws(MasqError) in
        let s = try store(handle)
        let file = try text(path, "path")
        let out = try required(recoveryKeyOut, "recovery_key_out")
        let summary = try s.backup(to: file, key: .newRecoveryKey)
        guard let key = summary.recoveryKey else { throw MasqError(.internal, "the backup has no recovery key") }
        try giveText(key, out)
    }
}

@c @implementation
public func masq_backup_info(
    _ path: UnsafePointer<CChar>?, _ jsonOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    jsonOut?.pointee = nil
    return api { () throws(MasqError) in
        let file = try text(path, "path")
        let out = try required(jsonOut, "json_out")
        let info = try Store.backupInfo(path: file)
        try giveText(
            "{\"format\": \(info.formatVersion), \"key\": \"\(info.keyKind.name)\", \"chunk_bytes\": \(info.chunkBytes)}",
            out)
    }
}

@c @implementation
public func masq_backup_verify(
    _ path: UnsafePointer<CChar>?, _ secret: UnsafePointer<UInt8>?, _ secretLen: Int,
    _ jsonOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    jsonOut?.pointee = nil
    return api { () throws(MasqError) in
        let file = try text(path, "path")
        var key = try secretIn(secret, secretLen, "secret")
        defer { wipe(&key) }
        let manifest = try Store.verifyBackup(path: file, secret: key)
        if let jsonOut { try giveText(manifest.description, jsonOut) }
    }
}

@c @implementation
public func masq_restore(
    _ configPath: UnsafePointer<CChar>?, _ backupPath: UnsafePointer<CChar>?,
    _ secret: UnsafePointer<UInt8>?, _ secretLen: Int
) -> Int32 {
    api { () throws(MasqError) in
        let config = try MasqConfig.load(path: try text(configPath, "config_path"))
        let file = try text(backupPath, "backup_path")
        var key = try secretIn(secret, secretLen, "secret")
        defer { wipe(&key) }
        try Store.restore(from: file, secret: key, config: config)
    }
}

@c @implementation
public func masq_restore_config(
    _ configJSON: UnsafePointer<CChar>?, _ baseDir: UnsafePointer<CChar>?, _ backupPath: UnsafePointer<CChar>?,
    _ secret: UnsafePointer<UInt8>?, _ secretLen: Int
) -> Int32 {
    api { () throws(MasqError) in
        let json = try text(configJSON, "config_json")
        let cwd = FileSystem.currentDirectory()
        let base = baseDir == nil ? cwd : FileSystem.absolute(try text(baseDir, "base_dir"), base: cwd)
        let config = try MasqConfig.parse(json, baseDir: base, source: "config")
        let file = try text(backupPath, "backup_path")
        var key = try secretIn(secret, secretLen, "secret")
        defer { wipe(&key) }
        try Store.restore(from: file, secret: key, config: config)
    }
}

@c @implementation
public func masq_export(_ handle: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        try s.export(to: try text(path, "path"))
    }
}
