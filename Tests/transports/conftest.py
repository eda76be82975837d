"""Fixtures for the transport tests: the C harness (built here with cc), the
plugin under test, and Instance, one plugin instance driven by a harness
process over its line protocol (see harness.c).

Environment:
  MASQ_TRANSPORT   the transport under test: lan (default), relay, or any
                   other plugin name (then only the transport-neutral tests run)
  MASQ_PLUGIN_DIR  where libmasq_transport_<name>.so is (a ':' list; default
                   MASQ_PLUGIN_PATH). The lan plugin is built from
                   plugins/transport-lan when not found there.
  MASQ_BIN         the masq CLI (relay runs `masq relay`; test_lan_sync)
  MASQ_HARNESS_CFLAGS  extra compiler flags for the harness and a lan plugin
                   built here, e.g. "-fsanitize=address,undefined" or
                   "-fsanitize=thread" (a plugin of yours needs the same)
"""
import os
import queue
import secrets
import socket
import shutil
import subprocess
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
INCLUDE = os.path.join(ROOT, "include")

# masq_plugin.h
OK, E_INVALID, E_NOT_FOUND, E_TOO_LARGE, E_CONFIG, E_CLOSED, E_BUSY = 0, 1, 2, 3, 4, 9, 10
PEER_UP, PEER_DOWN, TRANSPORT_UP, TRANSPORT_DOWN, ROOM_CHANGED = 1, 2, 3, 4, 5
ROOMS_FLAG = 4


def transport_name():
    return os.environ.get("MASQ_TRANSPORT", "lan")


def wait_for(seconds, what, predicate, interval=0.05):
    """Retry `predicate` until it returns a true value; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for: {what}")
        time.sleep(interval)


def extra_cflags():
    return os.environ.get("MASQ_HARNESS_CFLAGS", "").split()


def build_lan(build_dir):
    """Build plugins/transport-lan with its own Makefile (as a third party would)."""
    flags = " ".join(["-O1", "-g", *extra_cflags()])
    subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "plugins", "transport-lan"), f"BUILD={build_dir}",
                    f"INCLUDE={INCLUDE}", f"CFLAGS={flags}"], check=True, timeout=120)
    return os.path.join(build_dir, "libmasq_transport_lan.so")


def find_plugin(name, tmp_factory):
    dirs = os.environ.get("MASQ_PLUGIN_DIR") or os.environ.get("MASQ_PLUGIN_PATH") or ""
    for d in filter(None, dirs.split(":")):
        path = os.path.join(d, f"libmasq_transport_{name}.so")
        if os.path.exists(path):
            return os.path.abspath(path)
    if name == "lan":
        return build_lan(str(tmp_factory.mktemp("lan-plugin")))
    pytest.skip(f"libmasq_transport_{name}.so is not in MASQ_PLUGIN_DIR or MASQ_PLUGIN_PATH")


@pytest.fixture(scope="session")
def harness_bin(tmp_path_factory):
    if not shutil.which("cc"):
        pytest.skip("no C compiler (cc) to build the harness")
    out = str(tmp_path_factory.mktemp("harness") / "harness")
    subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-g", *extra_cflags(),
                    f"-I{INCLUDE}", "-o", out, os.path.join(HERE, "harness.c"), "-ldl", "-pthread"],
                   check=True, timeout=120)
    return out


@pytest.fixture(scope="session")
def plugin(tmp_path_factory):
    return find_plugin(transport_name(), tmp_path_factory)


@pytest.fixture(scope="session")
def lan_plugin(tmp_path_factory):
    return find_plugin("lan", tmp_path_factory)


class HarnessError(AssertionError):
    pass


class Instance:
    """One transport instance in its own harness process.

    `frames` and `events` accumulate what the plugin handed the host (filled
    by poll()); each frame is (peer, room or None, length, digest, bytes or None).
    """

    def __init__(self, harness, plugin_path, log_path, name="?"):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([harness, plugin_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, bufsize=1)
        self._lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.frames, self.events = [], []
        self.created = self.started = self.stopped = self.closed = self.broken = False
        ready = self._line(10)
        if not ready.startswith("ready"):
            raise HarnessError(f"harness did not load {plugin_path}: {ready}")
        self.flags = int(ready.split("flags=")[1])

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _line(self, timeout):
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.broken = True      # stuck in a plugin call: close() kills it
            raise HarnessError(f"{self.name}: no answer within {timeout} s{self.log_tail()}") from None
        if line is None:
            code = self.proc.wait(timeout=10)
            raise HarnessError(f"{self.name}: the harness died (exit status {code}){self.log_tail()}")
        return line

    def log_tail(self):
        try:
            with open(self.log_path, "rb") as f:
                return "\n--- harness log ---\n" + f.read()[-3000:].decode(errors="replace")
        except OSError:
            return ""

    def call(self, line, timeout=10):
        """Send one command; returns (status, text)."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self._line(timeout)
        if answer == "ok" or answer.startswith("ok "):
            return OK, answer[3:]
        if answer.startswith("err "):
            _, status, text = (answer + " ").split(" ", 2)
            return int(status), text.strip()
        raise HarnessError(f"{self.name}: unexpected answer {answer!r}")

    def ok(self, line, timeout=10):
        status, text = self.call(line, timeout)
        if status != OK:
            raise HarnessError(f"{self.name}: {line.split(' ')[0]} failed with status {status}: {text}")
        return text

    # -- life cycle ------------------------------------------------------------

    def create(self, options):
        for key, value in options.items():
            self.ok(f"opt {key} {value}")
        status, text = self.call("create")
        self.created = status == OK
        return status, text

    def start(self):
        self.started = True
        self.ok("start")

    def stop(self, timeout=20):
        """stop(); returns its duration in ms (it asserts no callback was still running)."""
        text = self.ok("stop", timeout)
        self.stopped = True
        ms, running = text.split()
        assert running == "running=0", f"{self.name}: a callback was still running when stop() returned"
        return int(ms)

    def check(self):
        return dict(item.split("=") for item in self.ok("check").split())

    def close(self):
        """Stop, destroy and end the harness; asserts no callback ran after stop."""
        if self.closed:
            return
        if self.broken:
            self.kill()
            return
        if self.proc.poll() is not None:
            raise HarnessError(f"{self.name}: the harness died (exit status {self.proc.returncode}){self.log_tail()}")
        if self.created and not self.stopped:
            self.stop()
        time.sleep(0.05)
        counts = self.check()
        assert counts["late"] == "0", f"{self.name}: {counts['late']} callback(s) ran after stop returned"
        assert counts["early"] == "0", f"{self.name}: {counts['early']} callback(s) ran before start"
        if self.created:
            self.ok("destroy")
            self.created = False
        self.ok("exit")
        assert self.proc.wait(timeout=10) == 0, f"{self.name}: the harness exited with {self.proc.returncode}"
        self.closed = True
        self._log.close()

    def kill(self):
        self.closed = True
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()

    # -- what the plugin reported --------------------------------------------------

    def poll(self):
        self.proc.stdin.write("poll\n")
        self.proc.stdin.flush()
        while True:
            line = self._line(10)
            if line == "end":
                return
            kind, rest = line.split(" ", 1)
            if kind == "frame":
                peer, room, length, digest, data = rest.split(" ")
                self.frames.append((peer, None if room == "-" else room, int(length), digest,
                                    None if data == "-" else bytes.fromhex(data)))
            elif kind == "event":
                code, peer = rest.split(" ", 1)
                self.events.append((int(code), None if peer == "-" else peer))

    def frames_in(self, room):
        self.poll()
        return [f for f in self.frames if f[1] == room]

    def got(self, room, data):
        """Whether a frame with exactly `data` arrived in `room`."""
        return any(f[4] == data for f in self.frames_in(room))

    def stats(self):
        import json
        return json.loads(self.ok("stats"))

    def send(self, room, data):
        return self.call(f"send {room} {data.hex() if data else '-'}")

    def gen(self, room, size, seed):
        """Send `size` generated bytes; returns (status, digest or message)."""
        return self.call(f"gen {room} {size} {seed}", timeout=30)


