#if canImport(Glibc)
    import Glibc
#endif

/// A mutex for plugins written in Swift. The pthread_mutex_t lives on the
/// heap, at an address that never moves: a mutex stored in a Swift property
/// and passed as `&property` may be handed over as a temporary copy, which
/// is undefined behaviour for a mutex. Not recursive. Any thread.
public final class PluginLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always)
    public func withLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
