import Synchronization
import Testing
@testable import MasqKernel
#if canImport(Glibc)
    import Glibc
#endif

/// Paths and fixtures shared by the tests: real plugins built with the real
/// tools (cc, make), real files in fresh temporary directories.
enum Fixtures {
    static let repository: String = {
        var path = #filePath
        for _ in 0..<3 { path = FileSystem.directoryName(path) }
        return path
    }()

    /// Where the test binary lives: SwiftPM's build directory, which also
    /// holds libmasq_storage_sqlite.so after `swift build`.
    static let buildDirectory: String = {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        let exe = n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "."
        var dir = FileSystem.directoryName(exe)
        while !dir.hasSuffix("/debug") && !dir.hasSuffix("/release") && dir != "/" {
            dir = FileSystem.directoryName(dir)
        }
        return dir
    }()

    /// The C reference plugin and the broken plugins, built once per test run.
    static let pluginDirectory: String = {
        let dir = temporaryDirectory("plugins")
        run("make -s -C '\(repository)/plugins/storage-memory' BUILD='\(dir)'")
        run("'\(repository)/Tests/c/plugins/build.sh' '\(dir)/bad'")
        return dir
    }()

    static func run(_ command: String) {
        let status = system(command + " >&2")
        precondition(status == 0, "fixture command failed (\(status)): \(command)")
    }

    /// A fresh directory in /tmp, removed when the test process exits (so
    /// that runs leave nothing behind; MASQ_KEEP_TEST_DIRS=1 keeps them).
    static func temporaryDirectory(_ label: String) -> String {
        var template = Array("/tmp/masq-test-\(label)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        let path = String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        madeDirectories.withLock { made in
            if made.isEmpty && getenv("MASQ_KEEP_TEST_DIRS") == nil {
                atexit {
                    for dir in Fixtures.madeDirectories.withLock({ $0 }) {
                        _ = system("rm -rf '\(dir)'")
                    }
                }
            }
            made.append(path)
        }
        return path
    }

    static let madeDirectories = Mutex<[String]>([])

    /// A config for `plugin` ("sqlite" or "memory") in a fresh data directory.
    static func config(
        _ plugin: String, dataDir: String? = nil, limits: Limits = Limits(),
        options: [(key: String, value: String)] = []
    ) -> MasqConfig {
        var config = MasqConfig.defaults(dataDir: dataDir ?? temporaryDirectory("data"))
        config.pluginPath = [pluginDirectory, buildDirectory]
        config.storage = PluginReference(name: plugin, options: options)
        config.limits = limits
        return config
    }

    static func open(_ plugin: String, dataDir: String? = nil, limits: Limits = Limits()) throws -> Store {
        try Store(config: config(plugin, dataDir: dataDir, limits: limits))
    }
}

extension Array where Element == UInt8 {
    init(_ text: String) { self = Array(text.utf8) }
}

func ns(_ name: String) throws -> NamespaceName { try NamespaceName(name, limits: Limits()) }

/// Expect `body` to throw a MasqError with `status`; return it for more checks.
@discardableResult
func expectMasqError(
    _ status: MasqStatus, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) -> MasqError? {
    do {
        try body()
        Issue.record("expected \(status.name), but the call succeeded", sourceLocation: sourceLocation)
        return nil
    } catch let error as MasqError {
        #expect(error.status == status, "got \(error.status.name): \(error.message)", sourceLocation: sourceLocation)
        #expect(!error.message.isEmpty, sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// A value shared with watch callbacks (which run on another thread).
final class Shared<T>: @unchecked Sendable {
    private var value: T
    private let lock = Lock()
    init(_ value: T) { self.value = value }
    func update(_ body: (inout T) -> Void) { lock.withLock { body(&value) } }
    var current: T { lock.withLock { value } }
}

/// Poll `condition` until it holds or 10 s pass (events arrive on another thread).
func waitUntil(_ condition: () -> Bool) -> Bool {
    let deadline = Clock.monotonicNanoseconds() + 10_000_000_000
    while !condition() {
        if Clock.monotonicNanoseconds() > deadline { return false }
        usleep(1000)
    }
    return true
}

/// Deterministic pseudo-random bytes (tests of long values and blobs).
func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = SeededRandom(state: seed)
    var out = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        var word = rng.next()
        for _ in 0..<8 where i < count {
            out[i] = UInt8(truncatingIfNeeded: word)
            word >>= 8
            i += 1
        }
    }
    return out
}
