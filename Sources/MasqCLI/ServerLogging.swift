import Logging

/// One log-level parser and bootstrap for the servers the CLI runs (`masq
/// relay`, `masq connectoid serve`, `masq node`): lines to standard error
/// through swift-log, at the level of `--log-level` (error, warning or warn,
/// info, debug, trace).
func bootstrapServerLogging(_ text: String) throws {
    guard let level = Logger.Level(rawValue: text == "warn" ? "warning" : text) else {
        throw CLIError("unknown log level \(text) (error, warning, info, debug)")
    }
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}
