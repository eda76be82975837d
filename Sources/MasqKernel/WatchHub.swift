import CMasqSupport
import Dispatch

/// Delivers committed changes to watchers on one serial queue per store:
/// never on the writer's thread (so a callback may call back into the
/// store), one change at a time, in commit order.
final class WatchHub: @unchecked Sendable {
    typealias Callback = @Sendable (Change) -> Void

    private struct Watcher {
        let namespace: String?
        let prefix: [UInt8]
        let callback: Callback
        /// Commits numbered <= this were published before the watch began.
        let since: UInt64
    }

    private let queue: DispatchQueue
    private let lock = Lock()
    private var watchers: [UInt64: Watcher] = [:]
    private var nextID: UInt64 = 1
    private var published: UInt64 = 0
    /// Identifies this hub's callbacks in the per-thread "in callback" flag.
    var tag: UInt { UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque()) }

    init(label: String) {
        queue = DispatchQueue(label: label)
    }

    /// Whether any watcher exists; writers skip building events otherwise.
    var isActive: Bool { lock.withLock { !watchers.isEmpty } }

    func add(namespace: String?, prefix: [UInt8], callback: @escaping Callback) -> UInt64 {
        lock.withLock {
            let id = nextID
            nextID += 1
            watchers[id] = Watcher(namespace: namespace, prefix: prefix, callback: callback, since: published)
            return id
        }
    }

    /// Remove a watcher. Outside a callback, also wait until any delivery in
    /// progress ends, so the callback is guaranteed not to run after this.
    func remove(_ id: UInt64) -> Bool {
        let removed = lock.withLock { watchers.removeValue(forKey: id) != nil }
        if removed && !isCallbackThread { queue.sync {} }
        return removed
    }

    /// Whether the calling thread is running one of this hub's callbacks.
    var isCallbackThread: Bool { masqsupport_in_callback() == tag }

    /// Queue one commit's changes. The caller holds the store lock, which is
    /// what makes queue order equal commit order.
    func publish(_ changes: [Change]) {
        guard !changes.isEmpty else { return }
        let commit = lock.withLock { () -> UInt64 in
            published += 1
            return published
        }
        let tag = self.tag
        queue.async { [self] in
            masqsupport_set_in_callback(tag)
            defer { masqsupport_set_in_callback(0) }
            for change in changes {
                for id in matching(change, commit: commit) {
                    guard let watcher = lock.withLock({ watchers[id] }) else { continue }
                    watcher.callback(change)
                }
            }
        }
    }

    /// Wait for every queued delivery (not from a callback).
    func drain() {
        if !isCallbackThread { queue.sync {} }
    }

    private func matching(_ change: Change, commit: UInt64) -> [UInt64] {
        lock.withLock {
            watchers.filter { _, w in
                w.since < commit
                    && (w.namespace == nil || w.namespace!.utf8.elementsEqual(change.namespace.utf8))
                    && change.key.starts(with: w.prefix)
            }.keys.sorted()
        }
    }
}
