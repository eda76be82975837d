// The Connectoid transport plugin: store-and-forward mailboxes over plain
// HTTPS requests. `join("PUB.URL.EXT")` polls that mailbox on every service
// the URL part names, at an interval, opening no connection in between;
// `send("PUB.URL.EXT", frame)` posts the frame (already sealed to PUB by the
// kernel) to every one of those services. Challenges are answered by the
// kernel (host->answer_challenge), which alone holds mailbox keys; messages
// received from several services are de-duplicated by their id. It sees
// nothing of Masq but include/masq_plugin.h.
import CMasqPlugin
import MasqPluginSupport
import FoundationEssentials
import MasqConnectoidWire
import MasqHTTPClient
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

#if canImport(Glibc)
    import Glibc
#endif

private let pluginName: StaticString = "connectoid"
private let pluginVersion: StaticString = "1.0.0"
private let pluginSummary: StaticString =
    "Connectoid mailboxes: polls store-and-forward services over HTTP(S), no open connection"

/// A mailbox as a room/destination string names it.
struct Mailbox: Hashable, Sendable {
    let name: String
    let pub: String
    let ext: String
    let services: [String]

    init?(_ name: String) {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3, !parts[0].isEmpty, let urls = Base64URL.decode(String(parts[1])),
            let text = String(validating: urls, as: UTF8.self)
        else { return nil }
        let services = text.split(separator: " ").map(String.init)
        guard !services.isEmpty, services.count <= 8, services.allSatisfy({ HTTPEndpoint($0) != nil }) else {
            return nil
        }
        self.name = name
        pub = String(parts[0])
        ext = parts.count == 3 ? String(parts[2]) : ""
        self.services = services
    }
}

final class ConnectoidTransport: PluginTransport, @unchecked Sendable {
    struct Options {
        var intervalMilliseconds: Int64 = 30_000
        var timeoutMilliseconds: Int64 = 10_000
        var receiveLimit = 50
        var maxMessageBytes = 65_536 + 4_096
        var maxQueuedSends = 1_000
        var sendAttempts = 5
        var dataDirectory: String?
    }

    struct Counters {
        var framesSent: UInt64 = 0
        var framesReceived: UInt64 = 0
        var framesRejected: UInt64 = 0
        var duplicates: UInt64 = 0
        var polls: UInt64 = 0
        var requestErrors: UInt64 = 0
        var sendRetries: UInt64 = 0
        var sendFailures: UInt64 = 0

        var json: String {
            "{\"frames_sent\": \(framesSent), \"frames_received\": \(framesReceived), \"frames_rejected\": \(framesRejected), "
                + "\"duplicates\": \(duplicates), \"polls\": \(polls), \"request_errors\": \(requestErrors), "
                + "\"send_retries\": \(sendRetries), \"send_failures\": \(sendFailures)}"
        }
    }

    struct State {
        var joined: [String: Mailbox] = [:]
        var polling: Set<String> = []
        /// Per mailbox and service: the `at` cursor of messages already handed over.
        var cursors: [String: Int64] = [:]
        /// Recently received message ids per mailbox (de-duplication across services).
        var seen: [String: [String]] = [:]
        var queued = 0
        var stopped = false
        var started = false
        var timer: RepeatedTask?
    }

    let host: UnsafePointer<masq_host>
    let options: Options
    let group: MultiThreadedEventLoopGroup
    let tls: NIOSSLContext?
    let counters = NIOLockedValueBox(Counters())
    var statsJSON: String { counters.withLockedValue { $0.json } }
    private let state = NIOLockedValueBox(State())
    private let pending = NIOLockedValueBox(0)

    init(host: UnsafePointer<masq_host>, options: Options) {
        self.host = host
        self.options = options
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        tls = try? NIOSSLContext(configuration: .makeClientConfiguration())
        if let cursors = loadCursors() { state.withLockedValue { $0.cursors = cursors } }
    }

    // MARK: plugin entry points (any thread)

    func start() -> Int32 {
        let timer = group.next().scheduleRepeatedTask(
            initialDelay: .zero, delay: .milliseconds(options.intervalMilliseconds)
        ) { [weak self] _ in
            self?.pollAll()
        }
        state.withLockedValue {
            $0.timer = timer; $0.started = true
        }
        return MASQ_OK
    }

    func stop() -> Int32 {
        let timer = state.withLockedValue { s -> RepeatedTask? in
            guard !s.stopped else { return nil }
            s.stopped = true
            return s.timer
        }
        timer?.cancel()
        // Let requests under way finish (bounded by the timeout) so no host
        // callback runs after stop returns.
        let deadline = monotonicMilliseconds() + options.timeoutMilliseconds + 1_000
        while pending.withLockedValue({ $0 }) > 0 && monotonicMilliseconds() < deadline { usleep(10_000) }
        saveCursors()
        try? group.syncShutdownGracefully()
        return MASQ_OK
    }

