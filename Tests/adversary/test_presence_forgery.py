"""A hostile relay forges presence to break a Double Ratchet session for good.

The relay reports membership (PRESENCE) and carries the devices' PRESENT/WHO
payloads, which are not authenticated. Each time the relay says the room
changed, a device forgets who is present and asks again; each time "B"
answers PRESENT, A greets B with a HELLO sealed by the pair's ratchet. With
B away, every forged cycle advances A's sending chain by one message B never
sees. Once A is more than 1,000 messages ahead (the ratchet's skip bound),
B refuses everything A sends, and since B cannot read A it never answers
with a new ratchet key that would let A step past it: the session stays
broken. A relay is allowed to drop and forge (docs/SECURITY.md), but that
must cost at most the frames it withholds, never the session.
"""
import time

import pytest

from hostile_relay import PRESENT, HostileRelay, missing_after, presence_payload, synced_pair
from support import Processes, start_sync, wait_for

CYCLES = 2_000          # forged presence cycles while B is away
BATCH = 50              # cycles sent before letting A catch up
FORGING_BUDGET = 20.0   # seconds the forging may take at most
SEALED_BOUND = 300      # after the fix A must seal far fewer than 1,000 frames for an absent device


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


def forge_presence_cycles(relay, room, device_id, cycles):
    """Make the room look as if `device_id` left and came back, `cycles` times.

    One cycle is a PRESENCE frame (a membership change: A resets what it knows
    and asks WHO) and a forged PRESENT from the absent device (A takes it as
    present and greets it). Frames go in batches; after each, the relay waits
    until A has gone quiet so A handles every cycle as a separate one. Bounded
    by FORGING_BUDGET; returns the number of cycles sent."""
    deadline = time.monotonic() + FORGING_BUDGET
    claim = presence_payload(PRESENT, device_id)
    sent = 0
    while sent < cycles and time.monotonic() < deadline:
        for _ in range(min(BATCH, cycles - sent)):
            relay.forge_presence(room, 2)
            relay.inject(room, claim)
            sent += 1
        relay.wait_quiet(quiet=0.05, timeout=2.0)
    return sent


def test_forged_presence_cannot_break_the_session(procs, relay):
    s = synced_pair(procs, relay)

    # B goes away; the relay sees its connection close.
    procs.stop(s.sync_b)
    wait_for(10, "B's connection to leave the room", lambda: relay.members(s.room) == 1)
    away = time.monotonic()

    cycles = forge_presence_cycles(relay, s.room, s.b_id, CYCLES)
    relay.wait_quiet(quiet=0.5, timeout=5.0)
    sealed_while_away = len(relay.sealed(s.room, sender=s.a_id, recipient=s.b_id, since=away))

    # B comes back; both must be able to talk again.
    s.sync_b = start_sync(procs, s.b)
    s.a.put("after", "from-a", "1")
    s.b.put("after", "from-b", "1")
    missing = missing_after(30, [(s.b, "after", "from-a", "1"), (s.a, "after", "from-b", "1")])
    assert not missing, (
        f"the session is broken: {missing} never arrived within 30 s after B came back. The relay forged "
        f"{cycles} presence cycles while B was away and A sealed {sealed_while_away} frames for B "
        f"(B's ratchet skips at most 1,000)")

    assert sealed_while_away < SEALED_BOUND, (
        f"A sealed {sealed_while_away} frames for B while B was away ({cycles} forged presence cycles): "
        f"forged presence makes A advance its ratchet for a device that is not there")
