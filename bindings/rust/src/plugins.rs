//! What the plugin search path holds (`masq_plugins_scan`).

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::ptr;

use crate::bytes::c_path;
use crate::error::{check, Error, Result};
use crate::sys;

/// A plugin's kind (`MASQ_PLUGIN_KIND_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PluginKind {
    /// A storage engine.
    Storage,
    /// A transport between devices.
    Transport,
    /// A wallet.
    Wallet,
    /// A kind this version of the binding does not know.
    Other(i32),
}

/// One plugin file found on the search path, validated exactly as opening a
/// store would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Absolute path of the shared object.
    pub path: PathBuf,
    /// `None` if the kernel would load it, else why not (status and message).
    pub error: Option<Error>,
    /// Its kind, `None` if the file could not be read as a plugin.
    pub kind: Option<PluginKind>,
    /// Its name, `None` if the file could not be read as a plugin.
    pub name: Option<String>,
    /// Its version.
    pub version: Option<String>,
    /// Its description.
    pub description: Option<String>,
    /// The plugin ABI it was built for (0 unknown).
    pub abi_version: u32,
}

impl PluginInfo {
    /// Whether the kernel would load it.
    pub fn is_loadable(&self) -> bool {
        self.error.is_none()
    }
}

unsafe fn optional_text(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        Some(String::from_utf8_lossy(CStr::from_ptr(p).to_bytes()).into_owned())
    }
}

unsafe extern "C" fn on_plugin(ctx: *mut c_void, info: *const sys::masq_plugin_info) -> c_int {
    if info.is_null() {
        return 0;
    }
    // Nothing may unwind into the library: a panic stops the scan.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| record(ctx, info))) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

unsafe fn record(ctx: *mut c_void, info: *const sys::masq_plugin_info) {
    // SAFETY: ctx is the Vec of scan_plugins; info is valid during the call.
    let found = &mut *(ctx as *mut Vec<PluginInfo>);
    let i = &*info;
    use std::os::unix::ffi::OsStrExt;
    let path = if i.path.is_null() {
        PathBuf::new()
    } else {
        PathBuf::from(std::ffi::OsStr::from_bytes(CStr::from_ptr(i.path).to_bytes()))
    };
    found.push(PluginInfo {
        path,
        error: if i.status == sys::MASQ_OK {
            None
        } else {
            Some(Error::from_parts(i.status, optional_text(i.message).unwrap_or_default()))
        },
        kind: match i.kind {
            0 => None,
            sys::MASQ_PLUGIN_KIND_STORAGE => Some(PluginKind::Storage),
            sys::MASQ_PLUGIN_KIND_TRANSPORT => Some(PluginKind::Transport),
            sys::MASQ_PLUGIN_KIND_WALLET => Some(PluginKind::Wallet),
            other => Some(PluginKind::Other(other)),
        },
        name: optional_text(i.name),
        version: optional_text(i.version),
        description: optional_text(i.description),
        abi_version: i.abi_version,
    });
}

/// Every plugin file (`libmasq_<kind>_<name>.so`) on the search path: the
/// config's `plugin_path` (`config_path` may be `None`), then
/// `MASQ_PLUGIN_PATH`, then the install location. A broken file is reported
/// with its reason, never stops the scan.
pub fn scan_plugins(config_path: Option<&Path>) -> Result<Vec<PluginInfo>> {
    let config = match config_path {
        Some(p) => Some(c_path(p, "config path")?),
        None => None,
    };
    let mut found: Vec<PluginInfo> = Vec::new();
    // SAFETY: on_plugin matches ctx's type; ctx outlives the call.
    check(unsafe {
        sys::masq_plugins_scan(
            config.as_ref().map_or(ptr::null(), |c| c.as_ptr()),
            Some(on_plugin),
            &mut found as *mut Vec<PluginInfo> as *mut c_void,
        )
    })?;
    Ok(found)
}
