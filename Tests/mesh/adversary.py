"""A hostile mesh node in Python, written from docs/MESH.md: it links to real
nodes (Noise XX, as the dialing side), gossips its own record (and forwards
the records it hears, so that the nodes behind it learn the network), and
relays onion circuits like an honest node, with hooks to misbehave: record
and replay set-ups and cells, inject garbage, tag cells, read what its
layers tell it. `HostileExit` adds an exit's part (it ends circuits,
connects to targets).

Everything about the wire format is in the functions at the top (onion
layers, cells), so that the adversary follows the documented format only."""
import base64
import json
import os
import socket
import struct
import threading
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from noise_client import LINK_CONTEXT, RECORD_CONTEXT, Peer, b64, raw  # noqa: F401 (b64 used by tests)

GOSSIP, INTRO, CELL, PING, PONG, BYE = 1, 2, 3, 4, 5, 6
CREATE, DATA, DESTROY, JUMBO = 1, 2, 3, 4          # JUMBO: a DATA cell of 4 cells' size
RELAY, EXIT, TERMINAL, FORWARD_RELAY = 1, 2, 3, 4


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def chacha(key, counter, data, block=0):
    """ChaCha20 (RFC 8439) keystream XOR: 12-byte nonce = 4 zero bytes + u64 LE counter, from `block`."""
    nonce = struct.pack("<I", block) + b"\0" * 4 + struct.pack("<Q", counter)
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(data)


def keystream(key, counter, offset, length):
    """`length` bytes of the keystream at byte `offset` (block counter 0 at offset 0)."""
    first = offset // 64
    stream = chacha(key, counter, b"\0" * (offset + length - first * 64), block=first)
    return stream[offset - first * 64:]


# ---------------------------------------------------------------------------
# The wire format (docs/MESH.md, "Circuits and cells").

ONION_SALT = b"masq mesh onion v1"
HEADER = 352
OVERHEAD = 32 + HEADER + 16


LAYER_HEAD = 12


TAGS = 16 * 5          # a forward cell's tag region: one 16-byte tag per forward relay, up to 5


def derive(shared, eph, hop):
    okm = HKDF(algorithm=hashes.SHA256(), length=256, salt=ONION_SALT, info=eph + hop).derive(shared)
    return {"hk": okm[0:32], "sk": okm[32:64], "mac": okm[64:96], "exit_forward": okm[96:128], "exit_back": okm[128:160],
            "stream": okm[160:192], "tag": okm[192:224], "shift": okm[224:256]}


def full_mac(key, counter, data):
    return ChaCha20Poly1305(key).encrypt(b"\0" * 4 + struct.pack("<Q", counter), b"", data)


def layer_mac(key, counter, rest):
    """The first 12 bytes of the ChaCha20-Poly1305 tag over `rest` (as associated data, nothing sealed)."""
    return ChaCha20Poly1305(key).encrypt(b"\0" * 4 + struct.pack("<Q", counter), b"", rest)[:LAYER_HEAD]


def xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def cell_key(keys, counter):
    """The wide block's key for one cell: the first 32 bytes of ChaCha20(stream key, cell number)."""
    return chacha(keys["stream"], counter, b"\0" * 32)


def unwrap(keys, counter, cell):
    """A relay's data layer off: Y ‖ R' -> X ‖ R, R = R' xor ChaCha20(cell key, nonce Y), X = Y xor MAC(R)."""
    y, rest = cell[:LAYER_HEAD], cell[LAYER_HEAD:]
    plain = Cipher(algorithms.ChaCha20(cell_key(keys, counter), b"\0" * 4 + y), mode=None).encryptor().update(rest)
    return xor(y, layer_mac(keys["mac"], counter, plain)) + plain


def wrap(keys, counter, cell):
    """The inverse of `unwrap` (the origin, for each relay)."""
    x, rest = cell[:LAYER_HEAD], cell[LAYER_HEAD:]
    y = xor(x, layer_mac(keys["mac"], counter, rest))
    return y + Cipher(algorithms.ChaCha20(cell_key(keys, counter), b"\0" * 4 + y), mode=None).encryptor().update(rest)


