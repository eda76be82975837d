"""A node's limits against floods, played against real `masq node`
processes on 127.0.0.40-59 (ports picked by the nodes):

- gossip: one peer gossips valid, signed records of fresh keys as fast as
  it can sign them. The node holds at most --max-records, verifies at most
  --gossip-records-per-second of one peer's records (the rest dropped
  unread) and --gossip-verifications-per-turn per turn of its loop; pings
  are answered throughout, neighbours stay linked, and a node that links
  while the table is full is still taken (neighbours' records are held
  beyond the cap while they are linked, and leave with them);
- handshakes: a few addresses fill the handshake table and keep it full.
  Past --max-pending-handshakes-per-prefix an address is refused; when the
  table is full the oldest handshake is closed for the newcomer, so new
  nodes and clients still link; a stalled handshake is closed after
  --handshake-timeout-ms.

Run: MASQ_BIN=.build/debug/masq-cli python3 -m pytest Tests/mesh/test_limits.py
"""
import json
import multiprocessing
import os
import select
import socket
import struct
import subprocess
import threading
import time

import pytest

from noise_client import Peer, b64, raw, signed_record
from processes import stop_all

pytest.importorskip("cryptography")
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402

MASQ = os.environ.get("MASQ_BIN", "masq")
COMMON = ["--hop-prefix-v4", "32", "--gossip-ms", "200", "--link-timeout-ms", "3000", "--ban-seconds", "60", "--log-level", "error"]


class Nodes:
    """Node processes of one test, each on its own loopback address."""

    def __init__(self, work):
        self.work = work
        self.procs = {}
        self.descriptors = {}

    def start(self, name, host, extra=()):
        d = os.path.join(self.work, name)
        os.makedirs(d, exist_ok=True)
        log = open(os.path.join(d, "log"), "w")
        p = subprocess.Popen([MASQ, "node", "--host", host, "--port", "0", "--data-dir", d] + COMMON + list(extra),
                             stdout=subprocess.PIPE, stderr=log, text=True)
        self.procs[name] = p
        line = p.stdout.readline()
        assert line.startswith("node masq://"), "%s did not start: %r %s" % (name, line, open(os.path.join(d, "log")).read())
        self.descriptors[name] = line.split()[1]
        return self.descriptors[name]

    def key(self, name):
        return self.descriptors[name].split(":")[2].split("@")[0]

    def port(self, name):
        return int(self.descriptors[name].rsplit(":", 1)[1])

    def state(self, name):
        path = os.path.join(self.work, name, "state.json")
        for _ in range(50):
            try:
                return json.load(open(path))
            except (OSError, ValueError):
                time.sleep(0.05)
        raise AssertionError("no state.json for " + name)

    def alive(self, name):
        return self.procs[name].poll() is None

    def stop(self):
        stop_all(self.procs)


@pytest.fixture
def nodes(tmp_path):
    n = Nodes(str(tmp_path))
    yield n
    n.stop()


def wait_for(condition, seconds, what):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def client(host, port, source, is_client=True):
    peer = Peer(host, port, source=source, client=is_client, timeout=5)
    peer.handshake()
    return peer


def fresh_records(count, agreement, first=0):
    return [signed_record(Ed25519PrivateKey.generate(), "10.%d.%d.%d" % (n >> 16 & 255, n >> 8 & 255, n & 255), agreement=agreement)
            for n in range(first, first + count)]


def drain(peer, stop):
    """Read what the node sends a peer (gossip, pings) so its queue stays empty."""
    try:
        peer.sock.settimeout(0.5)
        while not stop.is_set():
            try:
                peer.read_message()
            except socket.timeout:
                pass
    except Exception:
        pass


def gossip_flood(host, port, source, seconds, sent):
    """(A process of its own: the test's pings do not wait on its signing.)
    Gossip frames of 80 fresh, valid records as fast as they can be signed."""
    peer = client(host, port, source, is_client=False)
    stop = threading.Event()
    threading.Thread(target=drain, args=(peer, stop), daemon=True).start()
    agreement = b64(raw(X25519PrivateKey.generate()))
    deadline = time.monotonic() + seconds
    n = 0
    try:
        while time.monotonic() < deadline:
            batch = fresh_records(80, agreement, n)
            peer.frame(b"\x01" + json.dumps(batch).encode())
            n += len(batch)
            sent.value = n
    finally:
        stop.set()
        peer.sock.close()


