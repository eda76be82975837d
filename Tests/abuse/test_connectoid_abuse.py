"""`masq connectoid serve` under abuse while a client runs send/check/receive
cycles on its mailbox (one keep-alive connection, as a browser would).

Three phases of ABUSE_SECONDS each, the client working all along:
1. flood: keep-alive connections up to and past --max-connections, held
   busy (past the limit the service closes new connections at once);
   garbage instead of HTTP;
2. slots: thousands of requests followed by a TCP reset (more than
   --max-connections), slowloris headers and bodies, half-open connections
   (a quarter of the limit each);
3. protocol: bodies past the limit (declared, sent, chunked), malformed
   JSON, bad keys and actions, sends to many new mailboxes, huge headers;
   pipelined requests whose answers are never read.
Then: the service is up, every slot came back (as many connections as the
limit allows are served), and a fresh client completes a cycle.

All clients here share 127.0.0.1, so the per-address rate limits
(--client-rate, --mailbox-rate) are set out of the way: with them, the
attackers' requests would (rightly) throttle the legitimate client too.
For the same reason --max-connections-per-address is set to
--max-connections: the attackers and the legitimate client are one address
here, so the cap would refuse them all alike (Tests/connectoid/
test_connection_limits.py checks the cap with a second address).

Run: MASQ_BIN=.build/debug/masq-cli python3 -m pytest -s Tests/abuse/test_connectoid_abuse.py
"""
import base64
import hashlib
import os
import re
import socket
import time

import pytest

import abuse

requests = pytest.importorskip("requests", reason="pip install requests")
pytest.importorskip("cryptography", reason="pip install cryptography")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402

MAX_CONNECTIONS = 64
REQUEST_TIMEOUT = 5
MAX_MESSAGE = 4096
MAX_RECEIVE = 10
OPTIONS = ["--max-connections", str(MAX_CONNECTIONS), "--request-timeout", str(REQUEST_TIMEOUT),
           "--max-message-bytes", str(MAX_MESSAGE), "--max-receive", str(MAX_RECEIVE), "--max-messages", "1000",
           "--max-mailbox-bytes", str(1 << 20), "--client-rate", "1000000", "--client-burst", "1000000",
           "--mailbox-rate", "1000000", "--mailbox-burst", "1000000", "--threads", "1",
           "--max-connections-per-address", str(MAX_CONNECTIONS)]

