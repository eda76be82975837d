import CMasq
#if canImport(Glibc)
    import Glibc
#endif

/// Log levels, the same numbers as MASQ_LOG_* in the headers.
public enum LogLevel: Int32, Sendable, Comparable {
    case error = 0, warn = 1, info = 2, debug = 3

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }

    init?(name: String) {
        switch name.lowercased() {
        case "error": self = .error
        case "warn", "warning": self = .warn
        case "info": self = .info
        case "debug": self = .debug
        default: return nil
        }
    }

    var label: String {
        switch self {
        case .error: "error"
        case .warn: "warn"
        case .info: "info"
        case .debug: "debug"
        }
    }
}

/// Where log lines go: standard error by default, or a callback an embedder
/// installs with masq_set_log_callback. Two levels, kept apart: the
/// callback's (the embedder's choice) and standard error's (MASQ_LOG if set,
/// else the `log_level` of the config a store was last opened with, else
/// warn). Opening a store never touches the embedder's callback. Callers
/// never pass stored values or key material here.
public enum Log {
    struct Sink: @unchecked Sendable {
        var callbackLevel: LogLevel = .warn
        var callback: masq_log_fn?
        var context: UnsafeMutableRawPointer?
        var stderrLevel: LogLevel = Log.levelFromEnvironment() ?? .warn

        var maxLevel: LogLevel { callback == nil ? stderrLevel : callbackLevel }
    }

    private static let lock = Lock()
    nonisolated(unsafe) private static var sink = Sink()

    static func levelFromEnvironment() -> LogLevel? {
        guard let raw = getenv("MASQ_LOG") else { return nil }
        return LogLevel(name: String(cString: raw))
    }

    /// masq_set_log_callback: the embedder's callback and its level, or (nil)
    /// standard error again, at MASQ_LOG's level.
    static func install(maxLevel: LogLevel, callback: masq_log_fn?, context: UnsafeMutableRawPointer?) {
        lock.withLock {
            if let callback {
                sink.callback = callback
                sink.context = context
                sink.callbackLevel = maxLevel
            } else {
                sink.callback = nil
                sink.context = nil
                sink.stderrLevel = levelFromEnvironment() ?? .warn
            }
        }
    }

    /// A config's `log_level`: the level of lines on standard error (unless
    /// MASQ_LOG says otherwise). Leaves any callback alone.
    static func setStandardErrorLevel(_ level: LogLevel) {
        guard levelFromEnvironment() == nil else { return }
        lock.withLock { sink.stderrLevel = level }
    }

    public static func isEnabled(_ level: LogLevel) -> Bool {
        lock.withLock { level <= sink.maxLevel }
    }

    public static func emit(_ level: LogLevel, _ component: String, _ message: @autoclosure () -> String) {
        let current = lock.withLock { sink }
        guard level <= current.maxLevel else { return }
        let text = message()
        if let callback = current.callback {
            component.withCString { c in text.withCString { m in callback(current.context, level.rawValue, c, m) } }
        } else {
            let line = "masq[\(level.label)] \(component): \(text)\n"
            var bytes = Array(line.utf8)
            _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
        }
    }

    public static func error(_ component: String, _ m: @autoclosure () -> String) { emit(.error, component, m()) }
    public static func warn(_ component: String, _ m: @autoclosure () -> String) { emit(.warn, component, m()) }
    public static func info(_ component: String, _ m: @autoclosure () -> String) { emit(.info, component, m()) }
    public static func debug(_ component: String, _ m: @autoclosure () -> String) { emit(.debug, component, m()) }
}
