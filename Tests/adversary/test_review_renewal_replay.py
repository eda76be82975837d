"""A hostile relay replays a session-renewal step 1 that the responder once refused.

docs/PROTOCOL.md, "Session renewal (RENEW)": "The responder refuses a counter
not above the last one it accepted from that device (a recorded step 1 cannot
be replayed)". Step 3 makes the responder refuse a step 1 whose counter is
more than 10 minutes ahead of its clock *without remembering it*, and the new
initiator rule ("a last counter more than 10 minutes ahead counts as 0") makes
the initiator's next counters go back DOWN to its (corrected) clock. Together:

  1. A's clock runs 11 minutes ahead. A's step 1 to B carries counter
     C = T0 + 11 min; B refuses it (step 3). The relay records it.
  2. A's clock is set right. A's next step 1 carries counter T1 < C (the new
     rule), which B accepts: accepted = T1.
  3. Once B's clock reaches C - 10 min (here: about a minute later), the relay
     delivers the recorded step 1 again. C > accepted and C <= now + 10 min:
     B accepts a step 1 that A abandoned, replaces its working session with
     one A cannot complete, and from then on refuses A's honest renewals
     ("a replayed session renewal") until real time passes C. Sync recovers
     when B, failing to open A's frames, renews as initiator (seconds); the
     harm is a broken replay guarantee and a short outage per replay.

Must hold: a step 1 that B has seen (refused or not) is never accepted later.
Before the initiator rule the same recorded step 1 was dead, because A kept
counting from C + 1.

Real processes: two `masq sync` through the hostile relay; A's first sync
runs under libfaketime (+11 min).
"""
import os
import shutil
import signal
import subprocess
import time

import pytest

from hostile_relay import IN, SEND, HostileRelay, synced_pair
from support import Processes, start_sync, wait_for

RENEW = 4
AHEAD = ("faketime", "-f", "+660s")   # 11 minutes ahead


def children(pid):
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def stop_wrapped(procs, wrapper):
    """The `faketime` wrapper does not pass SIGTERM on: end its child (by id), then the wrapper."""
    for pid in children(wrapper.pid):
        os.kill(pid, signal.SIGTERM)
    try:
        wrapper.wait(timeout=10)
    except subprocess.TimeoutExpired:
        for pid in children(wrapper.pid):
            os.kill(pid, signal.SIGKILL)
        procs.stop(wrapper)


@pytest.fixture
def procs(tmp_path):
    p = Processes(str(tmp_path))
    yield p
    # A test that ends early (skip, failure) leaves faketime's children: end them too.
    for proc in p.procs:
        if proc.poll() is None:
            for pid in children(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    p.stop_all()


@pytest.fixture
def relay():
    r = HostileRelay()
    yield r
    r.stop()


def renewals(relay, room, sender, recipient, step, since=0.0):
    """(time, payload) of RENEW payloads of `step` that `sender` sent to `recipient`."""
    out = []
    for f in relay.frames(since, IN):
        p = f.payload
        if (f.type == SEND and f.room == room and len(p) > 22 and p[0] == RENEW
                and p[1:11].hex() == recipient and p[11:21].hex() == sender and p[21] == step):
            out.append((f.time, p))
    return out


@pytest.mark.skipif(shutil.which("faketime") is None, reason="faketime is not installed")
def test_refused_renewal_cannot_be_replayed_later(procs, relay):
    s = synced_pair(procs, relay)

    # 1. A's clock 11 minutes ahead: B refuses A's renewal with a signed step 3.
    procs.stop(s.sync_a)
    ahead_started = time.monotonic()
    s.sync_a = start_sync(procs, s.a, prefix=AHEAD)
    try:
        wait_for(30, "B's step 3 refusing A's renewal (A's clock is ahead)",
                 lambda: renewals(relay, s.room, s.b_id, s.a_id, 3, ahead_started))
    except AssertionError:
        seen = [(round(f.time - ahead_started, 2), f.payload[0], f.payload[11:21].hex()[:6], f.payload[21] if len(f.payload) > 21 else None)
                for f in relay.frames(ahead_started, IN) if f.type == SEND and f.payload and f.payload[0] in (1, 4)]
        # The attack needs A's own step 1 refused; when B's renewal runs first and A
        # (the smaller id) waits on its own, none comes within the time (seen in 1 of
        # 3 runs under libfaketime). Not the property under test: skipped, not failed.
        pytest.skip(f"precondition not met: no step 3 within 30 s; payloads seen (t, type, sender, step): {seen[:40]}")
    stop_wrapped(procs, s.sync_a)
    refused = renewals(relay, s.room, s.a_id, s.b_id, 1, ahead_started)
    assert refused, "A sent no step 1 while its clock was ahead"
    recorded_at, recorded = refused[-1]   # the latest: its counter is the highest

    # 2. A's clock is right again: its renewal (counter back at real time) is accepted, sync works.
    fixed = time.monotonic()
    s.sync_a = start_sync(procs, s.a)
    wait_for(20, "B answering A's renewal with a step 2",
             lambda: renewals(relay, s.room, s.b_id, s.a_id, 2, fixed))
    s.a.put("after-fix", "k1", "v1")
    wait_for(20, "A's write on B after its clock was set right", lambda: s.b.get("after-fix", "k1") == "v1")

    # 3. Wait until B's clock reaches the recorded counter - 10 min, then replay it.
    time.sleep(max(0.0, recorded_at + 63 - time.monotonic()))
    replayed = time.monotonic()
    relay.inject(s.room, recorded)
    time.sleep(2)
    answered = renewals(relay, s.room, s.b_id, s.a_id, 2, replayed)
    # The damage, for the failure message: how long A's next write takes to reach B.
    s.a.put("after-replay", "k2", "v2")
    healed = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if s.b.get("after-replay", "k2") == "v2":
            healed = time.monotonic() - replayed
            break
        time.sleep(0.5)
    refused_honest = len(renewals(relay, s.room, s.a_id, s.b_id, 1, replayed))
    # A step 2 from B right after the injection means B accepted the replay and
    # replaced its session (A may also renew by itself later; only look at the first 2 s).
    assert not answered, (
        "B accepted a recorded step 1 of A's that it had refused a minute earlier (counter 11 min ahead): "
        "it answered with a step 2 and replaced its session with one A cannot complete, and its accepted "
        f"counter is now ~10 min in the future (A's own renewals would be refused as replays until then) "
        f"(A sent {refused_honest} step 1s after the replay; its next write reached B after "
        f"{'more than 60' if healed is None else round(healed, 1)} s)")
