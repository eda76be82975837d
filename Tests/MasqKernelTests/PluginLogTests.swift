import CMasq
import CMasqPlugin
import Logging
import MasqPluginSupport
import Testing

@testable import MasqKernel

#if canImport(Glibc)
    import Glibc
#endif

/// Lines the embedder's callback received (the callback is a C function: no captures).
private let received = LockedValue<[(level: Int32, component: String, message: String)]>([])

/// A Swift plugin's lines reach the embedder: swift-log through
/// `HostLogHandler` (MasqPluginSupport, as the mesh transport plugin logs),
/// over the host table the kernel hands a plugin instance (`host->log`), to
/// the callback set with `masq_set_log_callback`, under the instance's
/// component and at the mapped level.
@Suite(.serialized) struct PluginLogTests {
    @Test func aSwiftPluginLogsThroughTheHostToTheEmbeddersCallback() throws {
        #expect(
            masq_set_log_callback(
                MASQ_LOG_INFO,
                { _, level, component, message in
                    guard let component, let message else { return }
                    let line = (level, String(cString: component), String(cString: message))
                    received.withLock { $0.append(line) }
                }, nil) == MASQ_OK)
        defer { _ = masq_set_log_callback(MASQ_LOG_ERROR, nil, nil) }

        let host = PluginHost(component: "transport:swift-test", transport: true)
        // The plugin's view of the same table (masq_plugin.h through CMasqPlugin).
        let table = UnsafeRawPointer(host.table).assumingMemoryBound(to: CMasqPlugin.masq_host.self)
        var logger = HostLogHandler.logger("masq.node", host: table)
        logger[metadataKey: "peer"] = "p1"
        logger.warning("link lost")
        logger.info("route built")
        logger.debug("below the embedder's level")

        let lines = received.withLock { $0 }.filter { $0.component == "transport:swift-test" }
        #expect(lines.count == 2)
        #expect(lines.first?.level == MASQ_LOG_WARN)
        #expect(lines.first?.message == "masq.node: link lost peer=p1")
        #expect(lines.last?.level == MASQ_LOG_INFO)
        #expect(lines.last?.message == "masq.node: route built peer=p1")
    }
}
