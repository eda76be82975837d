"""Transport conformance: any transport plugin, run through the contract of
include/masq_plugin.h ("Transport plugins") the way the kernel uses it —
create (the config's options plus data_dir), start, connect(url) when an
option is named url, join(room), send(room, frame), stop, destroy — by
harness.c, one harness process per instance, on 127.0.0.1 only.

    MASQ_TRANSPORT=lan   python3 -m pytest Tests/transports
    MASQ_TRANSPORT=relay MASQ_BIN=.build/debug/masq-cli MASQ_PLUGIN_DIR=.build/debug \\
        python3 -m pytest Tests/transports

What a transport must do: frames reach every other member of the room and
nobody else, intact, at every size up to max_frame_bytes; one byte more is
MASQ_E_TOO_LARGE; MASQ_TRANSPORT_UP once it can send; MASQ_PEER_UP/DOWN or
MASQ_ROOM_CHANGED as members come and go; traffic resumes after an instance
is replaced; a hostile peer's bytes on the transport's own wire are counted
in frames_rejected and never reach the host, and honest traffic goes on;
stop() returns promptly even during a flood, with no callback running or to
come; stats is a JSON object of unsigned integers.

A transport is described by a profile (below): its options per instance,
and how a hostile peer reaches its wire. Unknown names get a neutral profile
(no options, no hostile test).
"""
import base64
import hashlib
import os
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import (E_CONFIG, E_TOO_LARGE, OK, PEER_DOWN, PEER_UP, ROOM_CHANGED, ROOMS_FLAG, TRANSPORT_UP,
                      Instance, Net, free_port, link, new_room, transport_name, wait_for)

EVENT_TIMEOUT = 15
QUIET = 1.0            # how long to watch for frames that must not arrive


# ---- profiles -----------------------------------------------------------------

class Profile:
    """A transport under test: per-slot options and, optionally, a hostile peer."""
    name = "generic"
    hostile = None

    def __init__(self, procs_dir):
        self.dir = procs_dir

    def options(self, slot):
        return {}

    def close(self):
        pass


class LanProfile(Profile):
    """Fixed ports on 127.0.0.1; every instance lists every slot's port as a
    static peer (its own too: it must notice and skip itself). No discovery
    here (test_lan.py covers it), so tests do not see each other's beacons."""
    name = "lan"
    SLOTS = "abcd"

    def __init__(self, procs_dir):
        super().__init__(procs_dir)
        self.ports = {slot: free_port() for slot in self.SLOTS}

    def options(self, slot):
        return {"bind": "127.0.0.1", "port": self.ports[slot], "discovery_port": 0,
                "peers": ",".join(f"127.0.0.1:{p}" for p in self.ports.values())}

    def hostile(self, net, victim, room):
        """Raw bytes on the victim's TCP port (plugins/transport-lan/README.md,
        "Wire format"). Returns how many messages the victim must refuse."""
        port = self.ports[victim.slot]
        hello = lan_hello()
        attacks = [
            b"\xff\xff\xff\xff" + b"x" * 64,                        # length beyond any limit
            b"\x00\x00\x00\x00",                                     # empty message
            lan_msg(1, b"XXXX" + hello[4:]),                         # HELLO with the wrong magic
            lan_msg(1, hello[:4] + b"\x09" + hello[5:]),             # unknown version
            lan_msg(1, hello[:-1]),                                  # truncated HELLO
            lan_msg(3, b"frame before the handshake"),               # FRAME before HELLO
            lan_msg(1, hello) + lan_msg(2, bytes([200]) + b"t" * 16),            # ROOMS claiming 200 tags
            lan_msg(1, hello) + lan_msg(2, b"\x01" + b"t" * 15),                 # ROOMS cut short
            lan_msg(1, hello) + lan_msg(99, b"?"),                               # unknown type
            lan_msg(1, hello) + lan_msg(4, b"not empty"),                        # PING with a body
            lan_msg(1, hello) + lan_msg(3, b"short"),                            # FRAME shorter than its tag
            lan_msg(1, hello) + lan_msg(1, hello),                               # second HELLO
            lan_msg(1, hello) + struct.pack(">I", (64 << 20) + 1000) + b"\x03",  # FRAME beyond max_frame_bytes
            # A FRAME for a room nobody shares (the tag names no room): refused, connection kept.
            lan_msg(1, hello) + lan_msg(2, b"\x01" + os.urandom(16)) + lan_msg(3, os.urandom(16) + b"forged"),
        ]
        for attack in attacks:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(attack)
                time.sleep(0.05)
        # A message cut off mid-way, then silence, then nothing: just a close.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(lan_msg(1, hello)[:10])
        return len(attacks)


