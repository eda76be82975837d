"""Counters and sync through the Python binding: two stores in this process,
paired in memory, syncing through a real `masq relay` on 127.0.0.1 (MASQ_BIN);
and the relay transport plugin facing a hostile relay — every bad frame is
rejected and counted, and the store keeps working."""

import asyncio
import os
import re
import subprocess
import threading
import time

import pytest

import masq
from test_security import run_pairing

websockets = pytest.importorskip("websockets", reason="pip install websockets")


def wait_until(predicate, seconds=20.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def relay_url():
    binary = os.environ.get("MASQ_BIN")
    if not binary:
        pytest.skip("MASQ_BIN (the masq CLI) not set")
    proc = subprocess.Popen([binary, "relay", "--port", "0", "--log-level", "error"], stdout=subprocess.PIPE, text=True)
    try:
        yield re.search(r"ws://\S+", proc.stdout.readline()).group(0)
    finally:
        proc.terminate()
        proc.wait(5)


def open_with_relay(path, url, **options):
    transport = {"plugin": "relay", "options": {"url": url, **{k: str(v) for k, v in options.items()}}}
    return masq.Store.open_config({"data_dir": str(path), "transports": [transport]})


def test_counters(store):
    assert store.counter("app", "likes") == 0
    store.counter_add("app", "likes", 5)
    store.counter_add("app", b"likes", -2)
    assert store.counter("app", "likes") == 3
    with pytest.raises(masq.MasqError):
        store.put("app", "likes", b"not a counter any more")
    assert store.counter("app", "likes") == 3


def test_a_deleted_or_cleared_counter_is_gone_from_listings(store):
    """A counter at zero reads as an absent key: deleted, cleared, or brought
    back to zero, it leaves get_all, list and the namespaces (its record stays
    for the merge, so another device's concurrent additions still count)."""
    store.counter_add("votes", "a", 3)
    store.counter_add("votes", "b", 2)
    store.delete("votes", "a")
    assert store.counter("votes", "a") == 0
    assert store.get("votes", "a") is None
    assert store.get_all("votes") == {b"b": b"2"}
    store.counter_add("votes", "b", -2)
    assert store.get_all("votes") == {}
    assert "votes" not in store.namespaces()
    store.counter_add("votes", "b", 1)
    assert store.get_all("votes") == {b"b": b"1"}
    store.clear("votes")
    assert store.get_all("votes") == {} and store.items("votes") == [] and store.keys("votes") == []
    assert "votes" not in store.namespaces()


def test_sync_without_a_transport_is_a_config_error(store):
    with pytest.raises(masq.ConfigError):
        store.sync_start()


def test_two_devices_sync_through_a_relay(tmp_path, relay_url):
    a, b = open_with_relay(tmp_path / "a", relay_url), open_with_relay(tmp_path / "b", relay_url)
    try:
        run_pairing(a, b)
        a.put("notes", "hello", "from a")
        a.counter_add("app", "likes", 2)
        b.counter_add("app", "likes", 3)
        a.put("clash", "k", "A")
        b.put("clash", "k", "B")          # concurrent with A's write: one wins everywhere, the loss is reported
        conflicts = []
        for s in (a, b):
            s.watch(lambda c: c.kind == "conflict" and conflicts.append(c), ns="clash")
        progress = []
        b.on_sync_progress(lambda device, received, remaining: progress.append((device, received, remaining)))

        a.sync_start()
        b.sync_once(timeout=30)
        assert b.get("notes", "hello") == b"from a"
        assert wait_until(lambda: a.counter("app", "likes") == 5)
        assert b.counter("app", "likes") == 5
        winner = a.get("clash", "k")
        assert winner in (b"A", b"B") and b.get("clash", "k") == winner
        assert wait_until(lambda: conflicts)
        assert all(c.value == winner and c.lost_value == ({b"A", b"B"} - {winner}).pop() for c in conflicts)
        assert progress and progress[-1][2] == 0
        assert progress[-1][0] == a.device_info()["device_id"]

        status = a.sync_status()
        assert status["running"] and status["connected"]
        assert status["devices"][0]["device_id"] == b.device_info()["device_id"]
        relay = status["transports"][0]
        assert relay["plugin"] == "relay" and relay["stats"]["frames_sent"] > 0
        assert relay["stats"]["frames_rejected"] == 0 and status["frames_rejected"] == 0
        a.sync_stop()
        assert not a.sync_status()["running"]
    finally:
        a.close()
        b.close()


class HostileRelay:
    """A WebSocket server that answers the plugin's JOIN with bad frames,
    then a frame over the plugin's size limit (which drops the connection)."""

    def __init__(self):
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self.start(), self.loop).result(10)
        self.url = "ws://127.0.0.1:%d/" % self.server.sockets[0].getsockname()[1]

    async def start(self):
        return await websockets.serve(self.handler, "127.0.0.1", 0, max_size=None)

    async def handler(self, ws):
        self.connections += 1
        join = await ws.recv()
        assert join[:2] == b"\x01\x01"
        room = join[3:]
        if self.connections == 1:
            for bad in [b"\x01",                                           # shorter than a header
                        bytes([9, 4, len(room)]) + room + b"x",           # unknown version
                        bytes([1, 4, len(room)]) + room[:5],               # truncated room
                        bytes([1, 77, 1, 0]),                              # unknown type
                        bytes([1, 6, len(room)]) + room + b"\x00",         # presence of the wrong length
                        bytes([1, 3, len(room)]) + room + b"x",            # SEND: wrong direction
                        "text is not part of the protocol"]:
                await ws.send(bad)
            await ws.send(bytes([1, 4, len(room)]) + room + b"\x7fnot a room payload")   # well framed, bad inside
            await ws.send(bytes([1, 4, len(room)]) + room + os.urandom(40_000))         # over max_frame_bytes
        await ws.wait_closed()

    def close(self):
        self.server.close()
        asyncio.run_coroutine_threadsafe(self.server.wait_closed(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_bad_frames_from_the_relay_are_rejected_and_counted(tmp_path):
    relay = HostileRelay()
    s = open_with_relay(tmp_path / "s", relay.url, max_frame_bytes=32768, min_backoff_ms=50)
    try:
        s.sync_start()

        def counted():
            status = s.sync_status()
            stats = status["transports"][0]["stats"]
            return stats["frames_rejected"] >= 8 and stats["connects"] >= 2 and status["frames_rejected"] >= 1
        assert wait_until(counted), s.sync_status()
        stats = s.sync_status()["transports"][0]["stats"]
        assert stats["frames_received"] >= 1          # the well-framed one reached the kernel
        s.put("notes", "still", "working")
        assert s.get("notes", "still") == b"working"
        s.sync_stop()
    finally:
        s.close()
        relay.close()


def test_pairing_through_a_relay_from_the_api(tmp_path, relay_url):
    """masq_pair_offer / masq_pair_join: the library carries the frames
    through the relay; both sides end with the other device stored, and the
    two then sync."""
    a, b = open_with_relay(tmp_path / "a", relay_url), open_with_relay(tmp_path / "b", relay_url)
    try:
        with a.pair_offer(ttl_seconds=60) as offer:
            assert offer.link.startswith("masq://pair/") and "#" in offer.link
            with b.pair_join(offer.link, timeout_seconds=30) as join:
                joined = join.wait(30)
            offered = offer.wait(30)
        assert joined["device_id"] == a.device_info()["device_id"]
        assert offered["device_id"] == b.device_info()["device_id"]
        assert offered["fingerprint"] == b.device_info()["fingerprint"]
        assert [d["device_id"] for d in a.devices()] == [b.device_info()["device_id"]]

        a.put("notes", "hello", "paired by the API")
        a.sync_start()
        b.sync_once(timeout=30)
        assert b.get("notes", "hello") == b"paired by the API"
        a.sync_stop()
    finally:
        a.close()
        b.close()


def test_pairing_tasks_cancel_expire_and_refuse_bad_links(tmp_path, relay_url):
    a, b = open_with_relay(tmp_path / "a", relay_url), open_with_relay(tmp_path / "b", relay_url)
    try:
        # Cancelled while waiting: ends with ClosedError, stores nothing.
        offer = a.pair_offer(ttl_seconds=60)
        with pytest.raises(masq.BusyError):
            offer.wait(0.2)
        offer.cancel()
        with pytest.raises(masq.ClosedError):
            offer.wait(10)
        offer.close()
        # The link of a cancelled offer is dead: joining it times out.
        with pytest.raises(masq.errors.TimeoutError_):
            b.pair_join(offer.link, timeout_seconds=2).wait(10)
        # Expired: a 1-second offer nobody answers.
        with pytest.raises(masq.MasqError) as expired:
            a.pair_offer(ttl_seconds=1).wait(10)
        assert "expired" in str(expired.value)
        # Damaged, foreign and relay-less links are refused at once.
        for bad in ["", "not a link", "https://example.com/pair#x", "masq://pair/00?via=ws%3A%2F%2F127.0.0.1%3A1#short"]:
            with pytest.raises(masq.MasqError):
                b.pair_join(bad)
        # No relay configured and none given: a configuration error.
        plain = masq.Store.open_config({"data_dir": str(tmp_path / "plain")})
        with pytest.raises(masq.ConfigError):
            plain.pair_offer()
        plain.close()
        # A relay that does not answer: the offer fails here, not later.
        with pytest.raises(masq.MasqError):
            a.pair_offer(relay="ws://127.0.0.1:1/", ttl_seconds=5)
        # Freeing a running task cancels it and returns.
        running = a.pair_offer(ttl_seconds=60)
        running.close()
        assert a.devices() == [] and b.devices() == []
    finally:
        a.close()
        b.close()


def test_removing_a_device_reaches_the_whole_group(tmp_path, relay_url):
    """Three devices, all paired with each other. A removes C while B is
    offline; B learns of it from A (not from C), and from then on neither A
    nor B sends C anything written afterwards, nor takes C's writes; the
    removal survives restarts; pairing C again later works."""
    a, b, c = (open_with_relay(tmp_path / name, relay_url) for name in "abc")
    try:
        run_pairing(a, b)
        run_pairing(a, c)
        run_pairing(b, c)
        c_id = c.device_info()["device_id"]
        a.put("notes", "before", "everyone sees this")
        a.sync_start()
        b.sync_once(timeout=30)
        c.sync_once(timeout=30)
        assert b.get("notes", "before") == c.get("notes", "before") == b"everyone sees this"

        a.remove_device(c_id)                 # B is offline (not syncing)
        assert c_id not in [d["device_id"] for d in a.devices()]
        b.sync_once(timeout=30)               # B meets A and hears of the removal
        assert wait_until(lambda: c_id not in [d["device_id"] for d in b.devices()])
        a.put("notes", "after", "not for C")
        b.put("notes", "after-b", "not for C either")

        # C tries: nobody answers it, it learns nothing written since.
        b.sync_start()
        with pytest.raises(masq.MasqError):
            c.sync_once(timeout=5)
        assert c.get("notes", "after") is None and c.get("notes", "after-b") is None
        c.put("notes", "from-c", "written after C was removed")
        with pytest.raises(masq.MasqError):
            c.sync_once(timeout=5)
        assert a.get("notes", "from-c") is None and b.get("notes", "from-c") is None
        assert wait_until(lambda: b.get("notes", "after") == b"not for C")

        # The removal is kept: reopened, B still does not know C.
        b.sync_stop()
        b.close()
        b = open_with_relay(tmp_path / "b", relay_url)
        assert c_id not in [d["device_id"] for d in b.devices()]

        # Paired again, C is back (the old removal does not undo the new pairing).
        a.sync_stop()
        time.sleep(0.01)
        run_pairing(a, c)
        a.sync_start()
        c.sync_once(timeout=30)
        assert c.get("notes", "after") == b"not for C"
        assert c_id in [d["device_id"] for d in a.devices()]
    finally:
        for s in (a, b, c):
            try:
                s.close()
            except Exception:
                pass
