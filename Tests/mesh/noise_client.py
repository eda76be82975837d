"""A minimal Noise_XX_25519_ChaChaPoly_SHA256 initiator and responder (the
Noise spec, revision 34) with Python's `cryptography`, to talk to a mesh node as a
hostile peer would: complete the handshake with a record of our own, then
send malformed frames."""
import base64
import hashlib
import hmac
import json
import os
import socket
import struct

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
RECORD_CONTEXT = b"masq node record v2"     # public records (gossip): no address
LINK_CONTEXT = b"masq node link v1"         # link records (handshakes, introductions): the address


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw(key):
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def hkdf(ck, ikm, n):
    temp = hmac.new(ck, ikm, hashlib.sha256).digest()
    out, prev = [], b""
    for i in range(1, n + 1):
        prev = hmac.new(temp, prev + bytes([i]), hashlib.sha256).digest()
        out.append(prev)
    return out


class Cipher:
    def __init__(self, key):
        self.key, self.n = key, 0

    def encrypt(self, ad, plaintext):
        if self.key is None:
            return plaintext
        out = ChaCha20Poly1305(self.key).encrypt(b"\0" * 4 + struct.pack("<Q", self.n), plaintext, ad)
        self.n += 1
        return out

    def decrypt(self, ad, ciphertext):
        if self.key is None:
            return ciphertext
        out = ChaCha20Poly1305(self.key).decrypt(b"\0" * 4 + struct.pack("<Q", self.n), ciphertext, ad)
        self.n += 1
        return out