def linked(state):
    """Neighbours and client neighbours: their records are held beyond --max-records."""
    return len(state["neighbours"]) + state["clientNeighbours"]


def test_a_gossip_flood_of_fresh_keys_is_capped_and_the_node_keeps_serving(nodes):
    # The table fills from the attacker's first burst of credit (2 x 200); then
    # new keys are refused on their key hint, and the attacker's frames are
    # read only as its credit allows.
    max_records, per_second, flood_seconds = 100, 200, 8
    victim = "127.0.0.40"
    nodes.start("victim", victim, ["--max-records", str(max_records), "--gossip-records-per-second", str(per_second),
                                   "--record-ttl-ms", "20000", "--target-neighbours", "1"])
    port = nodes.port("victim")
    nodes.start("second", "127.0.0.41", ["--seed", nodes.descriptors["victim"], "--target-neighbours", "1"])
    wait_for(lambda: nodes.key("second") in nodes.state("victim")["neighbours"], 20, "the second node did not link")
    device = client(victim, port, "127.0.0.42")
    device.ping()
    before = nodes.state("victim")["counters"]

    sent = multiprocessing.Value("q", 0)
    flood = multiprocessing.get_context("fork").Process(target=gossip_flood, args=(victim, port, "127.0.0.43", flood_seconds, sent), daemon=True)
    started = time.monotonic()
    flood.start()
    slowest, pings, known_peak, newcomer_started = 0.0, 0, 0, False
    while flood.is_alive():
        t = time.monotonic()
        device.ping(timeout=10)
        slowest = max(slowest, time.monotonic() - t)
        pings += 1
        s = nodes.state("victim")
        known_peak = max(known_peak, s["known"] - linked(s))
        # A node that links once the table is full is taken all the same.
        if not newcomer_started and s["counters"]["recordsRefused"] > before["recordsRefused"]:
            newcomer_started = True
            nodes.start("newcomer", "127.0.0.44", ["--seed", nodes.descriptors["victim"], "--target-neighbours", "1"])
        time.sleep(0.05)
    flood.join()
    elapsed = time.monotonic() - started
    after = nodes.state("victim")
    counters = after["counters"]
    verified = counters["gossipVerified"] - before["gossipVerified"]
    print("gossip flood: %d records sent in %.1f s; victim verified %d, records over budget %d, over turn limit %d, frames dropped %d, "
          "refused %d, evicted %d; known peak %d; %d pings, slowest %.0f ms" % (
              sent.value, elapsed, verified, counters["gossipOverBudget"], counters["gossipOverTurnLimit"], counters["gossipFramesDropped"],
              counters["recordsRefused"], counters["recordsEvicted"], known_peak, pings, slowest * 1000))

    assert sent.value > 2 * per_second * flood_seconds, "the flood was too slow to test anything (%d records)" % sent.value
    assert known_peak <= max_records and after["known"] - linked(after) <= max_records, (known_peak, after)
    assert counters["recordsRefused"] > before["recordsRefused"]
    dropped = counters["gossipOverBudget"] + counters["gossipFramesDropped"] - before["gossipOverBudget"] - before["gossipFramesDropped"]
    assert dropped > 0, "nothing was dropped for the attacker's credit"
    # The credit: per second, plus a burst of two seconds' worth, for the attacker and the two honest nodes.
    assert verified <= per_second * (elapsed + 2) + 2 * per_second + 100, verified
    assert slowest < 0.5, "a ping waited %.0f ms during the flood" % (slowest * 1000)
    assert nodes.alive("victim") and nodes.alive("second")
    assert nodes.key("second") in after["neighbours"], "the flood cost the victim its neighbour"
    assert nodes.key("victim") in nodes.state("second")["neighbours"]
    # The newcomer linked while the table was full: every linked neighbour's record is
    # held besides the full table; the attacker's left with it.
    assert newcomer_started, "the table never filled"
    wait_for(lambda: nodes.key("newcomer") in nodes.state("victim")["neighbours"], 10, "the newcomer did not link to the full victim")
    wait_for(lambda: nodes.state("victim")["counters"]["recordsEvicted"] > before["recordsEvicted"], 5,
             "the attacker's record stayed after it left a full table")
    s = nodes.state("victim")
    assert s["known"] == max_records + linked(s), s
    # A fresh client links and gets its PONG.
    fresh = client(victim, port, "127.0.0.45")
    fresh.ping()
    fresh.sock.close()
    device.ping()
    device.sock.close()


