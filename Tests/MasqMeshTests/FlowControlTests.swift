import Foundation
import Testing
@testable import MasqMesh
#if canImport(Glibc)
    import Glibc
#endif

/// Real nodes in this process on 127.0.0.1 (an origin with a SOCKS5 front
/// and an exit, a one-hop route allowed for the test), a real target socket.
@Suite(.serialized) struct FlowControlTests {
    /// A listening socket nobody accepts from: connections complete (backlog)
    /// and the kernel's buffers fill, then the target reads nothing more.
    private func deafTarget() -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        listen(fd, 8)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// A SOCKS5 CONNECT to 127.0.0.1:port through the node's front; the reply code.
    private func socksConnect(_ socksPort: Int, to port: Int) throws -> (fd: Int32, reply: UInt8) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(socksPort).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        #expect(connected == 0)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        func send(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) } }
        func receive(_ n: Int) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: n)
            let got = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress, n, Int32(MSG_WAITALL)) }
            return Array(out.prefix(max(0, got)))
        }
        send([5, 1, 0])
        #expect(receive(2) == [5, 0])
        send([5, 1, 0, 1, 127, 0, 0, 1, UInt8(port >> 8), UInt8(port & 0xff)])
        let reply = receive(10)
        return (fd, reply.count == 10 ? reply[1] : 0xff)
    }

    private func waitFor(_ what: String, seconds: Double = 15, _ condition: () -> Bool) {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return }
            usleep(50_000)
        }
        Issue.record("timed out: \(what)")
    }

    /// A node on 127.0.0.1 with short routes allowed, a small window and a
    /// fast gossip; `configure` adds the node's own settings.
    private func startNode(_ work: String, _ name: String, hops: Int, _ configure: (inout MeshConfiguration) -> Void)
        throws -> MeshNode
    {
        var config = MeshConfiguration()
        config.host = "127.0.0.1"
        config.hops = hops
        config.allowShortRoutes = true
        config.gossipMilliseconds = 100
        config.window = 64
        config.sendmeEvery = 16
        config.dataDirectory = work + "/" + name
        // The target listens on 127.0.0.1: an exit connects there only through an explicit allow rule.
        config.exitPolicy.allow = [ExitPolicy.Rule(network: IPNetwork("127.0.0.1/32"))]
        // Every node on one address: no per-address limits.
        config.neighbourPrefixV4 = 0
        config.hopPrefixV4 = 0
        configure(&config)
        try FileManager.default.createDirectory(atPath: config.dataDirectory, withIntermediateDirectories: true)
        let node = try MeshNode(configuration: config, identity: .generate())
        try node.start()
        return node
    }

    /// The origin misbehaves: far more cells than the window (enough to fill
    /// the kernel buffers toward the target too), without waiting for SENDMEs.
    private func flood(_ origin: MeshNode) -> Bool {
        origin.onLoop { () -> Bool in
            guard let stream = origin.streams.values.first, let route = stream.route else { return false }
            let chunk = [UInt8](repeating: 0x55, count: origin.forwardCellData)
            for _ in 0..<(64 * origin.forwardFlowControlLimit) { origin.sendToExit(route, .data, stream.number, chunk) }
            origin.flush()
            return true
        } ?? false
    }

    /// An exit and an origin (SOCKS5 front, seeded with the exit) on 127.0.0.1,
    /// linked, and a SOCKS client connected through them to a deaf target, for `body`.
    private func withExitAndOrigin(_ body: (MeshNode, MeshNode, Int32) throws -> Void) throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("masq-flow-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: work) }
        let exit = try startNode(work, "exit", hops: 1) { $0.exit = true }
        defer { exit.stop() }
        let origin = try startNode(work, "origin", hops: 1) {
            $0.socks = "127.0.0.1:0"
            $0.seeds = [exit.descriptor]
        }
        defer { origin.stop() }
        waitFor("the origin knows the exit") {
            origin.onLoop { origin.records[exit.key] != nil && origin.neighbours[exit.key] != nil } ?? false
        }
        let target = deafTarget()
        defer { close(target.fd) }
        let (client, reply) = try socksConnect(origin.socksPort, to: target.port)
        defer { close(client) }
        #expect(reply == 0)
        try body(exit, origin, client)
    }

    @Test func anOriginIgnoringFlowControlLosesItsRouteAtTheExit() throws {
        try withExitAndOrigin { exit, origin, client in

            #expect(flood(origin))
            waitFor("the exit destroys the route") { (exit.onLoop { exit.counters.flowControlViolations } ?? 0) >= 1 }
            waitFor("the exit holds no circuit") { exit.onLoop { exit.exits.isEmpty } ?? false }
            // The origin learns it: the route failed and the SOCKS client's connection is closed.
            waitFor("the origin drops the route") { origin.onLoop { origin.routes.isEmpty } ?? false }
            var byte: UInt8 = 0
            #expect(recv(client, &byte, 1, 0) <= 0)
        }
    }

    /// The mirror: the exit floods the origin far past the window (JUMBO
    /// cells, four units each) while the SOCKS client reads nothing; the
    /// origin destroys the route instead of buffering without bound.
    @Test func anExitIgnoringFlowControlLosesItsRouteAtTheOrigin() throws {
        try withExitAndOrigin { exit, origin, client in
            waitFor("the exit holds the stream") {
                exit.onLoop { exit.exits.values.contains { $0.returnEnd != nil && !$0.streams.isEmpty } } ?? false
            }
            let flooded =
                exit.onLoop { () -> Bool in
                    guard let circuit = exit.exits.values.first(where: { $0.returnEnd != nil }),
                        let stream = circuit.streams.values.first
                    else { return false }
                    let chunk = [UInt8](repeating: 0x66, count: exit.cellData)
                    // 32 MB: past the window and whatever the client's socket buffers take.
                    for _ in 0..<2_000 { exit.sendToOrigin(circuit, .data, stream.id, chunk) }
                    exit.flush()
                    return true
                } ?? false
            #expect(flooded)
            waitFor("the origin destroys the route") {
                (origin.onLoop { origin.counters.flowControlViolations } ?? 0) >= 1
            }
            waitFor("the origin drops the route") { origin.onLoop { origin.routes.isEmpty } ?? false }
        }
    }

    /// A relay whose next hop stops reading (the exit's loop is busy) and an
    /// origin that floods: the relay destroys the circuit once its queue
    /// toward the exit passes the cap, instead of growing without bound.
    @Test func aRelayDestroysACircuitWhoseNextHopQueueOverflows() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("masq-queue-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: work) }
        func node(_ name: String, seeds: [NodeDescriptor], exit: Bool = false, socks: Bool = false) throws -> MeshNode {
            try startNode(work, name, hops: 2) {
                $0.maxLinkQueueBytes = 2 << 20
                $0.exit = exit
                $0.seeds = seeds
                $0.socks = socks ? "127.0.0.1:0" : nil
            }
        }
        let relay = try node("relay", seeds: [])
        defer { relay.stop() }
        let exit = try node("exit", seeds: [relay.descriptor], exit: true)
        defer { exit.stop() }
        let origin = try node("origin", seeds: [relay.descriptor], socks: true)
        defer { origin.stop() }
        waitFor("the origin has a route through the relay") {
            origin.onLoop { origin.chooseRoutes().map { $0.forward == [relay.key, exit.key] } ?? false } ?? false
        }
        let target = deafTarget()
        defer { close(target.fd) }
        let (client, reply) = try socksConnect(origin.socksPort, to: target.port)
        defer { close(client) }
        #expect(reply == 0)
        guard reply == 0 else { return }

        // The exit stops reading its links for a while; the origin floods the route.
        exit.loop.execute { usleep(3_000_000) }
        #expect(flood(origin))
        waitFor("the relay destroys the circuit") { (relay.onLoop { relay.counters.queueOverflows } ?? 0) >= 1 }
        waitFor("the relay holds no circuit", seconds: 20) { relay.onLoop { relay.relays.isEmpty } ?? false }
        waitFor("the origin drops the route", seconds: 20) { origin.onLoop { origin.routes.isEmpty } ?? false }
    }
}
