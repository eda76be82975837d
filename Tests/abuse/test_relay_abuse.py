"""`masq relay` under abuse while two members exchange frames in a room.

Three phases of ABUSE_SECONDS each, the members exchanging frames all along:
1. slots: thousands of upgrade requests followed by a TCP reset (more than
   --max-connections), slowloris headers (one byte at a time; half of them
   after 60 KiB of header at once), half-open connections, garbage instead
   of HTTP;
2. flood: upgrades up to and past --max-connections, held (each further one
   must be answered 503), while the slot attacks go on;
3. protocol: clients that never read (6-byte text frames, JOIN/LEAVE churn),
   oversized and malformed frames, presence churn in the members' room.
Then: the relay is up, every slot came back (as many upgrades as the limit
allows succeed), and a fresh pair of members can talk.

Run: MASQ_BIN=.build/debug/masq-cli python3 -m pytest -s Tests/abuse/test_relay_abuse.py
"""
import os
import re
import struct
import time
import urllib.request

import pytest

import abuse

websockets = pytest.importorskip("websockets", reason="pip install websockets")
from websockets.sync.client import connect as ws_connect  # noqa: E402

MAX_CONNECTIONS = 200
SEND_BUFFER = 64 * 1024
MAX_FRAME = 64 * 1024
MAX_ROOM_MEMBERS = 32
THREADS = 2
OPTIONS = ["--max-connections", str(MAX_CONNECTIONS), "--send-buffer", str(SEND_BUFFER), "--max-frame-bytes", str(MAX_FRAME),
           "--max-rooms", "4", "--max-room-members", str(MAX_ROOM_MEMBERS), "--rate", "1000", "--idle-timeout", "10",
           "--ping-interval", "5", "--threads", str(THREADS)]

# RSS bound (KiB). What the relay may hold at once, from its limits:
#   per connection: its send buffer (--send-buffer: replies and deliveries
#     queued, never more) + one message being assembled (--max-frame-bytes)
#     + CONNECTION_OVERHEAD (the channel, its pipeline, HTTP/WebSocket codecs
#     and read buffers: NIO reads into buffers of up to 64 KiB);
#   times --max-connections;
#   + FIXED for the allocator's per-thread arenas and caches once every
#     event loop thread has been busy (measured at ~8-20 MiB on this box).
# Connections not yet upgraded (slowloris, half-open) are not counted by
# --max-connections; the bound holds only if they cost no more than this.
CONNECTION_OVERHEAD = 64 * 1024
FIXED = 48 * 1024 * 1024
RSS_BOUND_KIB = (MAX_CONNECTIONS * (SEND_BUFFER + MAX_FRAME + CONNECTION_OVERHEAD) + FIXED) // 1024


def relay_frame(kind, room, payload=b""):
    return abuse.relay_frame(kind, room, payload)


class Members:
    """Two members of one room; each exchange is a SEND from one that the
    other must receive as DELIVER (PRESENCE frames are skipped)."""

    def __init__(self, url, room=None):
        self.url = url
        self.room = room or os.urandom(16)
        self.connect()

    def connect(self):
        self.a = ws_connect(self.url, max_size=None, open_timeout=abuse.LEGIT_TIMEOUT, close_timeout=1)
        self.b = ws_connect(self.url, max_size=None, open_timeout=abuse.LEGIT_TIMEOUT, close_timeout=1)
        for ws in (self.a, self.b):
            ws.send(relay_frame(1, self.room))
        # Both joined once a PRESENCE says two members.
        deadline = time.monotonic() + abuse.LEGIT_TIMEOUT
        while time.monotonic() < deadline:
            message = self.a.recv(timeout=abuse.LEGIT_TIMEOUT)
            if message[1] == 6 and struct.unpack(">I", message[-4:])[0] >= 2:
                return
        raise TimeoutError("the members did not see each other")

    def close(self):
        for ws in (self.a, self.b):
            try:
                ws.close()
            except Exception:
                pass

    def exchange(self, i):
        sender, receiver = (self.a, self.b) if i % 2 == 0 else (self.b, self.a)
        payload = struct.pack(">Q", i) + os.urandom(56)
        sender.send(relay_frame(3, self.room, payload))
        deadline = time.monotonic() + abuse.LEGIT_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no delivery of frame %d" % i)
            message = receiver.recv(timeout=left)
            if message[1] == 4 and message.endswith(payload):
                return
            if message[1] == 5:
                raise RuntimeError("ERROR %r" % message[2:])


