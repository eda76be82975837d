//! Sharing a namespace with another person through Connectoid mailbox
//! services (`masq_share_*`; docs/CONNECTOID.md).

use std::os::raw::c_char;
use std::ptr;
use std::time::Duration;

use crate::bytes::{c_string, take_text};
use crate::device::parse_library_json;
use crate::error::{check, Error, ErrorKind, Result};
use crate::json::Value;
use crate::store::{text_out, Store};
use crate::sys;

/// Which side of a share this store is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShareRole {
    /// `"owner"`: shared by this store.
    Owner,
    /// `"guest"`: accepted here.
    Guest,
    /// A role this version of the binding does not know.
    Other(String),
}

/// Where a share stands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShareStatus {
    /// `"offered"`: nobody has accepted the link yet.
    Offered,
    /// `"claimed"`: accepted here, waiting for the owner.
    Claimed,
    /// `"active"`.
    Active,
    /// `"intercepted"`: someone else used the link first.
    Intercepted,
    /// A status this version of the binding does not know.
    Other(String),
}

/// One share, as the library describes it (masq.h, "Sharing with other people").
#[derive(Debug, Clone, PartialEq)]
pub struct ShareInfo {
    /// The share's id, the same on both sides.
    pub id: String,
    /// The local namespace (`None` until the owner answers a link accepted here).
    pub namespace: Option<String>,
    /// Owner or guest.
    pub role: ShareRole,
    /// The other person may read but not write.
    pub read_only: bool,
    /// Offered, claimed, active or intercepted.
    pub status: ShareStatus,
    /// This store's nickname for the other person (never sent).
    pub nickname: Option<String>,
    /// Fingerprint over both sides' keys (30 digits), once the other side answered.
    pub fingerprint: Option<String>,
    /// The same fingerprint as emoji.
    pub fingerprint_emoji: Option<String>,
    /// Unix ms.
    pub created_at: u64,
    /// Unix ms; 0: never.
    pub last_heard_at: u64,
    /// Messages refused: forged, replayed or beyond the share's rights.
    pub refused: u64,
    /// Warnings for the user (e.g. a second claimant of the link).
    pub warnings: Vec<String>,
    /// The whole JSON object.
    pub json: Value,
}

impl ShareInfo {
    fn from_json(v: Value) -> Result<ShareInfo> {
        let text = |name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
        let number = |name: &str| v.get(name).and_then(Value::as_u64).unwrap_or(0);
        let id = text("id").ok_or_else(|| Error::new(ErrorKind::Internal, format!("a share without an id: {}", v)))?;
        let role = match text("role").as_deref() {
            Some("owner") => ShareRole::Owner,
            Some("guest") => ShareRole::Guest,
            other => ShareRole::Other(other.unwrap_or_default().to_string()),
        };
        let status = match text("status").as_deref() {
            Some("offered") => ShareStatus::Offered,
            Some("claimed") => ShareStatus::Claimed,
            Some("active") => ShareStatus::Active,
            Some("intercepted") => ShareStatus::Intercepted,
            other => ShareStatus::Other(other.unwrap_or_default().to_string()),
        };
        let warnings = v
            .get("warnings")
            .and_then(Value::as_array)
            .unwrap_or(&[])
            .iter()
            .filter_map(|w| w.as_str().map(str::to_string))
            .collect();
        Ok(ShareInfo {
            id,
            namespace: text("namespace"),
            role,
            read_only: text("access").as_deref() == Some("read-only"),
            status,
            nickname: text("nickname"),
            fingerprint: text("fingerprint"),
            fingerprint_emoji: text("fingerprint_emoji"),
            created_at: number("created_at"),
            last_heard_at: number("last_heard_at"),
            refused: number("refused"),
            warnings,
            json: v,
        })
    }

    fn parse(text: &str, what: &str) -> Result<ShareInfo> {
        ShareInfo::from_json(parse_library_json(text, what)?)
    }
}

/// Options of [`Store::share_create`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShareOptions<'a> {
    /// The other person may read, not write (`MASQ_SHARE_READ_ONLY`).
    pub read_only: bool,
    /// The page the link opens (default `masq://share/`).
    pub base_url: Option<&'a str>,
}