# ---- several instances -------------------------------------------------------

def new_room():
    return secrets.token_hex(16)    # as the kernel's: 32 lowercase hex characters


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Net:
    """The instances of one test; slot names pick per-slot options (a slot
    started again gets the same options: the same port, for lan)."""

    def __init__(self, harness, plugin, options, tmp_path):
        """options(slot) -> the slot's options (the profile's)."""
        self.harness, self.plugin, self.options, self.dir = harness, plugin, options, tmp_path
        self.all = []

    def instance(self, slot, room=None, options=None, start=True):
        inst = Instance(self.harness, self.plugin, str(self.dir / f"{slot}-{len(self.all)}.log"), name=slot)
        inst.slot = slot
        self.all.append(inst)
        opts = dict(self.options(slot) if options is None else options)
        data_dir = self.dir / f"data-{slot}"
        data_dir.mkdir(exist_ok=True)
        opts["data_dir"] = str(data_dir)    # the kernel always passes it
        status, text = inst.create(opts)
        assert status == OK, f"create failed ({status}): {text}"
        if start:
            inst.start()
            if "url" in opts:                # as the kernel does
                inst.ok(f"connect {opts['url']}")
            if room:
                inst.ok(f"join {room}")
        return inst

    def close(self):
        errors = []
        for inst in self.all:
            try:
                inst.close()
            except AssertionError as e:
                errors.append(str(e))
                inst.kill()
        assert not errors, "\n".join(errors)


def link(a, b, room, timeout=20):
    """Wait until a frame from a reaches b and one from b reaches a (transports
    keep nothing for absent members, so probes are resent until one arrives)."""
    for src, dst in ((a, b), (b, a)):
        probe = b"probe " + secrets.token_bytes(8)

        def arrived():
            src.send(room, probe)
            return wait_quietly(lambda: dst.got(room, probe), 0.3)
        wait_for(timeout, f"a frame from {src.name} to reach {dst.name}", arrived, interval=0)


def wait_quietly(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.03)
    return False
