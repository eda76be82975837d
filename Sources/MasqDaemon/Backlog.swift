import Synchronization

/// Requests read from the apps but not yet handled. The transport reads as
/// fast as clients send while the daemon handles requests one at a time, so
/// without these bounds a client that sends without reading its answers (or
/// faster than the daemon works) would grow the daemon's queue without end.
/// Counted on the transport's threads as frames arrive; a connection past its
/// bound is closed ("read your answers"), and when all connections together
/// pass the total bound, the one holding the most is closed.
final class Backlog: Sendable {
    struct Limits {
        /// Requests one connection may have waiting for their answers.
        var requestsPerConnection = 256
        /// Bytes of requests one connection may have waiting.
        var bytesPerConnection = 16 << 20
        /// Bytes waiting over all connections.
        var totalBytes = 64 << 20
    }

    private struct Waiting {
        var requests = 0
        var bytes = 0
        /// Over its bound: the rest of its frames are dropped until it closes.
        var refused = false
    }

    private struct State {
        var peers: [String: Waiting] = [:]
        var totalBytes = 0
        var refusals: UInt64 = 0
    }

    let limits: Limits
    private let state = Mutex(State())

    init(_ limits: Limits) { self.limits = limits }

    /// A frame arrived from `peer`. Returns whether to queue it, and the
    /// connection to close (if any) with the reason.
    func arrive(_ peer: String, bytes: Int) -> (queue: Bool, close: (peer: String, reason: String)?) {
        state.withLock { s in
            var w = s.peers[peer] ?? Waiting()
            guard !w.refused else { return (false, nil) }
            if w.requests + 1 > limits.requestsPerConnection || w.bytes + bytes > limits.bytesPerConnection {
                w.refused = true
                s.peers[peer] = w
                s.refusals += 1
                return (
                    false,
                    (
                        peer,
                        "more than \(limits.requestsPerConnection) requests or \(limits.bytesPerConnection >> 20) MiB waiting for their answers: read your answers"
                    )
                )
            }
            if s.totalBytes + bytes > limits.totalBytes {
                // The connection holding the most gives way (likely the one not reading).
                let heaviest = s.peers.filter { !$0.value.refused }.max { $0.value.bytes < $1.value.bytes }?.key ?? peer
                if heaviest == peer || (s.peers[heaviest]?.bytes ?? 0) < w.bytes {
                    w.refused = true
                    s.peers[peer] = w
                    s.refusals += 1
                    return (
                        false, (peer, "the daemon is overloaded (\(limits.totalBytes >> 20) MiB of requests waiting)")
                    )
                }
                s.peers[heaviest]?.refused = true
                s.refusals += 1
                w.requests += 1
                w.bytes += bytes
                s.peers[peer] = w
                s.totalBytes += bytes
                return (
                    true, (heaviest, "the daemon is overloaded (\(limits.totalBytes >> 20) MiB of requests waiting)")
                )
            }
            w.requests += 1
            w.bytes += bytes
            s.peers[peer] = w
            s.totalBytes += bytes
            return (true, nil)
        }
    }

    /// A queued frame of `peer` was taken off the queue. Returns false when
    /// the connection was refused meanwhile (then the frame is dropped).
    func depart(_ peer: String, bytes: Int) -> Bool {
        state.withLock { s in
            s.totalBytes -= bytes
            guard var w = s.peers[peer] else { return false }
            w.requests -= 1
            w.bytes -= bytes
            s.peers[peer] = w
            return !w.refused
        }
    }

    /// The connection closed: forget it once its queued frames are gone.
    func closed(_ peer: String) {
        state.withLock { s in
            guard let w = s.peers[peer] else { return }
            if w.requests == 0 { s.peers[peer] = nil } else { s.peers[peer]?.refused = true }
        }
    }

    var refusals: UInt64 { state.withLock { $0.refusals } }
}
