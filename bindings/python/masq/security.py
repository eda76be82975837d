"""Encryption at rest, devices, pairing, crypto sessions and primitives (masq.h)."""

import ctypes
import json
from typing import Optional

from . import _native as n
from .errors import InvalidArgumentError, check


def _take_bytes(pointer, length) -> bytes:
    """Copy a library buffer and release it."""
    try:
        return ctypes.string_at(pointer, length.value) if pointer else b""
    finally:
        n.lib().masq_free(pointer)


def _take_text(pointer) -> str:
    try:
        return ctypes.string_at(pointer).decode("utf-8") if pointer else ""
    finally:
        n.lib().masq_free(pointer)


def _call_bytes(function, *args) -> bytes:
    out, length = n.c_bytes_p(), ctypes.c_size_t()
    check(function(*args, ctypes.byref(out), ctypes.byref(length)))
    return _take_bytes(out, length)


def _call_text(function, *args) -> str:
    out = ctypes.c_void_p()
    check(function(*args, ctypes.byref(out)))
    return _take_text(out.value)


def _b(value, what) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str")


# ---- primitives (OpenSSL's, through libmasq) -----------------------------------------------------

def random_bytes(count: int) -> bytes:
    buffer = ctypes.create_string_buffer(count)
    check(n.lib().masq_crypto_random(buffer, count))
    return buffer.raw


def x25519_public(private_key: bytes) -> bytes:
    _need(private_key, 32, "private_key")
    out = ctypes.create_string_buffer(32)
    check(n.lib().masq_crypto_x25519_public(private_key, out))
    return out.raw


def x25519(private_key: bytes, peer_public: bytes) -> bytes:
    _need(private_key, 32, "private_key")
    _need(peer_public, 32, "peer_public")
    out = ctypes.create_string_buffer(32)
    check(n.lib().masq_crypto_x25519(private_key, peer_public, out))
    return out.raw


def ed25519_sign(private_key: bytes, message: bytes) -> bytes:
    _need(private_key, 32, "private_key")
    out = ctypes.create_string_buffer(64)
    check(n.lib().masq_crypto_ed25519_sign(private_key, message, len(message), out))
    return out.raw


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    _need(public_key, 32, "public_key")
    status = n.lib().masq_crypto_ed25519_verify(public_key, message, len(message), signature, len(signature))
    if status == n.E_BAD_SIGNATURE:
        return False
    check(status)
    return True


def hkdf_sha256(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    out = ctypes.create_string_buffer(max(length, 1))
    check(n.lib().masq_crypto_hkdf_sha256(salt, len(salt), ikm, len(ikm), info, len(info), out, length))
    return out.raw[:length]


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes = b"", algorithm: int = n.AEAD_CHACHA20_POLY1305) -> bytes:
    _need(key, 32, "key")
    _need(nonce, 12, "nonce")
    out = ctypes.create_string_buffer(len(plaintext) + 16)
    check(n.lib().masq_crypto_aead_seal(algorithm, key, nonce, ad, len(ad), plaintext, len(plaintext), out))
    return out.raw


def aead_open(key: bytes, nonce: bytes, sealed: bytes, ad: bytes = b"", algorithm: int = n.AEAD_CHACHA20_POLY1305) -> bytes:
    _need(key, 32, "key")
    _need(nonce, 12, "nonce")
    out = ctypes.create_string_buffer(max(len(sealed) - 16, 1))
    check(n.lib().masq_crypto_aead_open(algorithm, key, nonce, ad, len(ad), sealed, len(sealed), out))
    return out.raw[:max(len(sealed) - 16, 0)]


def qr_pgm(text: str, scale: int = 8) -> bytes:
    """A QR code of text as a PGM image."""
    return _call_bytes(n.lib().masq_qr_pgm, text.encode("utf-8"), scale)


def _need(value, size, what):
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        raise InvalidArgumentError(f"{what} must be {size} bytes")


# ---- crypto sessions --------------------------------------------------------------------------

