"""masqd under abuse while an approved app does put/get.

Three phases of ABUSE_SECONDS each, the app working all along:
1. flood: upgrades up to and past --max-connections, held (each further one
   must be answered 503), with slowloris headers (half of them after 60 KiB
   at once) and half-open connections;
2. slots: upgrade requests followed by a TCP reset, more than
   --max-connections (the issue's leak: 256 of them used to fill masqd),
   slowloris, half-open connections, garbage instead of HTTP;
3. protocol: clients that send pings and never read the answers, clients
   that send 63 KiB requests as fast as masqd takes them, oversized and
   malformed frames, malformed JSON of every kind.
Then: masqd is up, every slot came back (as many upgrades as the limit
allows succeed), and a fresh connection of the app (its token) works.

Run: MASQD=.build/debug/masqd python3 -m pytest -s Tests/abuse/test_masqd_abuse.py
"""
import itertools
import json
import os
import time

import pytest

import abuse

websockets = pytest.importorskip("websockets", reason="pip install websockets")
from websockets.sync.client import connect as ws_connect  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Small, so that the bound below means something: every connection may hold
# 8 MiB of unread answers before masqd closes it.
MAX_CONNECTIONS = 16
MAX_HANDSHAKES = 16
# Requests read but not yet handled, over all connections (--max-waiting-bytes).
MAX_WAITING = 8 * 1024 * 1024
MAX_MESSAGE = 64 * 1024
RATE = 1000

# RSS bound (KiB). What masqd may hold at once, from its limits:
#   per connection: MAX_QUEUED (8 MiB: "a client that stops reading is
#     closed when 8 MiB wait for it", docs/APP-PROTOCOL.md; not an option)
#     + two messages (--max-message-bytes: one being assembled, one being
#     handled) + CONNECTION_OVERHEAD (channel, codecs, read buffers);
#   times --max-connections;
#   + FIXED for the allocator's arenas and caches, the store's page cache.
MAX_QUEUED = 8 * 1024 * 1024
CONNECTION_OVERHEAD = 64 * 1024
FIXED = 48 * 1024 * 1024
#   + MAX_WAITING requests waiting to be handled (each a copy of its frame)
#   + --max-handshakes connections not yet upgraded, CONNECTION_OVERHEAD each.
RSS_BOUND_KIB = (MAX_CONNECTIONS * (MAX_QUEUED + 2 * MAX_MESSAGE + CONNECTION_OVERHEAD) + 2 * MAX_WAITING
                 + MAX_HANDSHAKES * CONNECTION_OVERHEAD + FIXED) // 1024
# Sockets masqd may hold: its connections, those still in their handshake,
# its listener, SLACK for those being accepted or refused at the instant of
# a sample.
SLACK = 32
SOCKET_BOUND = MAX_CONNECTIONS + MAX_HANDSHAKES + 1 + SLACK


class Client:
    """One connection speaking the app protocol (docs/APP-PROTOCOL.md)."""

    def __init__(self, url):
        self.ws = ws_connect(url, max_size=None, open_timeout=abuse.LEGIT_TIMEOUT, close_timeout=1)
        self.ids = itertools.count(1)
        self.events = []

    def call(self, op, **params):
        request_id = next(self.ids)
        self.ws.send(json.dumps({"id": request_id, "op": op, **params}))
        deadline = time.monotonic() + abuse.LEGIT_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer to %s" % op)
            message = json.loads(self.ws.recv(timeout=left))
            if "event" in message:
                self.events.append(message)
                continue
            if message.get("id") != request_id:
                continue
            if not message["ok"]:
                raise RuntimeError("%s: %s" % (op, message["error"]))
            return message["result"]

    def wait_event(self, kind):
        deadline = time.monotonic() + abuse.LEGIT_TIMEOUT
        while True:
            for event in self.events:
                if event["event"] == kind:
                    return event
            self.events.append(json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))))

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


def approved_app(url, secret, app_id):
    """Register `app_id` and approve it as the manager: (client, token)."""
    manager = Client(url)
    manager.call("admin", secret=secret)
    app = Client(url)
    assert app.call("hello", app_id=app_id)["state"] == "unregistered"
    app.call("register", app_id=app_id, name="Legit", description="the abuse suite's legitimate app")
    manager.call("apps.approve", app="native:" + app_id)
    token = app.wait_event("approved")["token"]
    manager.close()
    return app, token


