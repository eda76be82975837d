"""Shared code of the fault suite (issue 21, point 7): real `masq` processes on
127.0.0.1 — relays, `masq sync`, `masq put`, masqd — hit by the faults of a
real machine (kill -9, a relay restart, SIGSTOP, a clock ten minutes ahead,
flipped bytes, a store restored from a copy, concurrent writers, a daemon
restart, a full disk). Each test asserts on outcomes (convergence, no
acknowledged write lost, errors surfaced) and prints one line of counts.

Run (CI's short version; bench/faults/run.sh is the long one):
  MASQ_BIN=.build/debug/masq-cli MASQD=.build/debug/masqd MASQ_PLUGIN_PATH=.build/debug \
      python3 -m pytest -q -p no:cacheprovider Tests/faults
(needs pytest, websockets and bindings/python installed, a C compiler for
wallclock.c, and root for the full-disk tmpfs — skipped otherwise.)

Environment:
  MASQ_BIN          the masq CLI (default .build/debug/masq-cli)
  MASQD             masqd (default .build/debug/masqd)
  MASQ_PLUGIN_PATH  the plugins (default: MASQ_BIN's directory)
  FAULT_TRIALS      trials per scenario (default 1: the directory in about a
                    minute and a half; the slowest scenarios run a share of
                    it, at least one); bench/faults/run.sh runs 10
  FAULT_WINDOW      seconds over which the cost of refusals is measured in
                    the clock scenario (default 5; run.sh: 10)
  FAULT_SEED        seed of the random choices (default: from the time; the
                    seed is printed with every summary line, so a failing run
                    can be repeated)
  FAULT_REPORT      a file each summary line is appended to (run.sh)

Every loop is bounded in count and in time; every process a test starts is
stopped at its end (a SIGSTOPped one is continued first).
"""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MASQ_BIN", os.path.join(ROOT, ".build", "debug", "masq-cli"))
os.environ.setdefault("MASQD", os.path.join(os.path.dirname(os.environ["MASQ_BIN"]), "masqd"))
os.environ.setdefault("MASQ_PLUGIN_PATH", os.path.dirname(os.environ["MASQ_BIN"]))
sys.path.insert(0, os.path.join(ROOT, "Tests", "adversary"))

from support import MASQ, Device, Processes, masq, pair, wait_for  # noqa: E402,F401

MASQD = os.environ["MASQD"]
TRIALS = max(1, int(os.environ.get("FAULT_TRIALS", "1")))
SEED = int(os.environ.get("FAULT_SEED", str(int(time.time() * 1000) % 1_000_000_007)))
SUMMARIES = []          # summary lines, printed again by conftest.py at the end of the run


def trials(share=1.0):
    """Trials for a scenario: FAULT_TRIALS, or a share of it for the slow ones (at least 1)."""
    return max(1, round(TRIALS * share))


def rng(name):
    """A random generator per test, from FAULT_SEED and the test's name."""
    return random.Random(f"{SEED}:{name}")