class Session:
    """A Noise handshake then a Double Ratchet (see masq.h). Not thread-safe.

    Session(pattern="XXpsk3", initiator=True, psk=..., store=store)   # uses the store's device key
    Session(pattern="KK", initiator=False, static_key=k, remote_static=peer)
    """

    _handle = None

    def __init__(self, pattern: str, initiator: bool, store=None, static_key: Optional[bytes] = None,
                 remote_static: Optional[bytes] = None, psk: Optional[bytes] = None, prologue: bytes = b"",
                 _handle=None):
        if _handle is not None:
            self._handle = _handle
            return
        options = n.SessionOptions(ctypes.sizeof(n.SessionOptions), pattern.encode(),
                                   n.ROLE_INITIATOR if initiator else n.ROLE_RESPONDER, prologue, len(prologue),
                                   static_key, remote_static, len(remote_static or b""), psk, len(psk or b""))
        handle = ctypes.c_void_p()
        check(n.lib().masq_session_new(store._h if store is not None else None, ctypes.byref(options), ctypes.byref(handle)))
        self._handle = handle

    @classmethod
    def load(cls, state: bytes) -> "Session":
        handle = ctypes.c_void_p()
        check(n.lib().masq_session_load(state, len(state), ctypes.byref(handle)))
        return cls("", True, _handle=handle)

    def close(self):
        if self._handle:
            n.lib().masq_session_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()

    def _status(self):
        state, write_next, can_send = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
        check(n.lib().masq_session_status(self._handle, ctypes.byref(state), ctypes.byref(write_next), ctypes.byref(can_send)))
        return state.value, bool(write_next.value), bool(can_send.value)

    @property
    def state(self) -> str:
        return {n.SESSION_HANDSHAKING: "handshaking", n.SESSION_ESTABLISHED: "established",
                n.SESSION_FAILED: "failed"}[self._status()[0]]

    @property
    def writes_next(self) -> bool:
        return self._status()[1]

    @property
    def can_send(self) -> bool:
        return self._status()[2]

    def write_handshake(self, payload: bytes = b"") -> bytes:
        return _call_bytes(n.lib().masq_session_write_handshake, self._handle, payload, len(payload))

    def read_handshake(self, message: bytes) -> bytes:
        return _call_bytes(n.lib().masq_session_read_handshake, self._handle, message, len(message))

    def seal(self, plaintext: bytes, ad: bytes = b"") -> bytes:
        return _call_bytes(n.lib().masq_session_seal, self._handle, ad, len(ad), plaintext, len(plaintext))

    def open(self, message: bytes, ad: bytes = b"") -> bytes:
        return _call_bytes(n.lib().masq_session_open, self._handle, ad, len(ad), message, len(message))

    def save(self) -> bytes:
        """Secret state bytes; keep them encrypted."""
        return _call_bytes(n.lib().masq_session_save, self._handle)

    @property
    def peer_key(self) -> bytes:
        out = ctypes.create_string_buffer(32)
        check(n.lib().masq_session_peer_key(self._handle, out))
        return out.raw

    @property
    def peer_fingerprint(self) -> str:
        return _call_text(n.lib().masq_session_peer_fingerprint, self._handle)


# ---- pairing ---------------------------------------------------------------------------------

class Pairing:
    """One side of pairing: feed the peer's frames to receive() until paired."""

    _handle = None

    def __init__(self, handle, link: Optional[str] = None):
        self._handle = handle
        self.link = link
        self.paired = False

    def start(self) -> bytes:
        return _call_bytes(n.lib().masq_pairing_start, self._handle)

    def receive(self, frame: bytes):
        """(frame to send back or None, paired). On failure raises; the refusal
        frame for the peer is then in the exception's .reply attribute."""
        out, length, paired = n.c_bytes_p(), ctypes.c_size_t(), ctypes.c_int()
        status = n.lib().masq_pairing_receive(self._handle, frame, len(frame), ctypes.byref(out), ctypes.byref(length),
                                              ctypes.byref(paired))
        reply = _take_bytes(out, length) if out else None
        try:
            check(status)
        except Exception as error:
            error.reply = reply
            raise
        self.paired = bool(paired.value)
        return reply, self.paired

    @property
    def peer(self) -> dict:
        return json.loads(_call_text(n.lib().masq_pairing_peer, self._handle))

    def close(self):
        if self._handle:
            n.lib().masq_pairing_free(self._handle)
            self._handle = None

    def __del__(self):
        self.close()


