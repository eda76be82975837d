"""The Pythonic face of masq.h: Store, Namespace, watches, plugins, logging."""

import ctypes
import json
import os
import threading
import traceback
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

from . import _native as n
from .errors import InvalidArgumentError, check
from .security import SecurityMixin
from .sync import SyncMixin
from .sharing import SharingMixin
from .blobs import BlobsMixin
from .backup import BackupMixin

BytesLike = Union[bytes, bytearray, memoryview, str]


def _bytes(value: BytesLike, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def _namespace(ns: str) -> bytes:
    if not isinstance(ns, str):
        raise TypeError(f"namespace must be str, not {type(ns).__name__}")
    return ns.encode("utf-8", "surrogatepass")


def _copy(pointer, length: int) -> bytes:
    return ctypes.string_at(pointer, length) if length else b""


def version() -> str:
    """The library's version string, e.g. "0.1.0"."""
    return n.lib().masq_version().decode()


@dataclass(frozen=True)
class Change:
    """One committed change, as a watch callback receives it."""
    kind: str                 # "put", "delete" or "conflict" (value won over lost_value)
    origin: str               # "local" or "remote"
    namespace: str
    key: bytes
    value: Optional[bytes]    # None for a delete
    timestamp: int            # hybrid logical clock timestamp
    replica: int              # writer's replica id
    lost_value: Optional[bytes] = None   # "conflict": the value that lost (None if the loser was a delete)
    lost_was_deleted: bool = False


@dataclass(frozen=True)
class PluginInfo:
    """What masq_plugins_scan reports about one plugin file."""
    path: str
    ok: bool
    status: int
    kind: Optional[str]
    name: Optional[str]
    version: Optional[str]
    description: Optional[str]
    abi_version: int
    message: str


_KINDS = {n.PLUGIN_KIND_STORAGE: "storage", n.PLUGIN_KIND_TRANSPORT: "transport", n.PLUGIN_KIND_WALLET: "wallet"}


def scan_plugins(config_path: Optional[str] = None) -> List[PluginInfo]:
    """Every plugin file on the search path, each validated as masq_open would."""
    found = []

    def on_plugin(_ctx, info_p):
        i = info_p.contents
        text = lambda b: b.decode("utf-8", "replace") if b is not None else None
        found.append(PluginInfo(path=text(i.path), ok=i.status == n.OK, status=i.status, kind=_KINDS.get(i.kind),
                                name=text(i.name), version=text(i.version), description=text(i.description),
                                abi_version=i.abi_version, message=text(i.message) or ""))
        return 0

    callback = n.PLUGIN_INFO_FN(on_plugin)
    check(n.lib().masq_plugins_scan(config_path.encode() if config_path else None, callback, None))
    return found


_log_lock = threading.Lock()
_log_callback = None  # keeps the ctypes thunk alive while installed


def set_log_handler(handler: Optional[Callable[[int, str, str], None]], max_level: int = n.LOG_INFO) -> None:
    """Route library log lines (level, component, message) to handler; None restores stderr."""
    global _log_callback
    with _log_lock:
        if handler is None:
            check(n.lib().masq_set_log_callback(n.LOG_WARN, n.LOG_FN(), None))
            _log_callback = None
            return

        def on_log(_ctx, level, component, message):
            try:
                handler(level, component.decode("utf-8", "replace"), message.decode("utf-8", "replace"))
            except Exception:  # never let an exception cross into C
                traceback.print_exc()

        thunk = n.LOG_FN(on_log)
        check(n.lib().masq_set_log_callback(max_level, thunk, None))
        _log_callback = thunk


class Watch:
    """A registered watch; cancel() (or leaving a `with` block) stops it."""

    def __init__(self, store: "Store", watch_id: int):
        self._store = store
        self.id = watch_id

    def cancel(self) -> None:
        self._store.unwatch(self.id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.id in self._store._watches:
            self.cancel()


class Store(SecurityMixin, SyncMixin, SharingMixin, BlobsMixin, BackupMixin):
    """An open Masq store. Thread-safe; use as a context manager or call close()."""

    def __init__(self, handle: ctypes.c_void_p):
        self._handle = handle
        self._watches = {}
        self._lock = threading.Lock()

    # ---- opening ---------------------------------------------------------

    @classmethod
    def open(cls, config_path: Union[str, os.PathLike]) -> "Store":
        """Open the store a JSON config file describes."""
        handle = ctypes.c_void_p()
        check(n.lib().masq_open(os.fsencode(config_path), ctypes.byref(handle)))
        return cls(handle)

    @classmethod
    def open_config(cls, config: Union[Mapping, str], base_dir: Optional[str] = None) -> "Store":
        """Open from a config given as a dict or JSON text; relative paths against base_dir (default: cwd)."""
        text = config if isinstance(config, str) else json.dumps(config)
        handle = ctypes.c_void_p()
        check(n.lib().masq_open_config(text.encode("utf-8"), os.fsencode(base_dir) if base_dir else None,
                                       ctypes.byref(handle)))
        return cls(handle)

    def close(self) -> None:
        """Close the store (idempotent). Queued watch callbacks run first."""
        with self._lock:
            handle, self._handle = self._handle, None
        if handle:
            check(n.lib().masq_close(handle))
            self._watches.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def _h(self):
        if not self._handle:
            from .errors import ClosedError
            raise ClosedError("the store is closed")
        return self._handle

    @property
    def replica_id(self) -> int:
        out = ctypes.c_uint64()
        check(n.lib().masq_replica_id(self._h, ctypes.byref(out)))
        return out.value

    # ---- data ------------------------------------------------------------

    def put(self, ns: str, key: BytesLike, value: BytesLike) -> None:
        k, v = _bytes(key, "key"), _bytes(value, "value")
        check(n.lib().masq_put(self._h, _namespace(ns), k, len(k), v, len(v)))

    def get(self, ns: str, key: BytesLike, default=None) -> Optional[bytes]:
        """The value of key, or default when absent or deleted."""
        k = _bytes(key, "key")
        out, length = n.c_bytes_p(), ctypes.c_size_t()
        status = n.lib().masq_get(self._h, _namespace(ns), k, len(k), ctypes.byref(out), ctypes.byref(length))
        if status == n.E_NOT_FOUND:
            return default
        check(status)
        try:
            return _copy(out, length.value)
        finally:
            n.lib().masq_free(out)

    def delete(self, ns: str, key: BytesLike) -> None:
        """Delete key (a tombstone, so it syncs); deleting an absent key is fine."""
        k = _bytes(key, "key")
        check(n.lib().masq_delete(self._h, _namespace(ns), k, len(k)))

    def items(self, ns: str, prefix: BytesLike = b"", keys_only: bool = False) -> List[Tuple[bytes, Optional[bytes]]]:
        """(key, value) pairs of live keys starting with prefix, in key order."""
        p = _bytes(prefix, "prefix")
        found = []

        def on_entry(_ctx, key, key_len, value, value_len):
            found.append((_copy(key, key_len), None if keys_only else _copy(value, value_len)))
            return 0

        callback = n.LIST_FN(on_entry)
        flags = n.LIST_KEYS_ONLY if keys_only else 0
        check(n.lib().masq_list(self._h, _namespace(ns), p, len(p), flags, callback, None))
        return found

    def keys(self, ns: str, prefix: BytesLike = b"") -> List[bytes]:
        return [k for k, _ in self.items(ns, prefix, keys_only=True)]

    def get_all(self, ns: str) -> dict:
        """Every live key of ns from one consistent snapshot."""
        entries, count = ctypes.POINTER(n.Entry)(), ctypes.c_size_t()
        check(n.lib().masq_get_all(self._h, _namespace(ns), ctypes.byref(entries), ctypes.byref(count)))
        try:
            return {_copy(entries[i].key, entries[i].key_len): _copy(entries[i].value, entries[i].value_len)
                    for i in range(count.value)}
        finally:
            n.lib().masq_free(entries)

    def set_all(self, ns: str, entries: Union[Mapping, Iterable[Tuple[BytesLike, Optional[BytesLike]]]],
                replace: bool = False) -> None:
        """Apply puts (and deletes, for None values) in one transaction; replace=True drops other keys."""
        pairs = list(entries.items()) if isinstance(entries, Mapping) else list(entries)
        keep = []  # the bytes must outlive the call
        array = (n.Entry * len(pairs))()
        for i, (key, value) in enumerate(pairs):
            k = _bytes(key, "key")
            v = None if value is None else _bytes(value, "value")
            kb = ctypes.create_string_buffer(k, len(k)) if k else None
            vb = ctypes.create_string_buffer(v, max(len(v), 1)) if v is not None else None
            keep += [kb, vb]
            array[i].key = ctypes.cast(kb, n.c_bytes_p) if kb else None
            array[i].key_len = len(k)
            array[i].value = ctypes.cast(vb, n.c_bytes_p) if vb is not None else None
            array[i].value_len = len(v) if v is not None else 0
        flags = n.SET_ALL_REPLACE if replace else 0
        check(n.lib().masq_set_all(self._h, _namespace(ns), array, len(pairs), flags))

    def clear(self, ns: str) -> None:
        check(n.lib().masq_clear(self._h, _namespace(ns)))

    def namespaces(self) -> List[str]:
        names = []

        def on_namespace(_ctx, name):
            names.append(name.decode("utf-8"))
            return 0

        callback = n.NAMESPACE_FN(on_namespace)
        check(n.lib().masq_list_namespaces(self._h, callback, None))
        return names

    def namespace(self, ns: str) -> "Namespace":
        """A dict-like view of one namespace."""
        return Namespace(self, ns)

    # ---- watch -----------------------------------------------------------

    def watch(self, callback: Callable[[Change], None], ns: Optional[str] = None, prefix: BytesLike = b"") -> Watch:
        """Call callback(Change) for every later commit to ns (None: all) under prefix.

        The callback runs on a library thread, one change at a time, in commit order."""
        p = _bytes(prefix, "prefix")

        def on_change(_ctx, change_p):
            c = change_p.contents
            try:
                callback(Change(
                    kind={n.CHANGE_PUT: "put", n.CHANGE_DELETE: "delete"}.get(c.kind, "conflict"),
                    origin="local" if c.origin == n.ORIGIN_LOCAL else "remote",
                    namespace=c.ns.decode("utf-8"),
                    key=_copy(c.key, c.key_len),
                    value=_copy(c.value, c.value_len) if c.value else None,
                    timestamp=c.timestamp,
                    replica=c.replica,
                    lost_value=_copy(c.lost_value, c.lost_value_len) if c.kind == n.CHANGE_CONFLICT and c.lost_value else None,
                    lost_was_deleted=bool(c.kind == n.CHANGE_CONFLICT and c.lost_was_deleted)))
            except Exception:  # never let an exception cross into C
                traceback.print_exc()

        thunk = n.WATCH_FN(on_change)
        watch_id = ctypes.c_uint64()
        check(n.lib().masq_watch(self._h, _namespace(ns) if ns is not None else None, p, len(p), thunk, None,
                                 ctypes.byref(watch_id)))
        self._watches[watch_id.value] = thunk
        return Watch(self, watch_id.value)

    def unwatch(self, watch_id: int) -> None:
        check(n.lib().masq_unwatch(self._h, watch_id))
        self._watches.pop(watch_id, None)


class Namespace:
    """Dict-like access to one namespace: ns[key], ns[key] = value, del ns[key], `in`, iteration."""

    def __init__(self, store: Store, name: str):
        self.store = store
        self.name = name

    def __getitem__(self, key: BytesLike) -> bytes:
        sentinel = object()
        value = self.store.get(self.name, key, sentinel)
        if value is sentinel:
            from .errors import NotFoundError
            raise NotFoundError(f"no key {key!r} in namespace '{self.name}'")
        return value

    def __setitem__(self, key: BytesLike, value: BytesLike) -> None:
        self.store.put(self.name, key, value)

    def __delitem__(self, key: BytesLike) -> None:
        self.store.delete(self.name, key)

    def __contains__(self, key: BytesLike) -> bool:
        return self.store.get(self.name, key) is not None

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.store.keys(self.name))

    def __len__(self) -> int:
        return len(self.store.keys(self.name))

    def get(self, key: BytesLike, default=None):
        return self.store.get(self.name, key, default)

    def items(self, prefix: BytesLike = b""):
        return self.store.items(self.name, prefix)

    def keys(self, prefix: BytesLike = b""):
        return self.store.keys(self.name, prefix)

    def update(self, entries) -> None:
        self.store.set_all(self.name, entries)

    def replace(self, entries) -> None:
        self.store.set_all(self.name, entries, replace=True)

    def clear(self) -> None:
        self.store.clear(self.name)

    def to_dict(self) -> dict:
        return self.store.get_all(self.name)

    def watch(self, callback: Callable[[Change], None], prefix: BytesLike = b"") -> Watch:
        return self.store.watch(callback, self.name, prefix)


__all__ = ["Store", "Namespace", "Change", "Watch", "PluginInfo", "scan_plugins", "set_log_handler", "version",
           "InvalidArgumentError"]
