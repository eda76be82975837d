//! Backup, restore and export (`masq_backup*`, `masq_restore*`, `masq_export`).

use std::path::Path;

use crate::bytes::{c_path, c_string};
use crate::device::parse_library_json;
use crate::error::{check, Result};
use crate::json::Value;
use crate::store::{text_out, Store};
use crate::sys;

/// How a backup's key is wrapped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackupKey {
    /// Under a passphrase ([`Store::backup`]).
    Passphrase,
    /// Under a recovery key ([`Store::backup_with_recovery_key`]).
    RecoveryKey,
    /// A kind this version of the binding does not know.
    Other(String),
}

/// What a backup file says about itself before any key is given ([`backup_info`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BackupInfo {
    /// The file format version.
    pub format: u64,
    /// What opens it.
    pub key: BackupKey,
    /// Size of its authenticated chunks.
    pub chunk_bytes: u64,
    /// The whole JSON object.
    pub json: Value,
}

/// A verified backup's manifest ([`backup_verify`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BackupManifest {
    /// The file format version.
    pub format: u64,
    /// When it was written (Unix ms).
    pub created_at: u64,
    /// The library version that wrote it.
    pub masq_version: String,
    /// The backed-up store's replica id (the library writes it as 16 hex
    /// digits; a number is read too).
    pub replica: u64,
    /// The backed-up device's id, when known.
    pub device_id: Option<String>,
    /// Its name, when known.
    pub device_name: Option<String>,
    /// The store had a passphrase.
    pub protected: bool,
    /// The storage plugin it was taken from.
    pub storage: String,
    /// Records it holds.
    pub entries: u64,
    /// Files it holds.
    pub files: u64,
    /// The store's config as it was (JSON text).
    pub config: String,
    /// The whole JSON object.
    pub json: Value,
}

fn text_member(v: &Value, name: &str) -> Option<String> {
    v.get(name).and_then(Value::as_str).map(str::to_string)
}

fn number(v: &Value, name: &str) -> u64 {
    v.get(name).and_then(Value::as_u64).unwrap_or(0)
}

impl Store {
    /// Write a backup of this store to `path` (which must not exist),
    /// encrypted under `passphrase` (non-empty). Consistent even while
    /// other processes write; a locked store can be backed up.
    pub fn backup(&self, path: impl AsRef<Path>, passphrase: impl AsRef<[u8]>) -> Result<()> {
        let path = c_path(path.as_ref(), "backup path")?;
        let p = passphrase.as_ref();
        // SAFETY: valid string and buffer, not retained.
        check(unsafe { sys::masq_backup(self.raw(), path.as_ptr(), p.as_ptr(), p.len()) })
    }

    /// Write a backup encrypted under a new random recovery key, returned
    /// once as text: it is stored nowhere, and without it the backup cannot
    /// be opened.
    pub fn backup_with_recovery_key(&self, path: impl AsRef<Path>) -> Result<String> {
        let path = c_path(path.as_ref(), "backup path")?;
        text_out(|out| unsafe { sys::masq_backup_with_recovery_key(self.raw(), path.as_ptr(), out) })
    }

    /// Export every live key of every namespace to `path` (which must not
    /// exist) as JSON lines, in clear (docs/EXPORT.md): to take the data
    /// elsewhere, not a backup. `ErrorKind::Denied` while locked.
    pub fn export(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = c_path(path.as_ref(), "export path")?;
        // SAFETY: valid string.
        check(unsafe { sys::masq_export(self.raw(), path.as_ptr()) })
    }
}

/// What a backup file says about itself, before any key is given.
/// `ErrorKind::NotFound` (no file), `Corrupt` (not a backup), `Unsupported`
/// (another format version).
pub fn backup_info(path: impl AsRef<Path>) -> Result<BackupInfo> {
    let path = c_path(path.as_ref(), "backup path")?;
    let json = text_out(|out| unsafe { sys::masq_backup_info(path.as_ptr(), out) })?;
    let v = parse_library_json(&json, "masq_backup_info")?;
    Ok(BackupInfo {
        format: number(&v, "format"),
        key: match text_member(&v, "key").as_deref() {
            Some("passphrase") => BackupKey::Passphrase,
            Some("recovery_key") => BackupKey::RecoveryKey,
            other => BackupKey::Other(other.unwrap_or_default().to_string()),
        },
        chunk_bytes: number(&v, "chunk_bytes"),
        json: v,
    })
}

/// Decrypt and check a whole backup without writing anything. `secret` is
/// the passphrase, or the recovery key as text (spaces, dashes and case do
/// not matter). `ErrorKind::Denied` for a wrong secret, `BadSignature` for a
/// tampered file, `Corrupt` for a truncated one.
pub fn backup_verify(path: impl AsRef<Path>, secret: impl AsRef<[u8]>) -> Result<BackupManifest> {
    let path = c_path(path.as_ref(), "backup path")?;
    let s = secret.as_ref();
    let json = text_out(|out| unsafe { sys::masq_backup_verify(path.as_ptr(), s.as_ptr(), s.len(), out) })?;
    let v = parse_library_json(&json, "masq_backup_verify")?;
    Ok(BackupManifest {
        format: number(&v, "format"),
        created_at: number(&v, "created_at"),
        masq_version: text_member(&v, "masq_version").unwrap_or_default(),
        replica: match v.get("replica") {
            Some(Value::String(hex)) => u64::from_str_radix(hex, 16).unwrap_or(0),
            Some(n) => n.as_u64().unwrap_or(0),
            None => 0,
        },
        device_id: text_member(&v, "device_id"),
        device_name: text_member(&v, "device_name"),
        protected: v.get("protected").and_then(Value::as_bool).unwrap_or(false),
        storage: text_member(&v, "storage").unwrap_or_default(),
        entries: number(&v, "entries"),
        files: number(&v, "files"),
        config: text_member(&v, "config").unwrap_or_default(),
        json: v,
    })
}

/// Restore the backup at `backup_path` into the store the config file at
/// `config_path` describes; its data directory must not exist or be empty
/// (nothing is ever overwritten; a failed restore leaves nothing). Then
/// open it with [`Store::open`] (and unlock it if it had a passphrase).
pub fn restore(config_path: impl AsRef<Path>, backup_path: impl AsRef<Path>, secret: impl AsRef<[u8]>) -> Result<()> {
    let config = c_path(config_path.as_ref(), "config path")?;
    let backup = c_path(backup_path.as_ref(), "backup path")?;
    let s = secret.as_ref();
    // SAFETY: valid strings and buffer.
    check(unsafe { sys::masq_restore(config.as_ptr(), backup.as_ptr(), s.as_ptr(), s.len()) })
}

/// [`restore`] with the config as JSON text (relative paths against
/// `base_dir`, or the working directory), as [`Store::open_config`].
pub fn restore_config(
    config_json: &str,
    base_dir: Option<&Path>,
    backup_path: impl AsRef<Path>,
    secret: impl AsRef<[u8]>,
) -> Result<()> {
    let json = c_string(config_json, "config")?;
    let base = match base_dir {
        Some(d) => Some(c_path(d, "base_dir")?),
        None => None,
    };
    let backup = c_path(backup_path.as_ref(), "backup path")?;
    let s = secret.as_ref();
    // SAFETY: valid strings (or NULL base_dir) and buffer.
    check(unsafe {
        sys::masq_restore_config(
            json.as_ptr(),
            base.as_ref().map_or(std::ptr::null(), |b| b.as_ptr()),
            backup.as_ptr(),
            s.as_ptr(),
            s.len(),
        )
    })
}