def peel(onion, static, static_pub):
    """Open this node's layer of a set-up onion: (header fields, keys, inner onion), or None. The header's
    associated data is eph ‖ body (the whole rest of the onion); the inner onion is the body ‖ 400 zeros
    XORed with the hop's keystream (its tail is the filler the origin computed ahead)."""
    eph = onion[:32]
    try:
        shared = static.exchange(X25519PublicKey.from_public_bytes(eph))
        keys = derive(shared, eph, static_pub)
        header = ChaCha20Poly1305(keys["hk"]).decrypt(b"\0" * 12, onion[32:OVERHEAD], eph + onion[OVERHEAD:])
    except Exception:  # noqa: BLE001 - not our layer
        return None
    inner = chacha(keys["sk"], 0, onion[OVERHEAD:] + b"\0" * OVERHEAD)
    fields = {"kind": header[0], "next": header[1:33], "token": header[33:41], "header": header, "eph": eph}
    return fields, keys, inner


def check_tag(keys, counter, cell):
    """A forward relay's check: the first 16 bytes are the tag of the rest under its tag key."""
    return full_mac(keys["tag"], counter, cell[16:]) == cell[:16]


def relay_data(hop_keys, counter, payload, tags=False):
    """What a relay does to a DATA cell in the circuit's direction: a forward relay (`tags`) shifts the
    tag region (its tag off, 16 zeros in, XOR its region keystream) and XORs its stream off the body
    (its tag covered every byte it received); a return relay unwraps the whole cell (the wide block)."""
    if not tags:
        return unwrap(hop_keys, counter, payload)
    region = xor(payload[16:TAGS] + b"\0" * 16, chacha(hop_keys["shift"], counter, b"\0" * TAGS))
    return region + chacha(hop_keys["stream"], counter, payload[TAGS:])


def wrap_forward(relays, counter, body):
    """The origin: the body (the sealed box) XORed with each relay's stream, the last first, and each relay's
    tag in the region (the filler the relays will append computed ahead, as Sphinx's header)."""
    streams = [chacha(k["shift"], counter, b"\0" * TAGS) for k in relays]
    filler = b""
    for g in streams:
        filler = xor(filler + b"\0" * 16, g[TAGS - len(filler) - 16:])
    region = os.urandom(TAGS - len(filler)) + filler
    for k, g in reversed(list(zip(relays, streams))):
        body = chacha(k["stream"], counter, body)
        rest = xor(region[:TAGS - 16], g[:TAGS - 16])
        region = full_mac(k["tag"], counter, rest + body) + rest
    return region + body


def build_onion(hops, size, payload=b""):
    """A set-up onion for `hops` (first hop outermost): each a dict with
    "agreement" (X25519 public key), "kind", "next" (Ed25519 key or None),
    "token" (8 bytes). Returns (onion, keys per hop). As Sphinx's: the
    filler the hops append is computed ahead, so each header can cover
    every byte its hop receives."""
    layers = []
    for hop in hops:
        eph = X25519PrivateKey.generate()
        eph_pub = raw(eph)
        k = derive(eph.exchange(X25519PublicKey.from_public_bytes(hop["agreement"])), eph_pub, hop["agreement"])
        layers.append((eph_pub, k, chacha(k["sk"], 0, b"\0" * size)))
    filler = b""
    for _, _, stream in layers:
        filler = xor(filler + b"\0" * OVERHEAD, stream[size - len(filler) - OVERHEAD:])
    inner = payload + os.urandom(size - len(payload) - len(filler)) + filler
    now = int(time.time() * 1000)
    for hop, (eph_pub, k, stream) in reversed(list(zip(hops, layers))):
        header = bytes([hop["kind"]]) + (hop.get("next") or b"\0" * 32) + hop.get("token", b"\0" * 8) + struct.pack(">Q", now)
        header += b"\0" * (HEADER - len(header))
        body = xor(inner[:size - OVERHEAD], stream[:size - OVERHEAD])
        sealed = ChaCha20Poly1305(k["hk"]).encrypt(b"\0" * 12, header, eph_pub + body)
        inner = eph_pub + sealed + body
    return inner, [k for _, k, _ in layers]


