"""A relay fleet with real processes: HAProxy running deploy/haproxy.cfg
(addresses rewritten to loopback) in front of three `masq relay` instances,
and 30 pairs of devices (60 stores, `masq` CLI) paired through HAProxy and
syncing with long-running `masq sync` processes. HAProxy routes each
group's devices to one relay by a consistent hash of the URL path
/r/<room hex>. Mid-sync the relay holding the most groups is killed
(SIGKILL): HAProxy marks it down, its groups re-home together on the next
relay of the ring, and every pair converges to every write, the ones made
before the kill and the ones made after it, with nothing lost (sync resumes
from acknowledgements). Then a surviving relay is stopped with SIGTERM
(drain): its members are told "going away", reconnect elsewhere, and the
pairs converge again.

What is realistic on 2 cores in about 3 minutes (it takes 30-45 s here):
60 `masq sync` processes of the debug build; 200 keys per store before the
kill; single puts on every store from one second before the kill to two
seconds after it (so sync traffic is in flight when the relay dies); 10
keys per store after it. A pair converges when both stores hold the same
keys with the same values (every key written on either side).

MASQ_BIN: the masq binary; MASQ_PLUGIN_PATH: where its plugins are;
HAPROXY: the haproxy binary (default: from PATH or /usr/sbin)."""
import concurrent.futures
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MASQ = os.environ.get("MASQ_BIN", "masq")
PAIRS = int(os.environ.get("FLEET_PAIRS", "30"))
KEYS_BEFORE = int(os.environ.get("FLEET_KEYS", "200"))
KEYS_AFTER = 10
HAPROXY = os.environ.get("HAPROXY") or shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def haproxy_config(relays, port, stats):
    """deploy/haproxy.cfg as shipped, its relay part only, with loopback
    addresses and a stats socket of the test's own (no log, no user switch)."""
    text = (ROOT / "deploy" / "haproxy.cfg").read_text()
    text = text.split("# ---- Connectoid services")[0]
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if re.match(r"(log /dev/log|user |group |stats socket)", stripped):
            continue
        if stripped.startswith("server relay"):
            continue
        if stripped == "maxconn 200000":
            line = "    maxconn 4000"   # what this machine's descriptor limit allows
        if stripped == "bind :7070":
            line = f"    bind 127.0.0.1:{port}"
        out.append(line)
        if stripped.startswith("global"):
            out.append(f"    stats socket {stats} mode 600 level admin")
    cfg = "\n".join(out) + "\n"
    assert "balance uri" in cfg and "hash-type consistent" in cfg and "/healthz" in cfg
    cfg += "".join(f"    server relay{i + 1} 127.0.0.1:{p}\n" for i, p in enumerate(relays))
    return cfg


