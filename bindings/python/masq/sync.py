"""Counters and sync (masq.h): the Store methods that reach other devices."""

import ctypes
import json
import traceback
from typing import Callable, Optional

from . import _native as n
from .errors import check
from .security import _call_text


def _key(key) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


class SyncMixin:
    """Store methods for counters and background sync."""

    # ---- counters: concurrent additions on several devices all count ----

    def counter_add(self, ns: str, key, delta: int) -> None:
        k = _key(key)
        check(n.lib().masq_counter_add(self._h, ns.encode("utf-8"), k, len(k), int(delta)))

    def counter(self, ns: str, key) -> int:
        """The counter's total (0 when absent)."""
        k = _key(key)
        out = ctypes.c_int64()
        check(n.lib().masq_counter_get(self._h, ns.encode("utf-8"), k, len(k), ctypes.byref(out)))
        return out.value

    # ---- sync with the paired devices over the config's transports ----

    def sync_start(self) -> None:
        """Sync in the background until sync_stop() or close()."""
        check(n.lib().masq_sync_start(self._h))

    def sync_stop(self) -> None:
        check(n.lib().masq_sync_stop(self._h))

    def sync_once(self, timeout: float = 60.0) -> None:
        """Catch up with every paired device present, then return (TimeoutError_ after timeout)."""
        check(n.lib().masq_sync_once(self._h, float(timeout)))

    def sync_status(self) -> dict:
        """Devices, what each lacks, frames received and rejected, each transport's counters."""
        return json.loads(_call_text(n.lib().masq_sync_status, self._h))

    def on_sync_progress(self, callback: Optional[Callable[[str, int, int], None]]) -> None:
        """callback(device_id, received, remaining) as commits arrive (library thread); None removes it."""
        if callback is None:
            check(n.lib().masq_sync_set_progress(self._h, n.PROGRESS_FN(), None))
            self._progress = None
            return

        def on_progress(_ctx, device, received, remaining):
            try:
                callback(device.decode("utf-8"), received, remaining)
            except Exception:  # never let an exception cross into C
                traceback.print_exc()

        thunk = n.PROGRESS_FN(on_progress)
        check(n.lib().masq_sync_set_progress(self._h, thunk, None))
        self._progress = thunk   # keep the C callback alive