    func join(_ room: String) -> Int32 {
        guard let mailbox = Mailbox(room) else {
            return fail(
                .init(
                    MASQ_E_INVALID,
                    "a connectoid room is a mailbox PUB.URL.EXT with base64url parts and http(s) service URLs"))
        }
        guard hostHas(host, \.answer_challenge) else {
            return fail(
                .init(MASQ_E_UNSUPPORTED, "this kernel cannot answer mailbox challenges (masq_host.answer_challenge)"))
        }
        let started = state.withLockedValue { s -> Bool in
            s.joined[room] = mailbox
            return s.started
        }
        if started { group.next().execute { self.poll(mailbox) } }
        return MASQ_OK
    }

    func leave(_ room: String) -> Int32 {
        state.withLockedValue { s in
            s.joined[room] = nil
            s.seen[room] = nil
        }
        return MASQ_OK
    }

    /// Post `frame` to every service of the destination mailbox; retried
    /// with backoff on network errors, 5xx and "Too often"; a service that
    /// refuses the message for good (too big, bad key) is not retried.
    func send(_ destination: String, _ frame: [UInt8]) -> Int32 {
        guard let mailbox = Mailbox(destination) else {
            return fail(.init(MASQ_E_INVALID, "destination is not a mailbox PUB.URL.EXT"))
        }
        guard frame.count <= options.maxMessageBytes else {
            return fail(
                .init(
                    MASQ_E_TOO_LARGE,
                    "frame of \(frame.count) bytes exceeds max_message_bytes \(options.maxMessageBytes)"))
        }
        let admitted = state.withLockedValue { s -> Bool in
            guard !s.stopped, s.queued + mailbox.services.count <= options.maxQueuedSends else { return false }
            s.queued += mailbox.services.count
            return true
        }
        guard admitted else {
            return fail(.init(MASQ_E_BUSY, "connectoid send queue full (max_queued_sends \(options.maxQueuedSends))"))
        }
        let body = encode(
            ConnectoidRequest(pub: mailbox.pub, ext: mailbox.ext, action: "send", data: Base64URL.encode(frame)))
        counters.withLockedValue { $0.framesSent += 1 }
        for service in mailbox.services { post(service, body, attempt: 1) }
        return MASQ_OK
    }

    private func post(_ service: String, _ body: [UInt8], attempt: Int) {
        guard let endpoint = HTTPEndpoint(service) else { return }
        request(endpoint, body).whenComplete { result in
            var retry = true
            if case .success(let (status, response)) = result {
                retry = status >= 500 || response?.code == "rate_limited"
                if response?.ok == true { retry = false }
            }
            if retry && attempt < self.options.sendAttempts && !self.state.withLockedValue({ $0.stopped }) {
                self.counters.withLockedValue { $0.sendRetries += 1 }
                let delay = Int64(min(30_000, 500 << (attempt - 1)))
                self.group.next().scheduleTask(in: .milliseconds(delay)) {
                    self.post(service, body, attempt: attempt + 1)
                }
                return
            }
            if case .success(let (_, response)) = result, response?.ok == true {
            } else {
                self.counters.withLockedValue { $0.sendFailures += 1 }
                self.log(MASQ_LOG_WARN, "send to \(service) failed: \(Self.describe(result))")
            }
            self.state.withLockedValue { $0.queued -= 1 }
        }
    }

    // MARK: polling

    private func pollAll() {
        let mailboxes = state.withLockedValue { Array($0.joined.values) }
        for mailbox in mailboxes { poll(mailbox) }
    }

    /// One round for a mailbox: on each service, check; when something
    /// waits, answer the challenge and receive a batch, repeating while the
    /// service says more wait.
    private func poll(_ mailbox: Mailbox) {
        let go = state.withLockedValue { s -> Bool in
            guard !s.stopped, s.joined[mailbox.name] != nil, !s.polling.contains(mailbox.name) else { return false }
            s.polling.insert(mailbox.name)
            return true
        }
        guard go else { return }
        counters.withLockedValue { $0.polls += 1 }
        let loop = group.next()
        let rounds = mailbox.services.map { service in drain(mailbox, service, rounds: 0) }
        EventLoopFuture.andAllComplete(rounds, on: loop).whenComplete { _ in
            self.state.withLockedValue { _ = $0.polling.remove(mailbox.name) }
            self.saveCursors()
        }
    }

