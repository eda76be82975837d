"""Blob sync benchmark (issue 15.5), driven by bench/blobs/run.sh.

BLOB_TOTAL_MB of BLOB_FILE_MB files (random bytes, so nothing deduplicates)
go from device A to device B through a `masq relay` on 127.0.0.1:

  1. A and B are initialised and paired through the relay; A's `masq sync`
     runs as a service; B runs one empty `masq sync --once` (the fixed cost
     of a catch-up: connect, greet, settle) so that the pairing is settled.
  2. A stores every file with `masq blob put` (timed: A's write rate).
  3. B runs `masq sync --once`, which returns once B holds every chunk of
     every blob (eager fetching, the default): the time of that run is the
     transfer time, MB/s = bytes / time.
  4. B reads every blob back (`masq blob get ... -`); the SHA-256 of what it
     reads must equal the source file's (read-back rate printed too).

Peak RSS: of A's sync service, of B's `sync --once`, of the relay and of
the largest `blob put` -- each from the kernel's own high-water mark
(wait4's ru_maxrss after the process ended), plus the highest VmRSS sampled
every 0.1 s during the transfer. CPU seconds of each process during the
transfer come from /proc/PID/stat, to show where the time goes.

Reference, in the same run: the same files sent over one plain TCP
connection on 127.0.0.1 by a Python sender (socket.sendfile) to a Python
receiver that writes them to disk (fsync per file); the time runs from
connect to the receiver's acknowledgement after the last fsync; the copies
are then checked by SHA-256 the same way.

MB = 10^6 bytes; sizes given in MiB (BLOB_FILE_MB=4 -> 4 MiB files, 4 chunks).
Nothing here is a pass/fail check: the goals are printed beside the figures.
The exit status is non-zero only when the run itself failed (a transfer did
not finish within its bound, or bytes came back different).

Usage: python3 blobs.py            (environment: see run.sh)
       python3 blobs.py tcp-recv PORTFILE OUTDIR COUNT   (internal)
       python3 blobs.py tcp-send PORT FILE...            (internal)
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

MiB = 1 << 20
NS = "bench"


# ---------------------------------------------------------------------------
# Processes


class Proc:
    """A child process whose resource usage is collected with wait4 (so its
    peak RSS, ru_maxrss, is the kernel's high-water mark over its whole life)."""

    def __init__(self, argv, log, cwd=None):
        self.argv = argv
        self.log = log
        self.out = open(log, "ab")
        self.popen = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT, cwd=cwd)
        self.pid = self.popen.pid
        self.status = None
        self.rusage = None
        self.started = time.monotonic()
        self.ended = None

    def poll(self):
        if self.status is None:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self._reaped(status, ru)
        return self.status

    def _reaped(self, status, ru):
        self.status = os.waitstatus_to_exitcode(status)
        self.rusage = ru
        self.ended = time.monotonic()
        self.popen.returncode = self.status      # so Popen does not wait for it again
        self.out.close()

    def wait(self, seconds):
        """Wait at most `seconds`; returns the exit code, or None if still running."""
        deadline = time.monotonic() + seconds
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.status

    def stop(self, seconds=10):
        """SIGTERM, then SIGKILL after `seconds`; returns the exit code."""
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if self.wait(seconds) is None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.wait(seconds)
        return self.status

    def peak_kib(self):
        """Peak RSS in KiB: ru_maxrss once ended, else VmHWM from /proc."""
        if self.rusage is not None:
            return self.rusage.ru_maxrss
        return proc_status(self.pid, "VmHWM")

    def text(self):
        try:
            return open(self.log, errors="replace").read()
        except OSError:
            return ""


def proc_status(pid, field):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