# RSS bound (KiB). What the service may hold at once, from its limits:
#   per connection: a request body being read (at most the body limit,
#     --max-message-bytes x 4/3 + 2 KiB: base64 and JSON), its decoded copy,
#     an answer of --max-receive messages (base64), and CONNECTION_OVERHEAD
#     (channel, HTTP codec, read buffers);
#   times --max-connections;
#   + FIXED for the allocator's arenas, SQLite's page cache (2 MiB by
#     default) and its WAL index.
BODY = MAX_MESSAGE * 4 // 3 + 2048
CONNECTION_OVERHEAD = 64 * 1024
FIXED = 48 * 1024 * 1024
RSS_BOUND_KIB = (MAX_CONNECTIONS * (2 * BODY + MAX_RECEIVE * BODY + CONNECTION_OVERHEAD) + FIXED) // 1024
# Sockets the service may hold: its connections, its listener, SLACK for
# those being accepted and closed at once past the limit at a sample.
SLACK = 32
SOCKET_BOUND = MAX_CONNECTIONS + 1 + SLACK


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Mailbox:
    """A mailbox key pair and a keep-alive session; `cycle` sends a message
    to it, checks, answers the question and receives the message back."""

    def __init__(self, url):
        self.url = url
        self.private = ec.generate_private_key(ec.SECP384R1())
        self.point = self.private.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
        self.pub = b64(self.point)
        self.session = requests.Session()
        self.cycles = 0
        self.ext = "e0"
        self.cursor = 0

    def answer(self, question: str) -> str:
        """Open a question (docs/CONNECTOID.md, "Challenges")."""
        box = unb64(question)
        eph = box[1:50]
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), eph)
        label = b"connectoid challenge v1"
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=label, info=label + eph + self.point).derive(self.private.exchange(ec.ECDH(), peer))
        return b64(ChaCha20Poly1305(key).decrypt(b"\0" * 12, box[50:], b"\x02" + eph + self.point))

    def post(self, body):
        r = self.session.post(self.url, json=body, timeout=abuse.LEGIT_TIMEOUT)
        reply = r.json()
        if r.status_code != 200 or not reply.get("ok"):
            raise RuntimeError("%s: %d %s" % (body["action"], r.status_code, reply))
        return reply

    def cycle(self, legit):
        # Messages stay until --retention: a fresh mailbox (another extension of
        # the link) every 500 cycles keeps this one below --max-messages.
        if self.cycles % 500 == 0:
            self.ext, self.cursor = "e%d" % (self.cycles // 500), 0
        self.cycles += 1
        data = os.urandom(64)
        legit.request(self.post, {"pub": self.pub, "ext": self.ext, "action": "send", "data": b64(data)})
        check = legit.request(self.post, {"pub": self.pub, "ext": self.ext, "action": "check", "at": self.cursor})
        if not check.get("found"):
            raise RuntimeError("check found nothing after a send")
        got = legit.request(self.post, {"pub": self.pub, "ext": self.ext, "action": "receive", "answer": self.answer(check["question"]),
                                        "at": self.cursor, "limit": MAX_RECEIVE})
        ids = [m["id"] for m in got["messages"]]
        if hashlib.sha256(data).hexdigest() not in ids:
            legit.fail("receive", "the message sent was not received: %s" % ids)
        self.cursor = got["at"]

    def close(self):
        self.session.close()


def test_connectoid_under_abuse(tmp_path, capsys):
    abuse.raise_fd_limit()
    db = str(tmp_path / "connectoid.sqlite3")
    server = abuse.Server("connectoid", [abuse.MASQ, "connectoid", "serve", "--port", "0", "--db", db, "--log-level", "error", *OPTIONS],
                          r"http://\S+", str(tmp_path))
    try:
        url = server.match.group(0)
        port = int(re.search(r":(\d+)", url).group(1))
        target = {"kind": "http", "host": abuse.HOST, "port": port}
        holder = {"mailbox": Mailbox(url)}
        for _ in range(10):         # warm up
            holder["mailbox"].cycle(abuse.Legit("warm-up", None))
        baseline = server.baseline_kib()

        def work(legit, i):
            holder["mailbox"].cycle(legit)

        def newcomer():
            fresh = Mailbox(url)
            try:
                fresh.cycle(abuse.Legit("newcomer", None))
            finally:
                fresh.close()

        legit = abuse.Legit("connectoid", work)
        n = MAX_CONNECTIONS
        sampler, results, newcomers = abuse.run_phases(server, target, legit, [
            ("flood", [
                ("flood", "http_flood", {"want": n}),
                ("garbage", "garbage", {}),
            ]),
            ("slots", [
                ("resets", "resets", {}),
                ("resets_partial_body", "resets", {"complete": False, "wait_every": 1 << 30}),
                ("slowloris_60k", "slowloris", {"count": n // 4, "prefill": 60 * 1024}),
                ("slow_body", "slowloris", {"count": n // 4, "body": True}),
                ("half_open", "half_open", {"count": n // 4}),
            ]),
            ("protocol", [
                ("bad_requests", "http_bad_requests", {"max_message": MAX_MESSAGE, "skip": ["declared_1GiB"],
                                                       "answer_timeout": abuse.LEGIT_TIMEOUT}),
                ("declared_too_big", "http_bad_requests", {"max_message": MAX_MESSAGE, "only": ["declared_1GiB"],
                                                           "answer_timeout": abuse.LEGIT_TIMEOUT}),
                ("never_reader", "http_never_reader", {"count": 4}),
            ]),
        ], newcomer)
        alive_after_attack = server.alive()

        # Every slot came back: with everyone gone (the attackers' connections
        # close within a moment), MAX_CONNECTIONS new connections are served.
        holder["mailbox"].close()
        served, refused = [], []
        if alive_after_attack:
            time.sleep(0.5)
            request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port
            for _ in range(MAX_CONNECTIONS):
                try:
                    s = abuse.connect(target, timeout=10)
                    s.sendall(request)
                    head = abuse.read_head(s)
                    (served if head.startswith(b"HTTP/1.1 200") else refused).append(s)
                    if not head.startswith(b"HTTP/1.1 200"):
                        s.close()
                except OSError:
                    refused.append(None)
            abuse.close_all(served)
        fresh_error = None
        try:
            time.sleep(0.3)
            newcomer()
        except Exception as error:
            fresh_error = repr(error)

        details = ["baseline %.1f MiB, bound +%.1f MiB; peak %d sockets open in the service (bound %d: --max-connections %d)" % (
                       baseline / 1024, RSS_BOUND_KIB / 1024, sampler.peak_sockets, SOCKET_BOUND, MAX_CONNECTIONS),
                   "legit: slowest %.0f ms; newcomers during %s" % (legit.max_ms(), "; ".join("%s: %s" % kv for kv in newcomers.items())),
                   "after: %d of %d new connections served, fresh client: %s" % (len(served), MAX_CONNECTIONS, fresh_error or "ok")]
        details += abuse.summary(results)
        details += ["legit error: " + e for e in legit.errors]
        abuse.report(capsys, "connectoid", sampler.peak_kib, baseline, legit, details)

        check = abuse.Checks("connectoid")
        check.that(alive_after_attack, "the service died under abuse: " + server.log_tail())
        check.that(not [n for n, r in results.items() if "crashed" in r], "an attack crashed: %s" % results)
        check.that(legit.requests > 0, "the client made no request")
        check.that(legit.failures == 0, "%d legitimate requests failed: %s" % (legit.failures, legit.errors))
        check.that(not refused, "slots leaked: %d of %d connections refused after the attack" % (len(refused), MAX_CONNECTIONS))
        check.that(fresh_error is None, "a fresh client failed: %s" % fresh_error)
        check.that(sampler.peak_kib - baseline < RSS_BOUND_KIB, "RSS grew by %.1f MiB (bound %.1f MiB)" % (
            (sampler.peak_kib - baseline) / 1024, RSS_BOUND_KIB / 1024))
        flood = results["flood"]
        check.that(flood.get("peak_held", 0) <= MAX_CONNECTIONS - 1, "the flood held more than the limit: %s" % flood)
        check.that(sum(v for k, v in flood.items() if k.startswith("refused")) > 0, "the flood was never refused: %s" % flood)
        # Bad requests are answered (or closed), never left waiting.
        check.that(not [k for k in results["bad_requests"] if k.endswith("NO_ANSWER")], "bad requests left unanswered: %s" % results["bad_requests"])
        # A body declared past the limit is refused with 413 ("bodies beyond
        # the limit are refused before they are read whole"), not swallowed
        # until --request-timeout closes the connection without an answer.
        declared = results["declared_too_big"]
        check.that(set(declared) <= {"connections", "requests", "declared_1GiB_413"},
                   "a body declared past the limit (Content-Length: 1 GiB) was not answered 413: %s" % declared)
        check.that(sampler.peak_sockets <= SOCKET_BOUND, "the service held %d sockets open with --max-connections %d" % (
            sampler.peak_sockets, MAX_CONNECTIONS))
        check.verify()
    finally:
        server.stop()