    private func drain(_ mailbox: Mailbox, _ service: String, rounds: Int) -> EventLoopFuture<Void> {
        let loop = group.next()
        guard let endpoint = HTTPEndpoint(service), rounds < 100 else { return loop.makeSucceededVoidFuture() }
        let key = mailbox.name + " " + service
        let at = state.withLockedValue { $0.cursors[key] ?? 0 }
        let check = encode(ConnectoidRequest(pub: mailbox.pub, ext: mailbox.ext, action: "check", at: at))
        return request(endpoint, check).flatMap { status, response -> EventLoopFuture<Void> in
            guard let response, response.ok, response.found == true,
                let question = response.question.flatMap(Base64URL.decode)
            else {
                if response?.ok != true { self.noteError(service, status, response) }
                return loop.makeSucceededVoidFuture()
            }
            guard let answer = self.answer(mailbox.name, question) else { return loop.makeSucceededVoidFuture() }
            let receive = encode(
                ConnectoidRequest(
                    pub: mailbox.pub, ext: mailbox.ext, action: "receive", at: at,
                    answer: Base64URL.encode(answer), limit: self.options.receiveLimit))
            return self.request(endpoint, receive).flatMap { status, response -> EventLoopFuture<Void> in
                guard let response, response.ok, let next = response.at else {
                    self.noteError(service, status, response)
                    return loop.makeSucceededVoidFuture()
                }
                self.deliver(mailbox, response.messages ?? [])
                self.state.withLockedValue { s in
                    if next > (s.cursors[key] ?? 0) { s.cursors[key] = next }
                }
                return response.more == true
                    ? self.drain(mailbox, service, rounds: rounds + 1) : loop.makeSucceededVoidFuture()
            }
        }.recover { _ in }
    }

    private func deliver(_ mailbox: Mailbox, _ messages: [ConnectoidMessage]) {
        for message in messages {
            let fresh = state.withLockedValue { s -> Bool in
                guard s.joined[mailbox.name] != nil else { return false }
                var seen = s.seen[mailbox.name] ?? []
                if seen.contains(message.id) { return false }
                seen.append(message.id)
                if seen.count > 4_096 { seen.removeFirst(seen.count - 4_096) }
                s.seen[mailbox.name] = seen
                return true
            }
            guard fresh else { counters.withLockedValue { $0.duplicates += 1 }; continue }
            guard let data = Base64URL.decode(message.data), data.count <= options.maxMessageBytes else {
                counters.withLockedValue { $0.framesRejected += 1 }
                continue
            }
            counters.withLockedValue { $0.framesReceived += 1 }
            data.withUnsafeBufferPointer {
                host.pointee.frame_received(host, "connectoid", mailbox.name, $0.baseAddress, $0.count)
            }
        }
    }

    private func answer(_ mailbox: String, _ question: [UInt8]) -> [UInt8]? {
        final class Box { var bytes: [UInt8] = [] }
        let box = Box()
        let status = question.withUnsafeBufferPointer { q in
            withExtendedLifetime(box) {
                host.pointee.answer_challenge(
                    host, mailbox, q.baseAddress, q.count,
                    { ctx, data, length in
                        let box = Unmanaged<Box>.fromOpaque(ctx!).takeUnretainedValue()
                        box.bytes = Array(UnsafeRawBufferPointer(start: data, count: length))
                        return MASQ_OK
                    }, Unmanaged.passUnretained(box).toOpaque())
            }
        }
        guard status == MASQ_OK else {
            counters.withLockedValue { $0.framesRejected += 1 }
            log(MASQ_LOG_WARN, "a challenge for a joined mailbox did not open (status \(status))")
            return nil
        }
        return box.bytes
    }

    // MARK: plumbing

    /// POST a JSON request; the response decoded when it is JSON.
    private func request(_ endpoint: HTTPEndpoint, _ body: [UInt8]) -> EventLoopFuture<(Int, ConnectoidResponse?)> {
        pending.withLockedValue { $0 += 1 }
        let future = HTTPClient.post(
            endpoint, body: body, group: group, tls: tls, timeout: .milliseconds(options.timeoutMilliseconds),
            maxResponseBytes: options.receiveLimit * (options.maxMessageBytes * 4 / 3 + 256) + 4_096
        )
        .map { result -> (Int, ConnectoidResponse?) in
            (result.status, try? JSONDecoder().decode(ConnectoidResponse.self, from: Data(result.body)))
        }
        future.whenComplete { result in
            self.pending.withLockedValue { $0 -= 1 }
            if case .failure = result { self.counters.withLockedValue { $0.requestErrors += 1 } }
        }
        return future
    }

    private func noteError(_ service: String, _ status: Int, _ response: ConnectoidResponse?) {
        counters.withLockedValue { $0.requestErrors += 1 }
        log(MASQ_LOG_DEBUG, "\(service): HTTP \(status) \(response?.code ?? "") \(response?.error ?? "")")
    }

