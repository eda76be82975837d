//! Masq for Rust: keep an application's data on the user's own devices, in
//! sync, end-to-end encrypted.
//!
//! A safe binding of `libmasq.so` over its C API, `include/masq.h`, with no
//! dependencies. [`sys`] declares the whole header by hand (checked against
//! it by `tests/header.rs`); the rest wraps it:
//!
//! - [`Store`] (closed on drop; `Send + Sync` since the header lets any
//!   number of threads use a store) and [`Namespace`]: put, get, delete,
//!   listing by prefix, one-snapshot [`Store::get_all`], one-transaction
//!   [`Store::set_all`] / [`Store::replace_all`], clear, namespaces,
//!   counters, [`Store::watch`] with a closure, sync (start, stop, once,
//!   status, progress closure), encryption at rest, devices, session
//!   renewal, pairing by frames ([`Pairing`]) or through a relay
//!   ([`PairTask`], with a completion closure), sharing a namespace with
//!   another person ([`Store::share_create`], [`ShareInfo`]), blobs
//!   streamed from and to files or `Read`/`Write` ([`Store::blob_put_stream`],
//!   [`BlobInfo`]), backups ([`Store::backup`], [`restore`]) and export;
//! - [`Session`]: Noise handshake + Double Ratchet; [`crypto`]: primitives;
//! - [`set_log_handler`], [`scan_plugins`], [`qr_pgm`], [`version`].
//!
//! Memory the library returns is owned by [`Bytes`] / [`Entries`] (released
//! with `masq_free` on drop, no copy made). Every failure is an [`Error`]
//! with the status code and the library's message for it. Closures given to
//! the library are boxed, freed once the library can no longer call them,
//! and a panic in one never unwinds into C.
//!
//! ```
//! # fn main() -> masq::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("masq-doc-{}", std::process::id()));
//! let store = masq::Store::open_with(&masq::Config::new().data_dir(&dir))?;
//! let notes = store.namespace("notes")?;
//! notes.put("hello", "world")?;
//! assert_eq!(notes.get("hello")?.unwrap(), b"world");
//! notes.set_all(vec![("a", Some("1")), ("hello", None)])?; // one transaction
//! assert_eq!(notes.keys("")?, vec![b"a".to_vec()]);
//! store.close()?;
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod sys;

mod backup;
mod blob;
mod bytes;
mod config;
pub mod crypto;
mod device;
mod error;
pub mod json;
mod log;
mod pairing;
mod plugins;
mod session;
mod share;
mod store;

pub use crate::backup::{backup_info, backup_verify, restore, restore_config, BackupInfo, BackupKey, BackupManifest};
pub use crate::blob::{blob_parse, BlobGcReport, BlobInfo, BlobRef};
pub use crate::bytes::{Bytes, Entries, EntriesIter};
pub use crate::config::{Config, Plugin};
pub use crate::device::{DeviceInfo, PeerSyncStatus, Protection, SyncStatus, TransportStatus};
pub use crate::error::{last_error, status_name, Error, ErrorKind, Result};
pub use crate::log::{reset_log_handler, set_log_handler, LogLevel};
pub use crate::pairing::{PairTask, Pairing, Received, Refusal};
pub use crate::plugins::{scan_plugins, PluginInfo, PluginKind};
pub use crate::session::{Role, Session, SessionOptions, SessionState, SessionStatus};
pub use crate::share::{AcceptInto, ShareInfo, ShareOptions, ShareRole, ShareStatus};
pub use crate::store::{Change, ChangeKind, ChangeRecord, Namespace, Origin, Store, Watch, WatchId};

use std::ffi::CStr;

// The README's examples are compiled (and the first one run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The version of `masq.h` this binding was written against, e.g. "0.1.0".
pub const HEADER_VERSION: &str = sys::MASQ_VERSION_STRING;

/// The loaded library's version string, e.g. "0.1.0" (`masq_version`).
pub fn version() -> &'static str {
    // SAFETY: static storage, never NULL.
    unsafe { CStr::from_ptr(sys::masq_version()) }.to_str().unwrap_or("")
}

/// The loaded library's version as MAJOR * 10000 + MINOR * 100 + PATCH
/// (`masq_version_number`); compare with [`sys::MASQ_VERSION_NUMBER`] to
/// check the library matches the header this binding copies.
pub fn version_number() -> i32 {
    // SAFETY: no arguments; thread-safe.
    unsafe { sys::masq_version_number() }
}

/// A QR code of `text` as a binary PGM image, `scale` pixels per module,
/// with the quiet zone scanners need (`masq_qr_pgm`).
pub fn qr_pgm(text: &str, scale: u32) -> Result<Bytes> {
    let text = crate::bytes::c_string(text, "text")?;
    // SAFETY: valid C string and out pointers.
    crate::store::bytes_out(|out, len| unsafe { sys::masq_qr_pgm(text.as_ptr(), scale, out, len) })
}
