import CMasq
import CMasqSupport
import Dispatch
#if canImport(Glibc)
    import Glibc
#endif

// Pairing through a relay from the C API (masq.h, "Pairing through a relay"):
// PairingRendezvous run as a task on a library thread, with a completion
// callback, a wait and a cancel. Same conventions as CAPI.swift.

/// One masq_pair_offer / masq_pair_join task.
final class PairingTask: @unchecked Sendable {
    let inbox = PairingRendezvous.Inbox()
    private let lock = Lock()
    private var outcome: (status: Int32, message: String, device: String?)?
    /// Entered when the task starts, left once its callback returned: every
    /// waiter (masq_pair_wait, masq_pair_free) waits on it.
    let running = DispatchGroup()
    private var runner: pthread_t?

    var isRunnerThread: Bool { lock.withLock { runner.map { pthread_equal($0, pthread_self()) != 0 } ?? false } }

    func begin() { lock.withLock { runner = pthread_self() } }

    func end(
        _ status: Int32, _ message: String, device: String?, done: masq_pairing_done_fn?,
        context: UnsafeMutableRawPointer?
    ) {
        lock.withLock { outcome = (status, message, device) }
        if let done {
            message.withCString { m in
                if let device {
                    device.withCString { done(context, status, m, $0) }
                } else {
                    done(context, status, m, nil)
                }
            }
        }
        running.leave()
    }

    var result: (status: Int32, message: String, device: String?)? { lock.withLock { outcome } }
}

private func task(_ handle: OpaquePointer?) throws(MasqError) -> PairingTask {
    guard let handle else { throw .invalid("pairing task is NULL") }
    return Unmanaged<PairingTask>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
}

/// The relay to pair through: `url` with the config's relay settings, or the configured one.
private func relay(_ store: Store, _ url: String?) throws(MasqError) -> (reference: PluginReference, url: String) {
    guard let found = store.config.relayTransport(explicit: url) else {
        throw MasqError(.config, "no relay: pass relay_url, or configure a transport with a \"url\" option")
    }
    return found
}

/// Carries the C callback and its context to the task's thread.
private struct Completion: @unchecked Sendable {
    let done: masq_pairing_done_fn?
    let context: UnsafeMutableRawPointer?
}

private func statusOf(_ error: MasqError) -> Int32 { error.status.rawValue }

@c @implementation
public func masq_pair_offer(
    _ handle: OpaquePointer?, _ relayURL: UnsafePointer<CChar>?, _ ttlSeconds: UInt32, _ done: masq_pairing_done_fn?,
    _ ctx: UnsafeMutableRawPointer?, _ linkOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
    _ taskOut: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    linkOut?.pointee = nil
    taskOut?.pointee = nil
    return api { () throws(MasqError) in
        let store = try store(handle)
        let linkDestination = try required(linkOut, "link_out"), taskDestination = try required(taskOut, "task_out")
        let (reference, url) = try relay(store, relayURL == nil ? nil : try text(relayURL, "relay_url"))
        let ttl = ttlSeconds == 0 ? Store.defaultPairingTTL : UInt64(ttlSeconds)
        let pairing = PairingTask()
        let completion = Completion(done: done, context: ctx)
        // The link comes back once the task listens in the relay's room; an
        // error before that is this call's.
        let ready = DispatchSemaphore(value: 0)
        let early = LockedValue<(link: String?, error: MasqError?)>((nil, nil))
        pairing.running.enter()
        DispatchQueue.global().async {
            pairing.begin()
            var announced = false
            do throws(MasqError) {
                let device = try PairingRendezvous.offer(
                    store: store, transport: reference, url: url, ttl: ttl, inbox: pairing.inbox,
                    onLink: { link in
                        early.withLock { $0.link = link.string }
                        announced = true
                        ready.signal()
                    })
                pairing.end(
                    MASQ_OK, "paired", device: deviceJSON(device.keys, name: device.name, pairedAt: device.pairedAt),
                    done: completion.done, context: completion.context)
            } catch {
                guard announced else {
                    early.withLock { $0.error = error }
                    ready.signal()
                    pairing.end(statusOf(error), error.message, device: nil, done: nil, context: nil)
                    return
                }
                pairing.end(
                    statusOf(error), error.message, device: nil, done: completion.done, context: completion.context)
            }
        }
        ready.wait()
        let (link, error) = early.withLock { $0 }
        if let error { throw error }
        guard let link, let copy = strdup(link) else {
            pairing.inbox.cancel()
            throw MasqError(.noMemory, "out of memory")
        }
        linkDestination.pointee = copy
        taskDestination.pointee = OpaquePointer(Unmanaged.passRetained(pairing).toOpaque())
    }
}

