"""What one connection, or one address, may cost `masq connectoid serve`
(docs/CONNECTOID.md, "Connections"). Each test is an attack the abuse suite
(Tests/abuse) found to work, played here against a real service on
127.0.0.1 with small limits:

- pipelined requests whose answers are never read: the service must stop
  reading (backpressure), not queue answers without bound, and keep serving
  others;
- a body declared (Content-Length: 1 GiB) or streamed (chunked) past the
  limit: answered 413 at once, the body never read;
- one address opening connection after connection: refused past
  --max-connections-per-address while another address is served.

Timings are correctness bounds ("within 10 s"), not benchmarks."""
import os
import re
import select
import socket
import subprocess
import tempfile
import threading
import time

import pytest
from conftest import BACKENDS, store_args

MASQ = os.environ.get("MASQ_BIN", "masq")
MAX_MESSAGE = 4096
BODY_LIMIT = MAX_MESSAGE * 4 // 3 + 2048     # what the service reads of a body (base64 + JSON)
PER_ADDRESS = 6


class Service:
    def __init__(self, *options, store=None):
        self.store, self.clean = store or (["--db", tempfile.mktemp(suffix=".sqlite3")], lambda: None)
        self.db = self.store[1]
        self.proc = subprocess.Popen([MASQ, "connectoid", "serve", "--port", "0", *self.store, "--log-level", "error",
                                      "--max-message-bytes", str(MAX_MESSAGE), "--client-rate", "1000000", "--client-burst", "1000000",
                                      *options], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        self.port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))

    def stop(self):
        self.proc.terminate()
        # (SIGTERM drains for up to --drain-timeout, 10 s, then stops: waiting exactly 10 s failed once in CI)
        self.proc.wait(30)
        self.clean()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.db + suffix):
                os.remove(self.db + suffix)

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        fields = open("/proc/%d/stat" % self.proc.pid).read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def connect(self, source="127.0.0.1", rcvbuf=None, timeout=10):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(timeout)
        s.bind((source, 0))
        s.connect(("127.0.0.1", self.port))
        return s

    def metric(self, name, source="127.0.0.1"):
        s = self.connect(source)
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            text = read_all(s).decode()
        finally:
            s.close()
        m = re.search(r"^masq_connectoid_%s (\d+)" % name, text, re.M)
        return int(m.group(1)) if m else None


def read_all(s, limit=1 << 20):
    data = pending.pop(s, b"")
    while len(data) < limit:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        data += chunk
    return data


def read_response(s):
    """One HTTP response (head and Content-Length body): (status, head,
    body). What the service sent beyond it stays for the next call."""
    data = pending.pop(s, b"")
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before an answer: %r" % data)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    if len(body) > length:
        pending[s] = body[length:]
    return int(head.split()[1]), head.decode().lower(), body[:length]


pending = {}     # socket -> bytes received past the last response read


def healthz_seconds(service, source="127.0.0.1"):
    """A new client's GET /healthz: seconds until its answer."""
    started = time.monotonic()
    s = service.connect(source)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = read_response(s)
        assert status == 200 and body == b"ok\n"
    finally:
        s.close()
    return time.monotonic() - started


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def service(request, backend):
    """A service on each backend: the HTTP front's bounds hold whether the
    store answers inline (SQLite) or on the thread pool (PostgreSQL)."""
    svc = Service(*getattr(request, "param", ()), store=store_args(backend, request))
    yield svc
    svc.stop()


# --- pipelining without reading ---------------------------------------------

