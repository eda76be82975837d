//! Errors: every failed call gives an [`Error`] carrying the library's status
//! code (`MASQ_E_*`) and the message `masq_last_error()` held for it.

use std::ffi::CStr;
use std::fmt;
use std::os::raw::c_int;

use crate::sys;

/// What went wrong, one variant per `MASQ_E_*` status code of `masq.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `MASQ_E_INVALID`: invalid argument (NULL, bad UTF-8, a NUL inside a string, bad flags).
    Invalid,
    /// `MASQ_E_NOT_FOUND`: no such key, entry or object.
    NotFound,
    /// `MASQ_E_TOO_LARGE`: beyond a configured limit.
    TooLarge,
    /// `MASQ_E_CONFIG`: configuration missing, malformed or invalid.
    Config,
    /// `MASQ_E_PLUGIN`: plugin not found, not a plugin, wrong kind.
    Plugin,
    /// `MASQ_E_ABI`: plugin built for another ABI version.
    Abi,
    /// `MASQ_E_IO`: I/O or storage engine failure.
    Io,
    /// `MASQ_E_CORRUPT`: stored data is not in a format the library understands.
    Corrupt,
    /// `MASQ_E_CLOSED`: the handle was closed or is shutting down.
    Closed,
    /// `MASQ_E_BUSY`: resource locked by someone else; retry later.
    Busy,
    /// `MASQ_E_NOMEM`: out of memory.
    NoMemory,
    /// `MASQ_E_UNSUPPORTED`: not supported by this plugin or build.
    Unsupported,
    /// `MASQ_E_DENIED`: not permitted (e.g. the store is locked, a wrong passphrase).
    Denied,
    /// `MASQ_E_BAD_SIGNATURE`: signature or authentication tag invalid.
    BadSignature,
    /// `MASQ_E_FUNDS`: wallet: insufficient funds.
    Funds,
    /// `MASQ_E_UNAVAILABLE`: peer, network or service unreachable.
    Unavailable,
    /// `MASQ_E_TIMEOUT`: operation timed out.
    Timeout,
    /// `MASQ_E_INTERNAL`: a bug in Masq or a plugin.
    Internal,
    /// A status code this version of the binding does not know.
    Other(i32),
}

impl ErrorKind {
    /// The kind for a `MASQ_E_*` status code.
    pub fn from_code(code: i32) -> ErrorKind {
        match code {
            sys::MASQ_E_INVALID => ErrorKind::Invalid,
            sys::MASQ_E_NOT_FOUND => ErrorKind::NotFound,
            sys::MASQ_E_TOO_LARGE => ErrorKind::TooLarge,
            sys::MASQ_E_CONFIG => ErrorKind::Config,
            sys::MASQ_E_PLUGIN => ErrorKind::Plugin,
            sys::MASQ_E_ABI => ErrorKind::Abi,
            sys::MASQ_E_IO => ErrorKind::Io,
            sys::MASQ_E_CORRUPT => ErrorKind::Corrupt,
            sys::MASQ_E_CLOSED => ErrorKind::Closed,
            sys::MASQ_E_BUSY => ErrorKind::Busy,
            sys::MASQ_E_NOMEM => ErrorKind::NoMemory,
            sys::MASQ_E_UNSUPPORTED => ErrorKind::Unsupported,
            sys::MASQ_E_DENIED => ErrorKind::Denied,
            sys::MASQ_E_BAD_SIGNATURE => ErrorKind::BadSignature,
            sys::MASQ_E_FUNDS => ErrorKind::Funds,
            sys::MASQ_E_UNAVAILABLE => ErrorKind::Unavailable,
            sys::MASQ_E_TIMEOUT => ErrorKind::Timeout,
            sys::MASQ_E_INTERNAL => ErrorKind::Internal,
            other => ErrorKind::Other(other),
        }
    }

