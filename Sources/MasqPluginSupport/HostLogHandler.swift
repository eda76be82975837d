import CMasqPlugin
import Logging

/// A swift-log handler that writes through the host table's `log`, so the
/// lines of a plugin written in Swift — and of the libraries it runs, such as
/// the mesh engine — reach the host like a C plugin's: filtered by the host's
/// level and passed to the embedder's log callback (masq_set_log_callback).
/// Metadata is appended as key=value. Any thread (host->log is thread-safe).
// host: a table the kernel keeps for the process's life
public struct HostLogHandler: LogHandler, @unchecked Sendable {
    public var metadata: Logger.Metadata = [:]
    /// The host filters by its own level; this one only spares building lines nobody wants.
    public var logLevel: Logger.Level = .trace
    private let label: String
    private let host: UnsafePointer<masq_host>

    public init(label: String, host: UnsafePointer<masq_host>) {
        self.label = label
        self.host = host
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let fields =
            all.isEmpty
            ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        host.pointee.log(host, Self.hostLevel(event.level), "\(label): \(event.message)\(fields)")
    }

    /// swift-log's levels on masq_plugin.h's four.
    static func hostLevel(_ level: Logger.Level) -> Int32 {
        switch level {
        case .trace, .debug: MASQ_LOG_DEBUG
        case .info, .notice: MASQ_LOG_INFO
        case .warning: MASQ_LOG_WARN
        case .error, .critical: MASQ_LOG_ERROR
        }
    }

    /// A Logger whose lines go to `host`.
    public static func logger(_ label: String, host: UnsafePointer<masq_host>) -> Logger {
        Logger(label: label) { HostLogHandler(label: $0, host: host) }
    }
}
