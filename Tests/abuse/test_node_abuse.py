"""`masq node` under abuse while it keeps serving: a second node stays
linked to it, and a client (a device's mesh transport, played here by a
Noise XX peer) keeps sending PING and getting PONG over its link.

The victim listens on 127.0.0.2, the second node on 127.0.0.3, the client
leaves from 127.0.0.4; attackers leave from 127.0.0.1 and from 127.0.0.10
and up (the node counts handshakes per address and bans addresses, so
attacks and legitimate peers must not share one; all loopback).

Four phases of ABUSE_SECONDS each, the client and the link working all along:
1. flood: TCP connections that never start their handshake, from 8
   addresses (past the 64 handshakes the node admits at once, 8 per
   address), handshake messages that never end, and first handshake
   messages left without the third;
2. slots: thousands of connections that send the first handshake message,
   read the node's answer (its Diffie-Hellman work) and reset; garbage
   instead of a handshake;
3. protocol: peers that complete the handshake and send garbage frames (a
   message that does not decrypt, unknown types, malformed cells, gossip
   that is not JSON): each is banned and closed;
4. gossip: a peer that gossips valid, signed records of fresh keys as fast
   as it can sign them (the node keeps at most --max-records, spends at
   most --gossip-records-per-second of verification on one peer and
   --gossip-verifications-per-turn per event-loop turn).
Then: the node is up, the second node still linked, a fresh client gets its
PONG, and the handshake table drained (64 new handshakes are admitted).

Run: MASQ_BIN=.build/debug/masq-cli python3 -m pytest -s Tests/abuse/test_node_abuse.py
"""
import json
import os
import re
import subprocess
import time

import pytest

import abuse

pytest.importorskip("cryptography", reason="pip install cryptography")

VICTIM, SECOND, CLIENT, FRESH = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
MAX_NEIGHBOURS = 5
MAX_CLIENTS = 8
LINK_QUEUE_MIB = 1
# Handshakes admitted at once, in all and per address prefix (a newcomer
# evicts the oldest when the table is full), and the records a node keeps.
MAX_PENDING = 64
MAX_PENDING_PER_HOST = 8
MAX_RECORDS = 4096
RECORD_BYTES = 2 * 1024
# Gossip every 200 ms (so the nodes link fast); link timeout (5 s) and record
# TTL (15 s) are the defaults an operator would run with.
COMMON = ["--gossip-ms", "200", "--ban-seconds", "60",
          "--max-neighbours", str(MAX_NEIGHBOURS), "--target-neighbours", "1", "--max-clients", str(MAX_CLIENTS),
          "--max-link-queue-mib", str(LINK_QUEUE_MIB), "--log-level", "error",
          "--max-pending-handshakes", str(MAX_PENDING), "--max-pending-handshakes-per-prefix", str(MAX_PENDING_PER_HOST),
          "--max-records", str(MAX_RECORDS)]

# RSS bound (KiB). What the node may hold at once, from its limits:
#   per handshake in progress (MAX_PENDING): one link message being
#     assembled (64 KiB) + a read buffer (NIO's adaptive allocator, up to
#     256 KiB) + CONNECTION_OVERHEAD;
#   per link (--max-neighbours + --max-clients): its queue toward the peer
#     (--max-link-queue-mib) + the same buffers;
#   + --max-records records of RECORD_BYTES (decoded, with their keys);
#   + FIXED for the allocator's arenas and its state.
MESSAGE = 64 * 1024
READ_BUFFER = 256 * 1024
CONNECTION_OVERHEAD = 64 * 1024
FIXED = 48 * 1024 * 1024
PER_CONNECTION = MESSAGE + READ_BUFFER + CONNECTION_OVERHEAD
RSS_BOUND_KIB = (MAX_PENDING * PER_CONNECTION + (MAX_NEIGHBOURS + MAX_CLIENTS) * (LINK_QUEUE_MIB * 1024 * 1024 + PER_CONNECTION)
                 + MAX_RECORDS * RECORD_BYTES + FIXED) // 1024
