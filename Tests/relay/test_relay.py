"""The relay against real WebSocket clients on 127.0.0.1: forwarding, every
limit, and bad input (malformed, truncated, unknown version, oversized) —
each answered with an ERROR frame or a close, counted in /metrics, while the
relay keeps serving everyone else.

Run: MASQ_BIN=.build/debug/masq-cli python3 -m pytest Tests/relay
"""
import asyncio
import os
import re
import socket
import subprocess
import time
import urllib.request

import pytest

websockets = pytest.importorskip("websockets", reason="pip install websockets")

ROOM = bytes(range(16))


def frame(kind, room=ROOM, payload=b""):
    return bytes([1, kind, len(room)]) + room + payload


def start_relay(*options):
    binary = os.environ.get("MASQ_BIN", ".build/debug/masq-cli")
    proc = subprocess.Popen([binary, "relay", "--port", "0", "--log-level", "error", *options], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    return proc, re.search(r"ws://\S+", line).group(0)


@pytest.fixture(scope="module")
def relay():
    proc, url = start_relay("--max-rooms", "3", "--rate", "50", "--max-connections", "8",
                            "--max-frame-bytes", "4096", "--idle-timeout", "2", "--ping-interval", "1")
    yield url
    proc.terminate()
    proc.wait(5)


def metric(url, name):
    text = urllib.request.urlopen(url.replace("ws:", "http:") + "metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.split()[-1])
    return total


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def recv_frame(ws, kind, timeout=5):
    """Next frame of `kind`, skipping presence announcements."""
    while True:
        message = await asyncio.wait_for(ws.recv(), timeout)
        if message[1] == kind:
            return message


def test_health_and_metrics(relay):
    http = relay.replace("ws:", "http:")
    assert urllib.request.urlopen(http + "healthz", timeout=5).read() == b"ok\n"
    assert "masq_relay_connections" in urllib.request.urlopen(http + "metrics", timeout=5).read().decode()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(http + "nothing", timeout=5)
    assert info.value.code == 404


def test_forwarding_to_other_members_only(relay):
    async def scenario():
        async with websockets.connect(relay) as a, websockets.connect(relay) as b, websockets.connect(relay) as outsider:
            await a.send(frame(1))
            await b.send(frame(1))
            presence = await recv_frame(a, 6)
            assert presence[-1] in (1, 2)
            await a.send(frame(3, payload=b"ciphertext"))
            got = await recv_frame(b, 4)
            assert got == frame(4, payload=b"ciphertext")
            with pytest.raises(asyncio.TimeoutError):
                await recv_frame(outsider, 4, timeout=0.5)
            with pytest.raises(asyncio.TimeoutError):
                await recv_frame(a, 4, timeout=0.3)       # no echo to the sender
    run(scenario())


def test_bad_input_is_answered_and_counted(relay):
    async def scenario():
        before = metric(relay, 'masq_relay_rejected_total{reason="malformed"}')
        async with websockets.connect(relay) as bad, websockets.connect(relay) as a, websockets.connect(relay) as b:
            await a.send(frame(1))
            await b.send(frame(1))
            for junk in [b"", b"\x01", bytes([1, 99]), bytes([1, 3, 40]) + b"short", bytes([1, 1, 0]),
                         bytes([1, 4]) + frame(4)[2:], frame(1) + b"trailing"]:
                await bad.send(junk)
                error = await recv_frame(bad, 5)
                assert error[2:4] in (b"\x00\x01",), error
            await bad.send("text is not the protocol")
            assert (await recv_frame(bad, 5))[2:4] == b"\x00\x01"
            await bad.send(frame(3, payload=b"not in the room"))
            assert (await recv_frame(bad, 5))[2:4] == b"\x00\x06"
            # Others are still served.
            await a.send(frame(3, payload=b"still works"))
            assert (await recv_frame(b, 4)).endswith(b"still works")
            # An unknown version ends the connection.
            await bad.send(bytes([9, 3]))
            assert (await recv_frame(bad, 5))[2:4] == b"\x00\x02"
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(bad.recv(), 5)
        assert metric(relay, 'masq_relay_rejected_total{reason="malformed"}') >= before + 9
    run(scenario())


def test_oversized_frames_close_only_that_connection(relay):
    async def scenario():
        async with websockets.connect(relay, max_size=None) as big, websockets.connect(relay) as a, websockets.connect(relay) as b:
            await a.send(frame(1))
            await b.send(frame(1))
            await big.send(frame(1))
            await big.send(frame(3, payload=b"x" * 10_000))
            with pytest.raises(websockets.ConnectionClosed) as info:
                while True:
                    await asyncio.wait_for(big.recv(), 5)
            assert info.value.rcvd is None or info.value.rcvd.code in (1002, 1009)
            await a.send(frame(3, payload=b"after"))
            assert (await recv_frame(b, 4)).endswith(b"after")
    run(scenario())


def test_room_limit(relay):
    async def scenario():
        async with websockets.connect(relay) as ws:
            for i in range(3):
                await ws.send(frame(1, room=bytes([i]) * 16))
            await ws.send(frame(1, room=b"\x09" * 16))
            assert (await recv_frame(ws, 5))[2:4] == b"\x00\x04"
    run(scenario())


def test_rate_limit(relay):
    async def scenario():
        async with websockets.connect(relay) as ws:
            await ws.send(frame(1))
            for _ in range(200):
                await ws.send(frame(3, payload=b"flood"))
            assert (await recv_frame(ws, 5))[2:4] == b"\x00\x05"
        assert metric(relay, 'masq_relay_rejected_total{reason="rate"}') >= 1
    run(scenario())


def test_connection_limit(relay):
    async def scenario():
        open_ = []
        try:
            for _ in range(8):
                open_.append(await websockets.connect(relay))
            with pytest.raises(Exception) as info:
                await websockets.connect(relay)
            assert "503" in str(info.value)
        finally:
            for ws in open_:
                await ws.close()
    run(scenario())
    time.sleep(0.2)


def test_ping_pong_and_idle_timeout(relay):
    async def scenario():
        async with websockets.connect(relay) as ws:
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, 5)
    run(scenario())
    # A client that never answers the relay's pings is closed after the idle timeout.
    host, port = relay[5:].rstrip("/").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert b"101" in sock.recv(1024)
    started = time.time()
    while True:
        data = sock.recv(1024)
        if not data:
            break
    assert 1.5 < time.time() - started < 8


def test_slow_member_loses_deliveries_not_the_relay():
    """A member that stops reading has deliveries dropped (counted) once its
    send buffer is full; the others get every frame, in order."""
    proc, url = start_relay("--send-buffer", "65536", "--rate", "100000")
    try:
        async def scenario():
            host, port = url[5:].rstrip("/").split(":")
            slow = socket.create_connection((host, int(port)), timeout=10)
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            assert b"101" in slow.recv(4096)
            join = frame(1)
            slow.sendall(bytes([0x82, 0x80 | len(join), 0, 0, 0, 0]) + join)   # masked with a zero key
            async with websockets.connect(url, max_size=None) as sender, websockets.connect(url, max_size=None) as fast:
                await sender.send(frame(1))
                await fast.send(frame(1))
                while (await recv_frame(sender, 6))[-1] != 3:
                    pass
                body = os.urandom(4096)
                for chunk in range(300):   # 300 x 8 x 4 KiB: far more than the slow member's buffers
                    for i in range(8):
                        await sender.send(frame(3, payload=(chunk * 8 + i).to_bytes(4, "big") + body))
                    for i in range(8):
                        got = await recv_frame(fast, 4)
                        assert int.from_bytes(got[19:23], "big") == chunk * 8 + i
            slow.close()
        run(scenario())
        assert metric(url, "masq_relay_dropped_total") > 0
        assert metric(url, "masq_relay_deliveries_total") >= 2400
    finally:
        proc.terminate()
        proc.wait(5)


def open_sockets(pid):
    """Sockets the process holds (from /proc: the relay's own view)."""
    count = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def test_idle_and_stalled_handshakes_are_bounded_and_timed_out():
    """The attack: hundreds of TCP connections that never finish their HTTP
    upgrade (idle, or trickling a header). They hold no member slot; at most
    --max-handshakes exist at once (newcomers evict the oldest), each is
    closed after --handshake-timeout, and a real member still gets in."""
    proc, url = start_relay("--max-handshakes", "16", "--handshake-timeout", "2", "--max-connections", "8")
    host, port = url[5:].rstrip("/").split(":")
    idle = []
    try:
        for i in range(200):
            s = socket.create_connection((host, int(port)), timeout=5)
            if i % 2:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")   # a header that never ends
            idle.append(s)
        time.sleep(0.5)
        # Listener + at most 16 handshakes (+ a few being accepted at the instant).
        assert open_sockets(proc.pid) <= 1 + 16 + 4

        async def member():
            async with websockets.connect(url) as ws:
                await ws.send(frame(1))
                await ws.send(frame(3, payload=b"hi"))
        run(member())
        assert metric(url, "masq_relay_handshakes_evicted") >= 150
        # The newest survivors are closed by the timeout.
        time.sleep(3)
        assert metric(url, "masq_relay_handshakes_pending") <= 1   # the /metrics request itself
        assert metric(url, "masq_relay_handshakes_timed_out") >= 1
        closed = 0
        for s in idle:
            s.settimeout(0.5)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except (ConnectionResetError, BrokenPipeError):
                closed += 1
            except socket.timeout:
                pass
        assert closed == len(idle)
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(5)


def test_malformed_request_gets_400_and_is_closed():
    proc, url = start_relay()
    host, port = url[5:].rstrip("/").split(":")
    try:
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400")
        s.settimeout(5)
        assert s.recv(4096) == b""
    finally:
        proc.terminate()
        proc.wait(5)


def test_a_sender_past_its_rate_is_throttled_then_closed_while_others_are_served():
    """The attack: one connection sends frames of every kind (text frames,
    pings, SENDs) as fast as it can and never reads. It gets one ERROR and
    its reads pause; since it keeps sending it is closed, and the members of
    a room keep exchanging all along."""
    proc, url = start_relay("--rate", "200")
    try:
        async def scenario():
            async with websockets.connect(url) as a, websockets.connect(url) as b:
                await a.send(frame(1))
                await b.send(frame(1))
                host, port = url[5:].rstrip("/").split(":")
                flood = socket.create_connection((host, int(port)), timeout=5)
                flood.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
                assert flood.recv(4096).startswith(b"HTTP/1.1 101")
                text = bytes([0x81, 0x86]) + b"\0\0\0\0" + b"abcdef"
                ping = bytes([0x89, 0x80]) + b"\0\0\0\0"
                burst = (text + ping) * 2000
                closed = False
                loop = asyncio.get_running_loop()
                for i in range(200):
                    try:
                        await loop.run_in_executor(None, flood.sendall, burst)
                    except OSError:
                        closed = True
                        break
                    if i % 20 == 0:
                        await a.send(frame(3, payload=b"still here %d" % i))
                        assert (await recv_frame(b, 4)).endswith(b"still here %d" % i)
                assert closed, "the flooder was never closed"
                flood.close()
                await a.send(frame(3, payload=b"after"))
                assert (await recv_frame(b, 4)).endswith(b"after")
        run(scenario())
        assert metric(url, "masq_relay_closed_rate_total") >= 1
        assert metric(url, 'masq_relay_rejected_total{reason="rate"}') >= 1
    finally:
        proc.terminate()
        proc.wait(5)
