"""What a relay fleet relies on (docs/OPERATIONS.md): the relay client names
its group room in the WebSocket URL path (/r/<room hex>) so a load balancer
can hash it; the relay treats the path as advisory (the JOIN decides, old
clients on / still meet new ones); SIGTERM drains the relay: it accepts no
one, tells every member "going away" (1001) and exits 0.

Run: MASQ_BIN=.build/debug/masq-cli MASQ_PLUGIN_PATH=.build/debug python3 -m pytest Tests/relay
"""
import asyncio
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

websockets = pytest.importorskip("websockets", reason="pip install websockets")

from test_relay import ROOM, frame, recv_frame, run, start_relay  # noqa: E402

MASQ = os.environ.get("MASQ_BIN", ".build/debug/masq-cli")


def test_the_path_is_advisory_the_join_decides():
    proc, url = start_relay()
    try:
        async def scenario():
            other = bytes(16 * [7]).hex()
            async with websockets.connect(url + "r/" + ROOM.hex()) as a, websockets.connect(url) as old, \
                    websockets.connect(url + "r/" + other) as wrong_path, websockets.connect(url + "any/thing?x=1") as odd:
                for ws in (a, old, wrong_path, odd):
                    await ws.send(frame(1))
                await recv_frame(a, 6)
                await a.send(frame(3, payload=b"to everyone who joined"))
                for ws in (old, wrong_path, odd):
                    assert await recv_frame(ws, 4) == frame(4, payload=b"to everyone who joined")
        run(scenario())
    finally:
        proc.terminate()
        proc.wait(5)


class PathRecorder:
    """A WebSocket server that notes the request paths and answers nothing."""

    def __init__(self):
        self.paths = []
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def run(self):
        asyncio.set_event_loop(self.loop)

        async def handler(ws):
            self.paths.append(ws.request.path)
            try:
                async for _ in ws:
                    pass
            except Exception:   # noqa: BLE001 - the client goes away
                pass

        async def main():
            self.server = await websockets.serve(handler, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()
            await asyncio.Future()
        try:
            self.loop.run_until_complete(main())
        except RuntimeError:
            pass

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_the_relay_client_names_its_room_in_the_path():
    recorder = PathRecorder()
    work = tempfile.mkdtemp(prefix="masq-path-")
    try:
        cfg = os.path.join(work, "a.json")
        subprocess.run([MASQ, "init", "--config", cfg, "--data-dir", os.path.join(work, "a"), "--name", "a"],
                       check=True, capture_output=True)
        url = f"ws://127.0.0.1:{recorder.port}/"
        pair = subprocess.Popen([MASQ, "pair", "--config", cfg, "--relay", url, "--no-qr"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 15
        while time.time() < deadline and not recorder.paths:
            time.sleep(0.05)
        pair.kill()
        pair.wait(5)
        assert recorder.paths, "masq pair never connected"
        assert re.fullmatch(r"/r/[0-9a-f]{2,128}", recorder.paths[0]), recorder.paths
        # A URL with a path of its own (a proxy's prefix) keeps it in front.
        recorder.paths.clear()
        pair = subprocess.Popen([MASQ, "pair", "--config", cfg, "--relay", url + "masq/", "--no-qr"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 15
        while time.time() < deadline and not recorder.paths:
            time.sleep(0.05)
        pair.kill()
        pair.wait(5)
        assert recorder.paths and re.fullmatch(r"/masq/r/[0-9a-f]{2,128}", recorder.paths[0]), recorder.paths
    finally:
        recorder.stop()


def test_sigterm_drains_members_and_exits():
    proc, url = start_relay("--drain-timeout", "5")
    port = int(re.search(r":(\d+)/", url).group(1))
    try:
        async def scenario():
            async with websockets.connect(url + "r/" + ROOM.hex()) as a, websockets.connect(url + "r/" + ROOM.hex()) as b:
                await a.send(frame(1))
                await b.send(frame(1))
                await recv_frame(a, 6)
                started = time.time()
                proc.send_signal(signal.SIGTERM)
                codes = []
                for ws in (a, b):
                    try:
                        while True:
                            await asyncio.wait_for(ws.recv(), 5)
                    except websockets.ConnectionClosed as closed:
                        codes.append(closed.rcvd.code if closed.rcvd else None)
                assert codes == [1001, 1001], codes
                return started
        started = run(scenario())
        assert proc.wait(10) == 0
        assert time.time() - started < 6
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_stops_accepting_and_tells_health_checks_at_once():
    proc, url = start_relay("--drain-timeout", "3")
    port = int(re.search(r":(\d+)/", url).group(1))
    try:
        # A member that never answers the close: the relay still exits by the deadline.
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /r/00 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert b"101" in s.recv(4096)
        started = time.time()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        assert proc.wait(10) == 0
        assert time.time() - started < 5
        s.close()
    finally:
        if proc.poll() is None:
            proc.kill()
