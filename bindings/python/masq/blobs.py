"""Blobs (masq.h, "Blobs"): file-sized values written and read without holding them in memory.

    info = store.put_blob("photos", "beach.jpg", "/home/me/beach.jpg", content_type="image/jpeg")
    store.get_blob("photos", "beach.jpg", "/tmp/copy.jpg")          # to a file (atomically)
    data = store.get_blob("photos", "beach.jpg", offset=0, length=4096)   # a range, as bytes
    with open("out.bin", "wb") as f: store.get_blob("photos", "big", f)   # to any writable object
    store.blob_info("photos", "beach.jpg").complete                  # are all its chunks here?
    store.blob_fetch("photos", "beach.jpg")                          # on-demand devices: fetch it

A key holding a blob holds a small reference (store.get returns its bytes;
parse_blob_reference reads them); sync carries the chunks. Reading a blob
whose chunks are not all here raises UnavailableError (and asks for them).
"""

import ctypes
import json
import os
import traceback
from dataclasses import dataclass
from typing import Callable, Optional, Union

from . import _native as n
from .errors import InvalidArgumentError, check
from .security import _take_text

TO_END = 0xFFFF_FFFF_FFFF_FFFF

READ_FN = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t)
WRITE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t)
PROGRESS_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64)

_KEY = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
_SIGNATURES = {
    "masq_blob_put_file": (ctypes.c_int, _KEY + [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_blob_put_stream": (ctypes.c_int, _KEY + [READ_FN, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                                    ctypes.POINTER(ctypes.c_void_p)]),
    "masq_blob_get_file": (ctypes.c_int, _KEY + [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_uint64]),
    "masq_blob_get_stream": (ctypes.c_int, _KEY + [ctypes.c_uint64, ctypes.c_uint64, WRITE_FN, ctypes.c_void_p]),
    "masq_blob_info": (ctypes.c_int, _KEY + [ctypes.POINTER(ctypes.c_void_p)]),
    "masq_blob_parse": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_blob_fetch": (ctypes.c_int, _KEY),
    "masq_blob_gc": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_blob_set_progress": (ctypes.c_int, [ctypes.c_void_p, PROGRESS_FN, ctypes.c_void_p]),
}

def _lib():
    """libmasq with the blob signatures declared (once)."""
    return n.declare(_SIGNATURES)


def _key(key) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, (bytes, bytearray, memoryview)):
        return bytes(key)
    raise TypeError(f"key must be bytes or str, not {type(key).__name__}")


def _text(value, what: str) -> Optional[bytes]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    return value.encode("utf-8")


@dataclass(frozen=True)
class BlobInfo:
    """What this device holds of one blob (masq.h, "blob info")."""
    id: str                     # the manifest's SHA-256 (hex): the same on every device
    size: int
    chunk_size: int
    chunks: int
    content_type: Optional[str]
    name: Optional[str]
    complete: bool              # every chunk is on this device
    manifest: bool
    present_chunks: int
    present_bytes: int
    missing_chunks: int
    fetching_since: int         # Unix ms this device first asked for the contents (0: not asked)
    new_chunks: int = 0         # put_blob: chunks this write added (0: the store held them all)
    new_bytes: int = 0

    @classmethod
    def from_json(cls, data: dict) -> "BlobInfo":
        return cls(**{f: data[f] for f in cls.__dataclass_fields__})


def parse_blob_reference(value: bytes) -> dict:
    """Read a blob reference (a value from get() or a watch): id, size, chunk_size, chunks, content_type, name.
    InvalidArgumentError if the value is not one."""
    out = ctypes.c_void_p()
    check(_lib().masq_blob_parse(bytes(value), len(value), ctypes.byref(out)))
    return json.loads(_take_text(out.value))


class _Failure:
    """The first exception a Python callback raised, re-raised after the C call returns."""

    def __init__(self):
        self.error = None

    def reraise(self):
        if self.error is not None:
            raise self.error


class BlobsMixin:
    """Store methods for blobs."""

    def put_blob(self, ns: str, key, source, content_type: Optional[str] = None, name: Optional[str] = None) -> BlobInfo:
        """Store `source` as a blob under key: a file path (read 1 MiB at a time; its base name is the
        blob's name unless given), bytes, or a readable binary object (readinto or read). The key changes
        only once everything is stored."""
        k = _key(key)
        out = ctypes.c_void_p()
        if isinstance(source, (str, os.PathLike)) and name is None:
            check(_lib().masq_blob_put_file(self._h, ns.encode("utf-8"), k, len(k), os.fsencode(source),
                                            _text(content_type, "content_type"), ctypes.byref(out)))
            return BlobInfo.from_json(json.loads(_take_text(out.value)))
        opened = None
        if isinstance(source, (str, os.PathLike)):
            source = opened = open(source, "rb")
        try:
            reader = _reader(source)
            failure = _Failure()

            def on_read(_ctx, buffer, length):
                try:
                    data = reader(length)
                    if data:
                        ctypes.memmove(buffer, data, len(data))
                    return len(data)
                except BaseException as error:  # never let an exception cross into C
                    failure.error = error
                    return -1

            thunk = READ_FN(on_read)
            status = _lib().masq_blob_put_stream(self._h, ns.encode("utf-8"), k, len(k), thunk, None,
                                                 _text(content_type, "content_type"), _text(name, "name"), ctypes.byref(out))
            failure.reraise()
            check(status)
            return BlobInfo.from_json(json.loads(_take_text(out.value)))
        finally:
            if opened:
                opened.close()

    def get_blob(self, ns: str, key, dest=None, offset: int = 0, length: Optional[int] = None):
        """Read the blob key references (from offset, length bytes or to the end): to a file path
        (written beside it and renamed when whole), to a writable binary object, or, with dest None,
        returned as bytes. UnavailableError while some of its chunks are not on this device."""
        k = _key(key)
        span = TO_END if length is None else int(length)
        if isinstance(dest, (str, os.PathLike)):
            check(_lib().masq_blob_get_file(self._h, ns.encode("utf-8"), k, len(k), os.fsencode(dest), int(offset), span))
            return None
        parts = []
        sink = parts.append if dest is None else dest.write
        failure = _Failure()

        def on_write(_ctx, data, size):
            try:
                sink(ctypes.string_at(data, size))
                return 0
            except BaseException as error:
                failure.error = error
                return 1

        thunk = WRITE_FN(on_write)
        status = _lib().masq_blob_get_stream(self._h, ns.encode("utf-8"), k, len(k), int(offset), span, thunk, None)
        failure.reraise()
        check(status)
        return b"".join(parts) if dest is None else None

    def blob_info(self, ns: str, key) -> BlobInfo:
        k = _key(key)
        out = ctypes.c_void_p()
        check(_lib().masq_blob_info(self._h, ns.encode("utf-8"), k, len(k), ctypes.byref(out)))
        return BlobInfo.from_json(json.loads(_take_text(out.value)))

    def blob_fetch(self, ns: str, key) -> None:
        """Ask for the blob's contents (fetched by the running sync, or the next one)."""
        k = _key(key)
        check(_lib().masq_blob_fetch(self._h, ns.encode("utf-8"), k, len(k)))

    def blob_gc(self) -> dict:
        """Delete chunks no live key references; returns what was kept and deleted."""
        out = ctypes.c_void_p()
        check(_lib().masq_blob_gc(self._h, ctypes.byref(out)))
        return json.loads(_take_text(out.value))

    def on_blob_progress(self, callback: Optional[Callable[[str, int, int], None]]) -> None:
        """callback(blob_id, fetched, size) as chunks arrive by sync (library thread); None removes it."""
        if callback is None:
            check(_lib().masq_blob_set_progress(self._h, PROGRESS_FN(), None))
            self._blob_progress = None
            return

        def on_progress(_ctx, blob_id, fetched, size):
            try:
                callback(blob_id.decode("ascii"), fetched, size)
            except Exception:  # never let an exception cross into C
                traceback.print_exc()

        thunk = PROGRESS_FN(on_progress)
        check(_lib().masq_blob_set_progress(self._h, thunk, None))
        self._blob_progress = thunk   # keep the C callback alive


def _reader(source) -> Callable[[int], bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        view = memoryview(source).cast("B")
        position = [0]

        def read(length):
            chunk = view[position[0]:position[0] + length]
            position[0] += len(chunk)
            return bytes(chunk)
        return read
    if hasattr(source, "read"):
        return lambda length: source.read(length) or b""
    raise InvalidArgumentError("source must be a path, bytes or a readable binary object")


__all__ = ["BlobInfo", "BlobsMixin", "parse_blob_reference", "TO_END"]
