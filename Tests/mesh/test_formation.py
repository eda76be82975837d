"""How the mesh forms, and what an attacker gains against it. Real `masq
node` processes on loopback (127.0.2.x, 127.0.4.x, 127.0.6.x, 127.0.7.x,
127.0.9.1xx, 127.0.10.1xx; hostile nodes on 127.0.5.x, 127.0.8.x, 127.0.9.1x,
127.0.10.x), gossip every 200 ms, a full node shedding one link every 10
rounds (`--shed-rounds 10`: 2 s).

- Forty nodes all seeding one node form one mesh (nobody left alone, every
  node with 2 neighbours or more), and no node ever holds more than 5 node
  neighbours, though dials in flight complete together. Before anchors and
  shedding, 30 nodes left 16 alone: every newcomer brings 3 links and 5
  slots, so a growing network filled up.
- Hostile nodes fill a victim and its neighbours (so that they must shed),
  claiming them as their anchors and advertising one neighbour (so that
  their own links are never the ones shed). What must hold: a link that was
  protected at both of its ends before the attack (an anchor of one end,
  honoured at the other) is never shed, and the victim keeps at least its 2
  anchors' worth of honest neighbours all along.

- Squatters on a seed take every link dialed to them and dial every
  newcomer they are introduced to (under one key, or a fresh key each
  time, or looking settled through minted partners), advertising one
  neighbour: the honest newcomers still form one network among
  themselves, none anchors on a squatter (room is counted over the links
  the network sees, and over what became of the newcomers a node sent
  each neighbour), and, watched for 30 s more, a split lasts 30 s at most.
- Minted records name every honest node as a neighbour, five times over,
  so that every node looks full: newcomers still form one network.
- One attacker node shows every node made-up keys, first reached through
  it, then out of reach (a split, as every node sees it): the nodes dial
  a seed for it about 4 times per period in all, not each of them.
- A neighbour flooding introductions of minted records does not crowd a
  genuine one out (8 held per address group); dials refused for fullness
  under fresh keys from one address are introduced once per 10 rounds; a
  refused dialer whose record names another host is introduced to nobody
  (the network would dial that host).

- An island (a clique of 4 at their target) whose only bridge stops finds
  its way back through a seed, once its nodes see the other side's records
  go quiet or out of reach.

Run: MASQ_BIN=.build/debug/masq-cli python3 -m pytest Tests/mesh/test_formation.py
"""
import json
import os
import socket
import threading
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import adversary
import noise_client
from adversary import HostileNode
from processes import Nodes, stop_all, wait_for

MASQ = os.environ.get("MASQ_BIN", "masq")
# How long the honest network is watched once joined under squatters (it must stay one, or join again).
WATCH_SECONDS = int(os.environ.get("MESH_WATCH_SECONDS", "30"))
COMMON = ["--hop-prefix-v4", "32", "--gossip-ms", "200", "--link-timeout-ms", "3000", "--shed-rounds", "10",
          "--log-level", "error"]


def graph(nodes, names):
    """Each node's neighbours (names), from the nodes' state files."""
    by_key = {nodes.key(n): n for n in names}
    return {n: {by_key[k] for k in nodes.state(n)["neighbours"] if k in by_key} for n in names}


def components(adjacency):
    # (state files are read one after the other: a link one end lists counts)
    adjacency = {n: set(v) for n, v in adjacency.items()}
    for n, v in list(adjacency.items()):
        for m in v:
            adjacency.setdefault(m, set()).add(n)
    seen, sizes = set(), []
    for start in adjacency:
        if start in seen:
            continue
        stack, part = [start], set()
        while stack:
            at = stack.pop()
            if at not in part:
                part.add(at)
                stack.extend(adjacency[at] - part)
        seen |= part
        sizes.append(len(part))
    return sorted(sizes, reverse=True)


def test_forty_nodes_seeding_one_form_one_mesh_and_none_holds_more_than_five(tmp_path):
    nodes = Nodes(str(tmp_path), MASQ, COMMON)
    count, most = 40, 5
    names = ["S%d" % i for i in range(count)]
    try:
        seed = nodes.start(names[0], "127.0.2.100")
        for i in range(1, count):
            nodes.start(names[i], "127.0.2.%d" % (100 + i), ["--seed", seed])
        deadline, largest, adjacency = time.monotonic() + 120, 0, {}
        while time.monotonic() < deadline:
            adjacency = graph(nodes, names)
            largest = max(largest, max(len(v) for v in adjacency.values()))
            if components(adjacency) == [count] and min(len(v) for v in adjacency.values()) >= 2:
                break
            time.sleep(0.5)
        assert largest <= most, "a node held %d neighbours" % largest
        assert components(adjacency) == [count], "the mesh did not form: components %s, degrees %s" % (
            components(adjacency), sorted(len(v) for v in adjacency.values()))
        assert min(len(v) for v in adjacency.values()) >= 2, sorted(len(v) for v in adjacency.values())
        # Room was made by shedding.
        assert sum(nodes.state(n)["counters"]["linksShed"] for n in names) > 0
    finally:
        stop_all(nodes.procs)