class Peer:
    """A node-like peer: X25519 static key, Ed25519 identity, a signed record."""

    def __init__(self, host, port, network="masq", source=None, client=False, timeout=5, static=None, identity=None,
                 payload=None, sock=None):
        """`source`: the local address to leave from (the record names it);
        `client`: a device's transport (a client link), not a node;
        `static`, `identity`: the keys of a node with several links (fresh ones by default);
        `payload`: a function giving what the handshake carries (the peer's own record by default);
        `sock`: a connection a node made to us (then `respond`, not `handshake`)."""
        self.static = static or X25519PrivateKey.generate()
        self.identity = identity or Ed25519PrivateKey.generate()
        self.payload = payload
        self.source = source
        self.client = client
        self.sock = sock or socket.create_connection((host, port), timeout=timeout,
                                                     source_address=(source, 0) if source else None)
        self.network = network
        self.h = hashlib.sha256(NAME).digest() if len(NAME) > 32 else NAME.ljust(32, b"\0")
        self.ck = self.h
        self.cipher = Cipher(None)
        self.mix_hash(("masq mesh v1 " + network).encode())

    def mix_hash(self, data):
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm):
        self.ck, k = hkdf(self.ck, ikm, 2)
        self.cipher = Cipher(k)

    def encrypt_and_hash(self, plaintext):
        c = self.cipher.encrypt(self.h, plaintext)
        self.mix_hash(c)
        return c

    def decrypt_and_hash(self, ciphertext):
        p = self.cipher.decrypt(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return p

    def send_raw(self, data):
        self.sock.sendall(struct.pack(">H", len(data)) + data)

    def recv_raw(self):
        head = self._exact(2)
        return self._exact(struct.unpack(">H", head)[0])

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def record(self, port=1, version=1, tamper=False, link=False):
        """This peer's public record (gossiped: no address), or with `link` its
        link record (the handshake's: with the address), signed."""
        rec = {"network": self.network, "key": b64(raw(self.identity)), "agreement": b64(raw(self.static)), "version": version,
               "neighbours": [], "rates": {"routingByte": 1, "routingPacket": 1, "exitByte": 1, "exitPacket": 1}, "exit": False}
        if link:
            rec["host"], rec["port"] = self.source or "127.0.0.1", 0 if self.client else port
            if self.client:
                rec["client"] = True
        body = json.dumps(rec, separators=(",", ":")).encode()
        sig = self.identity.sign((LINK_CONTEXT if link else RECORD_CONTEXT) + body)
        if tamper:
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        return {"r": b64(body), "s": b64(sig)}

    def handshake_payload(self):
        """What the handshake carries: the link record and, unless a client, the public record."""
        payload = {"link": self.record(link=True)}
        if not self.client:
            payload["record"] = self.record()
        return json.dumps(payload).encode()

    def handshake(self):
        e = X25519PrivateKey.generate()
        self.mix_hash(raw(e))
        self.mix_hash(b"")                                    # empty payload
        self.send_raw(raw(e))
        msg = self.recv_raw()
        re = msg[:32]
        self.mix_hash(re)
        self.mix_key(e.exchange(X25519PublicKey.from_public_bytes(re)))
        rs = self.decrypt_and_hash(msg[32:80])
        self.mix_key(e.exchange(X25519PublicKey.from_public_bytes(rs)))
        self.remote_record = json.loads(self.decrypt_and_hash(msg[80:]))
        out = self.encrypt_and_hash(raw(self.static))
        self.mix_key(self.static.exchange(X25519PublicKey.from_public_bytes(re)))
        out += self.encrypt_and_hash(self.payload(self.remote_record) if self.payload else self.handshake_payload())
        self.send_raw(out)
        k1, k2 = hkdf(self.ck, b"", 2)
        self.send, self.receive = Cipher(k1), Cipher(k2)

    def respond(self):
        """The responder's half of the handshake, for a node that dialed us:
        <- e; -> e, ee, s, es, our payload; <- s, se, its payload."""
        self.sock.settimeout(5)
        msg = self.recv_raw()
        re = msg[:32]
        self.mix_hash(re)
        self.mix_hash(msg[32:])                               # its (empty) first payload
        e = X25519PrivateKey.generate()
        self.mix_hash(raw(e))
        self.mix_key(e.exchange(X25519PublicKey.from_public_bytes(re)))
        out = raw(e) + self.encrypt_and_hash(raw(self.static))
        self.mix_key(self.static.exchange(X25519PublicKey.from_public_bytes(re)))
        out += self.encrypt_and_hash(self.payload(None) if self.payload else self.handshake_payload())
        self.send_raw(out)
        msg = self.recv_raw()
        rs = self.decrypt_and_hash(msg[:48])
        self.mix_key(e.exchange(X25519PublicKey.from_public_bytes(rs)))
        self.remote_record = json.loads(self.decrypt_and_hash(msg[48:]))
        k1, k2 = hkdf(self.ck, b"", 2)
        self.send, self.receive = Cipher(k2), Cipher(k1)
        self.sock.settimeout(None)

    def message(self, records, clear=b""):
        """One link message: u16 c, the clear part (DATA cells' payloads), then
        the records (each u16 length + frame) encrypted with AD = u16 c + clear."""
        head = struct.pack(">H", len(clear)) + clear
        body = b"".join(struct.pack(">H", len(r)) + r for r in records)
        self.send_raw(head + self.send.encrypt(head, body))

    def frame(self, plaintext):
        self.message([plaintext])

    def read_message(self):
        """The next message from the node: (frames, clear part)."""
        msg = self.recv_raw()
        c = struct.unpack(">H", msg[:2])[0]
        head, sealed = msg[:2 + c], msg[2 + c:]
        body = self.receive.decrypt(head, sealed)
        frames, at = [], 0
        while at < len(body):
            n = struct.unpack(">H", body[at:at + 2])[0]
            frames.append(body[at + 2:at + 2 + n])
            at += 2 + n
        assert at == len(body), "records overrun the message"
        return frames, head[2:]

    def closed(self, wait=3.0):
        """True once the node has closed the connection."""
        self.sock.settimeout(wait)
        try:
            while True:
                self.recv_raw()
        except (ConnectionError, OSError):
            return True
        except socket.timeout:
            return False

    def ping(self, timeout=5.0):
        """PING, then read the node's messages until its PONG."""
        import time
        self.frame(b"\x04")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no PONG")
            self.sock.settimeout(left)
            frames, _ = self.read_message()
            if any(f[:1] == b"\x05" for f in frames):
                return
            if any(f[:1] == b"\x06" for f in frames):
                raise ConnectionError("BYE from the node")


def signed_record(identity, host=None, port=7000, version=1, agreement=None, network="masq", exit=True):
    """A valid, signed public record of `identity` (an Ed25519 private key), as
    gossip carries it (no address: `host` and `port` are not used)."""
    rec = {"network": network, "key": b64(raw(identity)), "agreement": agreement or b64(raw(X25519PrivateKey.generate())),
           "version": version, "neighbours": [],
           "rates": {"routingByte": 1, "routingPacket": 1, "exitByte": 1, "exitPacket": 1}, "exit": exit}
    body = json.dumps(rec, separators=(",", ":")).encode()
    return {"r": b64(body), "s": b64(identity.sign(RECORD_CONTEXT + body))}