class Sampler(threading.Thread):
    """Samples VmRSS and CPU time of some processes every `interval` seconds
    until stopped; keeps the highest RSS and the last CPU reading of each."""

    def __init__(self, procs, interval=0.1):
        super().__init__(daemon=True)
        self.procs = dict(procs)               # name -> pid
        self.interval = interval
        self.peak = {n: 0 for n in self.procs}
        self.cpu_first = {n: cpu_seconds(p) for n, p in self.procs.items()}
        self.cpu_last = dict(self.cpu_first)
        self.halt = threading.Event()

    def add(self, name, pid):
        self.cpu_first[name] = cpu_seconds(pid) or 0.0
        self.cpu_last[name] = self.cpu_first[name]
        self.peak[name] = 0
        self.procs[name] = pid

    def run(self):
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)
        self.sample()

    def sample(self):
        for name, pid in list(self.procs.items()):
            rss = proc_status(pid, "VmRSS")
            if rss is not None:
                self.peak[name] = max(self.peak[name], rss)
            cpu = cpu_seconds(pid)
            if cpu is not None:
                self.cpu_last[name] = cpu

    def stop(self):
        self.halt.set()
        self.join(10)

    def cpu(self, name):
        first, last = self.cpu_first.get(name), self.cpu_last.get(name)
        return None if first is None or last is None else last - first


def wait_for(seconds, what, predicate, interval=0.1):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise SystemExit(f"timed out after {seconds} s waiting for {what}")


# ---------------------------------------------------------------------------
# The plain TCP reference (one connection: name length, name, size, bytes)


