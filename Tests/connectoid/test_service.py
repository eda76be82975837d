"""Conformance of `masq connectoid serve` with plain HTTP JSON, as the
Connectoid draft's curl examples drive it: send, check, receive; the errors
each bad input must get; retention; the published limits. Challenges are
opened here with Python's `cryptography` (P-384 ECDH + HKDF-SHA256 +
ChaCha20-Poly1305), an implementation independent of the service's."""
import base64
import hashlib
import os
import re
import subprocess
import tempfile
import time

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from conftest import BACKENDS, store_args

MASQ = os.environ.get("MASQ_BIN", "masq")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Key:
    """A mailbox key pair; `pub` as the link and the requests carry it."""

    def __init__(self):
        self.private = ec.generate_private_key(ec.SECP384R1())
        self.point = self.private.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
        self.pub = b64(self.point)

    def open(self, box: bytes) -> bytes:
        """Open a question (docs/CONNECTOID.md, "Challenges"): version 2, 98
        bytes, its own HKDF salt and info label — never a message's box."""
        assert box[0] == 2 and len(box) == 98, (box[0], len(box))
        eph = box[1:50]
        peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), eph)
        shared = self.private.exchange(ec.ECDH(), peer)
        label = b"connectoid challenge v1"
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=label, info=label + eph + self.point).derive(shared)
        return ChaCha20Poly1305(key).decrypt(b"\0" * 12, box[50:], b"\x02" + eph + self.point)

    def answer(self, question: str) -> str:
        return b64(self.open(unb64(question)))