class PairingTask:
    """Pairing through a relay, carried by the library on its own thread
    (Store.pair_offer / Store.pair_join). `link` is the offer's link (None
    for a join); wait() returns the paired device or raises the task's error
    (TimeoutError-like MasqError subclasses, ClosedError when cancelled)."""

    _handle = None

    def __init__(self, handle, link: Optional[str] = None):
        self._handle = handle
        self.link = link

    def wait(self, timeout: Optional[float] = None) -> dict:
        """Block until the task ends (or `timeout` seconds: BusyError if it still runs)."""
        out = ctypes.c_void_p()
        ms = 0 if timeout is None else max(1, int(timeout * 1000))
        check(n.lib().masq_pair_wait(self._handle, ms, ctypes.byref(out)))
        return json.loads(_take_text(out.value))

    def cancel(self) -> None:
        n.lib().masq_pair_cancel(self._handle)

    def close(self):
        if self._handle:
            n.lib().masq_pair_free(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


class SecurityMixin:
    """Store methods for encryption at rest, devices and pairing."""

    def unlock(self, passphrase) -> None:
        p = _b(passphrase, "passphrase")
        check(n.lib().masq_unlock(self._h, p, len(p)))

    def lock(self) -> None:
        check(n.lib().masq_lock(self._h))

    def set_passphrase(self, old=None, new=None) -> None:
        o = _b(old, "old") if old is not None else None
        w = _b(new, "new") if new is not None else None
        check(n.lib().masq_set_passphrase(self._h, o, len(o or b""), w, len(w or b"")))

    @property
    def protected(self) -> bool:
        p = ctypes.c_int()
        check(n.lib().masq_protection(self._h, ctypes.byref(p), None))
        return bool(p.value)

    @property
    def locked(self) -> bool:
        l = ctypes.c_int()
        check(n.lib().masq_protection(self._h, None, ctypes.byref(l)))
        return bool(l.value)

    def device_info(self) -> dict:
        return json.loads(_call_text(n.lib().masq_device_info, self._h))

    def devices(self) -> list:
        return json.loads(_call_text(n.lib().masq_devices, self._h))

    def set_device_name(self, name: str) -> None:
        check(n.lib().masq_set_device_name(self._h, name.encode("utf-8")))

    def remove_device(self, device_id: str) -> None:
        check(n.lib().masq_device_remove(self._h, device_id.encode()))

    def seal_for_device(self, device_id: str, plaintext: bytes, ad: bytes = b"") -> bytes:
        return _call_bytes(n.lib().masq_seal_for_device, self._h, device_id.encode(), ad, len(ad), plaintext, len(plaintext))

    def open_from_device(self, device_id: str, message: bytes, ad: bytes = b"") -> bytes:
        return _call_bytes(n.lib().masq_open_from_device, self._h, device_id.encode(), ad, len(ad), message, len(message))

    # A store seals for a device only with a session made or renewed since it
    # was opened (a copy restored from a backup must not reuse a message key):
    # renew_begin here -> renew_answer there -> renew_complete here.
    def renew_begin(self, device_id: str) -> bytes:
        return _call_bytes(n.lib().masq_device_renew_begin, self._h, device_id.encode())

    def renew_answer(self, device_id: str, message: bytes) -> bytes:
        return _call_bytes(n.lib().masq_device_renew_answer, self._h, device_id.encode(), message, len(message))

    def renew_complete(self, device_id: str, answer: bytes) -> None:
        check(n.lib().masq_device_renew_complete(self._h, device_id.encode(), answer, len(answer)))

    def pairing_offer(self, via: Optional[str] = None, ttl_seconds: int = 600) -> Pairing:
        link, handle = ctypes.c_void_p(), ctypes.c_void_p()
        check(n.lib().masq_pairing_offer(self._h, via.encode() if via else None, ttl_seconds, ctypes.byref(link),
                                         ctypes.byref(handle)))
        return Pairing(handle, _take_text(link.value))

    def pair_offer(self, relay: Optional[str] = None, ttl_seconds: int = 0) -> PairingTask:
        """Offer a pairing through `relay` (default: the configured relay);
        show task.link (or its QR code), then task.wait() for the device."""
        link, handle = ctypes.c_void_p(), ctypes.c_void_p()
        check(n.lib().masq_pair_offer(self._h, relay.encode() if relay else None, ttl_seconds, None, None,
                                      ctypes.byref(link), ctypes.byref(handle)))
        return PairingTask(handle, _take_text(link.value))

    def pair_join(self, link: str, timeout_seconds: int = 0) -> PairingTask:
        """Join from another device's link; task.wait() returns that device."""
        handle = ctypes.c_void_p()
        check(n.lib().masq_pair_join(self._h, link.encode("utf-8"), timeout_seconds, None, None, ctypes.byref(handle)))
        return PairingTask(handle)

    def pairing_join(self, link: str) -> Pairing:
        handle = ctypes.c_void_p()
        check(n.lib().masq_pairing_join(self._h, link.encode("utf-8"), ctypes.byref(handle)))
        return Pairing(handle, link)
