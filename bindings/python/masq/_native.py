"""Loading libmasq.so and declaring the C signatures of include/masq.h.

Everything here mirrors the header one to one; the Pythonic layer lives in
masq/store.py. Status codes and flags are copied from masq.h (a test checks
them against the header text so they cannot drift).
"""

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import threading

# Status codes (masq.h)
OK = 0
E_INVALID = 1
E_NOT_FOUND = 2
E_TOO_LARGE = 3
E_CONFIG = 4
E_PLUGIN = 5
E_ABI = 6
E_IO = 7
E_CORRUPT = 8
E_CLOSED = 9
E_BUSY = 10
E_NOMEM = 11
E_UNSUPPORTED = 12
E_DENIED = 13
E_BAD_SIGNATURE = 14
E_FUNDS = 15
E_UNAVAILABLE = 16
E_TIMEOUT = 17
E_INTERNAL = 18

LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG = 0, 1, 2, 3
LIST_KEYS_ONLY = 1
SET_ALL_REPLACE = 1
CHANGE_PUT, CHANGE_DELETE, CHANGE_CONFLICT = 1, 2, 3
ORIGIN_LOCAL, ORIGIN_REMOTE = 1, 2
PLUGIN_KIND_STORAGE, PLUGIN_KIND_TRANSPORT, PLUGIN_KIND_WALLET = 1, 2, 3

c_bytes_p = ctypes.POINTER(ctypes.c_uint8)


class Entry(ctypes.Structure):
    _fields_ = [
        ("key", c_bytes_p),
        ("key_len", ctypes.c_size_t),
        ("value", c_bytes_p),
        ("value_len", ctypes.c_size_t),
    ]


class Change(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("kind", ctypes.c_int),
        ("origin", ctypes.c_int),
        ("ns", ctypes.c_char_p),
        ("key", c_bytes_p),
        ("key_len", ctypes.c_size_t),
        ("value", c_bytes_p),
        ("value_len", ctypes.c_size_t),
        ("timestamp", ctypes.c_uint64),
        ("replica", ctypes.c_uint64),
        ("lost_value", c_bytes_p),
        ("lost_value_len", ctypes.c_size_t),
        ("lost_was_deleted", ctypes.c_int),
    ]


class PluginInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("status", ctypes.c_int),
        ("path", ctypes.c_char_p),
        ("kind", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("version", ctypes.c_char_p),
        ("description", ctypes.c_char_p),
        ("abi_version", ctypes.c_uint32),
        ("message", ctypes.c_char_p),
    ]


class SessionOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("pattern", ctypes.c_char_p),
        ("role", ctypes.c_int),
        ("prologue", ctypes.c_char_p),
        ("prologue_len", ctypes.c_size_t),
        ("static_key", ctypes.c_char_p),
        ("remote_static", ctypes.c_char_p),
        ("remote_static_len", ctypes.c_size_t),
        ("psk", ctypes.c_char_p),
        ("psk_len", ctypes.c_size_t),
    ]


ROLE_INITIATOR, ROLE_RESPONDER = 1, 2
SESSION_HANDSHAKING, SESSION_ESTABLISHED, SESSION_FAILED = 1, 2, 3
AEAD_CHACHA20_POLY1305, AEAD_AES_256_GCM = 1, 2

LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p)
LIST_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, c_bytes_p, ctypes.c_size_t, c_bytes_p, ctypes.c_size_t)
NAMESPACE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)
WATCH_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(Change))
PROGRESS_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64)
PLUGIN_INFO_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(PluginInfo))

