#if canImport(Glibc)
    import Glibc
#endif

/// The few file-system operations the kernel needs, on POSIX calls so that
/// errors carry errno's explanation.
public enum FileSystem {
    public static func currentDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return "/" }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func expandHome(_ path: String) -> String {
        guard path == "~" || path.hasPrefix("~/"), let home = getenv("HOME") else { return path }
        return String(cString: home) + path.dropFirst()
    }

    /// `path` made absolute against `base`, with "." and ".." segments removed.
    public static func absolute(_ path: String, base: String) -> String {
        let joined = path.hasPrefix("/") ? path : base + "/" + path
        var parts: [Substring] = []
        for part in joined.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." { if !parts.isEmpty { parts.removeLast() }; continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    public static func directoryName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    public static func baseName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Create `path` and missing parents with `mode` (only new directories get it).
    public static func makeDirectories(_ path: String, mode: mode_t = 0o700) throws(MasqError) {
        if isDirectory(path) { return }
        let parent = directoryName(path)
        if parent != path && !isDirectory(parent) { try makeDirectories(parent, mode: mode) }
        if mkdir(path, mode) != 0 && errno != EEXIST {
            throw MasqError(.io, "cannot create directory \(path): \(errnoText())")
        }
    }

    /// Write a whole file atomically (temporary file + rename) with `mode`.
    public static func writeFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o600) throws(MasqError) {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw MasqError(.io, "cannot write \(path): \(errnoText())") }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                let text = errnoText()
                close(fd); unlink(temporary)
                throw MasqError(.io, "cannot write \(path): \(text)")
            }
            offset += n
        }
        if fsync(fd) != 0 || close(fd) != 0 || rename(temporary, path) != 0 {
            let text = errnoText()
            unlink(temporary)
            throw MasqError(.io, "cannot write \(path): \(text)")
        }
    }

    /// Read a whole file (refusing anything larger than `limit` bytes).
    public static func readFile(_ path: String, limit: Int = 16 << 20) throws(MasqError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw MasqError(.io, "cannot read \(path): \(errnoText())") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw MasqError(.io, "cannot read \(path): \(errnoText())")
            }
            if n == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > limit { throw MasqError(.tooLarge, "\(path) is larger than \(limit) bytes") }
        }
    }

    /// Create `path` with `bytes` only if it does not exist (atomic: written
    /// to a temporary file, then hard-linked into place). False if it exists.
    public static func createFile(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o600) throws(MasqError) -> Bool {
        let temporary = path + ".new-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try writeFile(temporary, bytes, mode: mode)
        defer { unlink(temporary) }
        if link(temporary, path) == 0 { return true }
        if errno == EEXIST { return false }
        throw MasqError(.io, "cannot create \(path): \(errnoText())")
    }

    public static func listDirectory(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    static func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }
}
