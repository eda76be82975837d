"""A Connectoid mailbox service that plays against its clients.

Written from docs/CONNECTOID.md (JSON POST send/check/receive, questions
sealed to the mailbox key, integer cursors, message ids = hex SHA-256), good
enough that masq's connectoid transport shares through it normally. It keeps
and records everything: every request body, every `answer`, every message
ever sent (nothing expires), and it has switches for the attacks:

- `oracle`: `check` hands out, in turn with genuine questions, the stored
  envelopes of the same mailbox as the `question` (found or not), and
  `receive` accepts any answer to those. A client that answers such a
  "question" by opening it with its mailbox key gives the service the
  envelope's plaintext.
- `replay()`: re-deliver stored messages as new messages at later cursors,
  with their honest ids (what a service may do once its one-hour
  de-duplication window has passed).

Genuine questions (`challenge_format`):

- "new": the domain-separated construction a client must answer,
      0x02 ‖ E ‖ ChaCha20-Poly1305(key, 0^12, ad = 0x02 ‖ E ‖ R, 32 random bytes)   (98 bytes)
      key = HKDF-SHA256(salt = "connectoid challenge v1", ECDH x, info = "connectoid challenge v1" ‖ E ‖ R)
- "old": the message construction docs/CONNECTOID.md described first
  (0x01, salt "connectoid seal v1", info E ‖ R, unpadded 32 bytes).
- "auto": new and old in turn per mailbox until one is answered correctly,
  then only that one (so one test runs against clients of either kind).

Only 127.0.0.1, port 0; `.url`, `.stop()`.
"""
import base64
import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from support import masq

CHALLENGE_LABEL = b"connectoid challenge v1"
SEAL_SALT = b"connectoid seal v1"
MAX_BODY = 4 << 20


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compressed_point(pub: bytes) -> bytes:
    """Either SEC1 form of a P-384 point -> its compressed form (ValueError if not a point)."""
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), pub)
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


def seal_question(recipient: bytes, secret: bytes, fmt: str) -> bytes:
    """Seal the 32-byte `secret` to the compressed P-384 point `recipient`."""
    r = compressed_point(recipient)
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), r)
    eph = ec.generate_private_key(ec.SECP384R1())
    e = eph.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    shared = eph.exchange(ec.ECDH(), peer)
    if fmt == "new":
        version, salt, info = 2, CHALLENGE_LABEL, CHALLENGE_LABEL + e + r
    elif fmt == "old":
        version, salt, info = 1, SEAL_SALT, e + r
    else:
        raise ValueError(f"unknown question format {fmt!r}")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(shared)
    sealed = ChaCha20Poly1305(key).encrypt(b"\0" * 12, secret, bytes([version]) + e + r)
    return bytes([version]) + e + sealed


def link_mailbox(link: str):
    """(compressed pub, ext) of the mailbox a share link (or PUB.URL.EXT) names."""
    value = link.split("#", 1)[0]
    if "connectoid=" in value:
        value = value.split("connectoid=", 1)[1].split("&", 1)[0]
    parts = value.split(".")
    return compressed_point(unb64(parts[0])), parts[2] if len(parts) == 3 else ""


def mailbox_name(mailbox) -> str:
    pub, ext = mailbox
    return f"{b64(pub)[:12]}….{ext}"


