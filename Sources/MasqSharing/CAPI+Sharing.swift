import CMasq
import CMasqSupport
import MasqConnectoidProtocol
import MasqKernel
import Dispatch
#if canImport(Glibc)
    import Glibc
#endif

// The sharing part of include/masq.h ("Sharing with other people"): shares
// of a namespace with another person through Connectoid mailboxes, driven by
// ShareService (docs/CONNECTOID.md). Same conventions as MasqKernel's CAPI.swift: every
// argument is checked before anything is stored, a thrown MasqError becomes
// a status code and the thread's message, and outputs are NULL on failure.

// MARK: - plumbing

/// A share id as the caller gave it: the "id" of a share object, whole.
private func shareID(_ pointer: UnsafePointer<CChar>?) throws(MasqError) -> String {
    let id = try text(pointer, "share_id")
    guard !id.isEmpty else { throw .invalid("share_id is empty") }
    return id
}

/// The share a caller names, or MASQ_E_NOT_FOUND.
private func existingShare(_ store: Store, _ id: String) throws(MasqError) -> ShareState {
    guard id.utf8.count <= 256, let state = try store.share(id) else {
        throw MasqError(.notFound, "no share \(id.prefix(80))")
    }
    return state
}

/// A share as the JSON object masq.h describes.
func shareJSON(_ s: ShareState) -> String {
    func optional(_ text: String?) -> String { text.map(jsonString) ?? "null" }
    let fields = [
        "\"id\": \(jsonString(s.id))",
        "\"namespace\": \(s.namespace.isEmpty ? "null" : jsonString(s.namespace))",
        "\"role\": \(jsonString(s.role.rawValue))",
        "\"access\": \(jsonString(s.access.rawValue))",
        "\"status\": \(jsonString(s.status.rawValue))",
        "\"nickname\": \(optional(s.nickname))",
        "\"fingerprint\": \(optional(s.fingerprint))",
        "\"fingerprint_emoji\": \(optional(s.fingerprintEmoji))",
        "\"created_at\": \(s.created)",
        "\"last_heard_at\": \(s.lastHeard)",
        "\"refused\": \(s.rejected)",
        "\"warnings\": [\(s.warnings.map(jsonString).joined(separator: ", "))]"
    ]
    return "{" + fields.joined(separator: ", ") + "}"
}

/// Background sharing started through the C API (masq_share_sync_start),
/// one per store; masq_close stops it.
final class ShareRunners: @unchecked Sendable {
    static let shared = ShareRunners()
    private let lock = Lock()
    private var running: [ObjectIdentifier: ShareService] = [:]

    func start(_ store: Store) throws(MasqError) {
        try lock.withLock { () throws(MasqError) in
            guard running[ObjectIdentifier(store)] == nil else { throw MasqError(.busy, "sharing is already running") }
            let service = ShareService(store: store)
            try service.start()
            running[ObjectIdentifier(store)] = service
            // masq_close stops it (the kernel knows nothing of sharing).
            store.beforeClose("sharing") { ShareRunners.shared.stop($0) }
        }
    }

    func stop(_ store: Store) {
        let service = lock.withLock { running.removeValue(forKey: ObjectIdentifier(store)) }
        service?.stop()
    }

    func service(_ store: Store) -> ShareService? {
        lock.withLock { running[ObjectIdentifier(store)] }
    }
}

/// The running service of `store`, or one for this call only (not started:
/// it makes and accepts links without a transport).
private func shareService(_ store: Store) -> ShareService {
    ShareRunners.shared.service(store) ?? ShareService(store: store)
}

private func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

// MARK: - making, accepting, listing, ending shares

@c @implementation
public func masq_share_create(
    _ handle: OpaquePointer?, _ ns: UnsafePointer<CChar>?, _ nickname: UnsafePointer<CChar>?, _ flags: UInt32,
    _ baseURL: UnsafePointer<CChar>?, _ linkOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ jsonOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    linkOut?.pointee = nil
    jsonOut?.pointee = nil
    return api { () throws(MasqError) in
        let s = try store(handle)
        let name = try namespace(ns, s)
        let who = try ShareState.checkedNickname(try text(nickname, "nickname"))
        let out = try required(linkOut, "link_out")
        guard flags & ~MASQ_SHARE_READ_ONLY == 0 else {
            throw .invalid("unknown masq_share_create flags \(flags) (only MASQ_SHARE_READ_ONLY)")
        }
        let base = baseURL == nil ? ConnectoidLink.defaultBase : try text(baseURL, "base_url")
        let service = shareService(s)
        let link = try service.create(
            namespace: name, readOnly: flags & MASQ_SHARE_READ_ONLY != 0, base: base, nickname: who)
        var json: UnsafeMutablePointer<CChar>?
        if let jsonOut {
            let state = try existingShare(s, link.pubText)
            do throws(MasqError) { try giveText(shareJSON(state), jsonOut) } catch {
                _ = try? service.unshare(link.pubText)
                throw error
            }
            json = jsonOut.pointee
        }
        do throws(MasqError) { try giveText(link.text, out) } catch {
            free(json)
            jsonOut?.pointee = nil
            _ = try? service.unshare(link.pubText)
            throw error
        }
    }
}

