"""A hostile relay for the adversary tests.

It speaks the relay protocol of docs/PROTOCOL.md section 1 like `masq relay`
does (rooms, SEND -> DELIVER to every other member, PRESENCE after each join
or leave, ERROR for malformed frames), so masq's relay transport works
against it unchanged. The relay is exactly what the threat model says a relay
may be (docs/SECURITY.md): it sees every frame and may drop, replay, forge.
So this one also records every frame it sees and lets a test drop frames,
inject forged DELIVERs and forge PRESENCE.

It runs its own asyncio loop (websockets) in a background thread on
127.0.0.1, port 0; `url` is where devices connect, `stop()` ends it.
"""
import asyncio
import itertools
import os
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, replace

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from support import Device, pair, start_sync, wait_for

VERSION = 1
# Relay frame types (docs/PROTOCOL.md section 1).
JOIN, LEAVE, SEND, DELIVER, ERROR, PRESENCE = 1, 2, 3, 4, 5, 6
MALFORMED = 0   # in the frame log only: a frame the relay refused
# ERROR codes.
E_PROTOCOL, E_VERSION, E_NOT_IN_ROOM = 1, 2, 6
# Room payload types (section 2).
SEALED, PRESENT, WHO = 1, 2, 3
# Ratchet message header: u8 version · [32] ratchet key · u32 previous chain length · u32 number.
RATCHET_HEADER = 41
AEAD_TAG = 16
# Directions in the frame log.
IN, OUT = "in", "out"   # client -> relay, relay -> client


@dataclass(frozen=True)
class Frame:
    """One relay frame the hostile relay saw (IN) or sent (OUT)."""
    time: float          # time.monotonic()
    conn: int            # connection number, from 1 in order of arrival
    direction: str       # IN or OUT
    type: int            # relay frame type
    room: bytes          # b"" for ERROR
    payload: bytes       # SEND/DELIVER payload; PRESENCE's u32 member count; ERROR's code and text;
                         # the raw frame when MALFORMED
    forged: bool = False   # made up by the relay (inject, forge_presence)
    dropped: bool = False  # recorded but never forwarded (the drop filter)


@dataclass(frozen=True)
class Sealed:
    """A SEALED room payload: [10] recipient · [10] sender · ratchet message."""
    recipient: str       # device id, hex
    sender: str
    ratchet_key: bytes   # the sender's ratchet public key in the header
    previous: int        # previous chain length
    number: int          # message number in the sending chain
    message: bytes       # the whole ratchet message (header, ciphertext, tag)

    @staticmethod
    def parse(payload):
        """The SEALED payload's fields, or None when it is not a well-formed SEALED payload."""
        if len(payload) < 21 + RATCHET_HEADER + AEAD_TAG or payload[0] != SEALED:
            return None
        message = payload[21:]
        previous, number = struct.unpack(">II", message[33:41])
        return Sealed(payload[1:11].hex(), payload[11:21].hex(), message[1:33], previous, number, message)


def relay_frame(kind, room=b"", body=b""):
    """Encode a relay frame: u8 version · u8 type · u8 roomLen · room · body (ERROR: no room)."""
    if kind == ERROR:
        return bytes([VERSION, kind]) + body
    return bytes([VERSION, kind, len(room)]) + room + body


def presence_payload(kind, device_id):
    """A PRESENT or WHO room payload claiming to come from `device_id` (hex)."""
    return bytes([kind]) + bytes.fromhex(device_id)


