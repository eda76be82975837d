"""Masq for Python: keep application data on the user's own devices.

A ctypes binding of include/masq.h. See README.md.
"""

from ._native import LibraryNotFound, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_WARN
from .errors import (ABIError, BadSignatureError, BusyError, ClosedError, ConfigError, CorruptError, DeniedError,
                     InsufficientFundsError, InternalError, InvalidArgumentError, MasqError, NotFoundError,
                     PluginError, StorageIOError, TooLargeError, UnavailableError, UnsupportedError)
from .store import Change, Namespace, PluginInfo, Store, Watch, scan_plugins, set_log_handler, version
from .security import (Pairing, PairingTask, Session, aead_open, aead_seal, ed25519_sign, ed25519_verify, hkdf_sha256, qr_pgm,
                       random_bytes, x25519, x25519_public)
from ._native import AEAD_AES_256_GCM, AEAD_CHACHA20_POLY1305
from .sharing import Share

__all__ = [
    "Store", "Namespace", "Change", "Watch", "PluginInfo", "scan_plugins", "set_log_handler", "version",
    "MasqError", "InvalidArgumentError", "NotFoundError", "TooLargeError", "ConfigError", "PluginError", "ABIError",
    "StorageIOError", "CorruptError", "ClosedError", "BusyError", "UnsupportedError", "DeniedError",
    "BadSignatureError", "InsufficientFundsError", "UnavailableError", "InternalError", "LibraryNotFound",
    "LOG_ERROR", "LOG_WARN", "LOG_INFO", "LOG_DEBUG",
    "Session", "Pairing", "PairingTask", "random_bytes", "x25519", "x25519_public", "ed25519_sign", "ed25519_verify", "hkdf_sha256",
    "aead_seal", "aead_open", "qr_pgm", "AEAD_CHACHA20_POLY1305", "AEAD_AES_256_GCM",
]
__all__ += ["Share"]
from .blobs import BlobInfo, parse_blob_reference
__all__ += ["BlobInfo", "parse_blob_reference"]
from .backup import BackupInfo, BackupManifest, backup_info, backup_verify, restore, restore_config
__all__ += ["BackupInfo", "BackupManifest", "backup_info", "backup_verify", "restore", "restore_config"]