    /// The `MASQ_E_*` status code of this kind.
    pub fn code(self) -> i32 {
        match self {
            ErrorKind::Invalid => sys::MASQ_E_INVALID,
            ErrorKind::NotFound => sys::MASQ_E_NOT_FOUND,
            ErrorKind::TooLarge => sys::MASQ_E_TOO_LARGE,
            ErrorKind::Config => sys::MASQ_E_CONFIG,
            ErrorKind::Plugin => sys::MASQ_E_PLUGIN,
            ErrorKind::Abi => sys::MASQ_E_ABI,
            ErrorKind::Io => sys::MASQ_E_IO,
            ErrorKind::Corrupt => sys::MASQ_E_CORRUPT,
            ErrorKind::Closed => sys::MASQ_E_CLOSED,
            ErrorKind::Busy => sys::MASQ_E_BUSY,
            ErrorKind::NoMemory => sys::MASQ_E_NOMEM,
            ErrorKind::Unsupported => sys::MASQ_E_UNSUPPORTED,
            ErrorKind::Denied => sys::MASQ_E_DENIED,
            ErrorKind::BadSignature => sys::MASQ_E_BAD_SIGNATURE,
            ErrorKind::Funds => sys::MASQ_E_FUNDS,
            ErrorKind::Unavailable => sys::MASQ_E_UNAVAILABLE,
            ErrorKind::Timeout => sys::MASQ_E_TIMEOUT,
            ErrorKind::Internal => sys::MASQ_E_INTERNAL,
            ErrorKind::Other(code) => code,
        }
    }
}

/// A failed call: the status code and the library's message for it (or,
/// for arguments this binding refuses before calling the library, such as a
/// string holding a NUL byte, a message of its own with the code the library
/// would have used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    code: i32,
    message: String,
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with a status code and message of your own.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { code: kind.code(), message: message.into() }
    }

    /// The error for a failed call that just returned `code` on this thread:
    /// its message is `masq_last_error()`, read before anything else calls
    /// into the library.
    pub(crate) fn last(code: c_int) -> Error {
        // SAFETY: masq_last_error never returns NULL; the text stays valid
        // until this thread's next call into the library, and we copy it now.
        let message = unsafe { text(sys::masq_last_error()) };
        Error { code, message }
    }

    /// An error from a status code and message the library reported elsewhere
    /// (e.g. a plugin scan report).
    pub(crate) fn from_parts(code: c_int, message: String) -> Error {
        Error { code, message }
    }

    /// `MASQ_E_INVALID` with our own message.
    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, message)
    }

    /// The `MASQ_E_*` status code.
    pub fn code(&self) -> i32 {
        self.code
    }

    /// The kind of error ([`ErrorKind::from_code`] of [`Error::code`]).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::from_code(self.code)
    }

    /// The readable message (the library's `masq_last_error()` text).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The symbolic name of the code, e.g. `"MASQ_E_NOT_FOUND"` (from
    /// `masq_status_name`).
    pub fn status_name(&self) -> &'static str {
        status_name(self.code)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(self.status_name())
        } else {
            write!(f, "{} ({})", self.message, self.status_name())
        }
    }
}

impl std::error::Error for Error {}

/// The symbolic name of a status code, e.g. `"MASQ_E_NOT_FOUND"`;
/// `"MASQ_E_UNKNOWN"` for a code the library does not know.
pub fn status_name(code: i32) -> &'static str {
    // SAFETY: static storage, never NULL (masq.h); thread-safe.
    let name = unsafe { CStr::from_ptr(sys::masq_status_name(code)) };
    name.to_str().unwrap_or("MASQ_E_UNKNOWN")
}

/// The error of this thread's last call into the library, or `None` if it
/// succeeded (`masq_last_error_code` and `masq_last_error`). Every function
/// of this crate already returns its own error; this is for diagnostics.
pub fn last_error() -> Option<Error> {
    // SAFETY: both are thread-safe and take no arguments.
    let code = unsafe { sys::masq_last_error_code() };
    if code == sys::MASQ_OK {
        None
    } else {
        Some(Error::last(code))
    }
}

/// `Ok(())` for `MASQ_OK`, else the error with this thread's last message.
pub(crate) fn check(code: c_int) -> Result<()> {
    if code == sys::MASQ_OK {
        Ok(())
    } else {
        Err(Error::last(code))
    }
}

/// Copy a C string the library owns (NULL gives "").
pub(crate) unsafe fn text(ptr: *const std::os::raw::c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    String::from_utf8_lossy(CStr::from_ptr(ptr).to_bytes()).into_owned()
}