def exit_nonce(counter):
    return struct.pack("<Q", counter) + b"\0" * 4


def origin_cell(keys, counter, command, stream, data, size):
    """A DATA cell from the origin: the message sealed for the exit (its last hop), then wrapped for
    every relay, the last relay first (the exit has no layer but the AEAD)."""
    plain = bytes([command]) + struct.pack(">HH", stream, len(data)) + data
    plain += b"\0" * (size - TAGS - 16 - len(plain))
    box = ChaCha20Poly1305(keys[-1]["exit_forward"]).encrypt(exit_nonce(counter), plain, b"")
    return wrap_forward(keys[:-1], counter, box)


def message_capacity(size):
    """Data bytes one origin-to-exit message carries (a forward cell: the tag region, then the box)."""
    return size - TAGS - 16 - 5


# ---------------------------------------------------------------------------

class Link:
    def __init__(self, node, peer):
        self.node, self.peer = node, peer
        # The node's handshake: its link record (with its address) and its public record.
        remote = peer.remote_record
        self.link_record = remote.get("link", remote)
        self.record = remote.get("record", self.link_record)
        self.key = unb64(json.loads(unb64(self.link_record["r"]))["key"])
        self.lock = threading.Lock()
        self.next_circuit = 1
        self.open = True

    def send(self, frames, clear=b""):
        with self.lock:
            if self.open:
                try:
                    self.peer.message(frames, clear)
                except OSError:
                    self.open = False

    def circuit(self):
        with self.lock:
            c = self.next_circuit
            self.next_circuit += 1
            return c


class Hop:
    def __init__(self, other, keys, forward, tags=False):
        self.other, self.keys, self.forward, self.counter, self.tags = other, keys, forward, 0, tags


