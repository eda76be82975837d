import NIOConcurrencyHelpers
import NIOCore

/// Connections that have not finished their handshake (an HTTP request or
/// WebSocket upgrade) hold no member slot but do hold a socket and a file
/// descriptor. A server lets at most `capacity` of them exist at once: a
/// newcomer that finds the table full evicts the *oldest* one (a legitimate
/// handshake completes in milliseconds, so the connection that loses its place
/// is one that stalled), and each is closed if it is not done within `timeout`.
/// So idle, trickling or half-open sockets cannot crowd out clients, and the
/// descriptors they hold stay bounded.
public final class HandshakeGate: @unchecked Sendable {
    public let capacity: Int
    public let timeout: TimeAmount

    private struct Entry {
        let order: UInt64
        let channel: Channel
    }
    private struct Table {
        var next: UInt64 = 0
        var pending: [ObjectIdentifier: Entry] = [:]
        var evicted: UInt64 = 0
        var timedOut: UInt64 = 0
    }
    private let table = NIOLockedValueBox(Table())

    public init(capacity: Int, timeout: TimeAmount) {
        precondition(capacity >= 1)
        self.capacity = capacity
        self.timeout = timeout
    }

    /// Handshakes in progress now, and how many were evicted or timed out so far.
    public var counts: (pending: Int, evicted: UInt64, timedOut: UInt64) {
        table.withLockedValue { ($0.pending.count, $0.evicted, $0.timedOut) }
    }

    /// Register a just-accepted channel (call from its initializer). Call
    /// `passed(_:)` when its handshake completes; closing also removes it.
    public func admit(_ channel: Channel) {
        let id = ObjectIdentifier(channel)
        let evicted = table.withLockedValue { t -> Channel? in
            var oldest: (ObjectIdentifier, Entry)?
            if t.pending.count >= capacity {
                for (key, entry) in t.pending where oldest == nil || entry.order < oldest!.1.order {
                    oldest = (key, entry)
                }
                if let (key, _) = oldest {
                    t.pending[key] = nil
                    t.evicted += 1
                }
            }
            t.pending[id] = Entry(order: t.next, channel: channel)
            t.next += 1
            return oldest?.1.channel
        }
        evicted?.close(promise: nil)
        let gate = self
        let deadline = channel.eventLoop.scheduleTask(in: timeout) {
            let late = gate.table.withLockedValue { t -> Bool in
                guard t.pending.removeValue(forKey: id) != nil else { return false }
                t.timedOut += 1
                return true
            }
            if late { channel.close(promise: nil) }
        }
        channel.closeFuture.whenComplete { _ in
            deadline.cancel()
            gate.table.withLockedValue { _ = $0.pending.removeValue(forKey: id) }
        }
    }

    /// The handshake completed: the channel leaves the table (its deadline
    /// then finds nothing to close).
    public func passed(_ channel: Channel) {
        let id = ObjectIdentifier(channel)
        table.withLockedValue { _ = $0.pending.removeValue(forKey: id) }
    }
}