class Squatter(HostileNode):
    """Claims every node it links to as its anchor and advertises only one
    neighbour, whatever it holds: its links look protected at the far end
    and their far end too poor to lose one."""

    def record(self, link=False, legacy=False):
        keys = [adversary.b64(l.key) for l in self.links if l.open][:1]
        rec = {"network": self.network, "key": adversary.b64(self.key), "agreement": adversary.b64(self.static_pub),
               "version": self.version, "neighbours": keys, "anchors": keys, "rates": self.rates, "exit": False}
        if link:
            rec["host"], rec["port"] = self.source, self.port
        body = json.dumps(rec, separators=(",", ":")).encode()
        context = adversary.LINK_CONTEXT if link else adversary.RECORD_CONTEXT
        return {"r": adversary.b64(body), "s": adversary.b64(self.identity.sign(context + body))}


def test_squatters_filling_a_node_and_its_neighbours_never_take_a_protected_link(tmp_path):
    nodes = Nodes(str(tmp_path), MASQ, COMMON)
    names = ["N%d" % i for i in range(10)]
    squatters, stop = [], threading.Event()
    try:
        # Ten honest nodes, each seeding the two started before it.
        nodes.start(names[0], "127.0.4.10")
        for i in range(1, len(names)):
            seeds = sum([["--seed", nodes.descriptors[names[j]]] for j in range(max(0, i - 2), i)], [])
            nodes.start(names[i], "127.0.4.%d" % (10 + i), seeds)
        wait_for(lambda: min(len(nodes.state(n)["neighbours"]) for n in names) >= 3, 60, "the honest mesh did not form")
        time.sleep(3)
        honest = {nodes.key(n): n for n in names}
        victim = max(names, key=lambda n: len(nodes.state(n)["neighbours"]))
        anchors = [honest[k] for k in nodes.state(victim)["anchors"]]
        targets = [victim] + anchors

        def protected_links():
            """Links protected at both ends: an anchor of one end whose claim the other honours."""
            out = set()
            for n in names:
                state = nodes.state(n)
                for k in state["anchoredBy"]:
                    if k in honest and nodes.key(n) in nodes.state(honest[k])["anchors"]:
                        out.add(frozenset((n, honest[k])))
            return out

        # (anchors are links that lasted 3 shedding periods, to settled nodes)
        wait_for(lambda: len(protected_links()) >= len(names) // 2, 30, "no links were protected")
        anchors = [honest[k] for k in nodes.state(victim)["anchors"]]
        targets = [victim] + anchors
        before = protected_links()
        victim_anchor_links = {frozenset((victim, a)) for a in anchors}
        shed_before = sum(nodes.state(n)["counters"]["linksShed"] for n in targets)

        # Three squatters per target, each on its own address, dialing again whenever dropped.
        for i, target in enumerate(t for t in targets for _ in range(3)):
            host = "127.0.5.%d" % (10 + i)
            squatters.append((Squatter(host), target, host))

        def keep_dialing():
            while not stop.is_set():
                for s, target, _ in squatters:
                    if not any(l.open for l in s.links):
                        try:
                            s.dial(nodes.host(target), nodes.port(target))
                        except (OSError, ConnectionError, ValueError):
                            pass
                stop.wait(0.3)

        threading.Thread(target=keep_dialing, daemon=True).start()
        deadline, fewest_honest, squatted = time.monotonic() + 40, 99, 0
        while time.monotonic() < deadline:
            neighbours = nodes.state(victim)["neighbours"]
            fewest_honest = min(fewest_honest, sum(1 for k in neighbours if k in honest))
            squatted = max(squatted, sum(1 for k in neighbours if k not in honest))
            time.sleep(0.25)
        after = protected_links()
        shed = sum(nodes.state(n)["counters"]["linksShed"] for n in targets) - shed_before
        print("protected before %d, after %d; squatters at the victim at most %d; fewest honest %d; shed %d; "
              "squatters shed %d" % (len(before), len(after), squatted, fewest_honest, shed,
                                     sum(s.byes.count(b"shed") for s, _, _ in squatters)))
        assert before and squatted > 0, "the attack did not take hold (squatters %d, links shed %d)" % (squatted, shed)

        # Never shed: every link protected before is still up. (One may be protected no more while up: an
        # end re-chooses its anchors when a far end's confirmed links fall below the target.)
        lost = [sorted(l) for l in before if not all(nodes.key(b) in nodes.state(a)["neighbours"]
                                                       for a, b in (sorted(l), sorted(l)[::-1]))]
        assert not lost, "protected links were shed: %s (no longer protected: %s)" % (
            lost, sorted(map(sorted, before - after)))
        assert fewest_honest >= len(anchors), "the victim kept only %d honest neighbours" % fewest_honest
        # The victim's anchor links honoured at the far end are protected; one the far end does not honour (it
        # honours 2 claims, oldest first) may be shed there, as the design says (seen once in CI: N1-N4).
        for link in victim_anchor_links:
            a, b = sorted(link)
            up = nodes.key(b) in nodes.state(a)["neighbours"]
            print("victim anchor link %s-%s: %s, %s" % (a, b, "honoured" if link in before else "not honoured",
                                                         "up" if up else "gone"))
            assert up or link not in before, "the victim lost its protected anchor link %s-%s" % (a, b)
    finally:
        stop.set()
        for s, _, _ in squatters:
            s.stop()
        stop_all(nodes.procs)


class SettledSquatter(Squatter):
    """A squatter that looks settled: it advertises the seed and three
    minted partners whose records name it back (links "both ends
    advertise": at the target, whatever it holds), and claims the seed as
    its anchor. (Fourth review: before anchors had to name the dialer, 22
    of 30 newcomers anchored on three of these.)"""

    def __init__(self, source, seed_key):
        super().__init__(source)
        self.seed_key = seed_key
        self.partners = [(Ed25519PrivateKey.generate(), X25519PrivateKey.generate()) for _ in range(3)]

    def _signed(self, rec, identity, context):
        body = json.dumps(rec, separators=(",", ":")).encode()
        return {"r": adversary.b64(body), "s": adversary.b64(identity.sign(context + body))}

    def record(self, link=False, legacy=False):
        keys = [self.seed_key] + [adversary.b64(noise_client.raw(i)) for i, _ in self.partners]
        rec = {"network": self.network, "key": adversary.b64(self.key), "agreement": adversary.b64(self.static_pub),
               "version": self.version, "neighbours": keys, "anchors": [self.seed_key], "rates": self.rates,
               "exit": False}
        if link:
            rec["host"], rec["port"] = self.source, self.port
        return self._signed(rec, self.identity, adversary.LINK_CONTEXT if link else adversary.RECORD_CONTEXT)

    def _gossip(self, link):
        partners = [self._signed({"network": self.network, "key": adversary.b64(noise_client.raw(i)),
                                  "agreement": adversary.b64(noise_client.raw(a)), "version": self.version,
                                  "neighbours": [adversary.b64(self.key)], "rates": self.rates, "exit": False},
                                 i, adversary.RECORD_CONTEXT) for i, a in self.partners]
        with self.lock:
            heard = [r for k, r in self.heard.items() if adversary.unb64(k) != link.key][:40]
        link.send([bytes([adversary.GOSSIP]) + json.dumps([self.record()] + partners + heard).encode(),
                   bytes([adversary.PING])])


@pytest.mark.parametrize("kind", ["one-key", "a-key-per-link", "settled-looking"])
def test_squatters_on_the_seed_taking_every_link_do_not_keep_newcomers_apart(tmp_path, kind):
    """Three squatters (an address each) take slots on the seed of thirty
    newcomers before they come, listen, and accept every link dialed to
    them, and dial every newcomer they are introduced to — with the key the
    seed knows, or a fresh key per link, so that nobody ever names the one
    the seed holds — while advertising one neighbour and claiming it as an
    anchor (or, settled-looking, the seed and three minted partners naming
    them back): the seed, full, would see room only there and send every
    newcomer their way, where nobody is introduced to anybody. What must
    hold: the honest nodes form one network among themselves (links to
    squatters left out), each with an honest neighbour, and no honest node
    anchors on a squatter; and, watched for a while after, they stay one
    or join again within 30 s. (A node counts a neighbour's room over the
    links the network sees, and over what became of the newcomers it sent
    it; settled neighbours first; two honest parts joined only through
    squatters, which relay each one's fresh records to the other, find
    each other through the seeds: `hiddenNodes`.)"""
    fresh_keys = kind == "a-key-per-link"
    nodes = Nodes(str(tmp_path), MASQ, COMMON)
    count = 30
    names = ["H%d" % i for i in range(count)]
    squatters, others, stop = [], [], threading.Event()
    try:
        seed = nodes.start(names[0], "127.0.7.100")
        for i in range(3):
            source = "127.0.8.%d" % (10 + i)
            s = SettledSquatter(source, nodes.key(names[0])) if kind == "settled-looking" else Squatter(source)
            s.listen()
            s.dial(nodes.host(names[0]), nodes.port(names[0]))
            squatters.append(s)
        wait_for(lambda: len(nodes.state(names[0])["neighbours"]) == 3, 10, "the squatters did not link to the seed")

        def keep_dialing():
            taken = [0] * len(squatters)
            while not stop.is_set():
                for i, s in enumerate(squatters):
                    # Every newcomer it is introduced to, it dials: one slot of the newcomer's.
                    for body in s.intros[taken[i]:]:
                        for signed in json.loads(body):
                            rec = adversary.record_of(signed)
                            if s.link_to(adversary.unb64(rec["key"])) is None:
                                dialer = Squatter(s.source) if fresh_keys else s
                                try:
                                    dialer.dial(rec["host"], rec["port"])
                                except (OSError, ConnectionError, ValueError):
                                    pass
                                if fresh_keys:
                                    others.append(dialer)
                    taken[i] = len(s.intros)
                    if s.link_to(adversary.unb64(nodes.key(names[0]))) is None:
                        try:
                            s.dial(nodes.host(names[0]), nodes.port(names[0]))
                        except (OSError, ConnectionError, ValueError):
                            pass
                stop.wait(0.3)

        threading.Thread(target=keep_dialing, daemon=True).start()
        for i in range(1, count):
            nodes.start(names[i], "127.0.7.%d" % (100 + i), ["--seed", seed])
        hostile = {adversary.b64(s.key) for s in squatters}
        started = time.monotonic()
        deadline, adjacency = started + 120, {}
        while time.monotonic() < deadline:
            adjacency = graph(nodes, names)
            if components(adjacency) == [count] and min(len(v) for v in adjacency.values()) >= 1:
                break
            time.sleep(0.5)
        joined = time.monotonic() - started
        hostile |= {adversary.b64(s.key) for s in others}
        held = sum(1 for n in names for k in nodes.state(n)["neighbours"] if k in hostile)
        print("after %d s: honest components %s, honest degrees %s, links held by squatters %d, seed sent newcomers "
              "to squatters %d times" % (joined, components(adjacency), sorted(len(v) for v in adjacency.values()),
                                         held, sum(len(s.intros) for s in squatters)))
        assert components(adjacency) == [count], "the honest nodes are apart: components %s" % (
            components(adjacency),)
        assert min(len(v) for v in adjacency.values()) >= 1
        if not fresh_keys:
            # And it stays one: links are shed and time out, and two honest parts joined only through squatters
            # (which relay each part's fresh records to the other) find each other again (`hiddenNodes`).
            watch_until, apart_since, longest, splits = time.monotonic() + WATCH_SECONDS, None, 0.0, []
            while time.monotonic() < watch_until:
                parts = components(graph(nodes, names))
                if parts != [count]:
                    if apart_since is None:
                        apart_since = time.monotonic()
                        splits.append(parts)
                    longest = max(longest, time.monotonic() - apart_since)
                else:
                    apart_since = None
                time.sleep(0.5)
            redials = sum(nodes.state(n)["counters"].get("splitRedials", 0) for n in names)
            print("watched %d s: splits %s, longest apart %.1f s, redials for hidden parts %d" % (
                WATCH_SECONDS, splits, longest, redials))
            assert longest <= 30, "the honest nodes stayed apart %.0f s: %s" % (longest, splits)
        anchored = [n for n in names if set(nodes.state(n)["anchors"]) & hostile]
        assert not anchored, "honest nodes anchored on squatters: %s" % anchored
    finally:
        stop.set()
        for s in squatters + others:
            s.stop()
        stop_all(nodes.procs)


class Inflater(Squatter):
    """Links to a node and gossips, besides its own record, records of 40
    minted keys naming every honest node it has heard of five times over
    (16 names a record): each honest node looks as if it had five more
    links than it has."""

    def __init__(self, source):
        super().__init__(source)
        self.minted = [(Ed25519PrivateKey.generate(), X25519PrivateKey.generate()) for _ in range(40)]
        self.minted_keys = {adversary.b64(noise_client.raw(i)) for i, _ in self.minted}

    def minted_records(self):
        with self.lock:
            honest = sorted(k for k in self.heard if k not in self.minted_keys)
        claims, out = [k for _ in range(5) for k in honest], []
        for identity, agreement in self.minted:
            chunk, rest = [], []
            for k in claims:
                (chunk if len(chunk) < 16 and k not in chunk else rest).append(k)
            if not chunk:
                break
            claims = rest
            rec = {"network": self.network, "key": adversary.b64(noise_client.raw(identity)),
                   "agreement": adversary.b64(noise_client.raw(agreement)), "version": int(time.time() * 1000),
                   "neighbours": chunk, "rates": self.rates, "exit": False}
            body = json.dumps(rec, separators=(",", ":")).encode()
            out.append({"r": adversary.b64(body), "s": adversary.b64(identity.sign(adversary.RECORD_CONTEXT + body))})
        return out

    def _gossip(self, link):
        with self.lock:
            heard = [r for k, r in self.heard.items() if adversary.unb64(k) != link.key and k not in self.minted_keys]
        link.send([bytes([adversary.GOSSIP]) + json.dumps(self.minted_records() + [self.record()] + heard[:150]).encode(),
                   bytes([adversary.PING])])


def test_minted_records_making_every_node_look_full_do_not_stop_newcomers_joining(tmp_path):
    """A node on the seed gossips records of minted keys that name every
    honest node as a neighbour, five times over: counted over the links the
    network sees, every node looks full, and nobody would be introduced to
    anybody (a first version of that count: 13 of 30 newcomers alone at
    12 s, 4 groups at 100 s). Newcomers go to settled neighbours advertising
    room then, and to those whose room this node saw for itself (what became
    of the newcomers it sent them): the thirty form one network."""
    nodes = Nodes(str(tmp_path), MASQ, COMMON)
    count = 30
    names = ["F%d" % i for i in range(count)]
    attackers, stop = [], threading.Event()
    try:
        seed = nodes.start(names[0], "127.0.9.100")

        def keep_linked():
            address = 10
            while not stop.is_set():
                if not any(l.open for a in attackers for l in a.links):
                    a = Inflater("127.0.9.%d" % address)
                    address += 1
                    try:
                        a.dial(nodes.host(names[0]), nodes.port(names[0]))
                        attackers.append(a)
                    except (OSError, ConnectionError, ValueError):
                        a.stop()
                stop.wait(0.5)

        threading.Thread(target=keep_linked, daemon=True).start()
        wait_for(lambda: attackers and nodes.state(names[0])["known"] >= 5, 15, "the minted records did not arrive")
        for i in range(1, count):
            nodes.start(names[i], "127.0.9.%d" % (100 + i), ["--seed", seed])
        started = time.monotonic()
        deadline, adjacency = started + 60, {}
        while time.monotonic() < deadline:
            adjacency = graph(nodes, names)
            if components(adjacency) == [count] and min(len(v) for v in adjacency.values()) >= 1:
                break
            time.sleep(0.5)
        print("after %d s: components %s, degrees %s, records held at the seed %d, introductions %d" % (
            time.monotonic() - started, components(adjacency), sorted(len(v) for v in adjacency.values()), nodes.state(names[0])["known"],
            sum(nodes.state(n)["counters"]["introductionsSent"] for n in names)))
        assert components(adjacency) == [count], "the newcomers are apart: components %s" % (components(adjacency),)
        assert min(len(v) for v in adjacency.values()) >= 1
        # Minted keys, which no honest node names, are never taken for a part of the network out of reach
        # (every node would dial its seeds on them): only nodes once reached count (`hiddenNodes`).
        minted = set().union(*(a.minted_keys for a in attackers))
        taken = {n: len(set(nodes.state(n)["hidden"]) & minted) for n in names}
        assert not any(taken.values()), "minted records counted as out of reach: %s" % taken
    finally:
        stop.set()
        for a in attackers:
            a.stop()
        stop_all(nodes.procs)



class PhantomClique(HostileNode):
    """Links to one honest node and advertises three made-up keys besides
    it, whose records name it and each other: every node reaches them over
    links both ends advertise. Then (`detach`) they stop naming it, and it
    them, but keep naming each other, with a new version every round: live,
    reached before, out of reach now, with links both ends advertise — a
    part of the network cut off, as every node sees it (sixth review)."""

    def __init__(self, source):
        super().__init__(source)
        self.made_up = [(Ed25519PrivateKey.generate(), X25519PrivateKey.generate()) for _ in range(3)]
        self.made_up_keys = [adversary.b64(noise_client.raw(i)) for i, _ in self.made_up]
        self.attached = True

    def _signed(self, rec, identity):
        body = json.dumps(rec, separators=(",", ":")).encode()
        return {"r": adversary.b64(body), "s": adversary.b64(identity.sign(adversary.RECORD_CONTEXT + body))}

    def record(self, link=False, legacy=False):
        rec = {"network": self.network, "key": adversary.b64(self.key), "agreement": adversary.b64(self.static_pub),
               "version": self.version, "neighbours": [adversary.b64(l.key) for l in self.links if l.open]
               + (self.made_up_keys if self.attached else []), "rates": self.rates, "exit": False}
        if link:
            rec["host"], rec["port"] = self.source, self.port
            rec["neighbours"] = []
        body = json.dumps(rec, separators=(",", ":")).encode()
        context = adversary.LINK_CONTEXT if link else adversary.RECORD_CONTEXT
        return {"r": adversary.b64(body), "s": adversary.b64(self.identity.sign(context + body))}

    def _gossip(self, link):
        made_up = []
        for identity, agreement in self.made_up:
            mine = adversary.b64(noise_client.raw(identity))
            names = [k for k in self.made_up_keys if k != mine] + ([adversary.b64(self.key)] if self.attached else [])
            made_up.append(self._signed({"network": self.network, "key": mine,
                                         "agreement": adversary.b64(noise_client.raw(agreement)),
                                         "version": self.version, "neighbours": names, "rates": self.rates,
                                         "exit": False}, identity))
        link.send([bytes([adversary.GOSSIP]) + json.dumps([self.record()] + made_up).encode(),
                   bytes([adversary.PING])])


def test_made_up_nodes_reached_through_one_attacker_do_not_make_every_node_dial_its_seeds(tmp_path):
    """One attacker node linked to one honest node shows made-up keys,
    first reached through it, then out of reach and still live (a split,
    as every node sees it: `PhantomClique`). A split is healed by dialing
    a seed; before the sixth review every node with room dialed every seed
    for it, once per 10 shedding periods, for as long as the attacker
    liked. What must hold: the nodes do see it (it is the attack), and
    the dials for it stay few — a node dials one seed, with a chance that
    makes about 4 dials per part and period whatever the part's size — not
    one per node and period."""
    nodes = Nodes(str(tmp_path), MASQ, COMMON)
    count, watch = 16, 30
    names = ["P%d" % i for i in range(count)]
    attacker = None
    try:
        seed = nodes.start(names[0], "127.0.11.100")
        for i in range(1, count):
            nodes.start(names[i], "127.0.11.%d" % (100 + i), ["--seed", seed])
        wait_for(lambda: components(graph(nodes, names)) == [count]
                 and min(len(v) for v in graph(nodes, names).values()) >= 2, 90, "the mesh did not form")
        # Onto a node with room (a full one would refuse it).
        host = min(names[1:], key=lambda n: len(nodes.state(n)["neighbours"]))
        attacker = PhantomClique("127.0.12.10")
        attacker.dial(nodes.host(host), nodes.port(host))
        # Reached at a check or two by every node (checks every 10 rounds: 2 s), then cut off.
        time.sleep(8)
        attacker.attached = False
        before = {n: nodes.state(n)["counters"].get("splitRedials", 0) for n in names}
        deadline, seen = time.monotonic() + watch, set()
        while time.monotonic() < deadline:
            for n in names:
                if len(set(nodes.state(n)["hidden"]) & set(attacker.made_up_keys)) >= 3:
                    seen.add(n)
            time.sleep(1)
        dials = {n: nodes.state(n)["counters"].get("splitRedials", 0) - before[n] for n in names}
        print("%d of %d nodes saw the made-up part out of reach; dials for it in %d s: %d (%s)" % (
            len(seen), count, watch, sum(dials.values()), sorted(dials.values())))
        assert len(seen) >= count // 2, "the attack did not take hold: %d nodes saw it" % len(seen)
        # 30 s: at most 2 periods of 20 s per node, about 4 dials per period: 8 expected (the build before the
        # sixth review: one per node with room and period, 16 to 32).
        assert sum(dials.values()) <= count, "the made-up part made %d dials: %s" % (sum(dials.values()), dials)
    finally:
        if attacker:
            attacker.stop()
        stop_all(nodes.procs)


def minted_link_record(host, port):
    """A valid link record (with an address) of a fresh key: records cost nothing to make."""
    identity = Ed25519PrivateKey.generate()
    rec = {"network": "masq", "key": adversary.b64(noise_client.raw(identity)),
           "agreement": adversary.b64(noise_client.raw(X25519PrivateKey.generate())),
           "version": int(time.time() * 1000), "neighbours": [],
           "rates": {"routingByte": 1, "routingPacket": 1, "exitByte": 1, "exitPacket": 1}, "exit": False,
           "host": host, "port": port}
    body = json.dumps(rec, separators=(",", ":")).encode()
    return {"r": adversary.b64(body), "s": adversary.b64(identity.sign(adversary.LINK_CONTEXT + body))}


def test_a_neighbour_flooding_introductions_does_not_crowd_out_genuine_ones(tmp_path):
    """A neighbour sends 16 introductions of 4 minted records every 50 ms
    (a node holds at most 64 introductions at once, and dials one a round,
    at random): before each link's share was capped, the table stayed full
    of the flood's, a genuine introduction by another neighbour was mostly
    dropped and, once in, was one of 64 to draw; and a cap per link was
    beaten by linking again (fifth review). Now one address group holds at
    most 8 (its newest): the genuine one is taken and dialed within a few
    rounds."""
    nodes = Nodes(str(tmp_path), MASQ, COMMON)
    flooder, introducer, introduced = HostileNode("127.0.10.11"), HostileNode("127.0.10.12"), HostileNode("127.0.10.13")
    stop = threading.Event()
    try:
        nodes.start("V", "127.0.10.100", ["--target-neighbours", "5"])
        introduced.listen()
        flood_link = flooder.dial(nodes.host("V"), nodes.port("V"))
        genuine_link = introducer.dial(nodes.host("V"), nodes.port("V"))
        wait_for(lambda: len(nodes.state("V")["neighbours"]) == 2, 10, "the two neighbours did not link")
        dead = socket.create_server(("127.0.10.14", 0))
        dead_port = dead.getsockname()[1]
        dead.close()  # minted records name a port nobody listens on: each dial fails at once
        minted = [minted_link_record("127.0.10.14", dead_port) for _ in range(1024)]
        sent, relinks = [0], [0]

        def flood():
            link, bursts = flood_link, 0
            while not stop.is_set():
                frames = []
                for _ in range(16):
                    frames.append(bytes([adversary.INTRO]) + json.dumps(
                        [minted[(sent[0] + i) % len(minted)] for i in range(4)]).encode())
                    sent[0] += 4
                link.send(frames)
                bursts += 1
                if bursts % 2 == 0:
                    # And it links again from its address (a new link each time: the cap is the address's).
                    with link.lock:
                        link.open = False
                        link.peer.sock.close()
                    try:
                        link = flooder.dial(nodes.host("V"), nodes.port("V"))
                        relinks[0] += 1
                    except (OSError, ConnectionError, ValueError):
                        pass
                stop.wait(0.05)

        threading.Thread(target=flood, daemon=True).start()
        time.sleep(3)
        t = time.monotonic()
        genuine = bytes([adversary.INTRO]) + json.dumps([introduced.record(link=True)]).encode()
        genuine_link.send([genuine])
        wait_for(lambda: introduced.link_to(adversary.unb64(nodes.key("V"))) is not None, 20,
                 "the genuine introduction was not dialed during the flood")
        print("dialed the genuine introduction after %.1f s; the flood sent %d minted records over %d links" % (
            time.monotonic() - t, sent[0], relinks[0] + 1))
        assert nodes.alive("V")
        assert relinks[0] > 0, "the flooder did not link again"
    finally:
        stop.set()
        for h in (flooder, introducer, introduced):
            h.stop()
        stop_all(nodes.procs)



def test_introductions_that_send_a_node_to_somebody_else_soon_go_unheard(tmp_path):
    """Records cost nothing: a neighbour can introduce minted records naming
    any address, and the node dials one a round while it has room — at a
    third party that speaks no mesh (seventh review). An introduced node
    that never completes a handshake counts against the group that
    introduced it; after 4, its INTROs go unheard for 10 shedding periods.
    What must hold: a few dials reach the third party, not one a round."""
    nodes = Nodes(str(tmp_path), MASQ, COMMON)
    flooder, stop = HostileNode("127.0.10.15"), threading.Event()
    third = socket.create_server(("127.0.10.16", 0))
    accepted = [0]

    def serve():
        third.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = third.accept()
            except (socket.timeout, OSError):
                continue
            accepted[0] += 1
            conn.close()  # speaks no mesh

    try:
        nodes.start("V", "127.0.10.101", ["--target-neighbours", "5"])
        link = flooder.dial(nodes.host("V"), nodes.port("V"))
        threading.Thread(target=serve, daemon=True).start()
        minted = [minted_link_record("127.0.10.16", third.getsockname()[1]) for _ in range(64)]
        started, sent = time.monotonic(), 0
        while time.monotonic() < started + 8:
            link.send([bytes([adversary.INTRO]) + json.dumps(minted[sent % 64:sent % 64 + 4]).encode()])
            sent += 4
            time.sleep(0.1)
        counters = nodes.state("V")["counters"]
        print("the third party was dialed %d times in 8 s (one a round would be ~40); failed %d, INTROs unheard %d" % (
            accepted[0], counters.get("introductionsFailed", 0), counters.get("introductionsMuted", 0)))
        assert accepted[0] > 0, "the introductions were not dialed at all (the test did not play the attack)"
        assert accepted[0] <= 6, "the third party was dialed %d times" % accepted[0]
        assert nodes.alive("V")
    finally:
        stop.set()
        third.close()
        flooder.stop()
        stop_all(nodes.procs)

def test_dials_refused_for_fullness_under_fresh_keys_make_few_introductions(tmp_path):
    """A full node introduces a refused dialer to neighbours with room (two
    introductions). Keys cost nothing: one address dialing with a fresh
    key each time made the node send two introductions a dial, unbounded.
    Now at most one refused dial per address group is introduced every 10
    rounds (2 s here)."""
    nodes = Nodes(str(tmp_path), MASQ, COMMON)
    dialers = []
    try:
        # S full with A and B, which are settled (at S's target; S sheds nothing, so no grace) and have room as
        # S counts (one link each of S's two): every refused dial is introduced to both. Nobody seeks
        # neighbours, so S introduces nobody else. (The last --shed-rounds given counts.)
        seed = nodes.start("S", "127.0.10.110", ["--max-neighbours", "2", "--target-neighbours", "1",
                                                 "--shed-rounds", "0"])
        for name, host in (("A", "127.0.10.111"), ("B", "127.0.10.112")):
            nodes.start(name, host, ["--seed", seed, "--max-neighbours", "1", "--target-neighbours", "1"])
        wait_for(lambda: len(nodes.state("S")["neighbours"]) == 2, 15, "S did not fill")
        time.sleep(2)
        before = nodes.state("S")["counters"]["introductionsSent"]
        started, refused = time.monotonic(), 0
        for _ in range(30):
            d = HostileNode("127.0.10.20")
            dialers.append(d)
            try:
                d.dial(nodes.host("S"), nodes.port("S"))
            except (OSError, ConnectionError, ValueError):
                pass
            wait_for(lambda: d.byes or not any(l.open for l in d.links), 5, "the full node did not refuse the dial: %s" % (
                nodes.state("S")["neighbours"],))
            refused += 1
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        sent = nodes.state("S")["counters"]["introductionsSent"] - before
        allowed = 2 * (1 + int(elapsed / 2))
        print("%d refused dials in %.1f s from one address, fresh keys: %d introductions (at most %d)" % (
            refused, elapsed, sent, allowed))
        assert sent <= allowed, "%d introductions for %d refused dials" % (sent, refused)
        assert sent > 0, "the refused dialer was never introduced"
    finally:
        for d in dialers:
            d.stop()
        stop_all(nodes.procs)



class Misdirecting(HostileNode):
    """Its link record names another host (and port) than the one it comes from."""

    def __init__(self, source, named_host, named_port):
        super().__init__(source)
        self.named = (named_host, named_port)

    def record(self, link=False, legacy=False):
        if not link:
            return super().record(link, legacy)
        rec = {"network": self.network, "key": adversary.b64(self.key), "agreement": adversary.b64(self.static_pub),
               "version": self.version, "neighbours": [], "rates": self.rates, "exit": False,
               "host": self.named[0], "port": self.named[1]}
        body = json.dumps(rec, separators=(",", ":")).encode()
        return {"r": adversary.b64(body), "s": adversary.b64(self.identity.sign(adversary.LINK_CONTEXT + body))}


def test_a_refused_dialer_naming_another_host_does_not_send_the_network_there(tmp_path):
    """A full node introduces the dialers it refuses to neighbours with
    room, which dial the host and port their link records name. A dialer
    naming a third party's address (sixth review) would have the network
    dial it: a node is introduced only when its record names the address it
    comes from. A dialer telling the truth from the next address is still
    introduced (and dialed)."""
    nodes = Nodes(str(tmp_path), MASQ, COMMON)
    dialers, decoy = [], socket.create_server(("127.0.10.99", 0))
    try:
        # S full with A, which has room (and dials whom it is introduced to), and a filler (which dials nobody).
        seed = nodes.start("S", "127.0.10.120", ["--max-neighbours", "2", "--target-neighbours", "1",
                                                 "--shed-rounds", "0"])
        nodes.start("A", "127.0.10.121", ["--seed", seed, "--max-neighbours", "3", "--target-neighbours", "1"])
        wait_for(lambda: len(nodes.state("S")["neighbours"]) == 1, 15, "A did not link to S")
        filler = HostileNode("127.0.10.32")
        dialers.append(filler)
        filler.dial(nodes.host("S"), nodes.port("S"))
        wait_for(lambda: len(nodes.state("S")["neighbours"]) == 2, 15, "S did not fill")
        time.sleep(2)

        def refused_dial(d):
            dialers.append(d)
            try:
                d.dial(nodes.host("S"), nodes.port("S"))
            except (OSError, ConnectionError, ValueError):
                pass
            wait_for(lambda: d.byes or not any(l.open for l in d.links), 5, "the full node did not refuse the dial")

        before = nodes.state("S")["counters"]["introductionsSent"]
        refused_dial(Misdirecting("127.0.10.30", "127.0.10.99", decoy.getsockname()[1]))
        decoy.settimeout(3)
        try:
            decoy.accept()[0].close()
            dialed = True
        except socket.timeout:
            dialed = False
        sent = nodes.state("S")["counters"]["introductionsSent"] - before
        print("a refused dialer naming another host: %d introductions, the named host dialed: %s" % (sent, dialed))
        assert not dialed, "a node dialed the host a refused dialer named"
        assert sent == 0, "the full node introduced a dialer naming another host"
        # The control: the truth, from another address, is introduced, and A dials it.
        honest = HostileNode("127.0.10.31")
        honest.listen()
        refused_dial(honest)
        wait_for(lambda: honest.link_to(adversary.unb64(nodes.key("A"))) is not None, 10,
                 "a refused dialer telling the truth was not introduced")
    finally:
        decoy.close()
        for d in dialers:
            d.stop()
        stop_all(nodes.procs)

def test_an_island_whose_bridge_dies_finds_its_way_back_through_a_seed(tmp_path):
    """Four nodes B1-B4 form a clique (3 neighbours each: their target, so
    they never dial again on that count); a node X bridges them to five
    others M0-M4, and then stops. The four see the versions of the other
    side's records stop coming (`cutOff`: more than half of their records
    quiet for 4 refresh periods), or that they have fewer links they dialed
    than they want anchors (B1 dialed nobody), and dial their seeds again:
    M0, which was down when they started. The network is one again."""
    nodes = Nodes(str(tmp_path), MASQ, COMMON)
    try:
        # M0's identity and port, known before the four start; M0 down while they form their clique.
        m0 = nodes.start("M0", "127.0.6.10")
        nodes.procs["M0"].terminate()
        nodes.procs["M0"].wait(10)
        bs = ["B1", "B2", "B3", "B4"]
        for i, b in enumerate(bs):
            seeds = sum([["--seed", nodes.descriptors[o]] for o in bs[:i]], []) + ["--seed", m0]
            nodes.start(b, "127.0.6.%d" % (21 + i), seeds)
        wait_for(lambda: all(len(nodes.state(b)["neighbours"]) == 3 for b in bs), 30, "the four did not form a clique")
        nodes.start("M0", "127.0.6.10", ["--port", str(nodes.port("M0"))])
        ms = ["M0", "M1", "M2", "M3", "M4"]
        for i, m in enumerate(ms[1:]):
            nodes.start(m, "127.0.6.%d" % (11 + i), ["--seed", m0])
        nodes.start("X", "127.0.6.30", ["--seed", nodes.descriptors["B1"], "--seed", m0, "--max-neighbours", "2",
                                        "--target-neighbours", "2"])
        names = bs + ms
        wait_for(lambda: all(nodes.state(n)["known"] >= len(names) for n in names), 60, "the records did not cross X")
        # Without X, the two sides are apart.
        nodes.procs["X"].terminate()
        nodes.procs["X"].wait(10)
        wait_for(lambda: len(components(graph(nodes, names))) == 2, 10, "X was not the only bridge")
        wait_for(lambda: components(graph(nodes, names)) == [len(names)], 120, "the island did not come back: %s" % (
            components(graph(nodes, names)),))
        counters = [nodes.state(b)["counters"] for b in bs]
        assert sum(c["cutOffRedials"] + c["anchorRedials"] + c["splitRedials"] for c in counters) > 0, counters
    finally:
        stop_all(nodes.procs)