@pytest.mark.parametrize("service", [("--threads", "1", "--request-timeout", "60", "--max-connections-per-address", "64")], indirect=True)
def test_pipelining_without_reading_is_bounded(service):
    """Four connections pipeline GET /metrics (a few KiB of answer for 40
    bytes of request) as fast as the service takes them and never read. The
    service must stop reading them when their answers pile up: its memory
    stays flat, its CPU goes idle, and a new client is served at once, on
    the service's single event loop thread."""
    unit = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    chunk = unit * 200
    attackers = []
    for _ in range(4):
        s = service.connect(rcvbuf=4096)
        s.setblocking(False)
        attackers.append([s, memoryview(chunk), 0])
    baseline = service.rss_kib()
    peak = baseline
    newcomers = []
    cpu = []
    started = time.monotonic()
    next_probe = started + 1
    while time.monotonic() < started + 6:
        progressed = False
        for a in attackers:
            try:
                n = a[0].send(a[1])
            except BlockingIOError:
                continue
            progressed = True
            a[2] += n
            a[1] = a[1][n:] if n < len(a[1]) else memoryview(chunk)
        if not progressed:
            select.select([], [a[0] for a in attackers], [], 0.05)
        peak = max(peak, service.rss_kib())
        if time.monotonic() >= next_probe:
            newcomers.append(healthz_seconds(service))
            cpu.append(service.cpu_seconds())
            next_probe = time.monotonic() + 1
    peak = max(peak, service.rss_kib())
    sent = [a[2] // len(unit) for a in attackers]
    print("pipelined %s requests; RSS +%.1f MiB; newcomers %s s; CPU %s s" % (
        sent, (peak - baseline) / 1024, ["%.2f" % t for t in newcomers], cpu))
    # Without backpressure each connection queues thousands of answers of a
    # few KiB: hundreds of MiB in seconds. With it: a write buffer each.
    assert peak - baseline < 16 * 1024, "RSS grew %.1f MiB while clients pipelined without reading" % ((peak - baseline) / 1024)
    assert newcomers and max(newcomers) < 10, "new clients waited %s s" % newcomers
    # Once the attackers are stalled, the service does nothing for them.
    assert cpu[-1] - cpu[-3] < 1.0, "the service kept working for clients that do not read: %s" % cpu
    for a in attackers:
        a[0].close()


@pytest.mark.parametrize("service", [("--threads", "1", "--request-timeout", "3")], indirect=True)
def test_a_stalled_reader_is_closed_after_the_request_timeout(service):
    """A connection whose answers are stuck (the client stopped reading)
    holds its slot only until --request-timeout passes without progress."""
    s = service.connect(rcvbuf=4096)
    s.setblocking(False)
    unit = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 200
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        try:
            s.send(unit)
        except BlockingIOError:
            select.select([], [s], [], 0.05)
    assert service.metric("timed_out_total") == 0
    time.sleep(4)
    assert service.metric("timed_out_total") == 1
    s.close()


def test_pipelined_requests_are_answered_in_order_after_a_stall(service):
    """Pipelining works, backpressure loses nothing: 3,000 requests in a row
    (GET and POST mixed) from a client that reads nothing for two seconds
    (the service stops reading it meanwhile), then reads: every answer
    arrives, in order."""
    s = service.connect(rcvbuf=4096)
    requests = [b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" if i % 2 else
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{not json" for i in range(3000)]
    writer = threading.Thread(target=s.sendall, args=(b"".join(requests),), daemon=True)
    writer.start()
    time.sleep(2)
    for i in range(3000):
        status, _, body = read_response(s)
        assert (status, body[:2]) == ((200, b"ok") if i % 2 else (400, b'{"')), "answer %d" % i
    writer.join(10)
    assert not writer.is_alive()
    s.close()


# --- bodies past the limit --------------------------------------------------

def test_declared_1GiB_body_is_answered_413_at_once(service):
    """Content-Length: 1 GiB and not a byte of body: the answer is 413 (the
    "Too big" error) at once, then the connection is closed."""
    s = service.connect(timeout=10)
    started = time.monotonic()
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n")
    status, head, body = read_response(s)
    assert status == 413 and "connection: close" in head
    assert body == b'{"ok":false,"error":"Too big","code":"too_big"}' or b'"code":"too_big"' in body
    assert time.monotonic() - started < 10
    # Closed by the service (within its short drain), nothing more said.
    assert read_all(s) == b""
    s.close()


def test_413_comes_after_the_answers_before_it(service):
    """A declared-too-big request pipelined behind a good one: the good one
    is answered first, then 413, then the close."""
    s = service.connect()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
              b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n" + b"{" * 1000)
    assert read_response(s)[0] == 200
    assert read_response(s)[0] == 413
    assert read_all(s) == b""
    s.close()


def test_streamed_bodies_past_the_limit_are_answered_while_still_sending(service):
    """A chunked body, or a body streamed behind a huge Content-Length, is
    answered 413 as soon as it passes the limit, without waiting for its end
    (which never comes here)."""
    for head in (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                 b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n"):
        chunked = b"chunked" in head
        piece = (b"1000\r\n" + b"B" * 4096 + b"\r\n") if chunked else b"B" * 4096
        s = service.connect()
        s.sendall(head)
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 10
        answered = False
        while time.monotonic() < deadline and sent < 256 << 20:
            readable, writable, _ = select.select([s], [s], [], 1)
            if readable:
                answered = True
                break
            if writable:
                try:
                    sent += s.send(piece)
                except BlockingIOError:
                    pass
                except OSError:
                    break
        assert answered, "no answer after %d bytes of body" % sent
        s.setblocking(True)
        s.settimeout(10)
        status, head_text, _ = read_response(s)
        assert status == 413 and "connection: close" in head_text
        s.close()


def test_malformed_http_is_answered_400_and_closed(service):
    s = service.connect()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + b"\x00\x01 not http\r\n\r\n")
    assert read_response(s)[0] == 200
    status, head, _ = read_response(s)
    assert status == 400 and "connection: close" in head
    assert read_all(s) == b""
    s.close()


# --- connections per address -------------------------------------------------

def refused(s):
    """The service closed this connection without an answer."""
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        return s.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


@pytest.mark.parametrize("service", [("--max-connections", "64", "--max-connections-per-address", str(PER_ADDRESS))], indirect=True)
def test_one_address_cannot_take_every_slot(service):
    """--max-connections-per-address N: the N+1th connection from 127.0.0.1
    is closed at once while 127.0.0.2 is still served; a slot freed is
    reusable; refusals are counted in /metrics."""
    held = []
    for _ in range(PER_ADDRESS):
        s = service.connect()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s)[0] == 200
        held.append(s)
    extra = service.connect()
    assert refused(extra)
    extra.close()
    # Another address is served, and sees the refusal counted.
    assert healthz_seconds(service, source="127.0.0.2") < 10
    assert service.metric("refused_connections_per_address_total", source="127.0.0.2") >= 1
    assert service.metric("refused_connections_total", source="127.0.0.2") == 0
    # A slot released is taken again.
    held.pop().close()
    deadline = time.monotonic() + 10
    while True:
        s = service.connect()
        if not refused(s):
            s.close()
            break
        s.close()
        assert time.monotonic() < deadline, "the released slot never came back"
        time.sleep(0.1)
    for s in held:
        s.close()


def test_the_per_address_cap_is_an_option_below_the_total():
    help_text = subprocess.run([MASQ, "connectoid", "serve", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--max-connections-per-address" in help_text
    assert re.search(r"--max-connections-per-address.*?\(default: (\d+)\)", help_text, re.S).group(1) == "32"