class HostileService:
    def __init__(self, challenge_format="auto"):
        assert challenge_format in ("new", "old", "auto")
        self.challenge_format = challenge_format
        self.oracle = False
        self.lock = threading.RLock()
        # Everything received, in order: {"t", "method", "path", "raw", "json"}.
        self.requests = []
        # Every receive's answer: {"t", "mailbox", "answer" (bytes or None), "kind", "correct"}.
        self.answers = []
        # Every question handed out: {"t", "mailbox", "kind", "bytes"}.
        self.questions = []
        # Every message sent, in order: {"t", "mailbox", "data"} (duplicates included).
        self.sent = []
        # The mailboxes: (pub, ext) -> [{"at", "id", "data"}].
        self.boxes = {}
        # Per mailbox: when it was last checked, and the highest cursor a receive handed over.
        self.checked = {}
        self.delivered = {}
        self.replayed_count = 0
        self.learned = None                 # the genuine format clients answered ("new"/"old")
        self._state = {}                    # per mailbox: pending question, turns
        self._at = 0
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True

            def do_GET(self):
                service._record("GET", self.path, b"", None)
                if self.path.rstrip("/").endswith("healthz"):
                    return self._reply(200, b"ok\n", "text/plain")
                self._reply(200, {"challenge_seconds": 60, "mailbox_idle_seconds": 2592000, "max_message_bytes": 69632,
                                  "max_messages_per_mailbox": 1000, "max_receive_limit": 100,
                                  "requests_per_client_per_second": 50, "retention_seconds": 3600,
                                  "sealing": "p384-hkdf-sha256-chacha20poly1305-v1", "sends_per_mailbox_per_minute": 120,
                                  "service": "connectoid", "version": 1})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    return self._reply(413, {"ok": False, "error": "Too big", "code": "too_big"})
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                service._record("POST", self.path, raw, body)
                if not isinstance(body, dict):
                    return self._reply(400, {"ok": False, "error": "not JSON", "code": "bad_request"})
                status, reply = service._handle(body)
                self._reply(status, reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    # ---- recording

    def _record(self, method, path, raw, body):
        with self.lock:
            self.requests.append({"t": time.monotonic(), "method": method, "path": path, "raw": raw, "json": body})

    # ---- the API

    @staticmethod
    def _error(status, code, text):
        return status, {"ok": False, "error": text, "code": code}

    def _handle(self, body):
        action = body.get("action")
        try:
            pub = compressed_point(unb64(body["pub"]))
        except Exception:
            return self._error(400, "bad_key", "pub is not a P-384 public key")
        ext = body.get("ext") or ""
        mailbox = (pub, ext)
        if action == "send":
            try:
                data = unb64(body["data"])
            except Exception:
                return self._error(400, "bad_request", "data is not base64url")
            return 200, self.deliver(mailbox, data)
        if action == "check":
            return 200, self._check(mailbox, int(body.get("at") or 0))
        if action == "receive":
            return self._receive(mailbox, body.get("answer"), int(body.get("at") or 0), int(body.get("limit") or 1))
        return self._error(400, "unknown_action", "action is not send, check or receive")

    def deliver(self, mailbox, data, dedupe=True):
        """Store `data` in `mailbox` (a send). Bytes already held are kept once, as the docs say."""
        with self.lock:
            self.sent.append({"t": time.monotonic(), "mailbox": mailbox, "data": data})
            box = self.boxes.setdefault(mailbox, [])
            digest = hashlib.sha256(data).hexdigest()
            if not (dedupe and any(m["id"] == digest for m in box)):
                self._at += 1
                box.append({"at": self._at, "id": digest, "data": data})
        return {"ok": True}

    def _mailbox_state(self, mailbox):
        return self._state.setdefault(mailbox, {"pending": None, "envelope_turn": True, "cycle": 0, "next_format": "new"})

    def _check(self, mailbox, at):
        with self.lock:
            st = self._mailbox_state(mailbox)
            box = self.boxes.get(mailbox, [])
            self.checked[mailbox] = time.monotonic()
            if self.oracle:
                # Every other check: one of this mailbox's envelopes, whatever waits.
                envelopes = self.envelopes(mailbox)
                turn, st["envelope_turn"] = st["envelope_turn"], not st["envelope_turn"]
                if turn and envelopes:
                    question = envelopes[st["cycle"] % len(envelopes)]
                    st["cycle"] += 1
                    st["pending"] = {"kind": "envelope", "secret": None}
                    self.questions.append({"t": time.monotonic(), "mailbox": mailbox, "kind": "envelope", "bytes": question})
                    return {"ok": True, "found": True, "question": b64(question)}
            if not any(m["at"] > at for m in box):
                return {"ok": True, "found": False}
            fmt = self.challenge_format
            if fmt == "auto":
                fmt = self.learned or st["next_format"]
                st["next_format"] = "old" if fmt == "new" else "new"
            secret = os.urandom(32)
            question = seal_question(mailbox[0], secret, fmt)
            st["pending"] = {"kind": fmt, "secret": secret}
            self.questions.append({"t": time.monotonic(), "mailbox": mailbox, "kind": fmt, "bytes": question})
            return {"ok": True, "found": True, "question": b64(question)}

    def _receive(self, mailbox, answer_text, at, limit):
        with self.lock:
            st = self._mailbox_state(mailbox)
            pending, st["pending"] = st["pending"], None
            try:
                answer = unb64(answer_text) if isinstance(answer_text, str) else None
            except Exception:
                answer = None
            kind = pending["kind"] if pending else None
            correct = bool(pending and pending["secret"] is not None and answer == pending["secret"])
            self.answers.append({"t": time.monotonic(), "mailbox": mailbox, "answer": answer, "kind": kind, "correct": correct})
            if pending is None:
                return self._error(403, "no_challenge", "no question pending")
            if kind != "envelope":
                if not correct:
                    return self._error(403, "wrong_answer", "wrong answer")
                self.learned = self.learned or kind
            # A genuine answer, or any answer at all to an envelope: hand the messages over.
            waiting = [m for m in self.boxes.get(mailbox, []) if m["at"] > at]
            limit = max(1, min(limit, 100))
            batch = waiting[:limit]
            reply = {"ok": True, "at": batch[-1]["at"] if batch else at,
                     "messages": [{"at": m["at"], "id": m["id"], "data": b64(m["data"])} for m in batch],
                     "more": len(waiting) > len(batch)}
            if batch:
                reply["data"] = reply["messages"][0]["data"]
                self.delivered[mailbox] = max(self.delivered.get(mailbox, 0), batch[-1]["at"])
            return 200, reply

    # ---- what a test looks at and switches

    def envelopes(self, mailbox):
        """The distinct messages ever sent to `mailbox`, oldest first."""
        with self.lock:
            seen, out = set(), []
            for s in self.sent:
                if s["mailbox"] == mailbox and s["data"] not in seen:
                    seen.add(s["data"])
                    out.append(s["data"])
            return out

    def mailboxes(self):
        with self.lock:
            return list(self.boxes)

    def replay(self, mailboxes=None, since=None, until=None):
        """Re-deliver the stored messages of `mailboxes` (default: all) that were
        first sent in [since, until) (monotonic times; default: all), oldest
        first, as new messages at later cursors with their honest ids.
        Returns {mailbox: the last cursor re-delivered}."""
        last = {}
        with self.lock:
            for mailbox in list(mailboxes or self.boxes):
                first_sent = {}
                for s in self.sent:
                    if s["mailbox"] == mailbox:
                        first_sent.setdefault(s["data"], s["t"])
                for data, t in first_sent.items():
                    if (since is None or t >= since) and (until is None or t < until):
                        self._at += 1
                        self.boxes.setdefault(mailbox, []).append({"at": self._at, "id": hashlib.sha256(data).hexdigest(), "data": data})
                        last[mailbox] = self._at
                        self.replayed_count += 1
        return last

    def answers_since(self, t=0.0):
        with self.lock:
            return [a for a in self.answers if a["t"] >= t]

    def requests_since(self, t=0.0):
        with self.lock:
            return [r for r in self.requests if r["t"] >= t]

    def questions_since(self, t=0.0, kind=None):
        with self.lock:
            return [q for q in self.questions if q["t"] >= t and (kind is None or q["kind"] == kind)]


if __name__ == "__main__":
    import sys
    svc = HostileService(sys.argv[1] if len(sys.argv) > 1 else "auto")
    print(svc.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        svc.stop()


# ---- helpers for tests that share through a HostileService (real masq processes)

def use_service(device, url, interval_ms=200, resend_ms=2000):
    """Point `device`'s sharing at the service at `url` only, polling fast."""
    def change(config):
        config["sharing"] = {"services": [url], "resend_ms": resend_ms,
                             "transport": {"plugin": "connectoid", "options": {"interval_ms": interval_ms, "timeout_ms": 3000}}}
    device.edit_config(change)


def namespace_items(device, ns):
    """{key: value} of a namespace (masq ls -v), or None if the CLI failed."""
    r = masq("ls", "--config", device.config, ns, "-v", check=False)
    if r.returncode != 0:
        return None
    return dict(line.split("\t", 1) if "\t" in line else (line, "") for line in r.stdout.splitlines() if line)
