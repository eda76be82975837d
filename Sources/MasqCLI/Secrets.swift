#if canImport(Glibc)
    import Glibc
#endif

/// Passphrases for the CLI: from MASQ_PASSPHRASE / MASQ_NEW_PASSPHRASE when
/// set (scripts, tests), else typed on the terminal without echo. Never logged.
enum Secrets {
    static func current(prompt: String = "passphrase: ") throws -> [UInt8] {
        if let env = getenv("MASQ_PASSPHRASE") { return Array(String(cString: env).utf8) }
        return try ask(prompt)
    }

    static func new() throws -> [UInt8] {
        if let env = getenv("MASQ_NEW_PASSPHRASE") { return Array(String(cString: env).utf8) }
        let first = try ask("new passphrase: ")
        guard try ask("again: ") == first else { throw CLIError("the two passphrases differ") }
        guard !first.isEmpty else { throw CLIError("an empty passphrase protects nothing") }
        return first
    }

    private static func ask(_ prompt: String) throws -> [UInt8] {
        try askSecret(prompt, otherwise: "the store needs a passphrase: set MASQ_PASSPHRASE or run on a terminal")
    }

    /// Read a line from the terminal without echo; `otherwise` is the error
    /// when standard input is not a terminal (say which variable to set).
    static func askSecret(_ prompt: String, otherwise: String) throws -> [UInt8] {
        guard isatty(0) != 0 else { throw CLIError(otherwise) }
        writeError(prompt)
        var saved = termios()
        tcgetattr(0, &saved)
        var quiet = saved
        quiet.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(0, TCSANOW, &quiet)
        defer {
            tcsetattr(0, TCSANOW, &saved)
            writeError("\n")
        }
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(0, &byte, 1) == 1 && byte != 0x0A { line.append(byte) }
        return line
    }
}
