"""Gossip with more records than a frame carries: 30 real `masq node`
processes (127.0.1.10-39, ports picked by the nodes) whose gossip frames
hold about 4 records (`--gossip-frame-bytes 4096`), so each node's table is
seven frames' worth, as 80-record frames are with some 550 nodes (and up to
the 4,096 records a table holds by default).

What must hold, as with thousands of nodes:
- every node learns every other node's record, and keeps them all while
  their nodes run (no live record expires, however little of the table a
  frame carries: a rotation repeats the whole table, news goes first);
- records of nodes that stopped go everywhere within twice the maximum age
  and the TTL (a last version reaches some nodes late, by the rotation),
  however often the others repeat them, and the live ones stay.

The node counters show where the gossip budget went.

Run: MASQ_BIN=.build/debug/masq-cli python3 -m pytest Tests/mesh/test_gossip_scale.py
"""
import os
import time

import pytest

from processes import Nodes, stop_all

MASQ = os.environ.get("MASQ_BIN", "masq")
COUNT = 30
TTL_MS, MAX_AGE_MS = 6_000, 20_000
COMMON = ["--hop-prefix-v4", "32", "--gossip-ms", "200", "--link-timeout-ms", "3000", "--gossip-frame-bytes", "4096",
          "--record-ttl-ms", str(TTL_MS), "--record-max-age-ms", str(MAX_AGE_MS), "--log-level", "error"]


@pytest.fixture
def crowd(tmp_path):
    nodes = Nodes(str(tmp_path), MASQ, COMMON)
    try:
        names = ["N%d" % i for i in range(COUNT)]
        nodes.start(names[0], "127.0.1.10")
        for i in range(1, COUNT):
            # Each node's seed is the one started before it: a chain (a
            # diameter of up to 29 hops for news to cross), which
            # introductions thicken.
            nodes.start(names[i], "127.0.1.%d" % (10 + i), ["--seed", nodes.descriptors[names[i - 1]]])
        yield nodes, names
    finally:
        stop_all(nodes.procs)


def known(nodes, name):
    return nodes.state(name)["known"]


def test_every_record_stays_while_its_node_runs_and_goes_when_it_stops(crowd):
    nodes, names = crowd
    deadline = time.monotonic() + 120
    while not all(known(nodes, n) == COUNT - 1 for n in names):
        assert time.monotonic() < deadline, \
            "not every node learned every record: %s" % sorted(known(nodes, n) for n in names)
        time.sleep(0.2)
    # Held, while every node runs, for more than twice the maximum age (each
    # record is now repeated by every holder and renewed by its node).
    deadline = time.monotonic() + 2 * MAX_AGE_MS / 1000 + 2
    lowest = COUNT - 1
    while time.monotonic() < deadline:
        lowest = min(lowest, min(known(nodes, n) for n in names))
        time.sleep(0.5)
    assert lowest == COUNT - 1, "a live node's record was dropped (lowest count held: %d)" % lowest

    # Three nodes stop: their records go everywhere, and every live one stays.
    stopped = names[-3:]
    for n in stopped:
        nodes.procs[n].terminate()
        nodes.procs[n].wait(10)
    live = names[:-3]
    # (a last version may take a while to reach everyone, by the rotation, and its age counts from then)
    deadline = time.monotonic() + (2 * MAX_AGE_MS + TTL_MS) / 1000 + 10
    lowest = COUNT - 1
    while time.monotonic() < deadline:
        counts = [known(nodes, n) for n in live]
        lowest = min(lowest, min(counts))
        if all(c == len(live) - 1 for c in counts):
            break
        time.sleep(0.5)
    assert all(c == len(live) - 1 for c in counts), \
        "stopped nodes' records were still held: %s" % sorted(counts)
    assert lowest >= len(live) - 1, "a live node's record was dropped while others stopped (lowest: %d)" % lowest
    # The budgets held: nothing was refused as a flood, nobody was banned.
    for n in live:
        counters = nodes.state(n)["counters"]
        assert counters["recordsRefused"] == 0 and counters["bans"] == 0, (n, counters)
