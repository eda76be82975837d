"""Sharing a namespace with another person (masq.h, "Sharing with other people").

    link = alice.share("notes", nickname="Bob").link        # send it to Bob; show it as a QR code: masq.qr_pgm(link)
    share = bob.accept_share(link, nickname="Alice")         # in Bob's store
    alice.share_sync_start(); bob.share_sync_start()         # messages travel while sharing runs
    bob.share_info(share.id).fingerprint                     # compare with Alice's, out of band

Each side keeps its own nickname for the other person, and once the other
side answered, the same fingerprint (digits and emoji) to compare.
"""

import ctypes
import json
from dataclasses import dataclass, field
from typing import List, Optional

from . import _native as n
from .errors import check
from .security import _take_text

SHARE_READ_ONLY = 1
SHARE_MERGE = 2

_SIGNATURES = {
    "masq_share_create": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_char_p,
                                         ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)]),
    "masq_share_accept": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint32,
                                         ctypes.POINTER(ctypes.c_void_p)]),
    "masq_shares": (ctypes.c_int, [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_share_info": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]),
    "masq_share_set_nickname": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]),
    "masq_unshare": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
    "masq_share_sync_start": (ctypes.c_int, [ctypes.c_void_p]),
    "masq_share_sync_stop": (ctypes.c_int, [ctypes.c_void_p]),
    "masq_share_sync_once": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_double]),
}

def _lib():
    """libmasq with the sharing signatures declared (once)."""
    return n.declare(_SIGNATURES)


def _text(value, what: str) -> Optional[bytes]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    return value.encode("utf-8", "surrogatepass")


@dataclass(frozen=True)
class Share:
    """One share with another person, as this store keeps it."""
    id: str                          # the same on both sides
    namespace: Optional[str]         # the local namespace (None until the owner answers a link accepted here)
    role: str                        # "owner" (shared by this store) or "guest" (accepted here)
    access: str                      # "read-write" or "read-only"
    status: str                      # "offered", "claimed", "active" or "intercepted"
    nickname: Optional[str]          # what this store calls the other person
    fingerprint: Optional[str]       # 30 digits in groups of 5, once the other side answered
    fingerprint_emoji: Optional[str]
    created_at: int                  # Unix ms
    last_heard_at: int               # Unix ms, 0: never
    refused: int                     # messages refused (forged, replayed, beyond the rights)
    warnings: List[str] = field(default_factory=list)
    link: Optional[str] = None       # share(): the link to send

    @classmethod
    def from_json(cls, data: dict, link: Optional[str] = None) -> "Share":
        return cls(id=data["id"], namespace=data["namespace"], role=data["role"], access=data["access"],
                   status=data["status"], nickname=data["nickname"], fingerprint=data["fingerprint"],
                   fingerprint_emoji=data["fingerprint_emoji"], created_at=data["created_at"],
                   last_heard_at=data["last_heard_at"], refused=data["refused"], warnings=list(data["warnings"]),
                   link=link)


class SharingMixin:
    """Store methods for sharing namespaces with other people."""

    def share(self, ns: str, nickname: str, read_only: bool = False, base_url: Optional[str] = None) -> Share:
        """Share namespace ns with the person you call nickname; `.link` is the single-use link to send them.
        base_url: the page the link opens (default masq://share/)."""
        link, out = ctypes.c_void_p(), ctypes.c_void_p()
        flags = SHARE_READ_ONLY if read_only else 0
        check(_lib().masq_share_create(self._h, _text(ns, "ns"), _text(nickname, "nickname"), flags,
                                       _text(base_url, "base_url"), ctypes.byref(link), ctypes.byref(out)))
        text = _take_text(link.value)
        return Share.from_json(json.loads(_take_text(out.value)), link=text)

    def accept_share(self, link: str, nickname: str, as_namespace: Optional[str] = None, merge: bool = False) -> Share:
        """Accept another person's link (whom you call nickname). The share lands in as_namespace, which must
        not exist unless merge=True, or by default in "shared:<their name>:<id>" once the owner answers."""
        out = ctypes.c_void_p()
        flags = SHARE_MERGE if merge else 0
        check(_lib().masq_share_accept(self._h, _text(link, "link"), _text(nickname, "nickname"),
                                       _text(as_namespace, "as_namespace"), flags, ctypes.byref(out)))
        return Share.from_json(json.loads(_take_text(out.value)))

    def shares(self) -> List[Share]:
        """Every share of this store, oldest first."""
        out = ctypes.c_void_p()
        check(_lib().masq_shares(self._h, ctypes.byref(out)))
        return [Share.from_json(item) for item in json.loads(_take_text(out.value))]

    def share_info(self, share_id: str) -> Share:
        """One share by id (NotFoundError if unknown)."""
        out = ctypes.c_void_p()
        check(_lib().masq_share_info(self._h, _text(share_id, "share_id"), ctypes.byref(out)))
        return Share.from_json(json.loads(_take_text(out.value)))

    def set_share_nickname(self, share_id: str, nickname: str) -> None:
        check(_lib().masq_share_set_nickname(self._h, _text(share_id, "share_id"), _text(nickname, "nickname")))

    def unshare(self, share_id: str) -> None:
        """End a share: the other side is told, the keys go; the data stays on both sides."""
        check(_lib().masq_unshare(self._h, _text(share_id, "share_id")))

    def share_sync_start(self) -> None:
        """Run sharing in the background (poll mailboxes, answer claims, send and merge records)."""
        check(_lib().masq_share_sync_start(self._h))

    def share_sync_stop(self) -> None:
        check(_lib().masq_share_sync_stop(self._h))

    def share_sync_once(self, timeout: float = 60.0) -> None:
        """Run sharing until nothing sent waits for an answer (TimeoutError_ after timeout seconds)."""
        check(_lib().masq_share_sync_once(self._h, float(timeout)))


__all__ = ["Share", "SharingMixin", "SHARE_READ_ONLY", "SHARE_MERGE"]