def lan_hello():
    """A well-formed masq-lan HELLO body from a made-up device."""
    return b"MQLN" + bytes([1]) + os.urandom(8) + os.urandom(16) + struct.pack(">HI", 0, 1 << 20)


def lan_msg(kind, body):
    return struct.pack(">IB", 1 + len(body), kind) + body


class RelayProfile(Profile):
    """A real `masq relay --port 0` (MASQ_BIN); every instance has option url."""
    name = "relay"

    def __init__(self, procs_dir):
        super().__init__(procs_dir)
        binary = os.environ.get("MASQ_BIN")
        if not binary:
            pytest.skip("MASQ_BIN (the masq CLI, for `masq relay`) is not set")
        self.relay = subprocess.Popen([binary, "relay", "--port", "0", "--log-level", "error"],
                                      stdout=subprocess.PIPE, text=True)
        line = self.relay.stdout.readline()
        match = re.search(r"ws://\S+", line)
        if not match:
            self.relay.kill()
            raise AssertionError(f"masq relay did not print its URL: {line!r}")
        self.url = match.group(0)

    def options(self, slot):
        return {"url": self.url}

    def close(self):
        self.relay.terminate()
        try:
            self.relay.wait(10)
        except subprocess.TimeoutExpired:
            self.relay.kill()

    def hostile(self, net, victim, room):
        """(1) Garbage to the real relay from a raw WebSocket client: the relay
        refuses it and keeps serving the victim. (2) A hostile relay that the
        victim's twin connects to sends it malformed relay frames and
        malformed WebSocket frames: counted in its frames_rejected."""
        host, port = re.match(r"ws://([^:/]+):(\d+)", self.url).groups()
        before = relay_metric(self.url, "masq_relay_rejected_total")
        with ws_connect(host, int(port)) as s:
            for junk in [b"", b"\x01", bytes([1, 99]), bytes([1, 3, 40]) + b"short", bytes([1, 1, 0])]:
                s.sendall(ws_frame(2, junk, mask=True))
            s.sendall(ws_frame(1, b"text is not the protocol", mask=True))
            s.sendall(ws_frame(2, b"unmasked from a client", mask=False))   # a WebSocket protocol error
            time.sleep(0.3)
        wait_for(10, "the relay to count the garbage", lambda: relay_metric(self.url, "masq_relay_rejected_total") > before)

        evil = HostileWebSocketServer(room)
        try:
            twin = net.instance("d", options={"url": evil.url}, room=room)
            wait_for(10, "the twin to reach the hostile relay", lambda: evil.connections >= 1)
            evil.attack()
            wait_for(10, "the twin to get the honest DELIVER", lambda: twin.got(room, b"honest after garbage"))
            wait_for(10, "the twin to count the garbage", lambda: twin.stats().get("frames_rejected", 0) >= evil.malformed)
            assert [(f[1], f[4]) for f in twin.frames] == [(room, b"honest after garbage")], \
                f"the twin handed the host something the hostile relay made up: {twin.frames}"
            # An oversized WebSocket message: the twin refuses it (and reconnects).
            rejected = twin.stats()["frames_rejected"]
            evil.oversized()
            wait_for(10, "the twin to refuse an oversized message", lambda: twin.stats()["frames_rejected"] > rejected)
            wait_for(15, "the twin to reconnect", lambda: evil.connections >= 2)
        finally:
            evil.stop()
        return 0   # the victim itself sees only what the relay forwards