class HostileNode:
    """A node that relays like an honest one unless told otherwise."""

    def __init__(self, source, network="masq", cell_bytes=4096, rates=None, exit=False, gossip_seconds=0.2):
        self.source, self.network, self.cell_bytes = source, network, cell_bytes
        self.identity = Ed25519PrivateKey.generate()
        self.static = X25519PrivateKey.generate()
        self.static_pub = raw(self.static)
        self.key = raw(self.identity)
        self.rates = rates or {"routingByte": 1, "routingPacket": 1, "exitByte": 1, "exitPacket": 1}
        self.exit = exit
        self.links = []
        self.circuits = {}          # (link, circuit) -> Hop
        self.lock = threading.RLock()
        self.heard = {}             # node key (text) -> signed record (the freshest heard)
        self.gossip_frames = []     # every GOSSIP frame body received
        self.intros = []            # every INTRO frame body received
        self.byes = []              # the reason of every BYE received
        self.layers = []            # what this node's layers told it: (fields, keys)
        self.created = []           # circuits relayed: {"in": end, "out": end, "onion": inner, "cells": [payloads sent on]}
        self.tamper = None          # fn(hop, counter, payload) -> payload, for cells relayed in a circuit's direction
        self.tamper_create = None   # fn(onion) -> onion, for the set-up onions relayed to the next hop
        self.repeat = lambda key: True  # which records heard (by key, text) to repeat to the other links, as nodes do
        self.destroyed = []         # circuit ends DESTROYed by the other side
        self.terminals = []         # return circuits that ended here: (end, fields, keys)
        self.version = int(time.time() * 1000)
        self.legacy = False
        self.port = 1               # where it listens (`listen`); 1: it does not
        self.stopped = threading.Event()
        self.gossip_seconds = gossip_seconds
        threading.Thread(target=self._gossip_loop, daemon=True).start()

    # --- records and links

    def record(self, link=False, legacy=False):
        """Our public record (no address), or the link record (with one). `legacy`: the format before
        issue 19 (one record, with the address, gossiped), to run the attacks against older nodes."""
        rec = {"network": self.network, "key": b64(self.key), "agreement": b64(self.static_pub),
               "version": self.version, "neighbours": [b64(l.key) for l in self.links if l.open], "rates": self.rates, "exit": self.exit}
        if link or legacy:
            rec["host"], rec["port"] = self.source, self.port
        body = json.dumps(rec, separators=(",", ":")).encode()
        context = b"masq node record v1" if legacy else LINK_CONTEXT if link else RECORD_CONTEXT
        return {"r": b64(body), "s": b64(self.identity.sign(context + body))}

    def handshake_payload(self, remote):
        self.legacy = "link" not in remote
        if self.legacy:
            return json.dumps(self.record(legacy=True)).encode()
        return json.dumps({"link": self.record(link=True), "record": self.record()}).encode()

    def dial(self, host, port):
        peer = Peer(host, port, network=self.network, source=self.source, static=self.static, identity=self.identity,
                    payload=self.handshake_payload)
        peer.handshake()
        peer.sock.settimeout(None)
        return self._adopt(peer)

    def _adopt(self, peer):
        """A link whose handshake is done: read it, and gossip on it."""
        link = Link(self, peer)
        with self.lock:
            self.links.append(link)
            self.version += 1
        threading.Thread(target=self._read_loop, args=(link,), daemon=True).start()
        self._gossip(link)
        return link

    def listen(self):
        """Take every link nodes dial (introduced to us, or seeding us) on
        `source`, a port of its own (named in our link record from now on)."""
        server = socket.create_server((self.source, 0))
        self.port = server.getsockname()[1]
        self.server = server

        def loop():
            while not self.stopped.is_set():
                try:
                    sock, _ = server.accept()
                except OSError:
                    return
                threading.Thread(target=self._accepted, args=(sock,), daemon=True).start()

        threading.Thread(target=loop, daemon=True).start()
        return self.port

    def _accepted(self, sock):
        peer = Peer(None, None, network=self.network, source=self.source, static=self.static, identity=self.identity,
                    payload=lambda _: json.dumps({"link": self.record(link=True), "record": self.record()}).encode(),
                    sock=sock)
        try:
            peer.respond()
        except (OSError, ConnectionError, ValueError, KeyError):
            sock.close()
            return
        self._adopt(peer)

    def link_to(self, key):
        return next((l for l in self.links if l.key == key and l.open), None)

    def stop(self):
        self.stopped.set()
        if getattr(self, "server", None):
            self.server.close()
        for l in self.links:
            l.open = False
            try:
                l.peer.sock.close()
            except OSError:
                pass

    def _gossip(self, link):
        with self.lock:
            records = [self.record(legacy=self.legacy)] + [r for k, r in self.heard.items() if unb64(k) != link.key and self.repeat(k)]
        link.send([bytes([GOSSIP]) + json.dumps(records[:200]).encode(), bytes([PING])])

    def _gossip_loop(self):
        while not self.stopped.wait(self.gossip_seconds):
            # A new version of our record every round, as nodes sign theirs often: others keep a
            # record only while new versions of it keep coming.
            with self.lock:
                self.version += 1
            for link in list(self.links):
                if link.open:
                    self._gossip(link)

    # --- reading

    def _read_loop(self, link):
        try:
            while link.open and not self.stopped.is_set():
                frames, clear = link.peer.read_message()
                at = 0
                for frame in frames:
                    if frame[0] == CELL and len(frame) == 6 and frame[5] in (DATA, JUMBO):
                        size = self.cell_bytes * (4 if frame[5] == JUMBO else 1)
                        payload = clear[at:at + size]
                        at += size
                        self._cell(link, struct.unpack(">I", frame[1:5])[0], DATA, payload)
                    elif frame[0] == CELL:
                        self._cell(link, struct.unpack(">I", frame[1:5])[0], frame[5], frame[6:])
                    elif frame[0] == PING:
                        link.send([bytes([PONG])])
                    elif frame[0] == GOSSIP:
                        self._gossip_in(frame[1:])
                    elif frame[0] == INTRO:
                        self.intros.append(frame[1:])
                    elif frame[0] == BYE:
                        self.byes.append(bytes(frame[1:]))
                        link.open = False
        except (OSError, ConnectionError, ValueError):
            pass
        link.open = False

    def _gossip_in(self, body):
        self.gossip_frames.append(body)
        try:
            for signed in json.loads(body):
                rec = json.loads(unb64(signed["r"]))
                if rec["key"] == b64(self.key):
                    continue
                with self.lock:
                    held = self.heard.get(rec["key"])
                    if held is None or json.loads(unb64(held["r"]))["version"] < rec["version"]:
                        self.heard[rec["key"]] = signed
        except (ValueError, KeyError):
            pass

    # --- cells

    def send_cell(self, link, circuit, command, payload):
        if command == DATA:
            kind = DATA if len(payload) == self.cell_bytes else JUMBO
            link.send([bytes([CELL]) + struct.pack(">I", circuit) + bytes([kind])], payload)
        else:
            link.send([bytes([CELL]) + struct.pack(">I", circuit) + bytes([command]) + payload])

    def _cell(self, link, circuit, command, payload):
        end = (link, circuit)
        if command == CREATE:
            return self._create(link, circuit, payload)
        if command == DESTROY:
            with self.lock:
                hop = self.circuits.pop(end, None)
                if hop:
                    self.circuits.pop(hop.other, None)
            if hop:
                self.send_cell(hop.other[0], hop.other[1], DESTROY, os.urandom(self.cell_bytes))
            return self.on_destroy(end)
        with self.lock:
            hop = self.circuits.get(end)
        if hop is None:
            return self.on_data(end, payload)
        if not hop.forward:
            return
        out = relay_data(hop.keys, hop.counter, payload, tags=hop.tags)
        if self.tamper:
            out = self.tamper(hop, hop.counter, out)
        hop.counter += 1
        for c in self.created:
            if c["out"] == hop.other:
                c["cells"].append(out)
        self.send_cell(hop.other[0], hop.other[1], DATA, out)

    def _create(self, link, circuit, onion):
        opened = peel(onion, self.static, self.static_pub)
        if opened is None:
            return self.send_cell(link, circuit, DESTROY, os.urandom(self.cell_bytes))
        fields, keys, inner = opened
        self.layers.append((fields, keys))
        if fields["kind"] in (RELAY, FORWARD_RELAY):
            out_link = self.link_to(fields["next"])
            if out_link is None:
                return self.send_cell(link, circuit, DESTROY, os.urandom(self.cell_bytes))
            out = (out_link, out_link.circuit())
            with self.lock:
                self.circuits[(link, circuit)] = Hop(out, keys, True, tags=fields["kind"] == FORWARD_RELAY)
                self.circuits[out] = Hop((link, circuit), None, False)
                self.created.append({"in": (link, circuit), "out": out, "onion": inner, "cells": [],
                                     "forward": fields["kind"] == FORWARD_RELAY})
            if self.tamper_create:
                inner = self.tamper_create(inner)
            self.send_cell(out_link, out[1], CREATE, inner)
        else:
            self.on_end(link, circuit, fields, keys, inner)

    # --- hooks

    def on_end(self, link, circuit, fields, keys, inner):
        """A circuit that ends here (an exit layer): refused unless overridden."""
        self.send_cell(link, circuit, DESTROY, os.urandom(self.cell_bytes))

    def on_data(self, end, payload):
        pass

    def on_destroy(self, end):
        self.destroyed.append(end)

    def introduce(self, about, to):
        """Tell the node on link `to` about the node on link `about` (its signed link record; a descriptor to older nodes)."""
        if self.legacy:
            rec = record_of(about.link_record)
            item = "masq://%s:%s@%s:%d" % (rec["network"], rec["key"], rec["host"], rec["port"])
        else:
            item = about.link_record
        to.send([bytes([INTRO]) + json.dumps([item]).encode()])

    # --- attacks

    def replay(self, recorded):
        """Send a recorded set-up and its cells again, on a new circuit to the same next hop."""
        link = recorded["out"][0]
        circuit = link.circuit()
        self.send_cell(link, circuit, CREATE, recorded["onion"])
        for payload in recorded["cells"]:
            self.send_cell(link, circuit, DATA, payload)
        return circuit

    def inject(self, end, count):
        """Garbage DATA cells into a circuit this node relays (toward its next hop)."""
        for _ in range(count):
            self.send_cell(end[0], end[1], DATA, os.urandom(self.cell_bytes))


