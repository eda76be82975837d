"""Helper of bench/connectoid/run.sh: writes the wrk scripts, runs the
check+receive cycle and drain measurements (Python `cryptography` opens the
questions: OpenSSL's ECDH)."""
import base64
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

URL = os.environ["BENCH_URL"]
WORK = os.environ["BENCH_WORK"]


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Key:
    def __init__(self):
        self.private = ec.generate_private_key(ec.SECP384R1())
        self.point = self.private.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
        self.pub = b64(self.point)

    def answer(self, question):
        box = unb64(question)
        eph = box[1:50]
        shared = self.private.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), eph))
        label = b"connectoid challenge v1"     # questions have a construction of their own (docs/CONNECTOID.md)
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=label, info=label + eph + self.point).derive(shared)
        return b64(ChaCha20Poly1305(key).decrypt(b"\0" * 12, box[50:], b"\x02" + eph + self.point))


def lua(name, bodies, unique):
    """A wrk script cycling through request bodies; `unique` appends a counter to data."""
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"', "local bodies = {"]
    lines += ["  %s," % json.dumps(json.dumps(b)) for b in bodies]
    lines += ["}", "local n = 0", "request = function()", "  n = n + 1", "  local body = bodies[(n %% %d) + 1]" % len(bodies)]
    if unique:
        # 12 base64url characters of a counter: every message is distinct (no de-duplication).
        lines.append('  body = string.gsub(body, "COUNTER", string.format("%012d", n * 7919 + math.random(0, 7918)))')
    lines += ["  return wrk.format(nil, nil, nil, body)", "end"]
    open(os.path.join(WORK, name), "w").write("\n".join(lines) + "\n")


def prepare():
    keys = [Key() for _ in range(64)]
    lua("send.lua", [{"pub": k.pub, "ext": "b", "action": "send", "data": "AAAACOUNTER" + "A" * 1352} for k in keys], True)
    lua("check-empty.lua", [{"pub": k.pub, "ext": "empty", "action": "check", "at": 0} for k in keys], False)
    pending = keys[:8]
    for k in pending:
        requests.post(URL, json={"pub": k.pub, "ext": "p", "action": "send", "data": b64(b"x" * 100)}).raise_for_status()
    lua("check-pending.lua", [{"pub": k.pub, "ext": "p", "action": "check", "at": 0} for k in pending], False)


def cycle_worker(seconds):
    key = Key()
    s = requests.Session()
    s.post(URL, json={"pub": key.pub, "ext": "c", "action": "send", "data": b64(b"y" * 100)}).raise_for_status()
    times = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        q = s.post(URL, json={"pub": key.pub, "ext": "c", "action": "check", "at": 0}).json()["question"]
        r = s.post(URL, json={"pub": key.pub, "ext": "c", "action": "receive", "answer": key.answer(q), "at": 0, "limit": 1}).json()
        assert r["ok"], r
        times.append(time.monotonic() - t)
    return times


def cycles(ecdh):
    seconds = float(os.environ.get("SECONDS_EACH", "5"))
    with ProcessPoolExecutor(2) as pool:
        runs = list(pool.map(cycle_worker, [seconds, seconds]))
    times = sorted(t for run in runs for t in run)
    rate = len(times) / seconds
    p99 = times[int(len(times) * 0.99) - 1] * 1000
    print("check+receive cycles/s %8.0f   p99 %.2f ms   (2 client processes)" % (rate, p99))
    print("openssl speed ecdhp384 %8.0f ops/s on this machine" % float(ecdh))
    print("ratio cycles/ECDH      %8.2f   (each cycle costs the service a key pair + ECDH and the client an ECDH)" % (rate / float(ecdh)))


def drain():
    total = int(os.environ.get("MESSAGES", "2000"))
    for limit in (1, 100):
        key = Key()
        s = requests.Session()
        for i in range(total):
            s.post(URL, json={"pub": key.pub, "ext": "d", "action": "send", "data": b64(i.to_bytes(4, "big") + b"z" * 200)})
        at, got, t = 0, 0, time.monotonic()
        while got < total:
            q = s.post(URL, json={"pub": key.pub, "ext": "d", "action": "check", "at": at}).json()["question"]
            r = s.post(URL, json={"pub": key.pub, "ext": "d", "action": "receive", "answer": key.answer(q), "at": at, "limit": limit}).json()
            got += len(r["messages"])
            at = r["at"]
        elapsed = time.monotonic() - t
        print("receive limit %-3d  %6d messages in %6.2f s = %8.0f messages/s" % (limit, total, elapsed, total / elapsed))


if __name__ == "__main__":
    {"prepare": lambda: prepare(), "cycles": lambda: cycles(sys.argv[2]), "drain": lambda: drain()}[sys.argv[1]]()