@c @implementation
public func masq_pair_join(
    _ handle: OpaquePointer?, _ linkText: UnsafePointer<CChar>?, _ timeoutSeconds: UInt32,
    _ done: masq_pairing_done_fn?,
    _ ctx: UnsafeMutableRawPointer?, _ taskOut: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    taskOut?.pointee = nil
    return api { () throws(MasqError) in
        let store = try store(handle)
        let destination = try required(taskOut, "task_out")
        let link = try PairingLink(parsing: try text(linkText, "link"))
        guard let via = link.via else { throw .invalid("the link does not say which relay to use (no via=)") }
        let (reference, _) = try relay(store, via)
        let timeout = timeoutSeconds == 0 ? 60 : Double(timeoutSeconds)
        let pairing = PairingTask()
        let completion = Completion(done: done, context: ctx)
        pairing.running.enter()
        DispatchQueue.global().async {
            pairing.begin()
            do throws(MasqError) {
                let device = try PairingRendezvous.join(
                    store: store, link: link, transport: reference, timeout: timeout, inbox: pairing.inbox)
                pairing.end(
                    MASQ_OK, "paired", device: deviceJSON(device.keys, name: device.name, pairedAt: device.pairedAt),
                    done: completion.done, context: completion.context)
            } catch {
                pairing.end(
                    statusOf(error), error.message, device: nil, done: completion.done, context: completion.context)
            }
        }
        destination.pointee = OpaquePointer(Unmanaged.passRetained(pairing).toOpaque())
    }
}

@c @implementation
public func masq_pair_wait(
    _ handle: OpaquePointer?, _ timeoutMs: UInt32, _ deviceJSONOut: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> Int32 {
    deviceJSONOut?.pointee = nil
    return api { () throws(MasqError) in
        let pairing = try task(handle)
        if pairing.isRunnerThread { throw .invalid("masq_pair_wait from the task's own callback would never return") }
        let finished =
            timeoutMs == 0
            ? {
                pairing.running.wait(); return true
            }()
            : pairing.running.wait(timeout: .now() + .milliseconds(Int(timeoutMs))) == .success
        guard finished, let result = pairing.result else { throw MasqError(.busy, "the pairing is still running") }
        guard result.status == MASQ_OK else {
            throw MasqError(MasqStatus(rawValue: result.status) ?? .internal, result.message)
        }
        if let out = deviceJSONOut, let device = result.device {
            guard let copy = strdup(device) else { throw MasqError(.noMemory, "out of memory") }
            out.pointee = copy
        }
    }
}

@c @implementation
public func masq_pair_cancel(_ handle: OpaquePointer?) {
    guard let handle else { return }
    Unmanaged<PairingTask>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue().inbox.cancel()
}

@c @implementation
public func masq_pair_free(_ handle: OpaquePointer?) {
    guard let handle else { return }
    let pairing = Unmanaged<PairingTask>.fromOpaque(UnsafeRawPointer(handle))
    let value = pairing.takeUnretainedValue()
    value.inbox.cancel()
    // From the task's own callback (documented as not allowed) waiting would
    // never end: release without waiting rather than hang.
    if !value.isRunnerThread { value.running.wait() }
    pairing.release()
}