class HostileExit(HostileNode):
    """A hostile exit, colluding with a hostile relay: it advertises exit,
    ends the circuits whose layer says so and opens the origin's box of every
    cell that reaches it — after `untag` (fn(counter, payload) -> payload),
    if set, to undo what its accomplice did to the cell. It builds no return
    circuit (the attacks here need none)."""

    def __init__(self, source, **kw):
        HostileNode.__init__(self, source, exit=True, **kw)
        self.ends = {}          # (link, circuit) -> [keys, next cell number]
        self.opened = []        # (end, counter, plaintext) of cells whose box opened
        self.refused = []       # (end, counter) of cells whose box did not
        self.untag = None

    def on_end(self, link, circuit, fields, keys, inner):
        if fields["kind"] != EXIT:
            return HostileNode.on_end(self, link, circuit, fields, keys, inner)
        with self.lock:
            self.ends[(link, circuit)] = [keys, 0]

    def on_data(self, end, payload):
        with self.lock:
            entry = self.ends.get(end)
            if entry is None:
                return
            keys, counter = entry
            entry[1] += 1
        cell = (self.untag(counter, payload) if self.untag else payload)[TAGS:]
        try:
            plain = ChaCha20Poly1305(keys["exit_forward"]).decrypt(exit_nonce(counter), cell, b"")
        except Exception:  # noqa: BLE001 - the box does not open
            self.refused.append((end, counter))
            return
        self.opened.append((end, counter, plain))