def relay_metric(url, name):
    text = urllib.request.urlopen(url.replace("ws:", "http:") + "metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


# ---- a minimal WebSocket (RFC 6455), for garbage on the relay's wire -------------

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_frame(opcode, payload, mask, fin=True, length=None):
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 1 << 16:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if mask:
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def read_http_head(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the HTTP upgrade")
        data += chunk
        if len(data) > 65536:
            raise ConnectionError("HTTP head too long")
    return data


def ws_connect(host, port):
    s = socket.create_connection((host, port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = read_http_head(s)
    assert head.startswith(b"HTTP/1.1 101"), head[:100]
    return s


class HostileWebSocketServer:
    """Accepts the relay transport's WebSocket connections and, on attack(),
    sends it malformed relay frames between honest ones."""

    def __init__(self, room):
        self.room = bytes.fromhex(room)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.url = f"ws://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.conns = []
        self.connections = 0
        self.malformed = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.done.is_set():
            try:
                s, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                s.settimeout(5)
                head = read_http_head(s).decode(errors="replace")
                key = re.search(r"(?i)sec-websocket-key:\s*(\S+)", head).group(1)
                accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
                s.sendall((f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
                s.settimeout(None)
                threading.Thread(target=self._drain, args=(s,), daemon=True).start()
                self.conns.append(s)
                self.connections += 1
            except (OSError, AttributeError):
                s.close()

    def _drain(self, s):
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass

    def _send(self, data):
        self.conns[-1].sendall(data)

    def attack(self):
        room = self.room
        junk = [
            b"",                                              # empty
            b"\x01",                                          # truncated
            bytes([7, 4, len(room)]) + room + b"v7",          # unknown version
            bytes([1, 99]),                                   # unknown type
            bytes([1, 4, 40]) + b"room cut short",            # room length beyond the frame
            bytes([1, 3, len(room)]) + room + b"wrong way",   # SEND, which only clients send
        ]
        for frame in junk:
            self._send(ws_frame(2, frame, mask=False))
        self._send(ws_frame(1, b"text is not the protocol", mask=False))
        self.malformed = len(junk) + 1
        self._send(ws_frame(2, bytes([1, 4, len(room)]) + room + b"honest after garbage", mask=False))

    def oversized(self):
        self._send(ws_frame(2, b"", mask=False, length=1 << 40))

    def stop(self):
        self.done.set()
        self.listener.close()
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.thread.join(5)


PROFILES = {"lan": LanProfile, "relay": RelayProfile}


# ---- fixtures -------------------------------------------------------------------

@pytest.fixture
def profile(tmp_path):
    p = PROFILES.get(transport_name(), Profile)(tmp_path)
    yield p
    p.close()


@pytest.fixture
def net(harness_bin, plugin, profile, tmp_path):
    n = Net(harness_bin, plugin, profile.options, tmp_path)
    yield n
    n.close()


def max_frame(inst):
    text = inst.ok("maxframe")
    return None if text in ("none", "0") else int(text)


# ---- the tests ------------------------------------------------------------------

def test_descriptor_and_options(net):
    a = net.instance("a", start=False)
    assert a.flags & ROOMS_FLAG, "sync needs MASQ_TRANSPORT_ROOMS"
    # Unknown options are refused with MASQ_E_CONFIG (data_dir was accepted above).
    bad = Instance(net.harness, net.plugin, str(net.dir / "bad.log"), name="bad")
    net.all.append(bad)
    status, text = bad.create({**net.options("b"), "data_dir": str(net.dir), "no_such_option": "1"})
    assert status == E_CONFIG, f"an unknown option gave status {status} ({text})"
    assert text and text != "(no message)", "a refused option should be explained through host->error"


def test_transport_up(net):
    room = new_room()
    a = net.instance("a", room)
    wait_for(EVENT_TIMEOUT, "MASQ_TRANSPORT_UP", lambda: a.poll() or any(e[0] == TRANSPORT_UP for e in a.events))


def test_frames_reach_the_room_and_nobody_else(net):
    room, other = new_room(), new_room()
    a, b = net.instance("a", room), net.instance("b", room)
    c = net.instance("c", other)
    link(a, b, room)
    sent = [b"one", b"two", bytes(range(256)), b"\x00" * 7]
    for data in sent:
        assert a.send(room, data)[0] == OK
    wait_for(10, "every frame from a at b", lambda: all(b.got(room, d) for d in sent))
    assert b.send(room, b"back")[0] == OK
    wait_for(10, "b's frame at a", lambda: a.got(room, b"back"))
    assert c.send(other, b"elsewhere")[0] == OK
    time.sleep(QUIET)
    for inst in (a, b, c):
        inst.poll()
    assert not [f for f in c.frames if f[4] in sent + [b"back"]], "a frame reached an instance in another room"
    assert not [f for f in a.frames + b.frames if f[4] == b"elsewhere" or f[1] == other], "a frame left its room"
    assert not [f for f in a.frames if f[4] in sent], "a sender received its own frame"
    assert all(f[0] and f[1] == room for f in a.frames + b.frames), "frames must name their peer and room"


def test_frame_sizes_up_to_the_limit(net):
    room = new_room()
    a, b = net.instance("a", room), net.instance("b", room)
    limit = max_frame(a)
    link(a, b, room)
    top = limit if limit else 1 << 20
    sizes = sorted({s for s in (1, 2, 3, 15, 16, 17, 255, 256, 1000, 4095, 4096, 4097, 65535, 65536, 65537,
                                300_000, top - 1, top) if 0 < s <= top})
    for seed, size in enumerate(sizes):
        # One at a time: a relay drops deliveries to a member that cannot keep up.
        status, digest = a.gen(room, size, seed)
        assert status == OK, f"a frame of {size} bytes (limit {limit}) was refused: {digest}"
        wait_for(20, f"the {size}-byte frame intact at b",
                 lambda: any(f[2] == size and f[3] == digest for f in b.frames_in(room)))
    if limit:
        status, text = a.gen(room, limit + 1, 99)
        assert status == E_TOO_LARGE, f"a frame of max_frame_bytes + 1 gave status {status} ({text}), not MASQ_E_TOO_LARGE"
        time.sleep(QUIET)
        assert not [f for f in b.frames_in(room) if f[2] > limit], "a frame beyond the limit arrived"


def test_events_as_members_come_and_go(net):
    room = new_room()
    a = net.instance("a", room)
    wait_for(EVENT_TIMEOUT, "a's MASQ_TRANSPORT_UP", lambda: a.poll() or any(e[0] == TRANSPORT_UP for e in a.events))
    a.events.clear()

    def membership(kinds):
        a.poll()
        return [e for e in a.events if e[0] in kinds or (e[0] == ROOM_CHANGED and e[1] == room)]

    b = net.instance("b", room)
    wait_for(EVENT_TIMEOUT, "MASQ_PEER_UP or MASQ_ROOM_CHANGED at a when b joins", lambda: membership({PEER_UP}))
    link(a, b, room)
    a.events.clear()
    b.close()
    wait_for(EVENT_TIMEOUT, "MASQ_PEER_DOWN or MASQ_ROOM_CHANGED at a when b leaves", lambda: membership({PEER_DOWN}))
    for code, peer in a.events:
        if code == ROOM_CHANGED:
            assert peer == room, f"MASQ_ROOM_CHANGED names room {peer!r}, not the room joined"


def test_reconnect_after_an_instance_is_replaced(net):
    room = new_room()
    a, b = net.instance("a", room), net.instance("b", room)
    link(a, b, room)
    b.close()
    b2 = net.instance("b", room)          # same slot: same options (for lan the same port)
    link(a, b2, room)
    # And once more, the other side.
    a.close()
    a2 = net.instance("a", room)
    link(a2, b2, room)


def test_leave_and_join_again(net):
    room = new_room()
    a, b = net.instance("a", room), net.instance("b", room)
    link(a, b, room)
    b.ok(f"leave {room}")
    time.sleep(0.3)
    b.poll()
    b.frames.clear()
    a.send(room, b"after leave")
    time.sleep(QUIET)
    assert not b.got(room, b"after leave"), "a frame reached an instance that left the room"
    b.ok(f"join {room}")
    link(a, b, room)


def test_hostile_peer(net, profile):
    if profile.hostile is None:
        pytest.skip(f"no hostile peer for transport {profile.name}")
    room = new_room()
    a, b = net.instance("a", room), net.instance("b", room)
    link(a, b, room)
    before = a.stats().get("frames_rejected", 0)
    expected = profile.hostile(net, a, room)
    if expected:
        wait_for(10, f"a to count {expected} refused messages",
                 lambda: a.stats().get("frames_rejected", 0) >= before + expected)
    # Nothing of it reached the host, and honest traffic goes on.
    link(a, b, room)
    a.poll()
    assert all(f[1] == room and f[4] is not None and f[4].startswith(b"probe ") for f in a.frames), \
        f"a handed the host a frame nobody honest sent: {[f[:4] for f in a.frames if not (f[4] or b'').startswith(b'probe ')]}"


def test_stop_while_receiving_a_flood(net):
    room = new_room()
    a, b = net.instance("a", room), net.instance("b", room)
    link(a, b, room)
    b.ok("quiet 1")
    b.ok("delay 1000")                     # slow callbacks: stop() must wait for the one running
    a.ok(f"flood {room} 2000")
    wait_for(15, "b to receive part of the flood", lambda: int(b.check()["frames"]) >= 50)
    ms = b.stop()
    assert ms < 5000, f"stop() during a flood took {ms} ms"
    received = b.check()["frames"]
    time.sleep(0.5)
    after = b.check()
    assert after["late"] == "0" and after["frames"] == received, "a callback ran after stop() returned"
    sent, _, _ = map(int, a.ok("flood_stop").split())
    assert sent > 0, "the flood sent nothing"


def test_stop_while_sending(net):
    """Every function may be called concurrently: send() during and after
    stop() returns (with an error or not) instead of blocking."""
    room = new_room()
    a, b = net.instance("a", room), net.instance("b", room)
    link(a, b, room)
    a.ok(f"flood {room} 2000")
    wait_for(15, "b to receive part of the flood", lambda: len(b.frames_in(room)) >= 20)
    ms = a.stop()
    assert ms < 5000, f"stop() while sending took {ms} ms"
    try:
        sent, busy, failed = map(int, a.ok("flood_stop", timeout=10).split())
    except AssertionError as e:
        raise AssertionError(f"send() called during or after stop() did not return: {e}") from None
    assert sent > 0, "the flood sent nothing"
    time.sleep(0.3)
    assert a.check()["late"] == "0"


def test_stop_at_any_point(net):
    room = new_room()
    fresh = net.instance("a", start=False)           # created, never started
    fresh.stop()
    b = net.instance("b", room)
    b.stop()
    b.stop()                                         # twice: still fine
    try:
        b.send(room, b"after stop")                  # any status, but it must return
    except AssertionError as e:
        raise AssertionError(f"send() after stop() did not return: {e}") from None


def test_stats_are_unsigned_integers(net):
    room = new_room()
    a, b = net.instance("a", room), net.instance("b", room)
    link(a, b, room)
    if not a.call("stats")[0] == OK:
        pytest.skip("the transport has no stats member")
    for inst in (a, b):
        stats = inst.stats()
        assert isinstance(stats, dict) and stats, f"stats is not a JSON object: {stats!r}"
        for key, value in stats.items():
            assert type(value) is int and 0 <= value < 1 << 64, f"stats[{key!r}] = {value!r} is not an unsigned integer"
        assert "frames_rejected" in stats, "the contract counts refused frames in frames_rejected"
        for key in ("frames_sent", "frames_received"):
            if key in stats:
                assert stats[key] > 0, f"{key} is 0 after traffic both ways"