# Reading a record costs 1/16 of a verification (MeshNode.readCost): a frame of
# 80 records costs 5 before anything is verified.
READ_80 = 5


@pytest.mark.parametrize("options, verified, dropped_counter", [
    # The turn's allowance: one frame of 80 fresh records arrives in one turn of the loop.
    (["--gossip-verifications-per-turn", "8", "--gossip-records-per-second", "100000"], 8 - READ_80, "gossipOverTurnLimit"),
    # A peer's credit: two seconds' worth (20) at once.
    (["--gossip-verifications-per-turn", "1000", "--gossip-records-per-second", "10"], 20 - READ_80, "gossipOverBudget"),
])
def test_records_past_a_turns_allowance_or_a_peers_credit_are_dropped_unverified(nodes, options, verified, dropped_counter):
    victim = "127.0.0.46"
    nodes.start("victim", victim, options)
    port = nodes.port("victim")
    peer = client(victim, port, "127.0.0.47", is_client=False)
    stop = threading.Event()
    reader = threading.Thread(target=drain, args=(peer, stop), daemon=True)
    reader.start()
    agreement = b64(raw(X25519PrivateKey.generate()))
    peer.frame(b"\x01" + json.dumps(fresh_records(80, agreement)).encode())
    # state.json is written each gossip round.
    wait_for(lambda: sum(nodes.state("victim")["counters"][c] for c in ("gossipVerified", dropped_counter)) >= 80, 5, "the frame was not counted")
    counters = nodes.state("victim")["counters"]
    stop.set()
    reader.join()
    assert counters["gossipVerified"] == verified, counters
    assert counters[dropped_counter] == 80 - verified, counters
    # What was verified is held (besides the peer's own record, from its handshake).
    assert nodes.state("victim")["known"] == verified + 1
    peer.ping()
    peer.sock.close()


def hold_handshakes(host, port, sources, per_source, stop, connects):
    """(A process of its own.) Keep `per_source` connections from each
    address in their handshake: each sends the first handshake message
    (the node answers with its own: a DH's work) and nothing more; a
    connection the node closes is replaced at once."""
    slots = {}
    opening = struct.pack(">H", 32) + os.urandom(32)
    while not stop.is_set():
        for source in sources:
            for i in range(per_source):
                s = slots.get((source, i))
                if s is not None:
                    r, _, _ = select.select([s], [], [], 0)
                    if r:
                        try:
                            if s.recv(65536):
                                continue
                        except OSError:
                            pass
                        s.close()
                        s = None
                if s is None:
                    try:
                        s = socket.create_connection((host, port), timeout=2, source_address=(source, 0))
                        s.sendall(opening)
                        connects.value += 1
                    except OSError:
                        s = None
                    slots[(source, i)] = s
        time.sleep(0.01)
    for s in slots.values():
        if s:
            s.close()