def record_of(signed):
    return json.loads(unb64(signed["r"]))


class HostileOrigin(HostileNode):
    """A node that builds circuits of its own (through its neighbours) and sends what it likes on them."""

    def record_for(self, key):
        """The freshest record heard of a node (by its Ed25519 key), from gossip or a handshake."""
        for link in self.links:
            if link.key == key:
                return record_of(link.record)
        signed = self.heard.get(b64(key))
        return record_of(signed) if signed else None

    def circuit(self, path, token=b"\0" * 8):
        """CREATE a circuit along `path` (Ed25519 keys; the first a neighbour, the last the exit).
        Returns (link, circuit number, per-hop keys)."""
        hops = []
        for i, key in enumerate(path):
            agreement = unb64(self.record_for(key)["agreement"])
            last = i == len(path) - 1
            hops.append({"agreement": agreement, "kind": EXIT if last else FORWARD_RELAY, "next": None if last else path[i + 1], "token": token})
        onion, keys = build_onion(hops, self.cell_bytes)
        link = self.link_to(path[0])
        circuit = link.circuit()
        self.send_cell(link, circuit, CREATE, onion)
        return link, circuit, keys

    def return_onion(self, path, token=b"\0" * 8):
        """A return onion along `path` (relays' Ed25519 keys) back to this node (its terminal layer)."""
        hops = [{"agreement": unb64(self.record_for(key)["agreement"]), "kind": RELAY, "next": path[i + 1] if i + 1 < len(path) else self.key,
                 "token": token} for i, key in enumerate(path)]
        hops.append({"agreement": self.static_pub, "kind": TERMINAL, "next": None, "token": token})
        return build_onion(hops, self.cell_bytes)

    def on_end(self, link, circuit, fields, keys, inner):
        if fields["kind"] == TERMINAL:
            self.terminals.append(((link, circuit), fields, keys))
        else:
            HostileNode.on_end(self, link, circuit, fields, keys, inner)

    def send_messages(self, link, circuit, keys, messages, first_counter=0):
        """Messages (command, stream, data) to the exit, as cells on the circuit; returns the next counter."""
        counter = first_counter
        frames, clear = [], b""
        for command, stream, data in messages:
            frames.append(bytes([CELL]) + struct.pack(">I", circuit) + bytes([DATA]))
            clear += origin_cell(keys, counter, command, stream, data, self.cell_bytes)
            counter += 1
            if len(frames) == 12:
                link.send(frames, clear)
                frames, clear = [], b""
        if frames:
            link.send(frames, clear)
        return counter
