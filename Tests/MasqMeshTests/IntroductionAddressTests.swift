import Testing

@testable import MasqMesh

/// Which introduced hosts a node dials (`MeshNode.mayDial`), and which links a
/// node introduces to others (`MeshNode.sameHost`): introductions come from
/// neighbours, whose records cost nothing, and must not aim this node's dials
/// at its own machine, its network, or a name an introducer could watch.
@Suite struct IntroductionAddressTests {
    @Test func aPublicNodeDialsOnlyPublicAddresses() {
        let own = "203.0.113.7"
        #expect(MeshNode.mayDial("198.51.100.20", from: own))
        #expect(MeshNode.mayDial("2001:db8::5", from: own))
        for refused in [
            "127.0.0.1", "::1", "10.0.0.5", "172.16.3.4", "192.168.1.1", "100.64.0.1", "fd00::1", "169.254.169.254",
            "fe80::1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255", "node.example.org", "",
            "::ffff:127.0.0.1"
        ] {
            #expect(!MeshNode.mayDial(refused, from: own), "\(refused)")
        }
    }

    @Test func aNodeOnAPrivateNetworkDialsItsNetworkButNotLoopback() {
        let own = "192.168.1.10"
        #expect(MeshNode.mayDial("192.168.1.11", from: own))
        #expect(MeshNode.mayDial("10.1.2.3", from: own))
        #expect(MeshNode.mayDial("198.51.100.20", from: own))
        #expect(!MeshNode.mayDial("127.0.0.1", from: own))
        #expect(!MeshNode.mayDial("169.254.169.254", from: own))
    }

    @Test func aNodeOnLoopbackDialsLoopback() {
        // (every test network runs on 127.0.x.y)
        #expect(MeshNode.mayDial("127.0.5.10", from: "127.0.2.100"))
        #expect(MeshNode.mayDial("10.0.0.1", from: "127.0.0.1"))
        #expect(!MeshNode.mayDial("0.0.0.0", from: "127.0.0.1"))
    }

    @Test func aLinkIsIntroducedOnlyFromTheAddressItsRecordNames() {
        #expect(MeshNode.sameHost("127.0.10.30", IPAddress("127.0.10.30")))
        #expect(MeshNode.sameHost("2001:db8::5", IPAddress("2001:db8::5")))
        #expect(MeshNode.sameHost("127.0.10.30", IPAddress("::ffff:127.0.10.30")))
        #expect(!MeshNode.sameHost("127.0.10.99", IPAddress("127.0.10.30")))
        #expect(!MeshNode.sameHost("localhost", IPAddress("127.0.0.1")))
        #expect(!MeshNode.sameHost("127.0.0.1", nil))
    }
}