def test_a_handshake_flood_from_a_few_addresses_does_not_lock_newcomers_out(nodes):
    table, per_prefix = 16, 4
    victim = "127.0.0.50"
    nodes.start("victim", victim, ["--max-pending-handshakes", str(table), "--max-pending-handshakes-per-prefix", str(per_prefix),
                                   "--handshake-timeout-ms", "2000", "--target-neighbours", "1"])
    port = nodes.port("victim")
    device = client(victim, port, "127.0.0.51")
    device.ping()

    stop = multiprocessing.get_context("fork").Event()
    connects = multiprocessing.Value("q", 0)
    attackers = ["127.0.0.%d" % i for i in range(52, 56)]
    flood = multiprocessing.get_context("fork").Process(target=hold_handshakes, args=(victim, port, attackers, per_prefix, stop, connects), daemon=True)
    flood.start()
    try:
        wait_for(lambda: nodes.state("victim")["pending"] >= table, 10, "the attackers did not fill the handshake table")
        # Past its prefix's share an attacking address is refused at once.
        refused_before = nodes.state("victim")["counters"]["pendingRefused"]
        extra = socket.create_connection((victim, port), timeout=2, source_address=(attackers[0], 0))
        extra.settimeout(2)
        assert extra.recv(1) == b"", "a connection past its prefix's share was kept"
        extra.close()
        wait_for(lambda: nodes.state("victim")["counters"]["pendingRefused"] > refused_before, 5, "the refusal was not counted")

        # Newcomers link while the table stays full: each takes the oldest handshake's place.
        nodes.start("newcomer", "127.0.0.56", ["--seed", nodes.descriptors["victim"], "--target-neighbours", "1"])
        ok, slowest, peak = 0, 0.0, 0
        for i in range(20):
            t = time.monotonic()
            fresh = client(victim, port, "127.0.0.57")
            fresh.ping()
            fresh.sock.close()
            slowest = max(slowest, time.monotonic() - t)
            ok += 1
            device.ping()
            peak = max(peak, nodes.state("victim")["pending"])
            time.sleep(0.1)
        wait_for(lambda: nodes.key("newcomer") in nodes.state("victim")["neighbours"], 15, "the newcomer node did not link during the flood")
        s = nodes.state("victim")
        print("handshake flood: %d attacker connections; victim: pending peak %d of %d, evicted %d, refused %d, timeouts %d; "
              "%d newcomers ok, slowest %.0f ms" % (connects.value, peak, table, s["counters"]["pendingEvicted"], s["counters"]["pendingRefused"],
                                                    s["counters"]["handshakeTimeouts"], ok, slowest * 1000))
        assert peak <= table
        assert s["counters"]["pendingEvicted"] > 0
        assert nodes.alive("victim")
    finally:
        stop.set()
        flood.join(10)
    # A handshake that stalls is closed after --handshake-timeout-ms (checked each gossip round).
    timeouts_before = nodes.state("victim")["counters"]["handshakeTimeouts"]
    stalled = socket.create_connection((victim, port), timeout=5, source_address=("127.0.0.58", 0))
    t = time.monotonic()
    stalled.settimeout(5)
    assert stalled.recv(1) == b""
    lived = time.monotonic() - t
    stalled.close()
    assert 1.8 <= lived <= 3.0, lived
    wait_for(lambda: nodes.state("victim")["counters"]["handshakeTimeouts"] > timeouts_before, 5, "the timeout was not counted")
    wait_for(lambda: nodes.state("victim")["pending"] == 0, 5, "handshakes left in the table")
    device.ping()
    device.sock.close()


def test_handshakes_are_counted_per_ipv6_64(tmp_path):
    """In a network namespace of its own (unshare -rn; skipped where that is
    not allowed), with addresses of two IPv6 /64s on its loopback: the
    addresses of one /64 share one prefix's handshakes, another /64 is
    counted apart."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ipv6_prefix.py")
    probe = subprocess.run(["unshare", "-rn", "ip", "-6", "addr", "add", "fd00::1/128", "dev", "lo", "nodad"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("no network namespace here: %s" % probe.stderr.strip())
    r = subprocess.run(["unshare", "-rn", "python3", script, os.path.abspath(MASQ) if os.sep in MASQ else MASQ, str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    counters = result["state"]["counters"]
    assert result["same_64_kept"] == 4, result
    assert result["same_64_next_refused"], "a fifth address of the same /64 got a handshake slot"
    assert result["other_64_kept"] and result["other_64_client_ping"], result
    assert counters["pendingRefused"] == 1, counters
