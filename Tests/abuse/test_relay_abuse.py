"""`masq relay` under abuse while two members exchange frames in a room.

Three phases of ABUSE_SECONDS each, the members exchanging frames all along:
1. flood: upgrades up to and past --max-connections, held (each further one
   must be answered 503), with upgrade-and-reset, slowloris (after 60 KiB of
   header at once) and half-open connections going on;
2. slots: thousands of upgrade requests followed by a TCP reset (more than
   --max-connections), slowloris headers (one byte at a time; half of them
   after 60 KiB of header at once), half-open connections, garbage instead
   of HTTP;
3. protocol: clients that never read (6-byte text frames, JOIN/LEAVE churn),
   oversized and malformed frames, presence churn in the members' room.
Then: the relay is up, every slot came back (with everyone gone the gauge
falls to 0 and as many upgrades as the limit allows succeed), and a fresh
pair of members can talk.

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
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
from websockets.sync.client import connect as ws_connect  # noqa: E402

MAX_CONNECTIONS = 200
MAX_HANDSHAKES = 64
SEND_BUFFER = 64 * 1024
MAX_FRAME = 64 * 1024
MAX_ROOM_MEMBERS = 32
THREADS = 2
OPTIONS = ["--max-connections", str(MAX_CONNECTIONS), "--send-buffer", str(SEND_BUFFER), "--max-frame-bytes", str(MAX_FRAME),
           "--max-rooms", "4", "--max-room-members", str(MAX_ROOM_MEMBERS), "--rate", "1000", "--idle-timeout", "10",
           "--ping-interval", "5", "--threads", str(THREADS),
           "--max-handshakes", str(MAX_HANDSHAKES), "--handshake-timeout", "5"]

# RSS bound (KiB). What the relay may hold at once, from its limits:
#   per connection: its send buffer (--send-buffer: replies and deliveries
#     queued, never more) + one message being assembled (--max-frame-bytes)
#     + CONNECTION_OVERHEAD (the channel, its pipeline, HTTP/WebSocket codecs
#     and read buffers: NIO reads into buffers of up to 64 KiB);
#   times --max-connections;
#   + FIXED for the allocator's per-thread arenas and caches once every
#     event loop thread has been busy (measured at ~8-20 MiB on this box).
# + connections not yet upgraded (slowloris, half-open): at most
#   --max-handshakes at once, each CONNECTION_OVERHEAD.
CONNECTION_OVERHEAD = 64 * 1024
FIXED = 48 * 1024 * 1024
RSS_BOUND_KIB = (MAX_CONNECTIONS * (SEND_BUFFER + MAX_FRAME + CONNECTION_OVERHEAD) + MAX_HANDSHAKES * CONNECTION_OVERHEAD + FIXED) // 1024
# Sockets the relay may hold: its connections (--max-connections), those
# still in their handshake (--max-handshakes), its listener, and SLACK for
# connections being accepted, refused (503) or evicted at the instant of a
# sample (an eviction closes the socket on its own event loop, a moment later
# on a loaded machine: 10 over 32 were seen with 2 cores shared with the
# attackers).
SLACK = 64
SOCKET_BOUND = MAX_CONNECTIONS + MAX_HANDSHAKES + 1 + SLACK


def relay_frame(kind, room, payload=b""):
    return abuse.relay_frame(kind, room, payload)


class Members:
    """Two members of one room; each exchange is a SEND from one that the
    other must receive as DELIVER (PRESENCE frames are skipped)."""

    def __init__(self, url, room=None):
        self.url = url
        self.room = room or os.urandom(16)
        self.presence = 0        # PRESENCE frames seen while exchanging
        self.connect()

    def connect(self):
        self.a = self.b = None
        try:
            self.a = ws_connect(self.url, max_size=None, open_timeout=abuse.LEGIT_TIMEOUT, close_timeout=1)
            self.b = ws_connect(self.url, max_size=None, open_timeout=abuse.LEGIT_TIMEOUT, close_timeout=1)
            for ws in (self.a, self.b):
                ws.send(relay_frame(1, self.room))
            # Both joined once a PRESENCE says two members.
            deadline = time.monotonic() + abuse.LEGIT_TIMEOUT
            while time.monotonic() < deadline:
                message = self.a.recv(timeout=max(0.01, deadline - time.monotonic()))
                if message[1] == 6 and struct.unpack(">I", message[-4:])[0] >= 2:
                    return
            raise TimeoutError("the members did not see each other")
        except Exception:
            self.close()          # a half-made pair must not keep a slot
            raise

    def close(self):
        for ws in (self.a, self.b):
            try:
                if ws is not None:
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
            if message[1] == 6:
                self.presence += 1
            if message[1] == 5:
                raise RuntimeError("ERROR %r" % message[2:])


def metric(url, name):
    text = urllib.request.urlopen(url.replace("ws:", "http:") + "metrics", timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_relay_under_abuse(tmp_path, capsys):
    abuse.raise_fd_limit()
    server = abuse.Server("relay", [abuse.MASQ, "relay", "--port", "0", "--log-level", "error", *OPTIONS], r"ws://\S+", str(tmp_path))
    try:
        url = server.match.group(0)
        port = int(re.search(r":(\d+)/", url).group(1))
        target = {"kind": "ws", "host": abuse.HOST, "port": port}
        holder = {"members": Members(url)}
        room = holder["members"].room
        for i in range(20):          # warm up: every path the members use has run once
            holder["members"].exchange(i)
        baseline = server.baseline_kib()

        def work(legit, i):
            legit.request(holder["members"].exchange, i)

        def recover():
            holder["members"].close()
            holder["members"] = Members(url, room)

        def newcomer():
            pair = Members(url)
            try:
                pair.exchange(0)
            finally:
                pair.close()

        legit = abuse.Legit("relay", work, recover)
        n = MAX_CONNECTIONS
        sampler, results, newcomers = abuse.run_phases(server, target, legit, [
            ("flood", [
                ("flood", "ws_flood", {"want": n + 20}),
                ("flood_resets", "resets", {}),
                ("flood_slowloris_60k", "slowloris", {"count": n // 2, "prefill": 60 * 1024}),
                ("flood_half_open", "half_open", {"count": n}),
            ]),
            ("slots", [
                ("resets", "resets", {}),
                ("resets_2", "resets", {}),
                ("slowloris", "slowloris", {"count": n // 2}),
                ("slowloris_60k", "slowloris", {"count": n // 2, "prefill": 60 * 1024}),
                ("half_open", "half_open", {"count": n}),
                ("garbage", "garbage", {}),
            ]),
            ("protocol", [
                ("never_reader_text", "ws_never_reader", {"count": 4, "mode": "text"}),
                ("never_reader_churn", "ws_never_reader", {"count": 4, "mode": "churn"}),
                ("oversized", "ws_oversized", {"max_frame": MAX_FRAME}),
                ("malformed", "ws_malformed", {"protocol": "relay"}),
                ("presence_churn", "presence_churn", {"room_hex": room.hex(), "count": MAX_ROOM_MEMBERS - 4}),
            ]),
        ], newcomer)
        alive_after_attack = server.alive()

        # Every slot came back: once everyone is gone the gauge falls to 0,
        # and MAX_CONNECTIONS new upgrades succeed.
        presence_seen = holder["members"].presence
        holder["members"].close()
        gauge, opened, refused = None, [], []
        if alive_after_attack:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                gauge = metric(url, "masq_relay_connections")
                if gauge == 0:
                    break
                time.sleep(0.1)
            for _ in range(MAX_CONNECTIONS):
                s, status = abuse.ws_open(target, timeout=10)
                (opened if s else refused).append(s or status)
            abuse.close_all(opened)
        # A fresh pair of members talks.
        fresh_error = None
        try:
            time.sleep(0.3)
            newcomer()
        except Exception as error:
            fresh_error = repr(error)
        closed_slow = metric(url, "masq_relay_closed_slow_total") if server.alive() else None

        details = ["baseline %.1f MiB, bound +%.1f MiB; peak %d sockets open in the relay (bound %d: --max-connections %d)" % (
                       baseline / 1024, RSS_BOUND_KIB / 1024, sampler.peak_sockets, SOCKET_BOUND, MAX_CONNECTIONS),
                   "legit: slowest %.0f ms; newcomers during %s" % (legit.max_ms(), "; ".join("%s: %s" % kv for kv in newcomers.items())),
                   "after: gauge %s, %d of %d new upgrades accepted%s, fresh members: %s, closed for not reading: %s" % (
                       gauge, len(opened), MAX_CONNECTIONS, " (refused: %s)" % sorted(set(refused)) if refused else "",
                       fresh_error or "ok", closed_slow),
                   "the members saw %d PRESENCE frames (coalesced churn)" % presence_seen]
        details += abuse.summary(results)
        details += ["legit error: " + e for e in legit.errors]
        abuse.report(capsys, "relay", sampler.peak_kib, baseline, legit, details)

        check = abuse.Checks("relay")
        check.that(alive_after_attack, "the relay died under abuse: " + server.log_tail())
        check.that(not [n for n, r in results.items() if "crashed" in r], "an attack crashed: %s" % results)
        check.that(legit.requests > 0, "the members made no exchange")
        check.that(legit.failures == 0, "%d legitimate exchanges failed: %s" % (legit.failures, legit.errors))
        check.that(gauge == 0, "masq_relay_connections did not fall to 0 once everyone left: %s" % gauge)
        check.that(not refused, "slots leaked: %d of %d upgrades refused after the attack" % (len(refused), MAX_CONNECTIONS))
        check.that(fresh_error is None, "a fresh pair of members failed: %s" % fresh_error)
        check.that(sampler.peak_kib - baseline < RSS_BOUND_KIB, "RSS grew by %.1f MiB (bound %.1f MiB)" % (
            (sampler.peak_kib - baseline) / 1024, RSS_BOUND_KIB / 1024))
        # The flood got no more than the limit, and was refused past it.
        flood = results["flood"]
        check.that(flood.get("peak_held", 0) <= MAX_CONNECTIONS - 2, "the flood held more than the limit: %s" % flood)
        check.that(flood.get("answer_503", 0) > 0, "the flood was never refused (503): %s" % flood)
        # Oversized frames close their connection.
        check.that(not [k for k in results["oversized"] if k.startswith("NOT_closed")], "oversized frames not closed: %s" % results["oversized"])
        # Connections are bounded by the configured limit, whatever state they
        # are in (not yet upgraded, slow, answered 400): more would be a way
        # around --max-connections to the process's file descriptor limit.
        check.that(sampler.peak_sockets <= SOCKET_BOUND,
                   "the relay held %d sockets open with --max-connections %d --max-handshakes %d: connections that never finish their upgrade "
                   "(half-open, slowloris, or answered 400) are neither counted nor timed out" % (sampler.peak_sockets, MAX_CONNECTIONS, MAX_HANDSHAKES))
        check.verify()
    finally:
        server.stop()