class Fleet:
    def __init__(self, work):
        self.work = work
        self.relays = {}     # name -> (process, port)
        for i in range(3):
            self.start_relay(f"relay{i + 1}")
        self.port = free_port()
        self.stats = str(work / "haproxy.sock")
        cfg = work / "haproxy.cfg"
        cfg.write_text(haproxy_config([p for _, p in self.relays.values()], self.port, self.stats))
        check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.haproxy = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=open(work / "haproxy.log", "w"), stderr=subprocess.STDOUT)
        self.url = f"ws://127.0.0.1:{self.port}/"
        wait_for(20, "HAProxy to see three relays up", lambda: sorted(self.up()) == ["relay1", "relay2", "relay3"])

    def start_relay(self, name):
        log = open(self.work / f"{name}.log", "w")
        proc = subprocess.Popen([MASQ, "relay", "--port", "0", "--log-level", "warning", "--threads", "1"],
                                stdout=subprocess.PIPE, stderr=log, text=True)
        port = int(re.search(r":(\d+)/", proc.stdout.readline()).group(1))
        self.relays[name] = (proc, port)

    def admin(self, command):
        if not os.path.exists(self.stats):
            assert self.haproxy.poll() is None, "haproxy exited: " + (self.work / "haproxy.log").read_text()
            return ""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.stats)
            s.sendall(command.encode() + b"\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return data.decode()

    def up(self):
        lines = self.admin("show stat").splitlines()
        if not lines:
            return []
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
        return [r["svname"] for r in rows if r["pxname"] == "relays" and r["status"].startswith("UP") and r["svname"].startswith("relay")]

    def groups(self):
        """Rooms with a live connection, per relay (HAProxy's stick table)."""
        placed = {}
        for line in self.admin("show table relays").splitlines():
            m = re.search(r"key=(/r/[0-9a-f]+) use=(\d+) .*server_key=(\S+)", line)
            # (server_key "-": tracked by a connection still being set up, not stored yet)
            if m and int(m.group(2)) > 0 and m.group(3) != "-":
                placed[m.group(1)] = m.group(3)
        return placed

    def stop(self):
        for proc, _ in self.relays.values():
            if proc.poll() is None:
                proc.kill()
        self.haproxy.terminate()
        for proc in [p for p, _ in self.relays.values()] + [self.haproxy]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_for(seconds, what, check, every=0.2):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def masq(*args, stdin=None, timeout=60):
    out = subprocess.run([MASQ, *args], input=stdin, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"masq {' '.join(args)}: {out.stderr}"
    return out.stdout


@pytest.fixture
def work():
    path = Path(tempfile.mkdtemp(prefix="masq-fleet-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fleet(work):
    if not HAPROXY:
        if os.environ.get("CI"):
            pytest.fail("haproxy is not installed (.ci/setup installs Debian's haproxy)")
        pytest.skip("haproxy is not installed: apt-get install haproxy")
    f = Fleet(work)
    yield f
    f.stop()


def test_thirty_pairs_converge_when_a_relay_dies_mid_sync(fleet, work):
    started = time.time()
    stores = [work / f"{p}{i}" for i in range(PAIRS) for p in "ab"]
    pool = concurrent.futures.ThreadPoolExecutor(4)

    def init(store):
        masq("init", "--config", f"{store}.json", "--data-dir", str(store), "--name", store.name)
    list(pool.map(init, stores))

    def pair(i):
        a, b = work / f"a{i}", work / f"b{i}"
        with open(work / f"pair{i}.out", "w") as out:
            offer = subprocess.Popen([MASQ, "pair", "--config", f"{a}.json", "--relay", fleet.url, "--no-qr"],
                                     stdout=out, stderr=subprocess.STDOUT, text=True)
            link = None
            deadline = time.time() + 20
            while time.time() < deadline and not link:
                m = re.search(r"^(masq://\S+)", (work / f"pair{i}.out").read_text(), re.M)
                link = m and m.group(1)
                time.sleep(0.05)
            assert link, f"pair {i}: no link: {(work / f'pair{i}.out').read_text()}"
            masq("join", "--config", f"{b}.json", link)
            assert offer.wait(30) == 0, f"pair {i}: masq pair failed: {(work / f'pair{i}.out').read_text()}"
    list(pool.map(pair, range(PAIRS)))
    paired = time.time()

    # Writes before syncing: each store its own keys.
    def write(store, first, count):
        lines = "".join(f"{store.name}-{k:04d}\tv{k}-{store.name}\n" for k in range(first, first + count))
        masq("import", "--config", f"{store}.json", "fleet", stdin=lines)
    list(pool.map(lambda s: write(s, 0, KEYS_BEFORE), stores))

    syncs = {}
    for store in stores:
        syncs[store] = subprocess.Popen([MASQ, "sync", "--config", f"{store}.json", "--quiet"],
                                        stdout=subprocess.DEVNULL, stderr=open(f"{store}.sync.log", "w"))
    try:
        # Mid-sync: once every group has met, kill the relay holding the most.
        wait_for(60, "all 30 groups to be connected", lambda: len(fleet.groups()) == PAIRS, every=0.25)
        placed = fleet.groups()
        per_relay = {}
        for room, relay in placed.items():
            per_relay.setdefault(relay, []).append(room)
        assert len(per_relay) >= 2, f"the hash should spread 30 groups over the relays: {per_relay}"
        victim = max(per_relay, key=lambda r: len(per_relay[r]))
        moved = set(per_relay[victim])
        converged = count_converged(stores, 2 * KEYS_BEFORE)
        # Writes keep flowing across the kill: sync is under way when the relay dies.
        live = {store: 0 for store in stores}
        stop_writing = threading.Event()

        def writer(part):
            n = 0
            while not stop_writing.is_set():
                store = part[n % len(part)]
                masq("put", "--config", f"{store}.json", "fleet", f"{store.name}-live-{live[store]:04d}", "live")
                live[store] += 1
                n += 1
        writers = [threading.Thread(target=writer, args=(stores[i::2],)) for i in range(2)]
        for t in writers:
            t.start()
        time.sleep(1)
        fleet.relays[victim][0].kill()
        killed = time.time()
        time.sleep(2)
        stop_writing.set()
        for t in writers:
            t.join()
        print(f"\nkilled {victim} holding {len(moved)} of {PAIRS} groups ({converged} of {PAIRS} pairs converged at that moment); "
              f"placement {sorted((r, len(v)) for r, v in per_relay.items())}")

        # Writes after the kill, while groups re-home.
        list(pool.map(lambda s: write(s, KEYS_BEFORE, KEYS_AFTER), stores))
        wait_for(20, f"HAProxy to mark {victim} down", lambda: victim not in fleet.up())
        expected = [2 * (KEYS_BEFORE + KEYS_AFTER) + live[stores[i]] + live[stores[i + 1]] for i in range(0, len(stores), 2)]
        print(f"{sum(live.values())} live writes across the kill")
        wait_for(150, "every pair to converge", lambda: count_converged(stores, expected) == PAIRS, every=1)
        rehomed = time.time()
        after = fleet.groups()
        assert moved <= set(after), f"groups of {victim} missing after the kill: {moved - set(after)}"
        assert all(after[room] != victim for room in moved)
        for room, relay in placed.items():
            if room not in moved:
                assert after.get(room) == relay, f"group {room} on a surviving relay moved ({relay} -> {after.get(room)})"
        assert_identical(stores, expected)
        assert all(p.poll() is None for p in syncs.values()), "a sync process died"

        # A graceful stop: SIGTERM drains a surviving relay; its groups re-home too.
        survivors = [r for r in fleet.relays if r != victim]
        drained = max(survivors, key=lambda r: sum(1 for v in after.values() if v == r))
        proc = fleet.relays[drained][0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, f"{drained} did not exit 0 after SIGTERM"
        list(pool.map(lambda s: write(s, KEYS_BEFORE + KEYS_AFTER, 1), stores))
        wait_for(120, "every pair to converge after the drain", lambda: count_converged(stores, [e + 2 for e in expected]) == PAIRS, every=1)
        last = fleet.groups()
        assert len(last) == PAIRS and set(last.values()) == {r for r in fleet.relays if r not in (victim, drained)}
        print(f"timings: init+pair {paired - started:.1f} s, kill -> all converged {rehomed - killed:.1f} s, "
              f"drain -> all converged {time.time() - rehomed:.1f} s, total {time.time() - started:.1f} s")
    finally:
        for p in syncs.values():
            p.terminate()
        for p in syncs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        pool.shutdown()


def keys(store):
    return subprocess.run([MASQ, "ls", "--config", f"{store}.json", "fleet"], capture_output=True, text=True).stdout.split()


def count_converged(stores, expected):
    """Pairs whose two stores both hold the expected number of keys (one
    number for every pair, or a list with one per pair)."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(lambda s: len(keys(s)), stores))
    if isinstance(expected, int):
        expected = [expected] * (len(stores) // 2)
    return sum(1 for i in range(0, len(stores), 2) if counts[i] == counts[i + 1] == expected[i // 2])


def assert_identical(stores, expected):
    """Every pair holds the same keys with the same values."""
    for i in range(0, len(stores), 2):
        a, b = stores[i], stores[i + 1]
        la = masq("ls", "--config", f"{a}.json", "fleet", "-v")
        lb = masq("ls", "--config", f"{b}.json", "fleet", "-v")
        assert la == lb, f"pair {a.name}/{b.name} differs"
        assert len(la.splitlines()) == expected[i // 2]
