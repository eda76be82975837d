"""A device whose data directory is restored from a backup, seen by a hostile relay.

Restoring a backup rolls back everything in the data directory: the Double
Ratchet states (sending chain positions) and the sync log (commit numbers).
Nothing outside the directory remembers what was used since. So the restored
device (1) seals new frames with message keys it already used, and since
each message key is used with a fixed nonce, two different frames under one
key give the relay (which records everything, docs/SECURITY.md) the XOR of
the plaintexts and a forgeable Poly1305 key; and (2) numbers its next commit
with a number its peer already holds for another write, which the peer drops
as a duplicate, so the write is lost, while the writes made after the backup
never come back to it.
"""
import time
from collections import defaultdict

import pytest

from hostile_relay import HostileRelay, backup, missing_after, restore, synced_pair
from support import Processes, start_sync, wait_for


@pytest.fixture
def procs(tmp_path):
    p = Processes(str(tmp_path))
    yield p
    p.stop_all()


@pytest.fixture
def relay():
    r = HostileRelay()
    yield r
    r.stop()


def reused_message_keys(relay, s):
    """Message keys the relay saw used twice: (sender, ratchet key, message number)
    slots sealed with more than one distinct message, described for a failure message."""
    seen = defaultdict(set)
    for sealed in relay.sealed(s.room):
        seen[(sealed.sender, sealed.ratchet_key, sealed.number)].add(sealed.message)
    names = {s.a_id: "A", s.b_id: "B"}
    return [f"{names.get(sender, sender)} key {key.hex()[:8]}… #{number} ({len(messages)} messages)"
            for (sender, key, number), messages in seen.items() if len(messages) > 1]


def write_both_ways(s, ns, key):
    """A and B each write `key` in `ns`; wait (bounded) until each has the other's."""
    s.a.put(ns, key, "from-a")
    s.b.put(ns, key + "-b", "from-b")
    wait_for(20, f"a's {key} on b", lambda: s.b.get(ns, key) == "from-a")
    wait_for(20, f"b's {key}-b on a", lambda: s.a.get(ns, key + "-b") == "from-b")


def test_restored_device_never_reuses_message_keys(procs, relay):
    s = synced_pair(procs, relay)
    write_both_ways(s, "before", "k1")

    # Back A up while it is stopped, the way a backup tool copies a data directory.
    procs.stop(s.sync_a)
    backup(s.a)

    # A carries on: it greets B (before any write, so that greeting names the
    # backup's vector) and more frames pass both ways; its ratchet with B moves
    # past the backup.
    resumed = time.monotonic()
    s.sync_a = start_sync(procs, s.a)
    wait_for(10, "A's greeting to B", lambda: relay.sealed(s.room, sender=s.a_id, since=resumed))
    write_both_ways(s, "after-backup", "k2")
    procs.stop(s.sync_a)

    # The backup comes back. A writes before its sync starts, as an app would,
    # so what it seals next differs from what it sealed after the backup.
    restore(s.a)
    s.a.put("after-restore", "k3", "from-a")
    s.sync_a = start_sync(procs, s.a)
    s.b.put("after-restore", "k3-b", "from-b")
    expected = [(s.b, "after-restore", "k3", "from-a"), (s.a, "after-restore", "k3-b", "from-b")]

    # Wait for both writes to arrive, or stop early once a key was reused (the test fails then anyway).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and missing_after(0, expected) and not reused_message_keys(relay, s):
        time.sleep(0.2)
    time.sleep(0.5)   # let the frames A was sealing at that moment reach the relay

    reused = reused_message_keys(relay, s)
    assert not reused, (
        f"message keys used twice after A's data directory was restored from a backup: the relay saw "
        f"{reused} sealed with different contents (same key and nonce: the relay learns the XOR of the "
        f"plaintexts and can forge)")

    missing = missing_after(max(0.0, deadline - time.monotonic()), expected)
    assert not missing, f"after A was restored from a backup, {missing} never arrived within 30 s"


def test_restored_device_gets_back_and_keeps_its_writes(procs, relay):
    s = synced_pair(procs, relay)
    s.a.put("data", "k1", "v1")
    wait_for(20, "k1 on b", lambda: s.b.get("data", "k1") == "v1")

    procs.stop(s.sync_a)
    backup(s.a)
    s.sync_a = start_sync(procs, s.a)
    s.a.put("data", "k2", "v2")
    wait_for(20, "k2 on b", lambda: s.b.get("data", "k2") == "v2")
    procs.stop(s.sync_a)

    # Restore, then write while A's sync is not running: k3 takes the commit
    # number k2 had, which B already holds.
    restore(s.a)
    s.a.put("data", "k3", "v3")
    s.sync_a = start_sync(procs, s.a)

    missing = missing_after(30, [(d, "data", k, v) for d in (s.b, s.a) for k, v in
                                 (("k1", "v1"), ("k2", "v2"), ("k3", "v3"))])
    assert not missing, (
        f"writes lost after A was restored from a backup: {missing} still missing after 30 s "
        f"(b:k3 is A's write after the restore; a:k2 is A's own write made after the backup, which B holds)")