def tcp_recv(portfile, outdir, count):
    """Accept one connection on 127.0.0.1, write `count` files to outdir
    (fsync each), then answer one byte."""
    count = int(count)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(60)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(server.getsockname()[1]))
    os.rename(portfile + ".tmp", portfile)
    conn, _ = server.accept()
    conn.settimeout(600)
    buf = bytearray(MiB)
    view = memoryview(buf)

    def exactly(n):
        out = bytearray()
        while len(out) < n:
            got = conn.recv(n - len(out))
            if not got:
                raise SystemExit("tcp-recv: connection closed early")
            out += got
        return bytes(out)

    for _ in range(count):
        (name_len,) = struct.unpack(">H", exactly(2))
        name = exactly(name_len).decode()
        (size,) = struct.unpack(">Q", exactly(8))
        fd = os.open(os.path.join(outdir, os.path.basename(name)), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        left = size
        while left:
            n = conn.recv_into(view, min(left, MiB))
            if n == 0:
                raise SystemExit("tcp-recv: connection closed early")
            os.write(fd, view[:n])
            left -= n
        os.fsync(fd)
        os.close(fd)
    conn.sendall(b"\x01")
    conn.close()


def tcp_send(port, *files):
    """Send files over one connection; print the seconds from connect to the
    receiver's acknowledgement."""
    started = time.monotonic()
    conn = socket.create_connection(("127.0.0.1", int(port)), timeout=600)
    for path in files:
        name = os.path.basename(path).encode()
        size = os.path.getsize(path)
        conn.sendall(struct.pack(">H", len(name)) + name + struct.pack(">Q", size))
        with open(path, "rb") as f:
            conn.sendfile(f)
    if conn.recv(1) != b"\x01":
        raise SystemExit("tcp-send: no acknowledgement")
    print(f"{time.monotonic() - started:.6f}")


# ---------------------------------------------------------------------------
# Helpers


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def mb(n):
    return n / 1e6


def fmt_kib(kib):
    return "-" if kib is None else f"{kib / 1024:,.0f} MiB"


def relay_payload(url):
    """The relay's payload byte counter (GET /metrics), or None."""
    import urllib.request
    try:
        text = urllib.request.urlopen(url.replace("ws://", "http://") + "metrics", timeout=5).read().decode()
    except Exception:
        return None
    m = re.search(r"^masq_relay_payload_bytes_total\s+(\S+)", text, re.M)
    return float(m.group(1)) if m else None


# ---------------------------------------------------------------------------
# The benchmark


def main():
    masq = os.environ["MASQ_BIN"]
    total_mb = int(os.environ.get("BLOB_TOTAL_MB", "1024"))
    file_mb = float(os.environ.get("BLOB_FILE_MB", "4"))
    file_bytes = int(file_mb * MiB)
    count = max(1, (total_mb * MiB) // file_bytes)
    total = count * file_bytes
    timeout = float(os.environ.get("BLOB_TIMEOUT", str(120 + total_mb)))   # >= ~1 MiB/s
    relay_args = os.environ.get("RELAY_ARGS", "").split()
    keep = os.environ.get("BLOB_KEEP", "") not in ("", "0")
    base = os.environ.get("BLOB_WORKDIR") or tempfile.gettempdir()
    work = tempfile.mkdtemp(prefix="masq-bench-blobs-", dir=base)
    free = shutil.disk_usage(work).free
    if free < total * 5:
        raise SystemExit(f"{work}: {free >> 20} MiB free, need about {total * 5 >> 20} (source, two stores, the TCP copy)")
    print(f"blob bench: {count} files x {file_bytes / MiB:g} MiB = {total / MiB:,.0f} MiB; masq-cli {masq}; "
          f"plugins {os.environ.get('MASQ_PLUGIN_PATH')}; work {work}", file=sys.stderr, flush=True)
    print(f"{os.cpu_count()} cores, {os.uname().sysname} {os.uname().release} {os.uname().machine}", file=sys.stderr, flush=True)

    procs = []

    def start(argv, name, **kw):
        p = Proc(argv, os.path.join(work, name + ".log"), cwd=work, **kw)
        procs.append(p)
        return p

    def run(*args, seconds=120):
        r = subprocess.run([masq, *args], capture_output=True, text=True, timeout=seconds, cwd=work)
        if r.returncode != 0:
            raise SystemExit(f"masq {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
        return r.stdout

    def step(text):
        print(f"-- {text}", file=sys.stderr, flush=True)

    status = 1
    try:
        # Source files: random bytes, SHA-256 of each.
        step(f"writing {count} source files")
        src = os.path.join(work, "src")
        os.makedirs(src)
        files, digests = [], []
        for i in range(count):
            path = os.path.join(src, f"file-{i:05d}.bin")
            h = hashlib.sha256()
            with open(path, "wb") as f:
                left = file_bytes
                while left:
                    block = os.urandom(min(MiB, left))
                    f.write(block)
                    h.update(block)
                    left -= len(block)
            files.append(path)
            digests.append(h.hexdigest())

        # --- reference: one plain TCP connection -----------------------------
        step("reference: plain TCP copy on 127.0.0.1")
        dst = os.path.join(work, "tcp-copy")
        os.makedirs(dst)
        portfile = os.path.join(work, "tcp.port")
        me = os.path.abspath(__file__)
        recv = start([sys.executable, me, "tcp-recv", portfile, dst, str(count)], "tcp-recv")
        port = wait_for(30, "the TCP receiver", lambda: os.path.exists(portfile) and open(portfile).read())
        send = start([sys.executable, me, "tcp-send", port, *files], "tcp-send")
        if send.wait(timeout) != 0 or recv.wait(30) != 0:
            raise SystemExit(f"the TCP reference failed: {send.text()[-500:]} {recv.text()[-500:]}")
        tcp_seconds = float(send.text().split()[-1])
        bad = [f for f, d in zip(files, digests) if sha256_file(os.path.join(dst, os.path.basename(f))) != d]
        if bad:
            raise SystemExit(f"the TCP copy differs: {bad[:3]}")
        tcp_rss = (send.peak_kib(), recv.peak_kib())
        tcp_cpu = (send.rusage.ru_utime + send.rusage.ru_stime, recv.rusage.ru_utime + recv.rusage.ru_stime)
        shutil.rmtree(dst)

        # --- relay, two devices, pairing --------------------------------------
        step("relay, two devices, pairing")
        relay = start([masq, "relay", "--port", "0", "--log-level", "error", *relay_args], "relay")
        url = wait_for(10, "the relay's URL", lambda: (re.search(r"ws://[0-9.:]+/", relay.text()) or [None])[0])
        for d in ("a", "b"):
            run("init", "--config", f"{d}.json", "--data-dir", d, "--name", d)
        offer = start([masq, "pair", "--config", "a.json", "--relay", url, "--no-qr"], "pair")
        link = wait_for(15, "a pairing link", lambda: (re.search(r"^masq://\S+", offer.text(), re.M) or [None])[0])
        run("join", "--config", "b.json", link, seconds=60)
        if offer.wait(30) != 0:
            raise SystemExit(f"masq pair failed: {offer.text()[-500:]}")

        sync_a = start([masq, "sync", "--config", "a.json", "--quiet"], "sync-a")
        # B's empty catch-up, retried until A is there (A's service may still be connecting).
        step("an empty catch-up on B (fixed cost)")
        empty = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            p = start([masq, "sync", "--config", "b.json", "--once", "--quiet", "--timeout", "30"], "sync-b-empty")
            if p.wait(40) == 0 and "in sync with 1 of 1" in p.text():
                empty = p.ended - p.started
                break
            p.stop()
            time.sleep(0.5)
        if empty is None:
            raise SystemExit(f"B never reached A: {p.text()[-500:]} / A: {sync_a.text()[-500:]}")

        # --- A writes the blobs ------------------------------------------------
        step(f"A: masq blob put x {count}")
        put_peak = 0
        put_started = time.monotonic()
        for i, path in enumerate(files):
            p = start([masq, "blob", "put", "--config", "a.json", NS, f"f{i:05d}", path], "put")
            if p.wait(120) != 0:
                raise SystemExit(f"blob put failed: {p.text()[-500:]}")
            put_peak = max(put_peak, p.peak_kib())
            procs.remove(p)
        put_seconds = time.monotonic() - put_started

        # --- B fetches them ----------------------------------------------------
        step(f"B: masq sync --once (timeout {timeout:.0f} s)")
        payload_before = relay_payload(url)
        load_before = os.getloadavg()[0]
        sampler = Sampler({"A sync": sync_a.pid, "relay": relay.pid})
        sync_b = start([masq, "sync", "--config", "b.json", "--once", "--quiet", "--timeout", str(timeout)], "sync-b")
        sampler.add("B sync", sync_b.pid)
        sampler.start()
        code = sync_b.wait(timeout + 60)
        sampler.stop()
        if code is None:
            sync_b.stop()
        blob_seconds = (sync_b.ended or time.monotonic()) - sync_b.started
        load_after = os.getloadavg()[0]
        payload_after = relay_payload(url)
        b_cpu = None if sync_b.rusage is None else sync_b.rusage.ru_utime + sync_b.rusage.ru_stime

        # --- B reads them back ---------------------------------------------
        step("B: masq blob get, SHA-256 of each")
        same = 0
        read_started = time.monotonic()
        for i, d in enumerate(digests):
            get = subprocess.Popen([masq, "blob", "get", "--config", "b.json", NS, f"f{i:05d}", "-"],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=work)
            h = hashlib.sha256()
            for block in iter(lambda: get.stdout.read(MiB), b""):
                h.update(block)
            get.stdout.close()
            if get.wait(120) == 0 and h.hexdigest() == d:
                same += 1
        read_seconds = time.monotonic() - read_started
        complete = same
        if same < count:                       # how many are whole on B (a damaged one would differ)
            complete = 0
            for i in range(count):
                info = subprocess.run([masq, "blob", "info", "--config", "b.json", NS, f"f{i:05d}"],
                                      capture_output=True, text=True, cwd=work)
                complete += info.returncode == 0 and json.loads(info.stdout).get("complete", False)

        # --- peaks over whole lives ---------------------------------------
        a_hwm_live = sync_a.peak_kib()
        relay_hwm_live = relay.peak_kib()
        sync_a.stop()
        relay.stop()
        a_peak = sync_a.peak_kib() or a_hwm_live
        relay_peak = relay.peak_kib() or relay_hwm_live

        store_bytes = {d: sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(os.path.join(work, d)) for f in fs)
                       for d in ("a", "b")}

        # --- the table -------------------------------------------------------
        ok = code == 0 and same == count
        blob_rate = mb(total) / blob_seconds
        tcp_rate = mb(total) / tcp_seconds
        wire = None if payload_before is None or payload_after is None else payload_after - payload_before
        print()
        print(f"blobs: {count} files x {file_bytes / MiB:g} MiB = {total / MiB:,.0f} MiB ({mb(total):,.0f} MB), "
              f"A -> B through a local relay, in the same run as a plain TCP copy")
        print(f"  {'':<38}{'masq blobs (relay)':>22}{'plain TCP':>14}")
        print(f"  {'time to B holding every byte':<38}{blob_seconds:>20.2f} s{tcp_seconds:>12.2f} s")
        print(f"  {'throughput':<38}{blob_rate:>17,.1f} MB/s{tcp_rate:>9,.1f} MB/s")
        print(f"  {'bytes verified on B (SHA-256)':<38}{f'{same}/{count} files':>22}{f'{count}/{count} files':>14}")
        print(f"  {'peak RSS, sender (A sync / sender)':<38}{fmt_kib(a_peak):>22}{fmt_kib(tcp_rss[0]):>14}")
        print(f"  {'peak RSS, receiver (B sync / recv)':<38}{fmt_kib(sync_b.peak_kib()):>22}{fmt_kib(tcp_rss[1]):>14}")
        print(f"  {'peak RSS, relay':<38}{fmt_kib(relay_peak):>22}{'-':>14}")
        def cpu(seconds, wall):
            return f"{seconds or 0:.1f} s ({100 * (seconds or 0) / wall:.0f}%)"
        print(f"  {'CPU in transfer (% of one core): A':<38}{cpu(sampler.cpu('A sync'), blob_seconds):>22}{cpu(tcp_cpu[0], tcp_seconds):>14}")
        print(f"  {'CPU in transfer (% of one core): B':<38}{cpu(b_cpu, blob_seconds):>22}{cpu(tcp_cpu[1], tcp_seconds):>14}")
        print(f"  {'CPU in transfer (% of one core): relay':<38}{cpu(sampler.cpu('relay'), blob_seconds):>22}{'-':>14}")
        print(f"  ratio, blobs / TCP throughput: {blob_rate / tcp_rate:.3f}  (TCP is {tcp_rate / blob_rate:,.1f}x faster)")
        print(f"  goals: >= 100 MB/s -> {blob_rate:,.1f} MB/s {'(met)' if blob_rate >= 100 else '(not met)'}; "
              f"RSS < 200 MiB -> A {fmt_kib(a_peak)}, B {fmt_kib(sync_b.peak_kib())} "
              f"{'(met)' if max(a_peak or 0, sync_b.peak_kib() or 0) < 200 * 1024 else '(not met)'}")
        print(f"  also: B's sync --once with nothing to fetch {empty:.2f} s (included above); "
              f"A's blob put x {count}: {put_seconds:.1f} s = {mb(total) / put_seconds:,.1f} MB/s, peak RSS {fmt_kib(put_peak)}; "
              f"B's read-back (blob get x {count}): {mb(total) / read_seconds:,.1f} MB/s")
        print(f"  RSS sampled every 0.1 s during the transfer: A {fmt_kib(sampler.peak['A sync'])}, "
              f"B {fmt_kib(sampler.peak['B sync'])}, relay {fmt_kib(sampler.peak['relay'])}")
        if wire is not None:
            print(f"  bytes through the relay: {wire:,.0f} = {wire / total:.3f} x the files")
        print(f"  load average (1 min) before / after the transfer: {load_before:.1f} / {load_after:.1f} on {os.cpu_count()} cores"
              + ("  -- other work shared the cores: figures are low and noisy" if max(load_before, load_after) > os.cpu_count() else ""))
        print(f"  stores on disk: A {store_bytes['a'] / MiB:,.0f} MiB, B {store_bytes['b'] / MiB:,.0f} MiB")
        if code != 0 or same < count:
            print(f"  B's sync --once exit {code}: {sync_b.text()[-300:].strip()}")
            print(f"  blobs complete on B: {complete}/{count}, with the source's bytes: {same}/{count}")
        status = 0 if ok else 1
    finally:
        for p in reversed(procs):
            p.stop()
        if keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return status


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "tcp-recv":
        tcp_recv(*sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "tcp-send":
        tcp_send(*sys.argv[2:])
    else:
        sys.exit(main())
