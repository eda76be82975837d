"""A share must not poison the guest's hybrid logical clock.

Attack: Alice's store runs ten years ahead (a wrong or hostile clock). She
shares a namespace with Bob's device B1. Her RECORDS carry timestamps ten
years ahead; applied as snapshot records with no future bound, they move B1's
hybrid logical clock to 2036. Every later write of B1 carries that clock, and
Bob's OWN other device B2 refuses it (its bound is 5 minutes, docs/PROTOCOL.md),
so Bob's devices stop syncing.

Must hold: records stamped beyond the clock bound are refused on the share
path as on device sync (and never advance the clock); a store whose clock was
already pushed ahead (as an older version would have left it) is repaired:
its future-stamped writes are re-stamped with the corrected clock and reach
the other devices.

Real processes on 127.0.0.1: a `masq relay` for B1 and B2, a
`masq connectoid serve` for the share; Alice's commands all run under
`faketime +3650d`.
"""
import os
import re
import signal
import subprocess
import time

import pytest

from support import MASQ, Device, Processes, masq, pair, start_relay, start_sync, wait_for

FUTURE = ("faketime", "-f", "+3650d")
ALICE_GARDEN = {"rose": "red-from-2036", "tulip": "yellow-from-2036"}


@pytest.fixture
def procs(tmp_path):
    p = Processes(str(tmp_path))
    p.wrapped = []
    yield p
    # The `faketime` wrapper forks and does not pass SIGTERM on: end its child (by
    # its id) first; the wrapper then exits by itself.
    for wrapper in p.wrapped:
        for pid in children(wrapper.pid):
            os.kill(pid, signal.SIGTERM)
        try:
            wrapper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            for pid in children(wrapper.pid):
                os.kill(pid, signal.SIGKILL)
    p.stop_all()


def children(pid):
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def contents(device, ns):
    r = masq("ls", "--config", device.config, ns, "--values", check=False)
    if r.returncode != 0:
        return {}
    return dict(line.partition("\t")[::2] for line in r.stdout.splitlines())


def namespaces(device):
    return [line.strip() for line in masq("ls", "--config", device.config).stdout.splitlines() if line.strip()]


def bobs_devices(procs):
    """B1 and B2 paired through a real relay, both syncing, shown to sync (B1 -> B2)."""
    _, url = start_relay(procs)
    b1, b2 = Device(procs.workdir, "b1"), Device(procs.workdir, "b2")
    pair(procs, b1, b2, url)
    syncs = {"b1": start_sync(procs, b1), "b2": start_sync(procs, b2)}
    b1.put("notes", "before", "synced")
    wait_for(20, "a control write on B1 reaching B2 (device sync works)", lambda: b2.get("notes", "before") == "synced")
    return b1, b2, syncs


def test_future_stamped_share_records_do_not_stop_device_sync(procs):
    """Alice (ten years ahead) shares with B1: her records are refused, B1's clock is not
    moved, and B1's next write still reaches Bob's other device B2."""
    b1, b2, syncs = bobs_devices(procs)

    # A Connectoid service; Alice (clock ten years ahead) and B1 both use it.
    procs.start([MASQ, "connectoid", "serve", "--port", "0", "--db", f"{procs.workdir}/connectoid.sqlite3"], "connectoid.out")
    url = wait_for(10, "the Connectoid service's URL",
                   lambda: re.search(r"http://[^\s]+", open(f"{procs.workdir}/connectoid.out").read())).group(0)
    sharing = {"services": [url], "resend_ms": 2000,
               "transport": {"plugin": "connectoid", "options": {"interval_ms": 200, "timeout_ms": 3000}}}
    alice = Device.__new__(Device)       # like Device(), but initialised under faketime too
    alice.name, alice.config, alice.data = "alice", f"{procs.workdir}/alice.json", f"{procs.workdir}/alice"
    masq("init", "--config", alice.config, "--data-dir", alice.data, "--name", "alice", prefix=FUTURE)
    alice.edit_config(lambda c: c.__setitem__("sharing", sharing))
    b1.edit_config(lambda c: c.__setitem__("sharing", sharing))
    for k, v in ALICE_GARDEN.items():
        alice.put("garden", k, v, prefix=FUTURE)
    out = masq("share", "--config", alice.config, "garden", "--no-qr", prefix=FUTURE).stdout
    link = re.search(r"^masq://share/\S+", out, re.M).group(0)
    procs.wrapped.append(start_sync(procs, alice, prefix=FUTURE))

    # B1 accepts (its device sync keeps running), then restarts `masq sync` so the
    # share runs beside device sync, as it would for a user.
    accepted = masq("accept", "--config", b1.config, link, "--wait", "12", check=False, timeout=30)
    shares = masq("shares", "--config", b1.config).stdout
    assert "fingerprint" in shares, \
        f"the share never became active on B1 (Alice's side did not answer); cannot test: {accepted.stdout}{accepted.stderr}{shares}"
    procs.stop(syncs["b1"])
    syncs["b1"] = start_sync(procs, b1)
    time.sleep(3)   # Alice's records are resent every 2 s: B1 sees them again

    b1.put("notes", "after-share", "written on B1 after accepting")
    wait_for(30, "B1's write after the share reaching B2 — ATTACK WORKED if this times out: "
                 "Alice's future-stamped records moved B1's clock and B2 refuses B1's writes",
             lambda: b2.get("notes", "after-share") == "written on B1 after accepting")

    applied = {ns: kv for ns in namespaces(b1) for kv in [contents(b1, ns)] if set(ALICE_GARDEN) & set(kv)}
    assert not applied, f"Alice's records stamped ten years ahead were applied on B1: {applied}"


def test_store_with_a_clock_ahead_is_repaired(procs):
    """B1's clock was already pushed ten years ahead (a write under faketime), then B1
    writes with the real clock: both writes reach B2, re-stamped, and B1 and B2 agree."""
    b1, b2, syncs = bobs_devices(procs)

    # B1's store as an older version could have left it: its clock and one write
    # ten years ahead (B1 is not syncing meanwhile); then a write with the real clock.
    procs.stop(syncs["b1"])
    b1.put("notes", "future", "written ten years ahead", prefix=FUTURE)
    b1.put("notes", "present", "written with the real clock")
    syncs["b1"] = start_sync(procs, b1)

    wait_for(30, "both of B1's writes reaching B2 (the future-stamped store repaired)",
             lambda: b2.get("notes", "future") == "written ten years ahead"
             and b2.get("notes", "present") == "written with the real clock")
    wait_for(5, "B1 and B2 agreeing", lambda: contents(b1, "notes") == contents(b2, "notes"))

    # Re-stamped with the corrected clock: a later write on B2 wins over it on both.
    b2.put("notes", "future", "overwritten on B2")
    wait_for(15, "B2's later overwrite of the repaired key winning on B1",
             lambda: b1.get("notes", "future") == "overwritten on B2")
    assert contents(b1, "notes") == contents(b2, "notes"), f"B1 and B2 differ: {contents(b1, 'notes')} vs {contents(b2, 'notes')}"