/// Where [`Store::share_accept`] puts the share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptInto<'a> {
    /// `"shared:" + the owner's name for it + ":" + the share's id`, once the owner answers.
    Default,
    /// This namespace, which must not exist yet.
    New(&'a str),
    /// This existing namespace, merged with the other person's (`MASQ_SHARE_MERGE`).
    Merge(&'a str),
}

impl Store {
    /// Share namespace `ns` with another person, whom this store calls
    /// `nickname`: the single-use link to send them, and the new share
    /// (status offered). Everything in `ns` is shared, including later
    /// writes. `ErrorKind::Config` without a sharing service in the config.
    pub fn share_create(&self, ns: &str, nickname: &str, options: ShareOptions<'_>) -> Result<(String, ShareInfo)> {
        let ns = c_string(ns, "namespace")?;
        let nickname = c_string(nickname, "nickname")?;
        let base = match options.base_url {
            Some(u) => Some(c_string(u, "base url")?),
            None => None,
        };
        let flags = if options.read_only { sys::MASQ_SHARE_READ_ONLY } else { 0 };
        let mut link: *mut c_char = ptr::null_mut();
        let mut json: *mut c_char = ptr::null_mut();
        // SAFETY: valid strings and out pointers; both outputs are NULL on failure.
        check(unsafe {
            sys::masq_share_create(
                self.raw(),
                ns.as_ptr(),
                nickname.as_ptr(),
                flags,
                base.as_ref().map_or(ptr::null(), |b| b.as_ptr()),
                &mut link,
                &mut json,
            )
        })?;
        // SAFETY: on success both texts are ours to release.
        let (link, json) = unsafe { (take_text(link), take_text(json)) };
        Ok((link, ShareInfo::parse(&json, "masq_share_create")?))
    }

    /// Accept another person's share link, calling them `nickname`; the
    /// claim goes out while sharing runs ([`Store::share_sync_start`] or
    /// [`Store::share_sync_once`]). Returns the share (status claimed).
    pub fn share_accept(&self, link: &str, nickname: &str, into: AcceptInto<'_>) -> Result<ShareInfo> {
        let link = c_string(link, "link")?;
        let nickname = c_string(nickname, "nickname")?;
        let (as_ns, flags) = match into {
            AcceptInto::Default => (None, 0),
            AcceptInto::New(ns) => (Some(c_string(ns, "namespace")?), 0),
            AcceptInto::Merge(ns) => (Some(c_string(ns, "namespace")?), sys::MASQ_SHARE_MERGE),
        };
        let json = text_out(|out| unsafe {
            sys::masq_share_accept(
                self.raw(),
                link.as_ptr(),
                nickname.as_ptr(),
                as_ns.as_ref().map_or(ptr::null(), |n| n.as_ptr()),
                flags,
                out,
            )
        })?;
        ShareInfo::parse(&json, "masq_share_accept")
    }

    /// Every share of this store, oldest first.
    pub fn shares(&self) -> Result<Vec<ShareInfo>> {
        let json = text_out(|out| unsafe { sys::masq_shares(self.raw(), out) })?;
        match parse_library_json(&json, "masq_shares")? {
            Value::Array(items) => items.into_iter().map(ShareInfo::from_json).collect(),
            other => {
                Err(Error::new(ErrorKind::Internal, format!("masq_shares returned {} instead of an array", other)))
            }
        }
    }

    /// One share. `ErrorKind::NotFound` for an unknown id.
    pub fn share_info(&self, share_id: &str) -> Result<ShareInfo> {
        let id = c_string(share_id, "share id")?;
        let json = text_out(|out| unsafe { sys::masq_share_info(self.raw(), id.as_ptr(), out) })?;
        ShareInfo::parse(&json, "masq_share_info")
    }

    /// Change this store's nickname for the other person of a share.
    pub fn set_share_nickname(&self, share_id: &str, nickname: &str) -> Result<()> {
        let id = c_string(share_id, "share id")?;
        let nickname = c_string(nickname, "nickname")?;
        // SAFETY: valid strings.
        check(unsafe { sys::masq_share_set_nickname(self.raw(), id.as_ptr(), nickname.as_ptr()) })
    }

    /// End a share: the other side is told; the data stays on both sides as
    /// an ordinary namespace. `ErrorKind::NotFound` for an unknown id.
    pub fn unshare(&self, share_id: &str) -> Result<()> {
        let id = c_string(share_id, "share id")?;
        // SAFETY: valid string.
        check(unsafe { sys::masq_unshare(self.raw(), id.as_ptr()) })
    }

    /// Run sharing in the background until [`Store::share_sync_stop`] or
    /// close (independently of [`Store::sync_start`]).
    pub fn share_sync_start(&self) -> Result<()> {
        // SAFETY: open handle.
        check(unsafe { sys::masq_share_sync_start(self.raw()) })
    }

    /// Stop background sharing (Ok if it was not running).
    pub fn share_sync_stop(&self) -> Result<()> {
        // SAFETY: open handle.
        check(unsafe { sys::masq_share_sync_stop(self.raw()) })
    }

    /// Run sharing until nothing this store sent waits for an answer;
    /// `ErrorKind::Timeout` after `timeout`.
    pub fn share_sync_once(&self, timeout: Duration) -> Result<()> {
        // SAFETY: open handle.
        check(unsafe { sys::masq_share_sync_once(self.raw(), timeout.as_secs_f64()) })
    }
}