def test_masqd_under_abuse(tmp_path, capsys):
    abuse.raise_fd_limit()
    home = str(tmp_path / "home")
    argv = [abuse.MASQD, "--home", home, "--listen", "127.0.0.1:0", "--max-connections", str(MAX_CONNECTIONS),
            "--max-message-bytes", str(MAX_MESSAGE), "--rate", str(RATE), "--log-level", "error",
            "--max-handshakes", str(MAX_HANDSHAKES), "--max-waiting-bytes", str(MAX_WAITING)]
    if abuse.PLUGIN_PATH:
        argv += ["--plugin-path", abuse.PLUGIN_PATH]
    server = abuse.Server("masqd", argv, r"http://[^ ]+:(\d+)/", str(tmp_path))
    try:
        port = int(server.match.group(1))
        url = "ws://127.0.0.1:%d/" % port
        secret = json.load(open(os.path.join(home, "masqd.json")))["admin_secret"]
        target = {"kind": "ws", "host": abuse.HOST, "port": port}
        app, token = approved_app(url, secret, "abuse.legit")
        holder = {"app": app}

        def work(legit, i):
            key, value = "k%d" % (i % 100), "v%d-%s" % (i, os.urandom(8).hex())
            legit.request(holder["app"].call, "put", key=key, value=value)
            got = legit.request(holder["app"].call, "get", key=key)
            if got.get("value") != value:
                legit.fail("get", "%s: %r, not %r" % (key, got, value))

        for i in range(20):          # warm up
            work(abuse.Legit("warm-up", None), i)
        baseline = server.baseline_kib()

        def reconnect():
            client = Client(url)
            try:
                state = client.call("hello", app_id="abuse.legit", token=token)["state"]
                if state != "approved":
                    raise RuntimeError("hello with the token: " + state)
            except Exception:
                client.close()        # a failed connection must not keep a slot
                raise
            return client

        def recover():
            holder["app"].close()
            holder["app"] = reconnect()

        def newcomer():
            client = reconnect()
            try:
                client.call("get", key="k0")
            finally:
                client.close()

        legit = abuse.Legit("masqd", work, recover)
        n = MAX_CONNECTIONS
        sampler, results, newcomers = abuse.run_phases(server, target, legit, [
            ("flood", [
                ("flood", "ws_flood", {"want": n + 10}),
                ("flood_slowloris_60k", "slowloris", {"count": n, "prefill": 60 * 1024}),
                ("flood_half_open", "half_open", {"count": 2 * n}),
            ]),
            ("slots", [
                ("resets", "resets", {}),
                ("resets_2", "resets", {}),
                ("slowloris", "slowloris", {"count": n}),
                ("slowloris_60k", "slowloris", {"count": n, "prefill": 60 * 1024}),
                ("half_open", "half_open", {"count": 2 * n}),
                ("garbage", "garbage", {}),
            ]),
            ("protocol", [
                ("never_reader_ping", "ws_never_reader", {"count": 4, "mode": "ping"}),
                ("never_reader_60k", "ws_never_reader", {"count": 4, "mode": "big", "batch": 20, "big": MAX_MESSAGE - 1024}),
                ("oversized", "ws_oversized", {"max_frame": MAX_MESSAGE}),
                ("malformed", "ws_malformed", {"protocol": "masqd"}),
                ("malformed_2", "ws_malformed", {"protocol": "masqd"}),
            ]),
        ], newcomer)
        alive_after_attack = server.alive()

        # Every slot came back: with everyone gone (the attackers' connections
        # close within a moment), MAX_CONNECTIONS new upgrades succeed.
        holder["app"].close()
        opened, refused = [], []
        if alive_after_attack:
            time.sleep(0.5)
            for _ in range(MAX_CONNECTIONS):
                s, status = abuse.ws_open(target, timeout=10)
                (opened if s else refused).append(s or status)
            abuse.close_all(opened)
        fresh_error = None
        try:
            time.sleep(0.3)
            newcomer()
        except Exception as error:
            fresh_error = repr(error)

        details = ["baseline %.1f MiB, bound +%.1f MiB; peak %d sockets open in masqd (bound %d: --max-connections %d)" % (
                       baseline / 1024, RSS_BOUND_KIB / 1024, sampler.peak_sockets, SOCKET_BOUND, MAX_CONNECTIONS),
                   "legit: slowest %.0f ms; newcomers during %s" % (legit.max_ms(), "; ".join("%s: %s" % kv for kv in newcomers.items())),
                   "after: %d of %d new upgrades accepted%s, fresh connection of the app: %s" % (
                       len(opened), MAX_CONNECTIONS, " (refused: %s)" % sorted(set(refused)) if refused else "", fresh_error or "ok")]
        details += abuse.summary(results)
        details += ["legit error: " + e for e in legit.errors]
        abuse.report(capsys, "masqd", sampler.peak_kib, baseline, legit, details)

        check = abuse.Checks("masqd")
        check.that(alive_after_attack, "masqd died under abuse: " + server.log_tail())
        check.that(not [n for n, r in results.items() if "crashed" in r], "an attack crashed: %s" % results)
        check.that(legit.requests > 0, "the app made no request")
        check.that(legit.failures == 0, "%d legitimate requests failed: %s" % (legit.failures, legit.errors))
        check.that(not refused, "slots leaked: %d of %d upgrades refused after the attack" % (len(refused), MAX_CONNECTIONS))
        check.that(fresh_error is None, "a fresh connection of the app failed: %s" % fresh_error)
        check.that(sampler.peak_kib - baseline < RSS_BOUND_KIB, "RSS grew by %.1f MiB (bound %.1f MiB)" % (
            (sampler.peak_kib - baseline) / 1024, RSS_BOUND_KIB / 1024))
        flood = results["flood"]
        check.that(flood.get("peak_held", 0) <= MAX_CONNECTIONS - 1, "the flood held more than the limit: %s" % flood)
        check.that(flood.get("answer_503", 0) > 0, "the flood was never refused (503): %s" % flood)
        check.that(not [k for k in results["oversized"] if k.startswith("NOT_closed")], "oversized frames not closed: %s" % results["oversized"])
        check.that(sampler.peak_sockets <= SOCKET_BOUND,
                   "masqd held %d sockets open with --max-connections %d --max-handshakes %d: connections that never finish their upgrade "
                   "(half-open, slowloris, or answered 400) are neither counted nor timed out" % (sampler.peak_sockets, MAX_CONNECTIONS, MAX_HANDSHAKES))
        check.verify()
    finally:
        server.stop()
