"""Exceptions for Masq status codes.

Every failure of a library call raises a MasqError subclass that carries the
C status code and the library's message; each also derives from the closest
built-in exception, so `except KeyError` and `except ValueError` work as a
Python programmer expects.
"""

from . import _native as n


class MasqError(Exception):
    """A Masq call failed. `status` is the masq.h code, `status_name` its name."""

    status = n.E_INTERNAL

    def __init__(self, message, status=None):
        super().__init__(message)
        if status is not None:
            self.status = status
        self.message = message

    @property
    def status_name(self):
        return n.lib().masq_status_name(self.status).decode()

    def __str__(self):
        return self.message


class InvalidArgumentError(MasqError, ValueError):
    status = n.E_INVALID


class NotFoundError(MasqError, KeyError):
    status = n.E_NOT_FOUND

    def __str__(self):  # KeyError would repr() the message
        return self.message


class TooLargeError(MasqError, ValueError):
    status = n.E_TOO_LARGE


class ConfigError(MasqError, ValueError):
    status = n.E_CONFIG


class PluginError(MasqError, ImportError):
    status = n.E_PLUGIN


class ABIError(PluginError):
    status = n.E_ABI


class StorageIOError(MasqError, OSError):
    status = n.E_IO


class CorruptError(MasqError):
    status = n.E_CORRUPT


class ClosedError(MasqError):
    status = n.E_CLOSED


class BusyError(MasqError):
    status = n.E_BUSY


class UnsupportedError(MasqError, NotImplementedError):
    status = n.E_UNSUPPORTED


class DeniedError(MasqError, PermissionError):
    status = n.E_DENIED


class BadSignatureError(MasqError):
    status = n.E_BAD_SIGNATURE


class InsufficientFundsError(MasqError):
    status = n.E_FUNDS


class UnavailableError(MasqError, ConnectionError):
    status = n.E_UNAVAILABLE


class TimeoutError_(MasqError, TimeoutError):
    status = n.E_TIMEOUT


class InternalError(MasqError):
    status = n.E_INTERNAL


_BY_STATUS = {cls.status: cls for cls in [
    InvalidArgumentError, NotFoundError, TooLargeError, ConfigError, PluginError, ABIError, StorageIOError,
    CorruptError, ClosedError, BusyError, UnsupportedError, DeniedError, BadSignatureError,
    InsufficientFundsError, UnavailableError, TimeoutError_, InternalError]}
_BY_STATUS[n.E_NOMEM] = MemoryError


def raise_for(status):
    """Raise the exception for a failed call's status, with the library's message."""
    if status == n.OK:
        return
    message = (n.lib().masq_last_error() or b"").decode("utf-8", "replace")
    cls = _BY_STATUS.get(status)
    if cls is MemoryError:
        raise MemoryError(message)
    if cls is None:
        raise MasqError(message, status)
    raise cls(message)


def check(status):
    """Call wrapper: raise on failure, return None on success."""
    if status != n.OK:
        raise_for(status)
