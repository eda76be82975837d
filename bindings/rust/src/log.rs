//! Routing the library's log lines to a Rust closure (`masq_set_log_callback`).

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, RwLock};

use crate::error::{check, Result};
use crate::sys;

/// Log levels (`MASQ_LOG_*`); a handler receives lines at or below its maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// `MASQ_LOG_ERROR`
    Error,
    /// `MASQ_LOG_WARN`
    Warn,
    /// `MASQ_LOG_INFO`
    Info,
    /// `MASQ_LOG_DEBUG`
    Debug,
}

impl LogLevel {
    /// The `MASQ_LOG_*` value.
    pub fn code(self) -> i32 {
        match self {
            LogLevel::Error => sys::MASQ_LOG_ERROR,
            LogLevel::Warn => sys::MASQ_LOG_WARN,
            LogLevel::Info => sys::MASQ_LOG_INFO,
            LogLevel::Debug => sys::MASQ_LOG_DEBUG,
        }
    }

    /// The level of a `MASQ_LOG_*` value (`None` out of range).
    pub fn from_code(code: i32) -> Option<LogLevel> {
        match code {
            sys::MASQ_LOG_ERROR => Some(LogLevel::Error),
            sys::MASQ_LOG_WARN => Some(LogLevel::Warn),
            sys::MASQ_LOG_INFO => Some(LogLevel::Info),
            sys::MASQ_LOG_DEBUG => Some(LogLevel::Debug),
            _ => None,
        }
    }

    /// The name the config's `log_level` and `MASQ_LOG` use: `error`, `warn`, `info`, `debug`.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

type Handler = Arc<dyn Fn(LogLevel, &str, &str) + Send + Sync>;

/// The installed handler. The library always gets the same function
/// ([`on_log`]) and a NULL context; replacing the handler only swaps this
/// slot, so a line "already being delivered" to the previous callback
/// (masq.h) still finds a live closure: it holds its own `Arc` while it runs.
static HANDLER: RwLock<Option<Handler>> = RwLock::new(None);
/// Serializes installs, so the slot and the library's level agree.
static INSTALL: Mutex<()> = Mutex::new(());

unsafe extern "C" fn on_log(_ctx: *mut c_void, level: c_int, component: *const c_char, message: *const c_char) {
    let handler = match HANDLER.read() {
        Ok(slot) => slot.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let handler = match handler {
        Some(h) => h,
        None => return,
    };
    let text = |p: *const c_char| {
        if p.is_null() {
            Default::default()
        } else {
            String::from_utf8_lossy(CStr::from_ptr(p).to_bytes())
        }
    };
    let component = text(component);
    let message = text(message);
    let level = LogLevel::from_code(level).unwrap_or(LogLevel::Error);
    // A panic must not unwind into the library; the panic hook has reported it.
    let _ = catch_unwind(AssertUnwindSafe(|| handler(level, &component, &message)));
}

/// Send the library's log lines (and its plugins') with a level up to
/// `max_level` to `handler(level, component, message)` instead of standard
/// error. The handler is called from any thread, possibly several at once,
/// and must not call back into the library (masq.h); a panic in it is caught
/// and the line dropped. Secrets and stored values are never logged.
pub fn set_log_handler<F>(max_level: LogLevel, handler: F) -> Result<()>
where
    F: Fn(LogLevel, &str, &str) + Send + Sync + 'static,
{
    let _install = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    let previous = replace(Some(Arc::new(handler)));
    // SAFETY: on_log matches masq_log_fn and ignores its (NULL) context.
    let status = unsafe { sys::masq_set_log_callback(max_level.code(), Some(on_log), std::ptr::null_mut()) };
    if let Err(e) = check(status) {
        replace(previous);
        return Err(e);
    }
    Ok(())
}

/// Restore the default: lines go to standard error, filtered by the
/// `MASQ_LOG` environment variable (masq.h).
pub fn reset_log_handler() -> Result<()> {
    let _install = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: a NULL function restores the default.
    check(unsafe { sys::masq_set_log_callback(sys::MASQ_LOG_WARN, None, std::ptr::null_mut()) })?;
    replace(None);
    Ok(())
}

fn replace(handler: Option<Handler>) -> Option<Handler> {
    let mut slot = HANDLER.write().unwrap_or_else(|p| p.into_inner());
    std::mem::replace(&mut *slot, handler)
}
