"""Shared helpers for the adversary tests: real masq processes on 127.0.0.1.

Environment: MASQ_BIN (the masq CLI), MASQ_PLUGIN_PATH (the built plugins).
Every wait is bounded; every process a test starts is stopped at its end.
"""
import json
import os
import re
import signal
import subprocess
import time

MASQ = os.environ.get("MASQ_BIN", "masq")


class Processes:
    """Processes started by one test; `stop_all` ends them (SIGTERM, then SIGKILL)."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, args, log, env=None):
        out = open(os.path.join(self.workdir, log), "ab")
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
                                env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc

    def stop(self, proc, sig=signal.SIGTERM):
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stop_all(self):
        for proc in reversed(self.procs):
            self.stop(proc)


def wait_for(seconds, what, predicate, interval=0.1):
    """Retry `predicate` until it returns a true value; fail the test after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception:
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {seconds} s waiting for: {what}")


def masq(*args, check=True, timeout=60, env=None, prefix=()):
    """Run the CLI; returns CompletedProcess (text). `prefix` e.g. ("faketime", "-f", "+3650d")."""
    result = subprocess.run([*prefix, MASQ, *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"masq {' '.join(args)} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result


class Device:
    """One store: a config file and a data directory under workdir/name."""

    def __init__(self, workdir, name):
        self.name = name
        self.config = os.path.join(workdir, f"{name}.json")
        self.data = os.path.join(workdir, name)
        masq("init", "--config", self.config, "--data-dir", self.data, "--name", name)

    def put(self, ns, key, value, **kw):
        return masq("put", "--config", self.config, ns, key, value, **kw)

    def get(self, ns, key):
        r = masq("get", "--config", self.config, ns, key, check=False)
        return r.stdout if r.returncode == 0 else None

    def delete(self, ns, key):
        return masq("del", "--config", self.config, ns, key)

    def keys(self, ns):
        r = masq("ls", "--config", self.config, ns, check=False)
        return r.stdout.split() if r.returncode == 0 else []

    def device_id(self):
        out = masq("devices", "--config", self.config).stdout
        return re.search(r"(?i)this device: .*\(device ([0-9a-f]{20})\)", out).group(1)

    def edit_config(self, change):
        config = json.load(open(self.config))
        change(config)
        json.dump(config, open(self.config, "w"), indent=2)


def start_relay(procs, *extra):
    """A real `masq relay` on 127.0.0.1; returns (process, ws://127.0.0.1:PORT/)."""
    log = f"relay-{len(procs.procs)}.out"
    proc = procs.start([MASQ, "relay", "--port", "0", *extra], log)
    path = os.path.join(procs.workdir, log)
    url = wait_for(10, "the relay's URL", lambda: re.search(r"ws://[0-9.:]+/", open(path).read()))
    return proc, url.group(0)


def pair(procs, offerer, joiner, relay_url):
    """Pair two devices through the relay at relay_url (both record it in their config)."""
    log = f"pair-{offerer.name}-{joiner.name}.out"
    offer = procs.start([MASQ, "pair", "--config", offerer.config, "--relay", relay_url, "--no-qr"], log)
    path = os.path.join(procs.workdir, log)
    link = wait_for(10, "a pairing link", lambda: re.search(r"^masq://\S+", open(path).read(), re.M)).group(0)
    masq("join", "--config", joiner.config, link, timeout=60)
    assert offer.wait(timeout=30) == 0, open(path).read()


def start_sync(procs, device, *extra, prefix=()):
    return procs.start([*prefix, MASQ, "sync", "--config", device.config, "--quiet", *extra], f"sync-{device.name}.log")