# Sockets the node may hold: handshakes in progress, links, its listener,
# SLACK for connections being accepted and refused at a sample.
SLACK = 32
SOCKET_BOUND = MAX_PENDING + MAX_NEIGHBOURS + MAX_CLIENTS + 1 + SLACK


def attackers(first, count):
    return ["127.0.0.%d" % i for i in range(first, first + count)]


def start_node(name, host, workdir, extra=()):
    data = os.path.join(workdir, name)
    os.makedirs(data, exist_ok=True)
    return abuse.Server(name, [abuse.MASQ, "node", "--host", host, "--port", "0", "--data-dir", data, *COMMON, *extra],
                        r"(masq://\S+)", workdir)


def state(workdir, name):
    """The node's state.json (written each gossip round; read again if caught mid-write)."""
    for _ in range(20):
        try:
            return json.load(open(os.path.join(workdir, name, "state.json")))
        except (OSError, ValueError):
            time.sleep(0.05)
    raise RuntimeError("no readable state.json for " + name)


def test_node_under_abuse(tmp_path, capsys):
    abuse.raise_fd_limit()
    workdir = str(tmp_path)
    victim = start_node("victim", VICTIM, workdir)
    second = None
    try:
        descriptor = victim.match.group(1)
        port = int(descriptor.rsplit(":", 1)[1])
        second = start_node("second", SECOND, workdir, ["--seed", descriptor])
        second_key = second.match.group(1).split(":")[2].split("@")[0]
        deadline = time.monotonic() + 20
        while second_key not in state(workdir, "victim")["neighbours"]:
            assert time.monotonic() < deadline, "the second node did not link to the victim"
            time.sleep(0.1)
        MeshPeer = abuse.mesh_peer_class()

        def client(source):
            peer = MeshPeer(VICTIM, port, source, client=True, timeout=abuse.LEGIT_TIMEOUT)
            try:
                peer.sock.settimeout(abuse.LEGIT_TIMEOUT)
                peer.handshake()
            except Exception:
                peer.sock.close()
                raise
            return peer

        holder = {"peer": client(CLIENT)}
        for _ in range(20):          # warm up
            holder["peer"].ping(abuse.LEGIT_TIMEOUT)
        baseline = victim.baseline_kib()

        def linked():
            if second_key not in state(workdir, "victim")["neighbours"]:
                raise RuntimeError("the second node is no longer a neighbour of the victim")

        def work(legit, i):
            legit.request(holder["peer"].ping, abuse.LEGIT_TIMEOUT)
            if i % 10 == 0:
                legit.request(linked)

        def recover():
            holder["peer"].sock.close()
            holder["peer"] = client(CLIENT)

        def newcomer():
            peer = client(FRESH)
            try:
                peer.ping(abuse.LEGIT_TIMEOUT)
            finally:
                peer.sock.close()

        legit = abuse.Legit("node", work, recover)
        target = {"kind": "mesh", "host": VICTIM, "port": port}

        def at(addresses):
            return dict(target, attackers=addresses)

        phases = [
            ("flood", [
                ("half_open", "half_open", {"count": 2 * MAX_PENDING}, at(attackers(10, 8))),
                ("slowloris", "slowloris", {"count": MAX_PENDING}, at(attackers(20, 8))),
                ("half_handshake", "half_handshake", {"count": MAX_PENDING}, at(attackers(30, 8))),
            ]),
            ("slots", [
                ("resets", "resets", {}, at([abuse.HOST])),
                ("resets_2", "resets", {}, at(attackers(40, 4))),
                ("garbage", "garbage", {}, at(attackers(44, 4))),
            ]),
            ("protocol", [
                ("handshaked_garbage", "mesh_handshaked_garbage", {}, at(attackers(100, 100))),
                ("handshaked_garbage_2", "mesh_handshaked_garbage", {}, at(attackers(200, 50))),
            ]),
            ("gossip", [
                ("gossip_flood", "mesh_gossip_flood", {}, at(attackers(250, 4))),
            ]),
        ]
        known_before = state(workdir, "victim")["known"]
        sampler, results, newcomers = abuse.run_phases(victim, target, legit, phases, newcomer)
        alive_after_attack = victim.alive()
        known_after = state(workdir, "victim")["known"] if alive_after_attack else None

        still_linked, fresh_error, drained = None, None, None
        if alive_after_attack:
            time.sleep(0.3)
            try:
                linked()
                still_linked = True
            except Exception as error:
                still_linked = repr(error)
            try:
                newcomer()
            except Exception as error:
                fresh_error = repr(error)
            # The handshake table drained: MAX_PENDING new connections from 8
            # fresh addresses are all admitted (a refused one is closed at once).
            time.sleep(0.5)        # the attackers' connections are closed: their handshakes go with them
            held = []
            for source in attackers(60, MAX_PENDING // MAX_PENDING_PER_HOST):
                for _ in range(MAX_PENDING_PER_HOST):
                    held.append(abuse.connect(target, source=source))
            time.sleep(0.5)
            drained = MAX_PENDING - len(abuse.poll_closed(held))
            abuse.close_all(held)
        counters = state(workdir, "victim")["counters"]
        holder["peer"].sock.close()

        details = ["baseline %.1f MiB, bound +%.1f MiB; peak %d sockets open in the node (bound %d)" % (
                       baseline / 1024, RSS_BOUND_KIB / 1024, sampler.peak_sockets, SOCKET_BOUND),
                   "legit: slowest %.0f ms; newcomers during %s" % (legit.max_ms(), "; ".join("%s: %s" % kv for kv in newcomers.items())),
                   "after: second node linked: %s, fresh client: %s, %s of %d new handshakes admitted" % (
                       still_linked, fresh_error or "ok", drained, MAX_PENDING),
                   "node counters: bans %d, pendingRefused %d, gossipRejected %d, cellsRejected %d; records known %d before, %s after" % (
                       counters["bans"], counters["pendingRefused"], counters["gossipRejected"], counters["cellsRejected"],
                       known_before, known_after)]
        details += abuse.summary(results)
        details += ["legit error: " + e for e in legit.errors]
        abuse.report(capsys, "node", sampler.peak_kib, baseline, legit, details)

        check = abuse.Checks("node")
        check.that(alive_after_attack, "the node died under abuse: " + victim.log_tail())
        check.that(second.alive(), "the second node died: " + second.log_tail())
        check.that(not [n for n, r in results.items() if "crashed" in r], "an attack crashed: %s" % results)
        check.that(legit.requests > 0, "the client made no request")
        check.that(legit.failures == 0, "%d legitimate requests failed: %s" % (legit.failures, legit.errors))
        check.that(still_linked is True, "after the attack: %s" % still_linked)
        check.that(fresh_error is None, "a fresh client failed: %s" % fresh_error)
        check.that(drained == MAX_PENDING, "handshake slots leaked: %s of %d admitted after the attack" % (drained, MAX_PENDING))
        check.that(sampler.peak_kib - baseline < RSS_BOUND_KIB, "RSS grew by %.1f MiB (bound %.1f MiB)" % (
            (sampler.peak_kib - baseline) / 1024, RSS_BOUND_KIB / 1024))
        check.that(sampler.peak_sockets <= SOCKET_BOUND, "the node held %d sockets open (bound %d)" % (sampler.peak_sockets, SOCKET_BOUND))
        # Peers that send garbage after the handshake are closed.
        for name in ("handshaked_garbage", "handshaked_garbage_2"):
            check.that(not [k for k in results[name] if k.startswith("NOT_closed")], "%s: not closed: %s" % (name, results[name]))
        check.verify()
    finally:
        if second:
            second.stop()
        victim.stop()