class HostileRelay:
    """A protocol-correct relay whose operator is the attacker.

    `drop`, when set, is called with each Frame about to be forwarded (an IN
    SEND before it is fanned out, each OUT DELIVER, forged ones included,
    before it is written); a true answer drops it (it is still logged,
    marked dropped).
    """

    def __init__(self, drop=None):
        self.drop = drop
        self._log = []
        self._log_lock = threading.Lock()
        self._rooms = {}            # room -> {conn number: websocket}; loop thread only
        self._numbers = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._server is None:
            raise RuntimeError("the hostile relay did not start")
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/"

    # -- life cycle ---------------------------------------------------------

    def _run(self):
        async def listen():
            return await serve(self._connection, "127.0.0.1", 0, max_size=16 << 20, compression=None,
                               ping_interval=None, close_timeout=1)

        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(listen())
        finally:
            self._ready.set()
        if self._server is not None:
            self._loop.run_forever()

    def stop(self):
        """Close every connection and the listening socket; end the thread."""
        if not self._thread.is_alive():
            return

        async def shutdown():
            self._server.close()
            await asyncio.wait_for(self._server.wait_closed(), 5)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # -- what the tests read -------------------------------------------------

    def frames(self, since=0.0, direction=None):
        """A copy of the frame log (optionally only those at or after `since`, one direction)."""
        with self._log_lock:
            return [f for f in self._log if f.time >= since and (direction is None or f.direction == direction)]

    def sealed(self, room, sender=None, recipient=None, since=0.0):
        """SEALED payloads devices sent to `room` (IN SENDs), oldest first, optionally by device ids."""
        out = []
        for f in self.frames(since, IN):
            s = Sealed.parse(f.payload) if f.type == SEND and f.room == room else None
            if s and (sender is None or s.sender == sender) and (recipient is None or s.recipient == recipient):
                out.append(s)
        return out

    def room_of(self, device_id):
        """The room in which `device_id` announced itself (WHO/PRESENT): its group room, or None."""
        claim = {presence_payload(WHO, device_id), presence_payload(PRESENT, device_id)}
        for f in self.frames(direction=IN):
            if f.type == SEND and f.payload in claim:
                return f.room
        return None

    def wait_quiet(self, quiet=0.05, timeout=2.0):
        """Wait until no device has sent a frame for `quiet` seconds (at most `timeout`); True if it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._log_lock:
                last = next((f.time for f in reversed(self._log) if f.direction == IN), 0.0)
            if time.monotonic() - last >= quiet:
                return True
            time.sleep(quiet / 4)
        return False

    def members(self, room):
        """How many connections are in `room` now."""
        return self._call(self._count(room))

    # -- what the attacker does ----------------------------------------------

    def inject(self, room, payload):
        """Deliver a forged DELIVER of `payload` to every member of `room`; returns how many got it."""
        return self._call(self._to_members(room, DELIVER, payload))

    def forge_presence(self, room, members):
        """Tell every member of `room` that it now has `members` members; returns how many were told."""
        return self._call(self._to_members(room, PRESENCE, struct.pack(">I", members)))

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _count(self, room):
        return len(self._rooms.get(room, {}))

    async def _to_members(self, room, kind, body):
        reached = 0
        for number, ws in list(self._rooms.get(room, {}).items()):
            reached += await self._send(number, ws, kind, room, body, forged=True)
        return reached

    # -- the relay (loop thread) ----------------------------------------------

    def _record(self, frame):
        with self._log_lock:
            self._log.append(frame)

    async def _send(self, number, ws, kind, room, body, forged=False):
        """Write one frame to a connection (logged; subject to the drop filter); 1 if written."""
        frame = Frame(time.monotonic(), number, OUT, kind, room, body, forged)
        if kind == DELIVER and self.drop and self.drop(frame):
            self._record(replace(frame, dropped=True))
            return 0
        self._record(frame)
        try:
            await ws.send(relay_frame(kind, room, body))
            return 1
        except ConnectionClosed:
            return 0

    async def _error(self, number, ws, code, message):
        await self._send(number, ws, ERROR, b"", struct.pack(">H", code) + message.encode())

    async def _announce(self, room):
        """PRESENCE to every member after a join or leave, as the real relay does."""
        members = self._rooms.get(room, {})
        for number, ws in list(members.items()):
            await self._send(number, ws, PRESENCE, room, struct.pack(">I", len(members)))

    async def _connection(self, ws):
        number = next(self._numbers)
        joined = set()
        try:
            async for message in ws:
                if isinstance(message, str):
                    await self._refuse(number, ws, message.encode(), E_PROTOCOL, "text frames are not part of the protocol")
                elif not await self._handle(number, ws, joined, bytes(message)):
                    break
        except ConnectionClosed:
            pass
        finally:
            for room in joined:
                self._rooms.get(room, {}).pop(number, None)
                await self._announce(room)

    async def _refuse(self, number, ws, data, code, message):
        """Log a malformed frame (type MALFORMED, the raw bytes as payload) and answer ERROR."""
        self._record(Frame(time.monotonic(), number, IN, MALFORMED, b"", data))
        await self._error(number, ws, code, message)

    async def _handle(self, number, ws, joined, data):
        """One binary frame from a client; False when the connection must close."""
        if len(data) < 2:
            await self._refuse(number, ws, data, E_PROTOCOL, "frame shorter than its header")
            return True
        if data[0] != VERSION:
            await self._refuse(number, ws, data, E_VERSION, f"relay frame version {data[0]} is not supported")
            return False
        kind = data[1]
        if kind not in (JOIN, LEAVE, SEND):
            await self._refuse(number, ws, data, E_PROTOCOL, "clients may only JOIN, LEAVE and SEND")
            return True
        length = data[2] if len(data) > 2 else 0
        if not 1 <= length <= 64 or len(data) < 3 + length or (kind != SEND and len(data) != 3 + length):
            await self._refuse(number, ws, data, E_PROTOCOL, "malformed room")
            return True
        room, payload = data[3:3 + length], data[3 + length:]
        frame = Frame(time.monotonic(), number, IN, kind, room, payload)
        if kind == SEND and room in joined and self.drop and self.drop(frame):
            self._record(replace(frame, dropped=True))
            return True
        self._record(frame)
        if kind == JOIN:
            if room not in joined:   # joining twice changes nothing
                joined.add(room)
                self._rooms.setdefault(room, {})[number] = ws
                await self._announce(room)
        elif room not in joined:
            await self._error(number, ws, E_NOT_IN_ROOM, "not in that room")
        elif kind == LEAVE:
            joined.discard(room)
            self._rooms[room].pop(number, None)
            await self._announce(room)
        else:
            for other, peer in list(self._rooms[room].items()):
                if other != number:
                    await self._send(other, peer, DELIVER, room, payload)
        return True


# -- set-up shared by the hostile-relay tests ----------------------------------

@dataclass
class SyncedPair:
    """Devices a and b paired through a hostile relay, each running `masq sync`."""
    a: Device
    b: Device
    sync_a: object   # subprocess.Popen of a's `masq sync`
    sync_b: object
    a_id: str        # device ids, hex
    b_id: str
    room: bytes      # the group room, as the relay sees it


def synced_pair(procs, relay):
    """Pair a and b through `relay` (both record its URL in their config), start
    sync on both and check that a write flows each way: the relay works."""
    a, b = Device(procs.workdir, "a"), Device(procs.workdir, "b")
    pair(procs, a, b, relay.url)
    sync_a, sync_b = start_sync(procs, a), start_sync(procs, b)
    a.put("setup", "from-a", "1")
    b.put("setup", "from-b", "1")
    wait_for(20, "a's first write on b, through the hostile relay", lambda: b.get("setup", "from-a") == "1")
    wait_for(20, "b's first write on a, through the hostile relay", lambda: a.get("setup", "from-b") == "1")
    a_id, b_id = a.device_id(), b.device_id()
    room = wait_for(5, "a's group room", lambda: relay.room_of(a_id))
    return SyncedPair(a, b, sync_a, sync_b, a_id, b_id, room)


def missing_after(seconds, expected):
    """Poll until every (device, namespace, key, value) in `expected` holds; return
    the labels "device:key" still missing after `seconds` (empty: all arrived)."""
    deadline = time.monotonic() + seconds
    while True:
        missing = [f"{d.name}:{k}" for d, ns, k, v in expected if d.get(ns, k) != v]
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(0.2)


def copy_tree(source, target):
    """`cp -a`: a copy with modes and times, as a backup tool would make it."""
    subprocess.run(["cp", "-a", source, target], check=True, timeout=60)


def backup(device, suffix=".bak"):
    """Copy the (stopped) device's data directory and config aside."""
    copy_tree(device.data, device.data + suffix)
    copy_tree(device.config, device.config + suffix)


def restore(device, suffix=".bak"):
    """Put the backup back over the device's data directory and config."""
    subprocess.run(["rm", "-rf", device.data], check=True, timeout=60)
    copy_tree(device.data + suffix, device.data)
    os.remove(device.config)
    copy_tree(device.config + suffix, device.config)
