"""Several `masq connectoid serve` instances on one PostgreSQL store, as a
fleet behind a load balancer runs them: what must be global is global.
A mailbox's quota holds across instances (also under concurrent sends),
an answer is spent once whichever instance sees it, a message sent through
one instance is received through another in cursor order, retention runs
once across the fleet (advisory lock), and SIGTERM drains an instance:
it accepts no one, /healthz says so, requests in flight are answered."""
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests
from conftest import store_args
from test_service import Key, b64, unb64

MASQ = os.environ.get("MASQ_BIN", "masq")


class Fleet:
    def __init__(self, request, count, *options):
        self.url_store = request.getfixturevalue("postgres").new_database()
        self.procs, self.urls = [], []
        for _ in range(count):
            self.start(*options)

    def start(self, *options):
        proc = subprocess.Popen([MASQ, "connectoid", "serve", "--port", "0", "--store", self.url_store, "--log-level", "error",
                                 "--client-rate", "100000", "--client-burst", "100000", *options],
                                stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        assert line, "an instance did not start"
        self.procs.append(proc)
        self.urls.append(re.search(r"http://\S+", line).group(0))

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()

    def metric(self, i, name):
        text = requests.get(self.urls[i].rstrip("/") + "/metrics", timeout=10).text
        m = re.search(r"^masq_connectoid_%s(?:\{[^}]*\})? (\d+)" % name, text, re.M)
        return int(m.group(1)) if m else 0


def post(url, body):
    return requests.post(url, json=body, timeout=20).json()


@pytest.fixture
def fleet(request):
    made = []

    def make(count, *options):
        f = Fleet(request, count, *options)
        made.append(f)
        return f
    yield make
    for f in made:
        f.stop()


def test_quota_holds_across_instances(fleet):
    f = fleet(2, "--max-messages", "5", "--mailbox-rate", "6000", "--mailbox-burst", "100")
    me = Key()
    replies = [post(f.urls[i % 2], {"pub": me.pub, "ext": "", "action": "send", "data": b64(os.urandom(16))}) for i in range(9)]
    assert [r["ok"] for r in replies] == [True] * 5 + [False] * 4, replies
    assert {r.get("code") for r in replies[5:]} == {"mailbox_full"}


def test_quota_holds_under_concurrent_sends_to_every_instance(fleet):
    f = fleet(3, "--max-messages", "40", "--mailbox-rate", "60000", "--mailbox-burst", "1000")
    me = Key()
    results = []
    lock = threading.Lock()

    def sender(i):
        session = requests.Session()
        for j in range(20):
            reply = session.post(f.urls[(i + j) % 3], json={"pub": me.pub, "ext": "", "action": "send",
                                                            "data": b64(os.urandom(24))}, timeout=20).json()
            with lock:
                results.append(reply)
    threads = [threading.Thread(target=sender, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = [r for r in results if r["ok"]]
    assert len(results) == 120 and len(accepted) == 40, (len(results), len(accepted), {r.get("code") for r in results})
    # Everything accepted is there, once, in cursor order, read through another instance.
    check = post(f.urls[1], {"pub": me.pub, "ext": "", "action": "check", "at": 0})
    got = post(f.urls[2], {"pub": me.pub, "ext": "", "action": "receive", "answer": me.answer(check["question"]), "at": 0, "limit": 100})
    ats = [m["at"] for m in got["messages"]]
    assert len(ats) == 40 and ats == sorted(ats) and len({m["id"] for m in got["messages"]}) == 40


def test_a_message_and_an_answer_cross_instances_and_an_answer_is_spent_once(fleet):
    f = fleet(2)
    me = Key()
    assert post(f.urls[0], {"pub": me.pub, "ext": "x", "action": "send", "data": b64(b"through A")})["ok"]
    check = post(f.urls[1], {"pub": me.pub, "ext": "x", "action": "check", "at": 0})
    assert check["found"] is True
    # The pending question is shared: A hands out the one B made.
    assert post(f.urls[0], {"pub": me.pub, "ext": "x", "action": "check", "at": 0})["question"] == check["question"]
    answer = me.answer(check["question"])
    replies = [None, None]

    def spend(i):
        replies[i] = post(f.urls[i], {"pub": me.pub, "ext": "x", "action": "receive", "answer": answer, "at": 0})
    threads = [threading.Thread(target=spend, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["ok"] for r in replies) == [False, True], replies
    ok = next(r for r in replies if r["ok"])
    assert unb64(ok["data"]) == b"through A"
    assert next(r for r in replies if not r["ok"])["code"] == "reused_answer"


def test_retention_runs_once_across_the_fleet(fleet):
    # --retention 2: each instance would collect every second; the fleet collects at most once per period.
    f = fleet(3, "--retention", "2", "--mailbox-rate", "6000", "--mailbox-burst", "100")
    me = Key()
    for i in range(6):
        assert post(f.urls[i % 3], {"pub": me.pub, "ext": "", "action": "send", "data": b64(os.urandom(8))})["ok"]
    started = time.time()
    while time.time() - started < 5:
        for url in f.urls:
            post(url, {"pub": Key().pub, "ext": "", "action": "check", "at": 0})
        time.sleep(0.05)
    ran = sum(f.metric(i, "collections_total") for i in range(3))
    skipped = sum(f.metric(i, "collections_skipped_total") for i in range(3))
    collected = sum(f.metric(i, "collected_messages_total") for i in range(3))
    assert 3 <= ran <= 7, f"{ran} collections in 5 s across 3 instances (one per ~0.9 s expected)"
    assert skipped >= ran, f"the other instances should have skipped ({skipped} skipped, {ran} ran)"
    assert collected == 6, f"6 expired messages deleted once each, not {collected}"
    assert f.metric(0, "store_bytes") > 0, "the store's size is a metric (for the alert on it)"
    # The quota counted them out: the mailbox takes messages again.
    assert post(f.urls[0], {"pub": me.pub, "ext": "", "action": "check", "at": 0})["found"] is False


def test_sigterm_drains_an_instance(fleet):
    f = fleet(2, "--drain-timeout", "5")
    base = f.urls[0].rstrip("/")
    host, port = re.match(r"http://([^:/]+):(\d+)", f.urls[0]).groups()
    # An idle keep-alive connection, and one with a request half sent.
    idle = socket.create_connection((host, int(port)), timeout=10)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"200 OK" in idle.recv(4096)
    busy = socket.create_connection((host, int(port)), timeout=10)
    me = Key()
    body = ('{"pub": "%s", "ext": "", "action": "send", "data": "%s"}' % (me.pub, b64(b"in flight"))).encode()
    busy.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
    time.sleep(0.2)
    started = time.time()
    f.procs[0].send_signal(signal.SIGTERM)
    time.sleep(0.5)
    # The idle connection is closed; no new connection is accepted.
    assert idle.recv(4096) == b""
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2).sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        raise OSError("accepted")   # (a refused connect raises before this)
    # The request in flight is answered, and its connection closed after it.
    busy.sendall(body[10:])
    answer = b""
    while True:
        chunk = busy.recv(4096)
        if not chunk:
            break
        answer += chunk
    assert b"200 OK" in answer and b'"ok":true' in answer.replace(b" ", b"") and b"connection: close" in answer.lower()
    assert f.procs[0].wait(10) == 0 and time.time() - started < 6
    # The other instance has the message: nothing was lost.
    assert post(f.urls[1], {"pub": me.pub, "ext": "", "action": "check", "at": 0})["found"] is True
    assert requests.get(f.urls[1].rstrip("/") + "/healthz", timeout=5).status_code == 200
    del base


def test_rate_limits_count_the_client_a_trusted_proxy_names(request):
    """Behind HAProxy every request comes from the proxy: with --trust-proxy
    its X-Forwarded-For decides whom the client rate limit counts."""
    store, clean = store_args("sqlite", request)
    proc = subprocess.Popen([MASQ, "connectoid", "serve", "--port", "0", *store, "--log-level", "error",
                             "--client-rate", "1", "--client-burst", "3", "--trust-proxy", "127.0.0.1"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://\S+", proc.stdout.readline()).group(0)
        body = {"pub": Key().pub, "ext": "", "action": "check", "at": 0}

        def codes(forwarded):
            return [requests.post(url, json=body, headers={"X-Forwarded-For": forwarded}, timeout=10).status_code for _ in range(5)]
        first = codes("203.0.113.7")
        assert first[:3] == [200, 200, 200] and 429 in first[3:], first
        # Another client behind the same proxy has its own budget.
        assert codes("198.51.100.1, 203.0.113.9")[:3] == [200, 200, 200]
    finally:
        proc.terminate()
        proc.wait(10)
        clean()