@pytest.fixture(scope="module", params=BACKENDS)
def service(request):
    """One service per backend (SQLite file; PostgreSQL shared-fleet store): every test runs on both."""
    store, clean = store_args(request.param, request)
    proc = subprocess.Popen([MASQ, "connectoid", "serve", "--port", "0", *store, "--challenge-ttl", "2", "--retention", "3",
                             "--mailbox-rate", "60", "--mailbox-burst", "5", "--client-rate", "10000", "--client-burst", "10000",
                             "--max-message-bytes", "1024", "--max-messages", "20", "--log-level", "error"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line, "the service did not start"
    url = re.search(r"http://\S+", line).group(0)
    yield url
    proc.terminate()
    proc.wait(10)
    clean()


def post(url, body):
    r = requests.post(url, json=body, timeout=10)
    reply = r.json()
    assert r.status_code == (200 if reply["ok"] else r.status_code)
    return r.status_code, reply


def test_send_check_receive_as_the_draft(service):
    me = Key()
    assert post(service, {"pub": me.pub, "ext": "e1", "action": "check", "at": 0})[1] == {"ok": True, "found": False}
    assert post(service, {"pub": me.pub, "ext": "e1", "action": "send", "data": b64(b"hello")})[1] == {"ok": True}
    _, check = post(service, {"pub": me.pub, "ext": "e1", "action": "check", "at": 0})
    assert check["ok"] and check["found"] is True and check["question"]
    _, got = post(service, {"pub": me.pub, "ext": "e1", "action": "receive", "answer": me.answer(check["question"]), "at": 0, "limit": 1})
    assert got["ok"] and unb64(got["data"]) == b"hello" and isinstance(got["at"], int) and got["at"] > 0
    assert got["messages"][0]["id"] == hashlib.sha256(b"hello").hexdigest()
    # The cursor: nothing after it.
    assert post(service, {"pub": me.pub, "ext": "e1", "action": "check", "at": got["at"]})[1]["found"] is False
    # Another extension is another mailbox.
    assert post(service, {"pub": me.pub, "ext": "e2", "action": "check", "at": 0})[1]["found"] is False


def test_receive_returns_up_to_limit_with_ids(service):
    me = Key()
    for i in range(5):
        post(service, {"pub": me.pub, "ext": "", "action": "send", "data": b64(bytes([i]) * 10)})
    post(service, {"pub": me.pub, "ext": "", "action": "send", "data": b64(bytes([0]) * 10)})   # a duplicate: stored once
    _, check = post(service, {"pub": me.pub, "ext": "", "action": "check", "at": 0})
    _, got = post(service, {"pub": me.pub, "ext": "", "action": "receive", "answer": me.answer(check["question"]), "at": 0, "limit": 3})
    assert [unb64(m["data"])[0] for m in got["messages"]] == [0, 1, 2] and got["more"] is True
    _, check = post(service, {"pub": me.pub, "ext": "", "action": "check", "at": got["at"]})
    _, rest = post(service, {"pub": me.pub, "ext": "", "action": "receive", "answer": me.answer(check["question"]), "at": got["at"], "limit": 10})
    assert [unb64(m["data"])[0] for m in rest["messages"]] == [3, 4] and rest["more"] is False


@pytest.mark.parametrize("body, code", [
    ({"pub": "%%%", "ext": "", "action": "check", "at": 0}, "bad_request"),
    ({"pub": b64(b"\x02" + b"\xff" * 48), "ext": "", "action": "check", "at": 0}, "bad_key"),
    ({"pub": "KEY", "ext": "", "action": "fly"}, "unknown_action"),
    ({"pub": "KEY", "ext": "", "action": "send", "data": "not base64!"}, "bad_request"),
    ({"pub": "KEY", "ext": "", "action": "send"}, "bad_request"),
    ({"pub": "KEY", "ext": "", "action": "check", "at": -1}, "bad_request"),
    ({"pub": "KEY", "ext": "", "action": "check", "at": 2 ** 53}, "bad_request"),
    ({"pub": "KEY", "ext": "bad ext", "action": "check"}, "bad_request"),
    ({"pub": "KEY", "ext": "", "action": "receive", "answer": "AAAA", "at": 0, "limit": 1000}, "bad_request"),
    ({"ext": "", "action": "check"}, "bad_request"),
])
def test_bad_input_gets_a_clear_error(service, body, code):
    body = {k: (Key().pub if v == "KEY" else v) for k, v in body.items()}
    status, reply = post(service, body)
    assert reply["ok"] is False and reply["code"] == code and reply["error"]
    assert status == (413 if code == "too_big" else 400)


def test_not_json_and_oversized_bodies(service):
    r = requests.post(service, data=b"{not json", timeout=10)
    assert r.status_code == 400 and r.json()["code"] == "bad_request"
    r = requests.post(service, data=b"x" * 100_000, timeout=10)
    assert r.status_code == 413 and r.json() == {"ok": False, "error": "Too big", "code": "too_big"}


def test_too_big_and_too_often(service):
    me = Key()
    status, reply = post(service, {"pub": me.pub, "ext": "", "action": "send", "data": b64(b"x" * 1025)})
    assert status == 413 and reply["error"] == "Too big" and reply["code"] == "too_big"
    results = [post(service, {"pub": me.pub, "ext": "", "action": "send", "data": b64(os.urandom(8))})[1] for _ in range(8)]
    assert all(r["ok"] for r in results[:5])
    assert {"ok": False, "error": "Too often", "code": "rate_limited"} in results[5:]


def test_answers_wrong_reused_expired_and_of_another_key(service):
    owner, thief = Key(), Key()
    assert post(service, {"pub": owner.pub, "ext": "", "action": "receive", "answer": "AAAA", "at": 0})[1]["code"] == "no_challenge"
    post(service, {"pub": owner.pub, "ext": "", "action": "send", "data": b64(b"for the owner")})
    question = post(service, {"pub": owner.pub, "ext": "", "action": "check", "at": 0})[1]["question"]
    # Another key cannot open the question, and a guess is a wrong answer.
    with pytest.raises(Exception):
        thief.answer(question)
    status, reply = post(service, {"pub": owner.pub, "ext": "", "action": "receive", "answer": b64(os.urandom(32)), "at": 0})
    assert status == 403 and reply["code"] == "wrong_answer"
    answer = owner.answer(question)
    assert post(service, {"pub": owner.pub, "ext": "", "action": "receive", "answer": answer, "at": 0})[1]["ok"]
    assert post(service, {"pub": owner.pub, "ext": "", "action": "receive", "answer": answer, "at": 0})[1]["code"] == "reused_answer"
    question = post(service, {"pub": owner.pub, "ext": "", "action": "check", "at": 0})[1]["question"]
    time.sleep(2.2)                                   # --challenge-ttl 2
    assert post(service, {"pub": owner.pub, "ext": "", "action": "receive", "answer": owner.answer(question), "at": 0})[1]["code"] == "expired_answer"


def test_messages_expire_after_retention(service):
    me = Key()
    post(service, {"pub": me.pub, "ext": "", "action": "send", "data": b64(b"short-lived")})
    assert post(service, {"pub": me.pub, "ext": "", "action": "check", "at": 0})[1]["found"] is True
    time.sleep(3.3)                                   # --retention 3
    assert post(service, {"pub": me.pub, "ext": "", "action": "check", "at": 0})[1]["found"] is False


def test_limits_health_metrics_and_cors(service):
    limits = requests.get(service, timeout=10).json()
    assert limits["max_message_bytes"] == 1024 and limits["retention_seconds"] == 3 and limits["challenge_seconds"] == 2
    assert limits["sealing"] == "p384-hkdf-sha256-chacha20poly1305-v1"
    assert limits["challenge_sealing"] == "p384-hkdf-sha256-chacha20poly1305-challenge-v2"
    base = service.rstrip("/")
    assert requests.get(base + "/healthz", timeout=10).text == "ok\n"
    metrics = requests.get(base + "/metrics", timeout=10).text
    assert 'masq_connectoid_requests_total{action="send",result="ok"}' in metrics
    assert "masq_connectoid_questions_sealed_total" in metrics
    r = requests.options(service, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}, timeout=10)
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"


def test_keep_alive_serves_many_requests_on_one_connection(service):
    me = Key()
    with requests.Session() as s:
        for _ in range(20):
            assert s.post(service, json={"pub": me.pub, "ext": "", "action": "check", "at": 0}, timeout=10).json()["ok"]
