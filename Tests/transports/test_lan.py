"""What is particular to the lan transport (plugins/transport-lan): discovery
by UDP beacons on loopback, its options, beacons that reveal no room, and
its limits (peers, a peer's smaller frame limit, hostile beacons).
test_conformance.py covers the contract every transport shares.
"""
import os
import socket
import struct
import time

import pytest

from conftest import E_CONFIG, OK, PEER_UP, Instance, Net, free_port, link, new_room, transport_name, wait_for

pytestmark = pytest.mark.skipif(transport_name() != "lan", reason="MASQ_TRANSPORT is not lan")


@pytest.fixture
def lan(harness_bin, lan_plugin, tmp_path):
    n = Net(harness_bin, lan_plugin, lambda slot: {}, tmp_path)
    yield n
    n.close()


def discovery(port):
    """Options for discovery on loopback: 127.255.255.255 reaches every
    socket bound to the port on this machine (as 255.255.255.255 does on a LAN)."""
    return {"bind": "127.0.0.1", "discovery_port": port, "discovery_address": "127.255.255.255",
            "beacon_interval_ms": 200}


def test_discovery_without_any_address(lan):
    port = free_port()
    room, other = new_room(), new_room()
    a = lan.instance("a", room, options=discovery(port))
    b = lan.instance("b", room, options=discovery(port))
    c = lan.instance("c", other, options=discovery(port))
    link(a, b, room)
    wait_for(10, "a's MASQ_PEER_UP for b", lambda: a.poll() or any(e[0] == PEER_UP for e in a.events))
    time.sleep(1)
    # c hears the beacons but shares no room: nobody connects to it.
    assert c.stats()["connections"] == 0 and c.stats()["beacons_received"] > 0
    assert a.stats()["peers"] == 1


def test_beacons_name_no_room(lan):
    port = free_port()
    room = new_room()
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", port))
    listener.settimeout(5)
    try:
        lan.instance("a", room, options=discovery(port))
        beacons = [listener.recv(2048) for _ in range(3)]
    finally:
        listener.close()
    for beacon in beacons:
        assert beacon.startswith(b"MQLN\x01")
        assert room.encode() not in beacon and bytes.fromhex(room) not in beacon
    assert len({b[31:] for b in beacons}) == 3, "room tags repeat from one beacon to the next (they should be salted)"


def test_hostile_beacons_are_counted(lan):
    port = free_port()
    room = new_room()
    a = lan.instance("a", room, options=discovery(port))
    good_head = b"MQLN\x01" + os.urandom(8) + struct.pack(">H", 9) + os.urandom(16)
    junk = [b"", b"MQLN", b"XXXX" + good_head[4:] + b"\x00", good_head + b"\x10",       # says 16 tags, has none
            good_head + b"\x11" + b"t" * 17 * 16, good_head + b"\x01" + b"t" * 15,
            good_head[:5] + b"\x07" + good_head[6:] + b"\x00"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for packet in junk:
            s.sendto(packet, ("127.0.0.1", port))
        # Well-formed, but naming no room of a's: ignored, not connected to.
        s.sendto(good_head + b"\x01" + os.urandom(16), ("127.0.0.1", port))
    wait_for(5, "the junk beacons counted", lambda: a.stats()["beacons_rejected"] >= len(junk) - 1)
    time.sleep(0.3)
    assert a.stats()["connections"] == 0


@pytest.mark.parametrize("key,value", [
    ("port", "70000"), ("port", "-1"), ("port", "12x"), ("discovery_port", "65536"),
    ("discovery_address", "broadcast"), ("bind", "::1"), ("peers", "localhost:7000"),
    ("peers", "127.0.0.1"), ("peers", "127.0.0.1:0"), ("max_frame_bytes", "0"), ("max_peers", "0"),
    ("beacon_interval_ms", "1"), ("max_queue_bytes", "65536"), ("url", "ws://127.0.0.1:7070/"),
])
def test_bad_options_are_refused(lan, key, value):
    inst = Instance(lan.harness, lan.plugin, str(lan.dir / "bad.log"), name="bad")
    lan.all.append(inst)
    status, text = inst.create({key: value, "data_dir": str(lan.dir)})
    assert status == E_CONFIG, f"{key}={value!r} gave status {status} ({text})"
    assert key in text or "option" in text, f"the message does not name the option: {text}"


def test_a_busy_port_fails_start(lan):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        inst = lan.instance("a", options={"bind": "127.0.0.1", "port": taken.getsockname()[1],
                                          "discovery_port": 0}, start=False)
        status, text = inst.call("start")
        assert status != OK and "listen" in text, (status, text)


def test_max_peers(lan):
    room = new_room()
    pa = free_port()
    a = lan.instance("a", room, options={"bind": "127.0.0.1", "port": pa, "discovery_port": 0, "max_peers": 1})
    b = lan.instance("b", room, options={"bind": "127.0.0.1", "discovery_port": 0, "peers": f"127.0.0.1:{pa}"})
    link(a, b, room)
    c = lan.instance("c", room, options={"bind": "127.0.0.1", "discovery_port": 0, "peers": f"127.0.0.1:{pa}"})
    wait_for(10, "a to refuse a second peer", lambda: a.stats()["connections_refused"] >= 1)
    c.send(room, b"from c")
    link(a, b, room)                        # the first peer is still served
    assert not a.got(room, b"from c")


def test_a_peer_with_a_smaller_frame_limit(lan):
    """Frames beyond what a peer accepts are not sent to it (counted in
    frames_dropped) rather than making it drop the connection."""
    room = new_room()
    pa = free_port()
    a = lan.instance("a", room, options={"bind": "127.0.0.1", "port": pa, "discovery_port": 0})
    b = lan.instance("b", room, options={"bind": "127.0.0.1", "discovery_port": 0, "peers": f"127.0.0.1:{pa}",
                                          "max_frame_bytes": 1000})
    link(a, b, room)
    status, _ = a.gen(room, 5000, 1)
    assert status == OK
    wait_for(5, "the frame counted as dropped", lambda: a.stats()["frames_dropped"] == 1)
    link(a, b, room)
    assert b.stats()["frames_rejected"] == 0


def test_static_peers_both_ways_keep_one_connection(lan):
    """Two devices listing each other connect once (a duplicate is closed by
    a rule both ends agree on), and do not keep reconnecting."""
    room = new_room()
    pa, pb = free_port(), free_port()
    peers = f"127.0.0.1:{pa},127.0.0.1:{pb}"
    a = lan.instance("a", room, options={"bind": "127.0.0.1", "port": pa, "discovery_port": 0, "peers": peers})
    b = lan.instance("b", room, options={"bind": "127.0.0.1", "port": pb, "discovery_port": 0, "peers": peers})
    link(a, b, room)
    time.sleep(6)    # past the longest reconnect backoff
    for inst in (a, b):
        stats = inst.stats()
        assert stats["connections"] == 1 and stats["peers"] == 1, stats
        assert stats["connects"] <= 3, f"the two keep reconnecting: {stats}"
