"""Shared code of the abuse suite (issue 14, point 5): start a server with
small explicit limits, keep a legitimate client working, run attacks for a
fixed time in separate processes, and measure the server from /proc.

Everything here talks to loopback addresses only (127.0.0.0/8; the mesh
test uses a few addresses of it as the mesh tests do), and every loop is
bounded both in count and in time.

Environment (as the other Python suites):
  MASQ_BIN          masq-cli to test (relay, connectoid serve, node)
  MASQD             masqd to test
  MASQ_PLUGIN_PATH  directory of the plugins (masqd's localws transport)
  ABUSE_SECONDS     seconds each attack phase lasts (default 2: the whole
                    directory in about a minute; a test has three or four
                    phases; bench/abuse/run.sh runs 30)

Attacks run in child processes (multiprocessing, "spawn"), so their work
does not share the interpreter lock with the legitimate client, whose
latency is measured in the test's own process.
"""
import collections
import json
import multiprocessing
import os
import random
import re
import resource
import select
import socket
import statistics
import struct
import subprocess
import threading
import time

MASQ = os.environ.get("MASQ_BIN", "masq")
MASQD = os.environ.get("MASQD", "masqd")
PLUGIN_PATH = os.environ.get("MASQ_PLUGIN_PATH", "")
SECONDS = float(os.environ.get("ABUSE_SECONDS", "2"))
HOST = "127.0.0.1"
# How long a legitimate request may take before it counts as failed. Generous:
# the attackers share the machine's cores with the server and the client, so
# a slow answer under attack is expected; no answer is a failure.
LEGIT_TIMEOUT = 10.0


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------------------
# The server under test