def connections_gauge(url):
    text = urllib.request.urlopen(url.replace("ws:", "http:") + "metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith("masq_relay_connections"):
            return float(line.split()[-1])
    return None


def test_relay_under_abuse(tmp_path, capsys):
    server = abuse.Server("relay", [abuse.MASQ, "relay", "--port", "0", "--log-level", "error", *OPTIONS], r"ws://\S+", str(tmp_path))
    try:
        url = server.match.group(0)
        port = int(re.search(r":(\d+)/", url).group(1))
        target = {"kind": "ws", "host": abuse.HOST, "port": port}
        members = Members(url)
        for i in range(20):          # warm up: every path the members use has run once
            members.exchange(i)
        baseline = server.baseline_kib()
        sampler = abuse.Sampler(server)
        holder = {"members": members}

        def work(legit, i):
            legit.request(holder["members"].exchange, i)

        def recover():
            holder["members"].close()
            holder["members"] = Members(url, holder["members"].room)

        legit = abuse.Legit("relay", work, recover)
        sampler.start()
        legit.start()
        seconds = abuse.SECONDS
        results = {}
        results.update(abuse.run_attacks(target, seconds, [
            ("resets", "resets", {}),
            ("resets2", "resets", {}),
            ("slowloris", "slowloris", {"count": 150}),
            ("slowloris_60k", "slowloris", {"count": 150, "prefill": 60 * 1024}),
            ("half_open", "half_open", {"count": 300}),
            ("garbage", "garbage", {}),
        ]))
        results.update(abuse.run_attacks(target, seconds, [
            ("flood", "ws_flood", {"want": MAX_CONNECTIONS + 20}),
            ("flood_resets", "resets", {}),
            ("flood_slowloris", "slowloris", {"count": 150, "prefill": 60 * 1024}),
            ("flood_half_open", "half_open", {"count": 300}),
        ]))
        results.update(abuse.run_attacks(target, seconds, [
            ("never_reader_text", "ws_never_reader", {"count": 8, "mode": "text"}),
            ("never_reader_churn", "ws_never_reader", {"count": 8, "mode": "churn"}),
            ("oversized", "ws_oversized", {"max_frame": MAX_FRAME}),
            ("malformed", "ws_malformed", {"protocol": "relay"}),
            ("presence_churn", "presence_churn", {"room_hex": members.room.hex(), "count": MAX_ROOM_MEMBERS - 4}),
        ]))
        legit.stop()
        sampler.stop()
        alive_after_attack = server.alive()

        # Every slot came back: once the attackers are gone the gauge falls
        # to the two members, and MAX_CONNECTIONS - 2 new upgrades succeed.
        deadline = time.monotonic() + 10
        gauge = None
        while alive_after_attack and time.monotonic() < deadline:
            gauge = connections_gauge(url)
            if gauge == 2:
                break
            time.sleep(0.1)
        opened, refused = [], []
        if alive_after_attack:
            abuse.raise_fd_limit()
            for _ in range(MAX_CONNECTIONS - 2):
                s, status = abuse.ws_open(target, timeout=10)
                (opened if s else refused).append(s or status)
            abuse.close_all(opened)
        # A fresh pair of members talks.
        fresh_error = None
        try:
            time.sleep(0.3)
            fresh = Members(url)
            fresh.exchange(0)
            fresh.exchange(1)
            fresh.close()
        except Exception as error:
            fresh_error = repr(error)
        holder["members"].close()

        details = ["baseline %.1f MiB, bound +%.1f MiB; peak server sockets %d (--max-connections %d)" % (
            baseline / 1024, RSS_BOUND_KIB / 1024, sampler.peak_sockets, MAX_CONNECTIONS),
            "after: gauge %s, %d of %d new upgrades accepted (refused: %s), fresh members: %s" % (
                gauge, len(opened), MAX_CONNECTIONS - 2, sorted(set(refused)), fresh_error or "ok")]
        details += abuse.summary(results)
        details += ["legit error: " + e for e in legit.errors]
        abuse.report(capsys, "relay", sampler.peak_kib, baseline, legit, details)

        assert alive_after_attack, "the relay died under abuse: " + server.log_tail()
        assert not [n for n, r in results.items() if "crashed" in r], results
        assert legit.failures == 0, legit.errors
        assert legit.requests > 0
        assert gauge == 2, "masq_relay_connections did not come back to the 2 members: %s" % gauge
        assert not refused, "slots leaked: %d of %d upgrades refused after the attack" % (len(refused), MAX_CONNECTIONS - 2)
        assert fresh_error is None, fresh_error
        assert sampler.peak_kib - baseline < RSS_BOUND_KIB, "RSS grew by %.1f MiB (bound %.1f MiB)" % (
            (sampler.peak_kib - baseline) / 1024, RSS_BOUND_KIB / 1024)
        # The flood got no more than the limit, and was refused past it.
        flood = results["flood"]
        assert flood.get("peak_held", 0) <= MAX_CONNECTIONS, flood
        assert flood.get("answer_503", 0) > 0, flood
        # Oversized frames always close their connection.
        assert not [k for k in results["oversized"] if k.startswith("NOT_closed")], results["oversized"]
        # Clients that never read are closed, not buffered for: none still open
        # after provoking more replies than every buffer on the way can hold.
        wmem, rmem = abuse.kernel_socket_buffers()
        for name in ("never_reader_text", "never_reader_churn"):
            r = results[name]
            assert r.get("closed_by_server", 0) > 0, (name, r)
    finally:
        server.stop()