@c @implementation
public func masq_share_accept(
    _ handle: OpaquePointer?, _ link: UnsafePointer<CChar>?, _ nickname: UnsafePointer<CChar>?,
    _ asNamespace: UnsafePointer<CChar>?, _ flags: UInt32,
    _ jsonOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    jsonOut?.pointee = nil
    return api { () throws(MasqError) in
        let s = try store(handle)
        let linkText = try text(link, "link")
        let who = try ShareState.checkedNickname(try text(nickname, "nickname"))
        guard flags & ~MASQ_SHARE_MERGE == 0 else {
            throw .invalid(
                "unknown masq_share_accept flags \(flags) (only MASQ_SHARE_MERGE; the owner decides read-only)")
        }
        let local = asNamespace == nil ? nil : try namespace(asNamespace, s)
        let merge = flags & MASQ_SHARE_MERGE != 0
        guard local != nil || !merge else {
            throw .invalid("MASQ_SHARE_MERGE needs the namespace to merge into (as_ns)")
        }
        let service = shareService(s)
        let state = try service.accept(linkText, as: local, merge: merge, nickname: who)
        if let jsonOut {
            do throws(MasqError) { try giveText(shareJSON(state), jsonOut) } catch {
                _ = try? service.unshare(state.id)
                throw error
            }
        }
    }
}

@c @implementation
public func masq_shares(_ handle: OpaquePointer?, _ jsonOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?)
    -> Int32
{
    jsonOut?.pointee = nil
    return api { () throws(MasqError) in
        let s = try store(handle)
        let out = try required(jsonOut, "json_out")
        try giveText("[" + (try s.shares()).map(shareJSON).joined(separator: ", ") + "]", out)
    }
}

@c @implementation
public func masq_share_info(
    _ handle: OpaquePointer?, _ id: UnsafePointer<CChar>?,
    _ jsonOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    jsonOut?.pointee = nil
    return api { () throws(MasqError) in
        let s = try store(handle)
        let share = try shareID(id)
        let out = try required(jsonOut, "json_out")
        try giveText(shareJSON(try existingShare(s, share)), out)
    }
}

@c @implementation
public func masq_share_set_nickname(
    _ handle: OpaquePointer?, _ id: UnsafePointer<CChar>?, _ nickname: UnsafePointer<CChar>?
) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        let share = try shareID(id)
        let who = try ShareState.checkedNickname(try text(nickname, "nickname"))
        _ = try existingShare(s, share)
        _ = try shareService(s).setNickname(share, who)
    }
}

@c @implementation
public func masq_unshare(_ handle: OpaquePointer?, _ id: UnsafePointer<CChar>?) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        let share = try shareID(id)
        _ = try existingShare(s, share)
        if let running = ShareRunners.shared.service(s) {
            _ = try running.unshare(share)
            return
        }
        // Tell the other side through a service started for this call; if
        // none can start (no transport plugin), this side ends alone.
        let service = ShareService(store: s)
        do throws(MasqError) { try service.start() } catch {
            Log.warn(
                "share", "share \(share.prefix(10)): the other side is not told (\(error.message)); ending it here")
        }
        defer { service.stop() }  // waits for the UNSHARE under way
        _ = try service.unshare(share)
    }
}

// MARK: - running

@c @implementation
public func masq_share_sync_start(_ handle: OpaquePointer?) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        _ = try s.shares()  // MASQ_E_DENIED while locked, MASQ_E_CLOSED after close
        try ShareRunners.shared.start(s)
    }
}

@c @implementation
public func masq_share_sync_stop(_ handle: OpaquePointer?) -> Int32 {
    api { () throws(MasqError) in ShareRunners.shared.stop(try store(handle)) }
}

@c @implementation
public func masq_share_sync_once(_ handle: OpaquePointer?, _ timeoutSeconds: Double) -> Int32 {
    api { () throws(MasqError) in
        let s = try store(handle)
        guard timeoutSeconds > 0 && timeoutSeconds <= 86_400 else {
            throw .invalid("timeout must be 0...86400 seconds")
        }
        _ = try s.shares()
        let service: ShareService
        var temporary: ShareService?
        if let running = ShareRunners.shared.service(s) {
            service = running
        } else {
            let started = ShareService(store: s)
            try started.start()
            temporary = started
            service = started
        }
        defer { temporary?.stop() }
        // Settled three checks in a row, after the mailboxes were polled a while.
        let start = monotonicSeconds()
        let deadline = start + timeoutSeconds
        var quiet = 0
        while monotonicSeconds() < deadline {
            usleep(300_000)
            guard !s.isClosed else { throw MasqError(.closed, "the store was closed") }
            quiet = service.settled() ? quiet + 1 : 0
            if quiet >= 3 && monotonicSeconds() >= start + 1.5 { return }
        }
        throw MasqError(
            .timeout, "shares not settled after \(timeoutSeconds) s (is the other person's sharing running?)")
    }
}