class Server:
    """A server process: its pid, RSS and sockets from /proc, its log."""

    def __init__(self, name, argv, ready, workdir, env=None):
        self.name = name
        self.workdir = workdir
        self.log_path = os.path.join(workdir, name + ".log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=workdir)
        self.first_lines = []
        deadline = time.monotonic() + 30
        self.match = None
        while time.monotonic() < deadline:
            ready_to_read, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready_to_read:
                line = self.proc.stdout.readline()
                if not line:
                    break
                self.first_lines.append(line)
                self.match = re.search(ready, line)
                if self.match:
                    break
            if self.proc.poll() is not None:
                break
        if not self.match:
            self.stop()
            raise RuntimeError("%s did not start: %s %s" % (name, "".join(self.first_lines), self.log_tail()))
        # Keep draining stdout so the server never blocks on a full pipe.
        self.more_lines = collections.deque(maxlen=200)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        try:
            for line in self.proc.stdout:
                self.more_lines.append(line)
        except (OSError, ValueError):
            pass

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def rss_kib(self):
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def sockets(self):
        """Sockets the process holds open (the listeners included)."""
        count = 0
        base = "/proc/%d/fd" % self.pid
        try:
            for fd in os.listdir(base):
                try:
                    if os.readlink(os.path.join(base, fd)).startswith("socket:"):
                        count += 1
                except OSError:
                    pass
        except OSError:
            pass
        return count

    def baseline_kib(self, seconds=0.3):
        samples = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            samples.append(self.rss_kib())
            time.sleep(0.02)
        return statistics.median(samples)

    def log_tail(self, n=3000):
        try:
            if not self.log.closed:
                self.log.flush()
            return open(self.log_path, errors="replace").read()[-n:]
        except OSError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


class Sampler(threading.Thread):
    """Samples the server's RSS and open sockets until stopped: peaks."""

    def __init__(self, server, interval=0.02):
        super().__init__(daemon=True)
        self.server = server
        self.interval = interval
        self.stopping = threading.Event()
        self.peak_kib = 0
        self.peak_sockets = 0
        self.samples = 0

    def run(self):
        while not self.stopping.is_set():
            self.peak_kib = max(self.peak_kib, self.server.rss_kib())
            if self.samples % 5 == 0:      # sockets every 100 ms: listing /proc/PID/fd costs more
                self.peak_sockets = max(self.peak_sockets, self.server.sockets())
            self.samples += 1
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
        self.join(5)
        # One last sample: what the server holds now counts too.
        self.peak_kib = max(self.peak_kib, self.server.rss_kib())
        self.peak_sockets = max(self.peak_sockets, self.server.sockets())


# ---------------------------------------------------------------------------
# The legitimate client


class Legit:
    """Runs `work(legit, i)` in a loop on a thread until stopped (bounded by
    `max_rounds` too). `work` makes requests through `legit.request(fn)`,
    which times each one and counts it as failed if it raises. After a
    failure `recover()` (if given) may reconnect, so one failure does not
    hide what happens next."""

    def __init__(self, name, work, recover=None, pause=0.01, max_rounds=1_000_000):
        self.name = name
        self.work = work
        self.recover = recover
        self.pause = pause
        self.max_rounds = max_rounds
        self.latencies = []
        self.requests = 0
        self.failures = 0
        self.errors = []
        self.stopping = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def fail(self, what, error):
        self.failures += 1
        if len(self.errors) < 5:
            self.errors.append("%s at %.1f s: %r" % (what, time.monotonic() - self.started, error))

    def request(self, fn, *args, **kwargs):
        started = time.perf_counter()
        self.requests += 1
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            self.fail(getattr(fn, "__name__", "request"), error)
            error.counted = True
            raise
        finally:
            self.latencies.append(time.perf_counter() - started)

    def _run(self):
        i = 0
        broken = False
        while not self.stopping.is_set() and i < self.max_rounds:
            if broken:
                # A reconnection is a legitimate request too: it must work.
                try:
                    self.request(self.recover)
                    broken = False
                except Exception:
                    self.stopping.wait(0.5)
                    continue
            try:
                self.work(self, i)
            except Exception as error:
                if not getattr(error, "counted", False):
                    self.requests += 1
                    self.fail("work", error)
                broken = self.recover is not None
            i += 1
            self.stopping.wait(self.pause)

    def start(self):
        self.started = time.monotonic()
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(LEGIT_TIMEOUT + 5)

    def max_ms(self):
        return max(self.latencies, default=float("nan")) * 1000

    def p99_ms(self):
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def report(capsys, name, peak_kib, baseline_kib, legit, details=()):
    """The line of issue 14.5 for one server (always shown, even without -s),
    then what the attacks did."""
    line = "%s: peak RSS +%.1f MiB over baseline, %d legitimate failures of %d, p99 %.1f ms" % (
        name, max(0, peak_kib - baseline_kib) / 1024, legit.failures, legit.requests, legit.p99_ms())
    with capsys.disabled():
        print()
        print(line)
        for detail in details:
            print("    " + detail)
    return line


class Checks:
    """Collects every violated expectation, so one run names all of a
    server's weaknesses rather than the first."""

    def __init__(self, name):
        self.name = name
        self.problems = []

    def that(self, ok, message):
        if not ok:
            self.problems.append(str(message))

    def verify(self):
        assert not self.problems, "%s: %d problem(s):\n- %s" % (self.name, len(self.problems), "\n- ".join(self.problems))


# ---------------------------------------------------------------------------
# Running attacks in child processes


def _attack_entry(queue, name, function, target, seconds, params):
    raise_fd_limit()
    try:
        result = globals()[function](target, seconds, **params)
    except Exception as error:  # reported, and fails the test
        result = {"crashed": repr(error)}
    queue.put((name, result))


def run_attacks(target, seconds, attacks):
    """Run each attack (name, function name, params[, its own target]) in
    its own process for `seconds`; return {name: counters}. Blocks until
    all are done."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = []
    for name, function, params, *own in attacks:
        p = context.Process(target=_attack_entry, args=(queue, name, function, own[0] if own else target, seconds, params), daemon=True)
        p.start()
        processes.append(p)
    results = {}
    deadline = time.monotonic() + seconds + 60
    while len(results) < len(processes) and time.monotonic() < deadline:
        try:
            name, result = queue.get(timeout=1)
            results[name] = result
        except Exception:
            if not any(p.is_alive() for p in processes) and queue.empty():
                break
    for p in processes:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join(5)
    for name, *_ in attacks:
        results.setdefault(name, {"crashed": "no result"})
    return results


class Newcomers(threading.Thread):
    """During an attack: every half second a new legitimate client tries
    `attempt()` (connect and one request). Reported, not asserted: past a
    connection limit a newcomer is refused by design."""

    def __init__(self, attempt):
        super().__init__(daemon=True)
        self.attempt = attempt
        self.stopping = threading.Event()
        self.ok = 0
        self.failed = 0
        self.slowest = 0.0
        self.first_error = None

    def run(self):
        while not self.stopping.is_set():
            started = time.perf_counter()
            try:
                self.attempt()
                self.ok += 1
            except Exception as error:
                self.failed += 1
                self.first_error = self.first_error or repr(error)[:120]
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self.stopping.wait(0.5)

    def stop(self):
        self.stopping.set()
        self.join(LEGIT_TIMEOUT + 5)

    def line(self):
        return "%d ok, %d failed, slowest %.2f s%s" % (self.ok, self.failed, self.slowest,
                                                       " (%s)" % self.first_error if self.first_error else "")


def run_phases(server, target, legit, phases, newcomer=None):
    """Run each phase's attacks (for SECONDS) while `legit` works and the
    server is sampled; returns (sampler, attack results, newcomers by phase)."""
    sampler = Sampler(server)
    sampler.start()
    legit.start()
    results = {}
    newcomers = {}
    try:
        for phase, attacks in phases:
            probe = Newcomers(newcomer) if newcomer else None
            if probe:
                probe.start()
            results.update(run_attacks(target, SECONDS, attacks))
            if probe:
                probe.stop()
                newcomers[phase] = probe.line()
    finally:
        legit.stop()
        sampler.stop()
    return sampler, results, newcomers


def summary(results):
    """One line per attack: its counters."""
    return ["%s: %s" % (name, ", ".join("%s=%s" % kv for kv in sorted(counters.items())))
            for name, counters in results.items()]


# ---------------------------------------------------------------------------
# Wire helpers (HTTP, WebSocket, mesh link)


def upgrade_request(target, extra=b""):
    """A WebSocket upgrade request (RFC 6455) with the Host header masqd
    requires (the relay accepts any)."""
    host = ("%s:%d" % (target["host"], target["port"])).encode()
    return (b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")


def ws_frame(opcode, payload, fin=True, mask=True, rsv=0):
    """One client WebSocket frame (masked, as clients must)."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i & 3] for i, b in enumerate(payload)) if n < 4096 else _mask_long(payload, key)
    return head + key + masked


def _mask_long(payload, key):
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(n, "little")


def relay_frame(kind, room, payload=b""):
    return bytes([1, kind, len(room)]) + room + payload


def read_head(sock, limit=65536):
    """Bytes up to the end of an HTTP response head ("" if closed first)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def status_of(head):
    parts = head.split(b" ", 2)
    return parts[1].decode(errors="replace") if len(parts) > 1 and head.startswith(b"HTTP/") else ("closed" if not head else "garbage")


def connect(target, source=None, rcvbuf=None, timeout=5.0, linger0=False):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if linger0:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.settimeout(timeout)
    try:
        if source:
            s.bind((source, 0))
        s.connect((target["host"], target["port"]))
    except OSError:
        s.close()
        raise
    return s


def ws_open(target, rcvbuf=None, timeout=5.0, extra=b""):
    """A raw upgraded WebSocket: (socket, status)."""
    s = connect(target, rcvbuf=rcvbuf, timeout=timeout)
    try:
        s.sendall(upgrade_request(target, extra))
        status = status_of(read_head(s))
    except OSError:
        s.close()
        return None, "error"
    if status != "101":
        s.close()
        return None, status
    return s, status


def closed_by_peer(sock):
    """Without blocking: True once the peer closed (or reset) `sock`; any
    data waiting is read and dropped."""
    try:
        sock.setblocking(False)
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    finally:
        try:
            sock.setblocking(True)
        except OSError:
            pass


def closed_within(sock, seconds):
    """Read (and drop) until the peer closes: True if it did within `seconds`."""
    end = time.monotonic() + seconds
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            sock.settimeout(left)
            if not sock.recv(65536):
                return True
    except socket.timeout:
        return False
    except OSError:
        return True


def poll_closed(socks):
    """The sockets of `socks` the peer has closed (readable ones are read)."""
    if not socks:
        return []
    poller = select.poll()
    by_fd = {}
    for s in socks:
        try:
            fd = s.fileno()
        except OSError:
            continue
        if fd < 0:
            continue
        by_fd[fd] = s
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    gone = []
    for fd, _ in poller.poll(0):
        if closed_by_peer(by_fd[fd]):
            gone.append(by_fd[fd])
    return gone


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def opening(target, complete=True):
    """What a client sends first: an upgrade request (ws), a POST (http: a
    partial body when not `complete`), a Noise handshake message (mesh)."""
    kind = target["kind"]
    if kind == "ws":
        return upgrade_request(target)
    if kind == "http":
        body = b'{"pub": "AAAA", "ext": "", "action": "check", "at": 0}'
        head = b"POST / HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
            target["host"].encode(), target["port"], len(body))
        return head + (body if complete else body[:10])
    if kind == "mesh":
        return struct.pack(">H", 32) + os.urandom(32)
    raise ValueError(kind)


def read_reply(sock, target):
    """The server's first answer to `opening`: a status, or "closed"."""
    if target["kind"] == "mesh":
        head = b""
        while len(head) < 2:
            chunk = sock.recv(2 - len(head))
            if not chunk:
                return "closed"
            head += chunk
        return "handshake"
    return status_of(read_head(sock))


# ---------------------------------------------------------------------------
# Attacks at the connection level (every server)


def resets(target, seconds, max_count=30_000, wait_every=2, complete=True):
    """Open, send the opening (an upgrade request, a POST, a handshake
    message), then reset the connection (SO_LINGER 0): on every second
    connection after the server's answer (an accepted upgrade, 101), on the
    others at once. Thousands of times: more than the connection limit."""
    counters = collections.Counter()
    deadline = time.monotonic() + seconds
    data = opening(target, complete)
    i = 0
    while i < max_count and time.monotonic() < deadline:
        i += 1
        try:
            s = connect(target, source=source_of(target, i), timeout=3, linger0=True)
        except OSError:
            counters["connect_failed"] += 1
            continue
        try:
            s.sendall(data)
            if i % wait_every == 0:
                counters["answer_" + read_reply(s, target)] += 1
            else:
                counters["reset_at_once"] += 1
        except OSError:
            counters["error"] += 1
        finally:
            s.close()
    counters["connections"] = i
    return dict(counters)


def source_of(target, i):
    """The address attack connection `i` leaves from (mesh: several, since
    the node counts connections per address)."""
    sources = target.get("attackers")
    return sources[i % len(sources)] if sources else None


def _keep_open(target, seconds, count, first, trickle, interval, max_connects):
    """Hold `count` connections open, sending `first` on each, then
    `trickle(i)` bytes on every connection every `interval`. Connections
    the server closes are counted and replaced (bounded by `max_connects`)."""
    counters = collections.Counter()
    deadline = time.monotonic() + seconds
    held = []
    connects = 0
    age = {}

    def open_one():
        nonlocal connects
        connects += 1
        try:
            s = connect(target, source=source_of(target, connects), timeout=2)
            if first:
                s.sendall(first)
            held.append(s)
            age[s] = time.monotonic()
        except OSError:
            counters["refused"] += 1

    while len(held) < count and connects < max_connects and time.monotonic() < deadline:
        open_one()
    counters["peak_held"] = len(held)
    i = 0
    while time.monotonic() < deadline:
        for s in poll_closed(held):
            held.remove(s)
            lived = time.monotonic() - age.pop(s)
            counters["closed_by_server"] += 1
            counters["closed_within_1s" if lived < 1 else "closed_later"] += 1
            s.close()
        while len(held) < count and connects < max_connects and time.monotonic() < deadline:
            open_one()
        counters["peak_held"] = max(counters["peak_held"], len(held))
        if trickle and held:
            # One byte (or a few) on every connection, round after round.
            for s in list(held):
                try:
                    s.send(trickle(i))
                except OSError:
                    pass
            i += 1
        time.sleep(interval)
    counters["connections"] = connects
    counters["still_open_at_end"] = len(held)
    counters["oldest_open_s"] = int(max((time.monotonic() - t for t in age.values()), default=0))
    close_all(held)
    return dict(counters)


def half_open(target, seconds, count=300, max_connects=5_000):
    """Connect and send nothing."""
    return _keep_open(target, seconds, count, b"", None, 0.1, max_connects)


def slowloris(target, seconds, count=200, prefill=0, body=False, max_connects=5_000):
    """Send the opening one byte at a time, never finishing it. HTTP: the
    request line, then a header that never ends (after `prefill` bytes of
    it at once: the most a server would hold for a slow client), or with
    `body` a complete head and a body that trickles. Mesh: the length of a
    handshake message, then its bytes one by one."""
    if target["kind"] == "mesh":
        first = struct.pack(">H", 48)        # a handshake message that never completes
        return _keep_open(target, seconds, count, first, lambda i: b"\x00", 0.2, max_connects)
    if body:
        # The head is complete; the body (of 1 MiB, says the head) comes one byte at a time.
        first = b"POST / HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{" % (
            target["host"].encode(), target["port"])
        return _keep_open(target, seconds, count, first, lambda i: b" ", 0.2, max_connects)
    first = b"GET / HTTP/1.1\r\nHost: %s:%d\r\nX-Slow: " % (target["host"].encode(), target["port"]) + b"a" * prefill
    return _keep_open(target, seconds, count, first, lambda i: b"a", 0.2, max_connects)


def half_handshake(target, seconds, count=64, max_connects=5_000):
    """Send a complete opening (mesh: the first handshake message, which
    the node answers with its own, a Diffie-Hellman's work) and nothing more."""
    return _keep_open(target, seconds, count, opening(target), None, 0.1, max_connects)


def garbage(target, seconds, max_count=5_000):
    """Connections that send random bytes instead of a protocol: the server
    must close them."""
    counters = collections.Counter()
    deadline = time.monotonic() + seconds
    i = 0
    if target["kind"] == "mesh":
        variants = [("len65535", lambda: b"\xff\xff" + os.urandom(2000)), ("len0", lambda: b"\x00\x00"),
                    ("short", lambda: b"\x00\x05hello" + os.urandom(100)), ("bad_keys", lambda: struct.pack(">H", 96) + os.urandom(96))]
    else:
        variants = [("random", lambda: os.urandom(500)), ("http_9.9", lambda: b"GET / HTTP/9.9\r\n\r\n"),
                    ("tls_hello", lambda: b"\x16\x03\x01\x02\x00" + os.urandom(512)),
                    ("negative_length", lambda: b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n"),
                    ("url_100k", lambda: b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n")]
    while i < max_count and time.monotonic() < deadline:
        name, make = variants[i % len(variants)]
        i += 1
        try:
            s = connect(target, source=source_of(target, i), timeout=1)
        except OSError:
            counters["connect_failed"] += 1
            continue
        try:
            s.sendall(make())
            end = time.monotonic() + 1
            while time.monotonic() < end:
                if not s.recv(65536):
                    counters["closed_" + name] += 1
                    break
        except socket.timeout:
            counters["open_after_1s_" + name] += 1
        except OSError:
            counters["closed_" + name] += 1
        finally:
            s.close()
    counters["connections"] = i
    return dict(counters)


# ---------------------------------------------------------------------------
# WebSocket attacks (relay, masqd)


def ws_flood(target, seconds, want, max_attempts=5_000, fill_seconds=20):
    """Complete upgrades up to and past the limit and hold them; keep asking
    for one more every 50 ms (each should be refused, 503). Connections the
    server closes (idle timeout) are replaced. A server slow to upgrade
    gets up to `fill_seconds` to reach its limit and refuse 3 upgrades."""
    counters = collections.Counter()
    started = time.monotonic()
    deadline = started + seconds
    fill_deadline = started + max(seconds, fill_seconds)
    held = []
    attempts = 0

    def refusals():
        return sum(v for k, v in counters.items() if k.startswith("answer_") and k != "answer_101")

    while attempts < max_attempts and (time.monotonic() < deadline or (refusals() < 3 and time.monotonic() < fill_deadline)):
        for s in poll_closed(held):
            held.remove(s)
            counters["closed_by_server"] += 1
            s.close()
        attempts += 1
        s, status = ws_open(target, timeout=3)
        counters["answer_" + status] += 1
        if s:
            held.append(s)
            counters["peak_held"] = max(counters["peak_held"], len(held))
        if len(held) >= want or not s:
            time.sleep(0.05)
    counters["attempts"] = attempts
    counters["seconds"] = round(time.monotonic() - started, 1)
    close_all(held)
    return dict(counters)


def _stream_unread(counters, seconds, count, open_one, unit, batch, max_connections, hold_fire=0.0):
    """Keep `count` connections (made by `open_one()`, None when refused)
    writing `unit` over and over as fast as the server takes it, never
    reading. Sockets are non-blocking and a partial write is finished
    before the next one, so the stream stays well formed. Connections the
    server closes are counted and replaced, up to `max_connections`."""
    started = time.monotonic()
    deadline = started + seconds
    chunk = unit * batch
    conns = {}       # socket -> [bytes still to write of the current chunk, bytes written]
    opened = 0
    written_closed = 0
    most_before_close = 0

    def add():
        nonlocal opened
        opened += 1
        s = open_one()
        if s:
            s.setblocking(False)
            conns[s] = [memoryview(chunk), 0]

    while len(conns) < count and opened < max_connections and time.monotonic() < deadline:
        add()
    time.sleep(max(0.0, started + hold_fire - time.monotonic()))
    while time.monotonic() < deadline and conns:
        progressed = False
        for s in list(conns):
            state = conns[s]
            try:
                n = s.send(state[0])
            except (BlockingIOError, InterruptedError):
                continue                     # the server is not reading it now: not a close
            except OSError:
                counters["closed_by_server"] += 1
                written_closed += state[1]
                most_before_close = max(most_before_close, state[1] // len(unit))
                del conns[s]
                s.close()
                if opened < max_connections and time.monotonic() < deadline:
                    add()
                continue
            progressed = True
            state[1] += n
            state[0] = state[0][n:] if n < len(state[0]) else memoryview(chunk)
        if not progressed:
            counters["rounds_all_stalled"] += 1
            select.select([], list(conns), [], 0.05)
    counters["connections"] = opened
    counters["most_units_before_close"] = most_before_close
    counters["still_open_at_end"] = len(conns)
    counters["units_sent"] = (written_closed + sum(st[1] for st in conns.values())) // len(unit)
    close_all(conns)
    return dict(counters)


def ws_never_reader(target, seconds, count=8, mode="text", max_connections=200, batch=2000, hold_fire=0.5, big=60_000):
    """Connections that send small frames which each earn a reply, and never
    read: text frames (relay: ERROR each), JOIN/LEAVE churn (relay:
    PRESENCE, ERROR when rate limited), pings (masqd: an answer each; "big":
    requests of `big` bytes, as fast as the server takes them). The
    server must close them rather than queue replies without bound. They
    connect first and start sending after `hold_fire` seconds, so the
    attacks of the same phase get their connections in before the server
    gets busy. Counts are in units: a frame (a JOIN+LEAVE pair in "churn")."""
    counters = collections.Counter()
    room = os.urandom(16)
    if mode == "text":
        unit = ws_frame(0x1, b"abcdef")
    elif mode == "churn":
        unit = ws_frame(0x2, relay_frame(1, room)) + ws_frame(0x2, relay_frame(2, room))
    elif mode == "ping":
        unit = ws_frame(0x1, b'{"op":"ping"}')
    elif mode == "big":
        unit = ws_frame(0x1, b'{"op":"ping","pad":"' + b"x" * big + b'"}')
    else:
        raise ValueError(mode)

    def open_one():
        s, status = ws_open(target, rcvbuf=4096, timeout=2)
        if not s:
            counters["refused_" + status] += 1
        return s

    return _stream_unread(counters, seconds, count, open_one, unit, batch, max_connections, hold_fire)


def ws_oversized(target, seconds, max_frame, max_count=500):
    """Frames beyond the message limit, as one frame, as a header that
    claims 2^40 bytes, as too many fragments, as fragments summing past the
    limit, as a control frame over 125 bytes: each must close the
    connection."""
    counters = collections.Counter()
    deadline = time.monotonic() + seconds
    big = os.urandom(max_frame + 1)
    variants = {
        "one_frame": lambda: ws_frame(0x2, big),
        "claims_1TiB": lambda: bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 1 << 40) + os.urandom(4) + os.urandom(1000),
        "fragments_past_limit": lambda: ws_frame(0x2, big[:max_frame // 2], fin=False)
        + ws_frame(0x0, big[:max_frame // 2], fin=False) + ws_frame(0x0, big[:1000], fin=True),
        "200_fragments": lambda: ws_frame(0x2, b"x", fin=False) + ws_frame(0x0, b"x", fin=False) * 199,
        "control_over_125": lambda: bytes([0x89, 0x80 | 126]) + struct.pack(">H", 200) + b"\0\0\0\0" + b"p" * 200,
    }
    names = list(variants)
    i = 0
    while i < max_count and time.monotonic() < deadline:
        name = names[i % len(names)]
        i += 1
        s, status = ws_open(target, timeout=3)
        if not s:
            counters["refused_" + status] += 1
            time.sleep(0.05)
            continue
        try:
            s.settimeout(LEGIT_TIMEOUT)
            try:
                s.sendall(variants[name]())
            except OSError:
                pass        # closed while we were still sending: fine
            # A close, not an answer: given as long as a legitimate request
            # (the attacks of the same phase may keep the server busy).
            end = time.monotonic() + LEGIT_TIMEOUT
            closed = False
            while time.monotonic() < end:
                try:
                    if not s.recv(65536):
                        closed = True
                        break
                except socket.timeout:
                    break
                except OSError:
                    closed = True
                    break
            counters[("closed_" if closed else "NOT_closed_") + name] += 1
        finally:
            s.close()
    counters["connections"] = i
    return dict(counters)


def ws_malformed(target, seconds, max_count=2_000, protocol="relay"):
    """Bad frames after a good upgrade: reserved opcodes and bits, unmasked
    client frames, bad close codes, invalid UTF-8, and (relay) malformed
    relay frames, (masqd) malformed JSON. Replies are read. Connections the
    server closes are replaced."""
    counters = collections.Counter()
    deadline = time.monotonic() + seconds
    if protocol == "relay":
        app = [b"", b"\x01", bytes([1, 99]), bytes([1, 3, 40]) + b"short", bytes([1, 1, 0]), bytes([9, 3]), bytes([1, 4, 1, 0]),
               relay_frame(3, b"r" * 16, b"not in the room"), relay_frame(1, b"x" * 65), relay_frame(5, b"x")]
        app = [ws_frame(0x2, a) for a in app]
    else:
        app = ["{not json", "[1, 2]", "{}", '{"op": 5}', '{"op": "teleport"}', '{"op": "get", "id": {"x": 1}}',
               "[" * 10_000 + "]" * 10_000, '{"op": "put", "key": "k", "value": "v"}', '{"id": "' + "i" * 1000 + '", "op": "ping"}',
               '{"op": "register", "app_id": "' + "a" * 100 + '", "name": "x"}', '{"op": "hello", "token": 5}',
               '{"op": "admin", "secret": "wrong"}', '{"op": "' + "\\ud800" + '"}']
        app = [ws_frame(0x1, a.encode()) for a in app]
    wire = [ws_frame(0x3, b"reserved"), ws_frame(0x2, b"rsv", rsv=7), ws_frame(0x2, b"unmasked", mask=False),
            ws_frame(0x8, b"\x03\xe7bad code"), ws_frame(0x1, b"\xff\xfe\xfd"), ws_frame(0x0, b"continuation of nothing"),
            os.urandom(64)]
    s = None
    i = 0
    while i < max_count and time.monotonic() < deadline:
        if s is None:
            s, status = ws_open(target, timeout=3)
            counters["opened"] += 1
            if not s:
                counters["refused_" + status] += 1
                s = None
                time.sleep(0.05)
                continue
            s.settimeout(0.2)
        i += 1
        use_wire = i % 4 == 0
        frame = random.choice(wire) if use_wire else random.choice(app)
        try:
            s.sendall(frame)
            data = s.recv(65536)
            if not data:
                raise ConnectionResetError
            counters["answered"] += 1
        except socket.timeout:
            counters["no_answer_200ms"] += 1
        except OSError:
            counters["closed_by_server"] += 1
            s.close()
            s = None
    if s:
        s.close()
    counters["frames"] = i
    return dict(counters)


def presence_churn(target, seconds, room_hex, count=20, max_frames=200_000):
    """Members that join and leave the legitimate members' room in a loop
    (reading what they get, so they are not closed for not reading)."""
    counters = collections.Counter()
    deadline = time.monotonic() + seconds
    room = bytes.fromhex(room_hex)
    socks = []
    for _ in range(count):
        s, status = ws_open(target, timeout=3)
        if s:
            s.setblocking(False)
            socks.append(s)
        else:
            counters["refused_" + status] += 1
    pair = ws_frame(0x2, relay_frame(1, room)) + ws_frame(0x2, relay_frame(2, room))
    pending = {s: b"" for s in socks}       # the rest of a partly written pair: finished first
    frames = 0
    while time.monotonic() < deadline and frames < max_frames and socks:
        for s in list(socks):
            try:
                data = pending[s] or pair
                n = s.send(data)
                pending[s] = data[n:]
                if not pending[s]:
                    frames += 2
            except BlockingIOError:
                pass
            except OSError:
                counters["closed_by_server"] += 1
                socks.remove(s)
                continue
            try:
                while True:
                    if not s.recv(65536):
                        counters["closed_by_server"] += 1
                        socks.remove(s)
                        break
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                counters["closed_by_server"] += 1
                socks.remove(s)
        time.sleep(0.002)
    counters["frames"] = frames
    counters["members"] = count
    close_all(socks)
    return dict(counters)


# ---------------------------------------------------------------------------
# HTTP attacks (Connectoid service)


def http_flood(target, seconds, want, max_attempts=5_000):
    """Keep-alive connections up to and past --max-connections, each kept
    busy with a request every half second (so the request timeout does not
    free it); past the limit the service closes new connections at once."""
    counters = collections.Counter()
    deadline = time.monotonic() + seconds
    request = b"GET /healthz HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (target["host"].encode(), target["port"])
    held = []
    attempts = 0
    last_ping = time.monotonic()
    while time.monotonic() < deadline:
        if len(held) < want + 5 and attempts < max_attempts:
            attempts += 1
            try:
                s = connect(target, timeout=2)
                s.sendall(request)
                head = read_head(s)
                if head.startswith(b"HTTP/1.1 200"):
                    read_body_rest(s, head)
                    held.append(s)
                    counters["served"] += 1
                else:
                    counters["refused_" + status_of(head)] += 1
                    s.close()
                    time.sleep(0.02)
            except OSError:
                counters["refused_reset"] += 1
                time.sleep(0.02)
        else:
            time.sleep(0.05)
            if attempts < max_attempts:
                # One more past the limit, now and then.
                attempts += 1
                try:
                    s = connect(target, timeout=2)
                    s.sendall(request)
                    head = read_head(s)
                    counters[("served_past_limit" if head.startswith(b"HTTP/1.1 200") else "refused_" + status_of(head))] += 1
                    s.close()
                except OSError:
                    counters["refused_reset"] += 1
        counters["peak_held"] = max(counters["peak_held"], len(held))
        if time.monotonic() - last_ping > 0.5:
            last_ping = time.monotonic()
            for s in list(held):
                try:
                    s.settimeout(LEGIT_TIMEOUT)
                    s.sendall(request)
                    head = read_head(s)
                    if not head:
                        raise ConnectionResetError
                    read_body_rest(s, head)
                except socket.timeout:
                    counters["no_answer_in_%ds" % LEGIT_TIMEOUT] += 1
                    held.remove(s)
                    s.close()
                except OSError:
                    counters["closed_by_server"] += 1
                    held.remove(s)
                    s.close()
    counters["attempts"] = attempts
    close_all(held)
    return dict(counters)


def http_never_reader(target, seconds, count=4, batch=500, max_connections=100):
    """Pipelined requests (GET of the published limits, ~400 bytes each
    answer) sent as fast as the server takes them, answers never read: the
    server must stop reading or close, not queue answers without bound.
    Counts are in requests."""
    counters = collections.Counter()
    unit = b"GET / HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (target["host"].encode(), target["port"])

    def open_one():
        try:
            return connect(target, rcvbuf=4096, timeout=2)
        except OSError:
            counters["refused"] += 1
            return None

    return _stream_unread(counters, seconds, count, open_one, unit, batch, max_connections)


def read_body_rest(sock, head):
    """Read the rest of a response body after its head (Content-Length)."""
    top, _, body = head.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", top)
    need = int(m.group(1)) if m else 0
    while len(body) < need:
        chunk = sock.recv(need - len(body))
        if not chunk:
            break
        body += chunk
    return body


def http_bad_requests(target, seconds, max_message, only=None, skip=(), answer_timeout=3.0, max_count=50_000):
    """Bodies past the limit (declared, chunked), malformed JSON, bad keys
    and actions, sends to many random mailboxes, huge headers: each must be
    answered with an error (or the connection closed), never held. `only`
    and `skip` select variants by name."""
    counters = collections.Counter()
    deadline = time.monotonic() + seconds
    host = b"Host: %s:%d\r\n" % (target["host"].encode(), target["port"])

    def post(body, extra=b""):
        return b"POST / HTTP/1.1\r\n" + host + extra + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    def b64(data):
        import base64
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    variants = [
        ("declared_1GiB", lambda: b"POST / HTTP/1.1\r\n" + host + b"Content-Length: 1073741824\r\n\r\n" + b"{" * 1000),
        ("body_past_limit", lambda: post(b'{"data": "' + b"A" * (max_message * 2) + b'"}')),
        ("chunked_past_limit", lambda: b"POST / HTTP/1.1\r\n" + host + b"Transfer-Encoding: chunked\r\n\r\n"
         + b"".join(b"%x\r\n%s\r\n" % (4096, b"B" * 4096) for _ in range(max_message // 4096 + 4)) + b"0\r\n\r\n"),
        ("not_json", lambda: post(b"{not json" + os.urandom(50))),
        ("deep_json", lambda: post(b"[" * 5000 + b"]" * 5000)),
        ("bad_key", lambda: post(b'{"pub": "' + b64(b"\x02" + os.urandom(48)) + b'", "ext": "", "action": "check", "at": 0}')),
        ("unknown_action", lambda: post(b'{"pub": "AAAA", "ext": "", "action": "fly"}')),
        ("send_random_mailbox", lambda: post(b'{"pub": "' + b64(b"\x02" + os.urandom(48)) + b'", "ext": "", "action": "send", "data": "'
                                             + b64(os.urandom(256)) + b'"}')),
        ("receive_no_challenge", lambda: post(b'{"pub": "AAAA", "ext": "", "action": "receive", "answer": "AAAA", "at": 0}')),
        ("huge_header", lambda: b"GET / HTTP/1.1\r\n" + host + b"X-Big: " + b"h" * 200_000 + b"\r\n\r\n"),
        ("bad_method", lambda: b"BREW / HTTP/1.1\r\n" + host + b"\r\n"),
    ]
    variants = [(n, v) for n, v in variants if (only is None or n in only) and n not in skip]
    s = None
    i = 0
    while i < max_count and time.monotonic() < deadline:
        name, make = variants[i % len(variants)]
        i += 1
        try:
            if s is None:
                s = connect(target, timeout=answer_timeout)
                counters["connections"] += 1
            s.sendall(make())
            head = read_head(s)
            if not head:
                raise ConnectionResetError
            read_body_rest(s, head)
            counters[name + "_" + status_of(head)] += 1
            if b"connection: close" in head.lower():
                s.close()
                s = None
        except socket.timeout:
            counters[name + "_NO_ANSWER"] += 1
            s.close()
            s = None
        except OSError:
            counters[name + "_closed"] += 1
            if s:
                s.close()
            s = None
    if s:
        s.close()
    counters["requests"] = i
    return dict(counters)


# ---------------------------------------------------------------------------
# Mesh attacks


MESH_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mesh")


def mesh_peer_class():
    """A Noise XX peer (Tests/mesh/noise_client.py) that leaves from a
    chosen loopback address and signs a record naming it; `client=True`
    makes it a device's transport (a client link) rather than a node."""
    import sys
    if MESH_TESTS not in sys.path:
        sys.path.insert(0, MESH_TESTS)
    import base64
    import hashlib
    import noise_client
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    class MeshPeer(noise_client.Peer):
        def __init__(self, host, port, source, client=True, network="masq", timeout=5):
            # noise_client.Peer leaves from `source` and signs its link record naming it.
            super().__init__(host, port, network=network, source=source, client=client, timeout=timeout)

        def ping(self, timeout):
            """PING, then read the node's messages until its PONG."""
            self.frame(b"\x04")
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no PONG")
                self.sock.settimeout(left)
                frames, _ = self.read_message()
                if any(f[:1] == b"\x05" for f in frames):
                    return
                if any(f[:1] == b"\x06" for f in frames):
                    raise ConnectionError("BYE from the node")

    return MeshPeer


def mesh_handshaked_garbage(target, seconds, max_count=300):
    """Complete the Noise handshake (a real peer), then send garbage: a
    message that does not decrypt, unknown frame types, malformed cells,
    gossip that is not JSON. The node must penalize, ban (the address) and
    close. Each connection leaves from the next attacker address."""
    MeshPeer = mesh_peer_class()
    counters = collections.Counter()
    deadline = time.monotonic() + seconds
    i = 0
    while i < max_count and time.monotonic() < deadline:
        i += 1
        try:
            peer = MeshPeer(target["host"], target["port"], source_of(target, i) or HOST, client=False, timeout=2)
        except OSError:
            counters["connect_failed"] += 1
            continue
        try:
            peer.handshake()
            counters["handshakes"] += 1
            # Enough to pass the ban threshold (30 points) whatever the draw:
            # the lightest, a cell of the wrong size, costs 5.
            sequence = [random.randrange(4) for _ in range(8)]
            for choice in sequence:
                if choice == 0:
                    peer.send_raw(os.urandom(200))
                elif choice == 1:
                    peer.frame(b"\x63" + os.urandom(30))
                elif choice == 2:
                    peer.frame(b"\x03" + struct.pack(">IB", 1, 2) + b"\x00" * 10)
                else:
                    peer.frame(b"\x01not json")
            if closed_within(peer.sock, 2):
                counters["closed_by_node"] += 1
            else:
                counters["NOT_closed_within_2s_after_%s_from_%s" % ("".join(map(str, sequence)), peer.source)] += 1
        except (OSError, ConnectionError, ValueError):
            counters["refused_or_closed"] += 1   # a banned address is refused at once
        finally:
            peer.sock.close()
    counters["attempts"] = i
    return dict(counters)


def mesh_gossip_flood(target, seconds, per_frame=80, max_records=1_000_000):
    """Complete the handshake, then gossip records that are all valid:
    fresh Ed25519 keys, well signed, each naming an address of its own. A
    node that keeps every record it hears grows with the attacker's signing
    rate times --record-ttl-ms."""
    import base64
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    def raw(key):
        return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    MeshPeer = mesh_peer_class()
    counters = collections.Counter()
    deadline = time.monotonic() + seconds
    agreement = b64(raw(X25519PrivateKey.generate()))
    sent = 0
    peer = None
    i = 0
    while time.monotonic() < deadline and sent < max_records:
        if peer is None:
            i += 1
            try:
                peer = MeshPeer(target["host"], target["port"], source_of(target, i) or HOST, client=False, timeout=2)
                peer.handshake()
                counters["handshakes"] += 1
                stop = threading.Event()

                def drain(p=peer, stop=stop):
                    # Read what the node sends (gossip, pings) so its queue toward us stays empty.
                    try:
                        p.sock.settimeout(None)
                        while not stop.is_set():
                            frames, _ = p.read_message()
                            if any(f[:1] == b"\x06" for f in frames):
                                counters["bye"] += 1
                    except Exception:
                        pass
                threading.Thread(target=drain, daemon=True).start()
            except (OSError, ConnectionError, ValueError):
                counters["refused"] += 1
                peer = None
                time.sleep(0.05)
                continue
        batch = []
        for k in range(per_frame):
            n = sent + k
            identity = Ed25519PrivateKey.generate()
            record = {"network": "masq", "key": b64(raw(identity)), "agreement": agreement,
                      "host": "10.%d.%d.%d" % (n >> 16 & 255, n >> 8 & 255, n & 255), "port": 7000, "version": int(time.time() * 1000),
                      "neighbours": [], "rates": {"routingByte": 1, "routingPacket": 1, "exitByte": 1, "exitPacket": 1}, "exit": True}
            body = json.dumps(record, separators=(",", ":")).encode()
            batch.append({"r": b64(body), "s": b64(identity.sign(b"masq node record v1" + body))})
        try:
            peer.frame(b"\x01" + json.dumps(batch).encode())
            sent += per_frame
        except OSError:
            counters["closed_by_node"] += 1
            stop.set()
            peer.sock.close()
            peer = None
    if peer:
        stop.set()
        peer.sock.close()
    counters["records_sent"] = sent
    return dict(counters)
