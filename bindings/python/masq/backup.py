"""Backup, restore and export (masq.h, "Backup and restore").

    store.backup("notes.bak", passphrase="correct horse")         # or:
    key = store.backup_with_recovery_key("notes.bak")             # show it once; it opens the backup
    masq.backup_verify("notes.bak", "correct horse")              # decrypt and check, write nothing
    masq.restore_config({"data_dir": "/new/empty/dir"}, "notes.bak", "correct horse")
    with masq.Store.open_config({"data_dir": "/new/empty/dir"}) as restored: ...
    store.export("notes.jsonl")                                   # JSON lines, base64 keys and values

A backup holds the whole store (data, history, device keys, paired devices,
shares), taken from one consistent snapshot, encrypted in authenticated
chunks. A restore goes into a new or empty data directory only, and leaves
nothing there when the file is truncated, tampered with, or opened with the
wrong secret. The restored device continues under a new replica id and
renews its sessions before it sends anything (docs/BACKUP.md).
"""

import ctypes
import json
import os
from dataclasses import dataclass
from typing import Mapping, Optional, Union

from . import _native as n
from .errors import check
from .security import _take_text

PathLike = Union[str, os.PathLike]

_SIGNATURES = {
    "masq_backup": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
    "masq_backup_with_recovery_key": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_backup_info": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_backup_verify": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_restore": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
    "masq_restore_config": (ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]),
    "masq_export": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
}

def _lib():
    """libmasq with the backup signatures declared (once)."""
    return n.declare(_SIGNATURES)


def _secret(value, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")


@dataclass(frozen=True)
class BackupInfo:
    """What a backup file says about itself before any key is given."""
    format: int
    key: str            # "passphrase" or "recovery_key": what opens it
    chunk_bytes: int


@dataclass(frozen=True)
class BackupManifest:
    """A verified backup's description."""
    format: int
    created_at: int              # Unix ms
    masq_version: str
    replica: int                 # the backed-up store's replica id
    device_id: Optional[str]     # None if the store was locked when backed up
    device_name: Optional[str]
    protected: bool              # the store had a passphrase (the restored store opens with it)
    storage: str                 # the storage plugin it was kept in
    entries: int
    files: int
    config: str                  # the store's config as it was (JSON text)

    @classmethod
    def from_json(cls, data: dict) -> "BackupManifest":
        return cls(format=data["format"], created_at=data["created_at"], masq_version=data["masq_version"],
                   replica=int(data["replica"], 16), device_id=data["device_id"], device_name=data["device_name"],
                   protected=data["protected"], storage=data["storage"], entries=data["entries"], files=data["files"],
                   config=data["config"])


class BackupMixin:
    """Store methods for backups and exports."""

    def backup(self, path: PathLike, passphrase: Union[str, bytes]) -> None:
        """Write an encrypted backup to path (which must not exist) under passphrase. Works while locked."""
        secret = _secret(passphrase, "passphrase")
        check(_lib().masq_backup(self._h, os.fsencode(path), secret, len(secret)))

    def backup_with_recovery_key(self, path: PathLike) -> str:
        """Write an encrypted backup under a new random recovery key, and return the key (show it once)."""
        out = ctypes.c_void_p()
        check(_lib().masq_backup_with_recovery_key(self._h, os.fsencode(path), ctypes.byref(out)))
        return _take_text(out.value)

    def export(self, path: PathLike) -> None:
        """Every live key as JSON lines (docs/EXPORT.md), written to path (which must not exist), in clear."""
        check(_lib().masq_export(self._h, os.fsencode(path)))


def backup_info(path: PathLike) -> BackupInfo:
    """The format and key kind of a backup file (no key needed)."""
    out = ctypes.c_void_p()
    check(_lib().masq_backup_info(os.fsencode(path), ctypes.byref(out)))
    data = json.loads(_take_text(out.value))
    return BackupInfo(format=data["format"], key=data["key"], chunk_bytes=data["chunk_bytes"])


def backup_verify(path: PathLike, secret: Union[str, bytes]) -> BackupManifest:
    """Decrypt and check a whole backup (its passphrase, or its recovery key as text); write nothing."""
    key = _secret(secret, "secret")
    out = ctypes.c_void_p()
    check(_lib().masq_backup_verify(os.fsencode(path), key, len(key), ctypes.byref(out)))
    return BackupManifest.from_json(json.loads(_take_text(out.value)))


def restore(config_path: PathLike, backup_path: PathLike, secret: Union[str, bytes]) -> None:
    """Restore a backup into the (new or empty) data directory of the config file at config_path."""
    key = _secret(secret, "secret")
    check(_lib().masq_restore(os.fsencode(config_path), os.fsencode(backup_path), key, len(key)))


def restore_config(config: Union[Mapping, str], backup_path: PathLike, secret: Union[str, bytes],
                   base_dir: Optional[str] = None) -> None:
    """Restore a backup into the (new or empty) data directory of a config given as a dict or JSON text."""
    text = config if isinstance(config, str) else json.dumps(config)
    key = _secret(secret, "secret")
    check(_lib().masq_restore_config(text.encode("utf-8"), os.fsencode(base_dir) if base_dir else None,
                                     os.fsencode(backup_path), key, len(key)))


__all__ = ["BackupMixin", "BackupInfo", "BackupManifest", "backup_info", "backup_verify", "restore", "restore_config"]