    private static func describe(_ result: Result<(Int, ConnectoidResponse?), Error>) -> String {
        switch result {
        case .failure(let error): "\(error)"
        case .success(let (status, response)): "HTTP \(status) \(response?.code ?? "") \(response?.error ?? "")"
        }
    }

    private var cursorFile: String? { options.dataDirectory.map { $0 + "/connectoid-cursors.json" } }

    private func loadCursors() -> [String: Int64]? {
        guard let path = cursorFile, let file = fopen(path, "rb") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            bytes += chunk[0..<n]
            if bytes.count > 16 << 20 { return nil }
        }
        return try? JSONDecoder().decode([String: Int64].self, from: Data(bytes))
    }

    /// Cursors survive restarts, so a mailbox is not read again from the start.
    private func saveCursors() {
        guard let path = cursorFile else { return }
        let cursors = state.withLockedValue { s in
            s.cursors.filter { entry in s.joined.keys.contains { entry.key.hasPrefix($0 + " ") } }
        }
        guard let data = try? JSONEncoder().encode(cursors) else { return }
        let temporary = path + ".tmp"
        guard let file = fopen(temporary, "wb") else { return }
        let ok = data.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) == $0.count }
        fclose(file)
        if ok { rename(temporary, path) } else { unlink(temporary) }
    }

    func log(_ level: Int32, _ message: String) { host.pointee.log(host, level, message) }
    func fail(_ failure: PluginFailure) -> Int32 { report(host, failure) }
}

private func encode(_ request: ConnectoidRequest) -> [UInt8] {
    (try? JSONEncoder().encode(request)).map(Array.init) ?? []
}

private func monotonicMilliseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1_000 + Int64(ts.tv_nsec) / 1_000_000
}

// MARK: - the C face

private func parseOptions(_ list: UnsafePointer<masq_plugin_option>?, _ count: Int) throws(PluginFailure)
    -> ConnectoidTransport.Options
{
    var options = ConnectoidTransport.Options()
    let pairs = try pluginOptions(list, count)
    for (key, value) in pairs {
        func number(_ range: ClosedRange<Int>) throws(PluginFailure) -> Int { try optionNumber(key, value, range) }
        switch key {
        case "data_dir": options.dataDirectory = value
        case "interval_ms": options.intervalMilliseconds = Int64(try number(50...86_400_000))
        case "timeout_ms": options.timeoutMilliseconds = Int64(try number(100...600_000))
        case "receive_limit": options.receiveLimit = try number(1...1_000)
        case "max_message_bytes": options.maxMessageBytes = try number(256...(64 << 20))
        case "max_queued_sends": options.maxQueuedSends = try number(1...1_000_000)
        case "send_attempts": options.sendAttempts = try number(1...100)
        default:
            throw .init(
                MASQ_E_CONFIG,
                "unknown option \"\(key)\" (known: interval_ms, timeout_ms, receive_limit, max_message_bytes, max_queued_sends, send_attempts)"
            )
        }
    }
    return options
}

@inline(__always)
private func transport(_ raw: UnsafeMutableRawPointer?) -> ConnectoidTransport? {
    raw.map { Unmanaged<ConnectoidTransport>.fromOpaque($0).takeUnretainedValue() }
}

nonisolated(unsafe) private let vtable: UnsafeMutablePointer<masq_transport_vtable> = {
    let v = UnsafeMutablePointer<masq_transport_vtable>.allocate(capacity: 1)
    var t = transportVTable(flags: MASQ_TRANSPORT_ROOMS)
    t.create = { host, options, count, out in
        guard let host, let out else { return MASQ_E_INVALID }
        guard hostHas(host, \.frame_received), hostHas(host, \.peer_event) else { return MASQ_E_ABI }
        return handOver(host, out) { () throws(PluginFailure) in
            ConnectoidTransport(host: host, options: try parseOptions(options, count))
        }
    }
    t.join = { raw, room in
        guard let t = transport(raw), let room else { return MASQ_E_INVALID }
        return t.join(String(cString: room))
    }
    t.leave = { raw, room in
        guard let t = transport(raw), let room else { return MASQ_E_INVALID }
        return t.leave(String(cString: room))
    }
    t.send = { raw, destination, frame, length in
        guard let t = transport(raw), let destination, frame != nil || length == 0 else { return MASQ_E_INVALID }
        return t.send(String(cString: destination), Array(UnsafeRawBufferPointer(start: frame, count: length)))
    }
    v.initialize(to: t)
    return v
}()

nonisolated(unsafe) private let descriptor = pluginDescriptor(
    kind: MASQ_PLUGIN_TRANSPORT, name: pluginName, version: pluginVersion,
    summary: pluginSummary, vtable: UnsafeRawPointer(vtable))

@c @implementation
public func masq_plugin_entry() -> UnsafePointer<masq_plugin_descriptor>! {
    UnsafePointer(descriptor)
}