def report(test, **counts):
    """Print (and keep) the summary line of one test: `faults <test>: k v, ...`."""
    line = f"faults {test}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()) + f" (seed {SEED})"
    SUMMARIES.append(line)
    print(line, flush=True)
    path = os.environ.get("FAULT_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
    return line


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU time of a process so far (from /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------
# Processes


class Lab:
    """The processes, relays and mounts of one test; `close` ends them all."""

    def __init__(self, workdir):
        self.workdir = str(workdir)
        self.procs = Processes(self.workdir)
        self.services = []      # Service objects (stopped first: they may be suspended)
        self.mounts = []

    def device(self, name):
        return Device(self.workdir, name)

    def close(self):
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception:
                pass
        self.procs.stop_all()
        for path in reversed(self.mounts):
            subprocess.run(["umount", "-l", path], capture_output=True)


_WALLCLOCK = None


def wallclock_library():
    """Build wallclock.so (wallclock.c: the wall clock of a program off by an
    offset, its monotonic clock and timers untouched) once per run with the
    system's C compiler; returns its path, or raises pytest's skip."""
    global _WALLCLOCK
    if _WALLCLOCK is None:
        import hashlib
        import tempfile
        source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wallclock.c")
        digest = hashlib.sha256(open(source, "rb").read()).hexdigest()[:16]
        out = os.path.join(tempfile.gettempdir(), f"masq-faults-wallclock-{digest}.so")
        if not os.path.exists(out):
            cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
            if not cc:
                import pytest
                pytest.skip("needs a C compiler (cc) to build Tests/faults/wallclock.c, the wall-clock shim")
            tmp = f"{out}.{os.getpid()}"
            r = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", tmp, source, "-ldl"], capture_output=True, text=True)
            assert r.returncode == 0, f"building wallclock.so failed: {r.stderr}"
            os.replace(tmp, out)
        _WALLCLOCK = out
    return _WALLCLOCK


def clock_env(offset=None, file=None):
    """Environment running a program with its wall clock `offset` seconds ahead
    (or the offset read from `file`, changeable while it runs)."""
    env = {"LD_PRELOAD": wallclock_library()}
    if file:
        env["MASQ_FAULT_CLOCK_FILE"] = file
    else:
        env["MASQ_FAULT_CLOCK_OFFSET"] = str(offset)
    return env


class Service:
    """A long-running masq process (sync, relay) that can be killed, suspended
    and started again. `env` adds to its environment (e.g. clock_env(600):
    its wall clock ten minutes ahead)."""

    def __init__(self, lab, argv, log, env=None):
        self.lab, self.argv, self.log, self.env = lab, argv, log, env
        self.proc = None
        self.starts = 0
        lab.services.append(self)

    @property
    def pid(self):
        return self.proc.pid

    def start(self):
        assert not self.running(), f"{self.log}: already running"
        self.proc = self.lab.procs.start(self.argv, self.log, env=self.env)
        self.starts += 1
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.running():
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def kill(self):
        """kill -9, and wait until it is gone."""
        self.signal(signal.SIGKILL)
        self._reap(10)

    def stop(self):
        """SIGTERM (after SIGCONT, in case it is suspended); SIGKILL after 10 s."""
        if not self.running():
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        if not self._reap(10):
            self.signal(signal.SIGKILL)
            self._reap(10)

    def suspend(self):
        self.signal(signal.SIGSTOP)

    def resume(self):
        self.signal(signal.SIGCONT)

    def _reap(self, seconds):
        try:
            self.proc.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    def log_text(self):
        try:
            return open(os.path.join(self.lab.workdir, self.log), errors="replace").read()
        except OSError:
            return ""


def sync_service(lab, device, env=None):
    return Service(lab, [MASQ, "sync", "--config", device.config, "--quiet"], f"sync-{device.name}.log", env)


class Relay(Service):
    """A `masq relay` on a fixed port of 127.0.0.1, so that it can be restarted
    at the same address the devices have in their config."""

    def __init__(self, lab, *extra):
        self.port = free_port()
        super().__init__(lab, [MASQ, "relay", "--port", str(self.port), *extra], f"relay-{self.port}.out")
        self.url = f"ws://127.0.0.1:{self.port}/"

    def start(self):
        # The port was free a moment ago (or held by the relay just killed):
        # retry a few times if binding fails.
        for attempt in range(20):
            before = self.log_text().count("ws://")
            super().start()
            try:
                wait_for(10, "the relay listening", lambda: self.log_text().count("ws://") > before or not self.running())
            except AssertionError:
                raise AssertionError(f"the relay did not start: {self.log_text()[-500:]}")
            if self.running():
                return self
            time.sleep(0.25)
        raise AssertionError(f"the relay could not listen on port {self.port}: {self.log_text()[-500:]}")


def paired_devices(lab, relay, names=("a", "b")):
    devices = [lab.device(n) for n in names]
    for other in devices[1:]:
        pair(lab.procs, devices[0], other, relay.url)
    return devices


# ---------------------------------------------------------------------------
# Data


def contents(device, ns, env=None):
    """{key: value} of a namespace (`ls --values`); None when the listing fails."""
    r = masq("ls", "--config", device.config, ns, "--values", check=False, env=env, timeout=120)
    if r.returncode != 0:
        return None
    return dict(line.partition("\t")[::2] for line in r.stdout.splitlines())


def import_keys(device, ns, items, prefix=()):
    """`masq import` of {key: value}; returns the CompletedProcess (exit 0 = acknowledged)."""
    data = "".join(f"{k}\t{v}\n" for k, v in items.items())
    return subprocess.run([*prefix, MASQ, "import", "--config", device.config, ns], input=data, text=True,
                          capture_output=True, timeout=120)


class Writer:
    """A thread running `masq put` one after another (unique keys): a write is
    acknowledged when its process exited 0. Bounded by `limit` puts and
    `seconds`; `stop()` ends it early."""

    def __init__(self, device, ns, prefix, limit=10_000, seconds=60.0, pause=0.0, cmd_prefix=(), tag=""):
        self.device, self.ns, self.prefix = device, ns, prefix
        self.limit, self.seconds, self.pause, self.cmd_prefix = limit, seconds, pause, cmd_prefix
        self.tag = tag
        self.acked = {}
        self.failures = []      # stderr of failed puts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        deadline = time.monotonic() + self.seconds
        for i in range(self.limit):
            if self._stop.is_set() or time.monotonic() > deadline:
                break
            key = f"{self.prefix}{i:06d}"
            value = f"{self.tag or self.device.name}-{key}"
            try:
                r = subprocess.run([*self.cmd_prefix, MASQ, "put", "--config", self.device.config, self.ns, key, value],
                                   capture_output=True, text=True, timeout=90)
                if r.returncode == 0:
                    self.acked[key] = value
                else:
                    self.failures.append((r.stderr or r.stdout).strip())
            except subprocess.TimeoutExpired:
                self.failures.append("masq put did not finish in 90 s")
            if self.pause:
                self._stop.wait(self.pause)

    def join(self, seconds=120):
        """Let it finish its `limit` (or `seconds`), then end it."""
        self._thread.join(timeout=seconds)
        return self.stop()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "a writer thread did not end"
        return self


class Outcome:
    def __init__(self, converged, seconds, lost, detail):
        self.converged, self.seconds, self.lost, self.detail = converged, seconds, lost, detail

    def __bool__(self):
        return self.converged and self.lost == 0


def lost_writes(devices, ns, expected, views=None):
    """Acknowledged writes (key -> value) not held with that value by every device."""
    views = views or [contents(d, ns) or {} for d in devices]
    missing = []
    for key, value in expected.items():
        for d, view in zip(devices, views):
            if view.get(key) != value:
                missing.append(f"{d.name}:{key}={view.get(key)!r} (expected {value!r})")
                break
    return missing


def await_convergence(devices, ns, expected, seconds=60.0, interval=0.3):
    """Wait (bounded) until every device lists the same namespace and holds
    every acknowledged write of `expected`. Returns an Outcome with the writes
    still lost at the end."""
    start = time.monotonic()
    deadline = start + seconds
    views = []
    while True:
        views = [contents(d, ns) for d in devices]
        if all(v is not None for v in views) and all(v == views[0] for v in views[1:]) \
                and not lost_writes(devices, ns, expected, views):
            return Outcome(True, time.monotonic() - start, 0, "")
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    views = [v or {} for v in views]
    lost = lost_writes(devices, ns, expected, views)
    differ = []
    if len(views) > 1:
        keys = set().union(*views)
        differ = sorted(k for k in keys if len({v.get(k) for v in views}) > 1)
    detail = (f"after {seconds:.0f} s: " + ", ".join(f"{d.name} holds {len(v)} keys" for d, v in zip(devices, views))
              + f"; {len(lost)} acknowledged write(s) lost, e.g. {lost[:3]}; {len(differ)} key(s) differ, e.g. {differ[:3]}")
    return Outcome(False, time.monotonic() - start, len(lost), detail)


def status(device, env=None):
    return masq("status", "--config", device.config, check=False, env=env).stdout


def problems(device, env=None):
    """The problem lines of `masq status` (indented under the devices)."""
    return [line.strip() for line in status(device, env).splitlines() if line.startswith("  ")]


def _read_store(device, query):
    """Run `query(db)` on the store's SQLite file, read-only (a WAL reader
    blocks no writer): for watching progress without starting a process."""
    import sqlite3
    db = sqlite3.connect(f"file:{os.path.join(device.data, 'masq.db')}?mode=ro", uri=True, timeout=30)
    try:
        return query(db)
    finally:
        db.close()


def replica_id(device):
    """This store's replica id (docs/STORAGE-FORMAT.md: 'M' "replica")."""
    row = _read_store(device, lambda db: db.execute("SELECT value FROM kv WHERE k = ?", (b"Mreplica",)).fetchone())
    return row[0].hex() if row else None


def count_records(device, ns, prefix):
    """How many records of namespace `ns` start with `prefix`, read from the
    file ('N' name -> varint id; records under 'R' varint(id) key)."""
    def query(db):
        row = db.execute("SELECT value FROM kv WHERE k = ?", (b"N" + ns.encode(),)).fetchone()
        if not row:
            return 0
        low = b"R" + bytes(row[0]) + prefix.encode()
        return db.execute("SELECT count(*) FROM kv WHERE k >= ? AND k < ?", (low, low + b"\xff")).fetchone()[0]
    return _read_store(device, query)


# ---------------------------------------------------------------------------
# masqd


class Daemon:
    """masqd on a fixed port of 127.0.0.1 with a home of its own, restartable
    (by SIGTERM or kill -9) at the same address."""

    def __init__(self, home):
        self.home = str(home)
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/"
        self.proc = None
        self.log = open(os.path.join(os.path.dirname(self.home), "masqd.log"), "ab")

    def start(self):
        for attempt in range(20):
            self.proc = subprocess.Popen([MASQD, "--home", self.home, "--listen", f"127.0.0.1:{self.port}"],
                                         stdout=subprocess.PIPE, stderr=self.log, text=True)
            line = self.proc.stdout.readline()
            if re.search(r"http://[^ ]+:(\d+)/", line):
                threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
                return self
            self.proc.wait(10)
            time.sleep(0.25)
        raise AssertionError(f"masqd did not start on port {self.port}")

    @staticmethod
    def _drain(proc):
        for _ in proc.stdout:
            pass

    def secret(self):
        return json.load(open(os.path.join(self.home, "masqd.json")))["admin_secret"]

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# ---------------------------------------------------------------------------
# Files


def flip(path, offsets, rnd, width=1):
    """XOR `width` bytes at each offset of a file with random non-zero bytes."""
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        for o in offsets:
            for j in range(width):
                if o + j < len(data):
                    data[o + j] ^= rnd.randrange(1, 256)
        f.seek(0)
        f.write(data)


def copy_tree(src, dst):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


def mount_tmpfs(lab, path, size):
    """Mount a small tmpfs at path; returns None if this machine does not allow it (with the reason)."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True, text=True)
    if r.returncode != 0:
        return (r.stderr or r.stdout).strip() or f"mount exited {r.returncode}"
    lab.mounts.append(path)
    return None