_SIGNATURES = {
    "masq_version": (ctypes.c_char_p, []),
    "masq_version_number": (ctypes.c_int, []),
    "masq_last_error": (ctypes.c_char_p, []),
    "masq_last_error_code": (ctypes.c_int, []),
    "masq_status_name": (ctypes.c_char_p, [ctypes.c_int]),
    "masq_free": (None, [ctypes.c_void_p]),
    "masq_set_log_callback": (ctypes.c_int, [ctypes.c_int, LOG_FN, ctypes.c_void_p]),
    "masq_open": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_open_config": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_close": (ctypes.c_int, [ctypes.c_void_p]),
    "masq_replica_id": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64)]),
    "masq_put": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                ctypes.c_char_p, ctypes.c_size_t]),
    "masq_get": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                ctypes.POINTER(c_bytes_p), ctypes.POINTER(ctypes.c_size_t)]),
    "masq_delete": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
    "masq_list": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                 ctypes.c_uint32, LIST_FN, ctypes.c_void_p]),
    "masq_get_all": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.POINTER(Entry)),
                                    ctypes.POINTER(ctypes.c_size_t)]),
    "masq_set_all": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(Entry), ctypes.c_size_t,
                                    ctypes.c_uint32]),
    "masq_clear": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
    "masq_list_namespaces": (ctypes.c_int, [ctypes.c_void_p, NAMESPACE_FN, ctypes.c_void_p]),
    "masq_watch": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                  WATCH_FN, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64)]),
    "masq_unwatch": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint64]),
    # counters and sync
    "masq_counter_add": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int64]),
    "masq_counter_get": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                        ctypes.POINTER(ctypes.c_int64)]),
    "masq_sync_start": (ctypes.c_int, [ctypes.c_void_p]),
    "masq_sync_stop": (ctypes.c_int, [ctypes.c_void_p]),
    "masq_sync_once": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_double]),
    "masq_sync_status": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_sync_set_progress": (ctypes.c_int, [ctypes.c_void_p, PROGRESS_FN, ctypes.c_void_p]),
    "masq_plugins_scan": (ctypes.c_int, [ctypes.c_char_p, PLUGIN_INFO_FN, ctypes.c_void_p]),
    # encryption at rest, devices, pairing
    "masq_unlock": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]),
    "masq_lock": (ctypes.c_int, [ctypes.c_void_p]),
    "masq_set_passphrase": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]),
    "masq_protection": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]),
    "masq_device_info": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_devices": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_set_device_name": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
    "masq_device_remove": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
    "masq_seal_for_device": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                            ctypes.c_size_t, ctypes.POINTER(c_bytes_p), ctypes.POINTER(ctypes.c_size_t)]),
    "masq_open_from_device": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                             ctypes.c_size_t, ctypes.POINTER(c_bytes_p), ctypes.POINTER(ctypes.c_size_t)]),
    "masq_device_renew_begin": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(c_bytes_p), ctypes.POINTER(ctypes.c_size_t)]),
    "masq_device_renew_answer": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                                ctypes.POINTER(c_bytes_p), ctypes.POINTER(ctypes.c_size_t)]),
    "masq_device_renew_complete": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
    "masq_pairing_offer": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_void_p),
                                          ctypes.POINTER(ctypes.c_void_p)]),
    "masq_pairing_join": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_pairing_start": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(c_bytes_p), ctypes.POINTER(ctypes.c_size_t)]),
    "masq_pairing_receive": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(c_bytes_p),
                                            ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_int)]),
    "masq_pairing_peer": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_pairing_free": (None, [ctypes.c_void_p]),
    "masq_pair_offer": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p,
                                       ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)]),
    "masq_pair_join": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.POINTER(ctypes.c_void_p)]),
    "masq_pair_wait": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_pair_cancel": (None, [ctypes.c_void_p]),
    "masq_pair_free": (None, [ctypes.c_void_p]),
    "masq_qr_pgm": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_uint32, ctypes.POINTER(c_bytes_p), ctypes.POINTER(ctypes.c_size_t)]),
    # crypto sessions
    "masq_session_new": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(SessionOptions), ctypes.POINTER(ctypes.c_void_p)]),
    "masq_session_write_handshake": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(c_bytes_p),
                                                    ctypes.POINTER(ctypes.c_size_t)]),
    "masq_session_read_handshake": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(c_bytes_p),
                                                   ctypes.POINTER(ctypes.c_size_t)]),
    "masq_session_status": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int),
                                           ctypes.POINTER(ctypes.c_int)]),
    "masq_session_seal": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                                         ctypes.POINTER(c_bytes_p), ctypes.POINTER(ctypes.c_size_t)]),
    "masq_session_open": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                                         ctypes.POINTER(c_bytes_p), ctypes.POINTER(ctypes.c_size_t)]),
    "masq_session_save": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(c_bytes_p), ctypes.POINTER(ctypes.c_size_t)]),
    "masq_session_load": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_session_peer_key": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
    "masq_session_peer_fingerprint": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_session_free": (None, [ctypes.c_void_p]),
    # primitives
    "masq_crypto_random": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t]),
    "masq_crypto_x25519_public": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p]),
    "masq_crypto_x25519": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]),
    "masq_crypto_ed25519_sign": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p]),
    "masq_crypto_ed25519_verify": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]),
    "masq_crypto_hkdf_sha256": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                               ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]),
    "masq_crypto_aead_seal": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                             ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p]),
    "masq_crypto_aead_open": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                             ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p]),
}


class LibraryNotFound(OSError):
    """libmasq.so could not be located or loaded."""


def _candidates():
    explicit = os.environ.get("MASQ_LIBRARY")
    if explicit:
        yield explicit
        return
    found = ctypes.util.find_library("masq")
    if found:
        yield found
    if shutil.which("pkg-config"):
        try:
            libdir = subprocess.run(["pkg-config", "--variable=libdir", "masq"], capture_output=True,
                                    text=True, timeout=10).stdout.strip()
            if libdir:
                yield os.path.join(libdir, "libmasq.so")
        except (OSError, subprocess.SubprocessError):
            pass
    yield "libmasq.so"


_lock = threading.Lock()
_lib = None


def lib():
    """The loaded library with every signature declared (loaded once)."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        errors = []
        for candidate in _candidates():
            try:
                loaded = ctypes.CDLL(candidate)
                break
            except OSError as e:
                errors.append(f"{candidate}: {e}")
        else:
            raise LibraryNotFound("cannot load libmasq.so (set MASQ_LIBRARY to its path, or install Masq): "
                                  + "; ".join(errors))
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(loaded, name)
            function.restype = restype
            function.argtypes = argtypes
        _lib = loaded
        return _lib


_declared_extra = set()


def declare(signatures):
    """The loaded library with the signatures of a feature module (sharing,
    backup, blobs) declared too, once per table."""
    loaded = lib()
    with _lock:
        if id(signatures) not in _declared_extra:
            for name, (restype, argtypes) in signatures.items():
                function = getattr(loaded, name)
                function.restype = restype
                function.argtypes = argtypes
            _declared_extra.add(id(signatures))
    return loaded
