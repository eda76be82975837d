import MasqConnectoidWire
import Prometheus

/// Counters and gauges at /metrics (Prometheus text format). Nothing here
/// names a mailbox or a client.
final class ServiceMetrics: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    private var requests: [String: Counter] = [:]
    private var errors: [String: Counter] = [:]
    let bytesIn: Counter
    let questionsSealed: Counter
    let questionsReused: Counter
    let collectedMessages: Counter
    let collectedMailboxes: Counter
    let refusedConnections: Counter
    let refusedConnectionsPerAddress: Counter
    let timedOut: Counter
    let collections: Counter
    let collectionsSkipped: Counter
    let storeErrors: Counter
    private let messageBytes: Gauge
    private let storeBytes: Gauge
    private let drainingGauge: Gauge
    let maxConnections: Gauge
    let connections: Gauge
    private let mailboxes: Gauge
    private let messages: Gauge

    init() {
        let registry = self.registry
        func counter(_ name: String, _ help: String, _ labels: [(String, String)] = []) -> Counter {
            registry.makeCounter(
                descriptor: MetricNameDescriptor(
                    namespace: "masq", subsystem: "connectoid", metricName: name, unitName: "total", helpText: help),
                labels: labels)
        }
        for action in ["send", "check", "receive", "other"] {
            for result in ["ok", "error"] {
                requests[action + result] = counter(
                    "requests", "Requests answered", [("action", action), ("result", result)])
            }
        }
        for code in ConnectoidError.Code.allCases {
            errors[code.rawValue] = counter("errors", "Requests refused, by code", [("code", code.rawValue)])
        }
        bytesIn = counter("message_bytes", "Message bytes stored")
        questionsSealed = counter("questions_sealed", "Challenges sealed (one P-384 ECDH each)")
        questionsReused = counter("questions_reused", "Checks answered with a pending challenge")
        collectedMessages = counter("collected_messages", "Messages deleted by retention")
        collectedMailboxes = counter("collected_mailboxes", "Idle mailboxes deleted")
        refusedConnections = counter("refused_connections", "Connections closed at once: --max-connections were open")
        refusedConnectionsPerAddress = counter(
            "refused_connections_per_address",
            "Connections closed at once: their address held --max-connections-per-address")
        timedOut = counter("timed_out", "Connections closed for not completing a request in time")
        collections = counter("collections", "Garbage collections this instance ran")
        collectionsSkipped = counter(
            "collections_skipped", "Garbage collections left to another instance sharing the store")
        storeErrors = counter("store_errors", "Requests answered 503 because the mailbox store failed")
        func gauge(_ name: String, _ help: String) -> Gauge {
            registry.makeGauge(
                descriptor: MetricNameDescriptor(
                    namespace: "masq", subsystem: "connectoid", metricName: name, unitName: "", helpText: help))
        }
        messageBytes = gauge("message_bytes_held", "Message bytes held (what the per-mailbox byte quota counts)")
        storeBytes = gauge(
            "store_bytes", "Bytes the mailbox store occupies (SQLite file and WAL, or PostgreSQL tables and indexes)")
        drainingGauge = gauge("draining", "1 while the service drains its connections before stopping")
        maxConnections = gauge("max_connections", "Connections the service accepts (--max-connections)")
        connections = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                namespace: "masq", subsystem: "connectoid", metricName: "connections", unitName: "",
                helpText: "Connections open"))
        mailboxes = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                namespace: "masq", subsystem: "connectoid", metricName: "mailboxes", unitName: "",
                helpText: "Mailboxes held"))
        messages = registry.makeGauge(
            descriptor: MetricNameDescriptor(
                namespace: "masq", subsystem: "connectoid", metricName: "messages", unitName: "",
                helpText: "Messages held"))
    }

    func count(_ action: String, ok: Bool, code: ConnectoidError.Code? = nil) {
        let name = ["send", "check", "receive"].contains(action) ? action : "other"
        requests[name + (ok ? "ok" : "error")]?.increment()
        if let code { errors[code.rawValue]?.increment() }
    }

    func text(_ counts: MailboxCounts, draining: Bool) -> String {
        mailboxes.set(counts.mailboxes)
        messages.set(counts.messages)
        messageBytes.set(counts.messageBytes)
        storeBytes.set(counts.storeBytes)
        drainingGauge.set(Int64(draining ? 1 : 0))
        return registry.emitToString()
    }
}

extension Counter {
    func add(_ n: Int) { if n > 0 { increment(by: Int64(n)) } }
}
