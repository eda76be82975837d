//! [`Store`]: an open store, its namespaces, watches, counters and sync.

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fmt;
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::bytes::{c_path, c_string, slice, take_text, Bytes, Entries};
use crate::config::Config;
use crate::device::{DeviceInfo, Protection, SyncStatus};
use crate::error::{check, Error, Result};
use crate::pairing::{PairTask, Pairing};
use crate::sys;

// ---- callbacks on library threads ----------------------------------------------------------

thread_local! {
    /// How deep this thread is inside watch/progress callbacks run by the
    /// library. Inside one, a store must not be closed (masq_close would
    /// wait for the very callback it runs in) and a watch's closure must not
    /// be freed (it may be the one running).
    static IN_CALLBACK: Cell<u32> = const { Cell::new(0) };
}

pub(crate) fn in_library_callback() -> bool {
    IN_CALLBACK.with(|depth| depth.get() > 0)
}

pub(crate) struct CallbackScope;

impl CallbackScope {
    pub(crate) fn enter() -> CallbackScope {
        IN_CALLBACK.with(|depth| depth.set(depth.get() + 1));
        CallbackScope
    }
}

impl Drop for CallbackScope {
    fn drop(&mut self) {
        IN_CALLBACK.with(|depth| depth.set(depth.get() - 1));
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

type WatchFn = Box<dyn FnMut(&Change<'_>) + Send>;
type ProgressFn = Arc<Mutex<dyn FnMut(&str, u64, u64) + Send>>;

/// What the library's `ctx` points to for one watch. Boxed, so its address
/// is stable until it is freed: after masq_unwatch (outside callbacks) or
/// masq_close returned, when the library no longer calls it.
struct WatchSlot {
    callback: Mutex<WatchFn>,
}

/// The store's sync (or blob) progress callback; the library always gets
/// this slot's address and [`on_progress`], so replacing the closure is only
/// a swap here.
struct ProgressSlot {
    callback: Mutex<Option<ProgressFn>>,
}

/// State the library's callbacks reach; freed after masq_close succeeds.
struct Shared {
    watches: Mutex<HashMap<u64, Box<WatchSlot>>>,
    /// Watches stopped from inside a callback: kept until the store closes.
    /// (Boxed: the library holds each slot's address.)
    #[allow(clippy::vec_box)]
    retired: Mutex<Vec<Box<WatchSlot>>>,
    progress: ProgressSlot,
    blob_progress: ProgressSlot,
}

unsafe extern "C" fn on_change(ctx: *mut c_void, change: *const sys::masq_change) {
    if ctx.is_null() || change.is_null() {
        return;
    }
    let _scope = CallbackScope::enter();
    // SAFETY: ctx is the WatchSlot registered with this watch, alive until
    // the library stops calling it; change is valid during this call.
    let slot = &*(ctx as *const WatchSlot);
    let change = Change { raw: &*change };
    // A panic must not unwind into the library; the panic hook reported it
    // and later changes are still delivered.
    let _ = catch_unwind(AssertUnwindSafe(|| (*lock(&slot.callback))(&change)));
}

unsafe extern "C" fn on_progress(ctx: *mut c_void, device_id: *const c_char, received: u64, remaining: u64) {
    if ctx.is_null() {
        return;
    }
    let _scope = CallbackScope::enter();
    // SAFETY: ctx is the store's ProgressSlot, alive until masq_close returned.
    let slot = &*(ctx as *const ProgressSlot);
    let callback = match lock(&slot.callback).clone() {
        Some(callback) => callback,
        None => return,
    };
    let device = if device_id.is_null() {
        Default::default()
    } else {
        String::from_utf8_lossy(CStr::from_ptr(device_id).to_bytes())
    };
    let _ = catch_unwind(AssertUnwindSafe(|| (*lock(&callback))(&device, received, remaining)));
}

// ---- synchronous callbacks (masq_list, masq_list_namespaces) ------------------------------------

/// The context of a synchronous listing: the closure, and a panic caught in
/// it, resumed on the caller's thread once the library returned.
struct Visit<F> {
    f: F,
    panic: Option<Box<dyn Any + Send>>,
}

impl<F> Visit<F> {
    /// Run `body` with the closure; 0 continues, 1 stops (also after a panic).
    fn call(&mut self, body: impl FnOnce(&mut F) -> bool) -> c_int {
        if self.panic.is_some() {
            return 1;
        }
        let f = &mut self.f;
        match catch_unwind(AssertUnwindSafe(|| body(f))) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(payload) => {
                self.panic = Some(payload);
                1
            }
        }
    }

    fn finish(self, status: c_int) -> Result<()> {
        if let Some(payload) = self.panic {
            resume_unwind(payload);
        }
        check(status)
    }
}

unsafe extern "C" fn on_entry<F: FnMut(&[u8], Option<&[u8]>) -> bool>(
    ctx: *mut c_void,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> c_int {
    // SAFETY: ctx is the Visit<F> on the stack of Store::visit; pointers
    // are valid during this call.
    let visit = &mut *(ctx as *mut Visit<F>);
    let key = slice(key, key_len);
    let value = if value.is_null() { None } else { Some(slice(value, value_len)) };
    visit.call(|f| f(key, value))
}

unsafe extern "C" fn on_namespace<F: FnMut(&str) -> bool>(ctx: *mut c_void, ns: *const c_char) -> c_int {
    let visit = &mut *(ctx as *mut Visit<F>);
    let name = if ns.is_null() { Default::default() } else { String::from_utf8_lossy(CStr::from_ptr(ns).to_bytes()) };
    visit.call(|f| f(&name))
}

// ---- Store ---------------------------------------------------------------------------------------

struct Inner {
    handle: *mut sys::masq_store,
    shared: Box<Shared>,
}

// SAFETY: the handle may be used and closed from any thread (masq.h);
// Shared holds only Send closures behind mutexes.
unsafe impl Send for Inner {}

impl Inner {
    /// masq_close, then free what the callbacks reach. If the library did
    /// not close the store (MASQ_E_BUSY: called from inside one of its
    /// callbacks), nothing is freed: the callbacks may still run.
    fn close(self) -> Result<()> {
        // SAFETY: the handle is open and used by nobody else (we own it).
        let status = unsafe { sys::masq_close(self.handle) };
        let result = check(status);
        if status == sys::MASQ_OK || status == sys::MASQ_E_IO {
            // OK, or IO: "the handle is released anyway" (masq.h); either
            // way no callback runs any more.
            drop(self.shared);
        } else {
            std::mem::forget(self.shared);
        }
        result
    }
}

/// An open store (`masq_store`): per-application namespaces of byte keys
/// and values, synced with the user's other devices.
///
/// A `Store` is `Send` and `Sync`: masq.h lets any number of threads use a
/// handle at once (calls are serialized inside the library). Share it with
/// `&Store` in scoped threads or `Arc<Store>`. It is closed when dropped, or
/// explicitly with [`Store::close`] to see the error; a closed store cannot
/// be used again, which the compiler checks:
///
/// ```compile_fail
/// let store = masq::Store::open_with(&masq::Config::new().data_dir("/tmp/x")).unwrap();
/// store.close().unwrap();
/// store.put("app", "k", "v").unwrap(); // error: use of moved value
/// ```
pub struct Store {
    inner: Option<Inner>,
}

// SAFETY: "A masq_store handle may be used from any number of threads at
// once; calls are serialized internally" (masq.h).
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("handle", &self.raw()).finish()
    }
}

impl Store {
    fn from_handle(handle: *mut sys::masq_store) -> Store {
        Store {
            inner: Some(Inner {
                handle,
                shared: Box::new(Shared {
                    watches: Mutex::new(HashMap::new()),
                    retired: Mutex::new(Vec::new()),
                    progress: ProgressSlot { callback: Mutex::new(None) },
                    blob_progress: ProgressSlot { callback: Mutex::new(None) },
                }),
            }),
        }
    }

    /// Open the store a JSON config file describes (`masq_open`); relative
    /// paths in it are resolved against the file's directory.
    pub fn open(config_path: impl AsRef<Path>) -> Result<Store> {
        let path = c_path(config_path.as_ref(), "config path")?;
        let mut handle = ptr::null_mut();
        // SAFETY: valid C string and out pointer.
        check(unsafe { sys::masq_open(path.as_ptr(), &mut handle) })?;
        Ok(Store::from_handle(handle))
    }

    /// Open the store a JSON config text describes (`masq_open_config`);
    /// relative paths are resolved against `base_dir`, or the current
    /// directory when `None`.
    pub fn open_config(config_json: &str, base_dir: Option<&Path>) -> Result<Store> {
        let json = c_string(config_json, "config")?;
        let base = match base_dir {
            Some(dir) => Some(c_path(dir, "base_dir")?),
            None => None,
        };
        let mut handle = ptr::null_mut();
        // SAFETY: valid C strings (or NULL base_dir) and out pointer.
        check(unsafe {
            sys::masq_open_config(json.as_ptr(), base.as_ref().map_or(ptr::null(), |b| b.as_ptr()), &mut handle)
        })?;
        Ok(Store::from_handle(handle))
    }

    /// Open the store a [`Config`] describes.
    pub fn open_with(config: &Config) -> Result<Store> {
        Store::open_config(&config.to_json()?, None)
    }

    /// Close the store (`masq_close`): wait for running calls and queued
    /// watch callbacks, stop sync, close the storage plugin. Dropping the
    /// store does the same and ignores the error.
    pub fn close(mut self) -> Result<()> {
        match self.inner.take() {
            Some(inner) => inner.close(),
            None => Ok(()),
        }
    }

    /// The raw handle, for calls into [`crate::sys`]. It stays owned by this
    /// `Store`: do not close it.
    pub fn raw(&self) -> *mut sys::masq_store {
        self.inner.as_ref().map_or(ptr::null_mut(), |i| i.handle)
    }

    fn shared(&self) -> &Shared {
        &self.inner.as_ref().expect("a Store is open until dropped").shared
    }

    /// This store's replica id: random, non-zero, fixed when it was created.
    pub fn replica_id(&self) -> Result<u64> {
        let mut id = 0u64;
        // SAFETY: open handle, valid out pointer.
        check(unsafe { sys::masq_replica_id(self.raw(), &mut id) })?;
        Ok(id)
    }

    /// A view of one namespace, so its name is checked and converted once.
    pub fn namespace(&self, name: &str) -> Result<Namespace<'_>> {
        Ok(Namespace { store: self, name: c_string(name, "namespace")?, text: name.to_string() })
    }

    // ---- data (each takes the namespace as &str; see also Namespace) ----

    /// Set `key` to `value` in namespace `ns`, in a transaction of its own.
    pub fn put(&self, ns: &str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.put_c(&c_string(ns, "namespace")?, key.as_ref(), value.as_ref())
    }

    /// The value of `key` in `ns`, or `None` if it is absent or deleted.
    pub fn get(&self, ns: &str, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        self.get_c(&c_string(ns, "namespace")?, key.as_ref())
    }

    /// Delete `key` in `ns` (a tombstone, so the delete syncs). Deleting an
    /// absent key succeeds.
    pub fn delete(&self, ns: &str, key: impl AsRef<[u8]>) -> Result<()> {
        self.delete_c(&c_string(ns, "namespace")?, key.as_ref())
    }

    /// Call `f(key, value)` for every live key of `ns` starting with
    /// `prefix` (empty: all), in ascending bytewise key order, until it
    /// returns `false`. Entries are read in chunks, so this is not one
    /// snapshot (see [`Store::get_all`]); `f` may call into the store, writes
    /// included. A panic in `f` stops the listing and is resumed here.
    pub fn for_each<F>(&self, ns: &str, prefix: impl AsRef<[u8]>, mut f: F) -> Result<()>
    where
        F: FnMut(&[u8], &[u8]) -> bool,
    {
        let ns = c_string(ns, "namespace")?;
        self.visit(&ns, prefix.as_ref(), 0, |k, v| f(k, v.unwrap_or(&[])))
    }

    /// Call `f(key)` for every live key of `ns` starting with `prefix`, in
    /// order, until it returns `false` (`MASQ_LIST_KEYS_ONLY`: values are not read).
    pub fn for_each_key<F>(&self, ns: &str, prefix: impl AsRef<[u8]>, mut f: F) -> Result<()>
    where
        F: FnMut(&[u8]) -> bool,
    {
        let ns = c_string(ns, "namespace")?;
        self.visit(&ns, prefix.as_ref(), sys::MASQ_LIST_KEYS_ONLY, |k, _| f(k))
    }

    /// Copies of every (key, value) of `ns` starting with `prefix`, in key order.
    pub fn items(&self, ns: &str, prefix: impl AsRef<[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_each(ns, prefix, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })?;
        Ok(out)
    }

    /// Every live key of `ns` starting with `prefix`, in key order.
    pub fn keys(&self, ns: &str, prefix: impl AsRef<[u8]>) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.for_each_key(ns, prefix, |k| {
            out.push(k.to_vec());
            true
        })?;
        Ok(out)
    }

    /// Every live key of `ns` with its value from one consistent snapshot,
    /// in one library allocation. `ErrorKind::TooLarge` beyond
    /// `limits.max_batch_entries` keys (use [`Store::for_each`]).
    pub fn get_all(&self, ns: &str) -> Result<Entries> {
        self.get_all_c(&c_string(ns, "namespace")?)
    }

    /// Apply `entries` to `ns` in ONE transaction: `(key, Some(value))` puts,
    /// `(key, None)` deletes. All or nothing: if any entry is invalid nothing
    /// is written and the message names its index. A key given twice: the
    /// last wins.
    pub fn set_all<I, K, V>(&self, ns: &str, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = (K, Option<V>)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        self.set_all_c(&c_string(ns, "namespace")?, entries, 0)
    }

    /// Like [`Store::set_all`], and afterwards `ns` holds exactly the
    /// entries given (`MASQ_SET_ALL_REPLACE`): every other key is deleted.
    pub fn replace_all<I, K, V>(&self, ns: &str, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = (K, Option<V>)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        self.set_all_c(&c_string(ns, "namespace")?, entries, sys::MASQ_SET_ALL_REPLACE)
    }

    /// Delete every key of `ns` in one transaction (tombstones, so it syncs).
    pub fn clear(&self, ns: &str) -> Result<()> {
        self.clear_c(&c_string(ns, "namespace")?)
    }

    /// Every namespace holding at least one live key, in ascending order of
    /// (byte length, bytes).
    pub fn namespaces(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        self.for_each_namespace(|name| {
            names.push(name.to_string());
            true
        })?;
        Ok(names)
    }

    /// Call `f(namespace)` for every namespace holding at least one live
    /// key, in the order of [`Store::namespaces`], until it returns `false`.
    /// A panic in `f` stops the listing and is resumed here.
    pub fn for_each_namespace<F: FnMut(&str) -> bool>(&self, f: F) -> Result<()> {
        let mut visit = Visit { f, panic: None };
        let status = {
            let ctx = &mut visit as *mut Visit<F> as *mut c_void;
            // SAFETY: on_namespace::<F> matches ctx's type; ctx outlives the call.
            unsafe { sys::masq_list_namespaces(self.raw(), Some(on_namespace::<F>), ctx) }
        };
        visit.finish(status)
    }

    // ---- watches ----

    /// Call `callback` for every change committed after this returns to keys
    /// of `ns` (`None`: every namespace) starting with `prefix` (empty: every
    /// key). It runs on a library thread (never the writer's), one change at
    /// a time per store, in commit order; it may call into the store (but
    /// dropping the last handle of the store there closes it on another
    /// thread, since masq_close must not run inside a callback). A panic in
    /// it is caught; later changes are still delivered.
    ///
    /// The returned [`Watch`] stops the watch when dropped; see
    /// [`Watch::detach`] to keep it until [`Store::unwatch`] or close.
    pub fn watch<F>(&self, ns: Option<&str>, prefix: impl AsRef<[u8]>, callback: F) -> Result<Watch<'_>>
    where
        F: FnMut(&Change<'_>) + Send + 'static,
    {
        let ns = match ns {
            Some(name) => Some(c_string(name, "namespace")?),
            None => None,
        };
        self.watch_c(ns.as_deref(), prefix.as_ref(), Box::new(callback))
    }

    fn watch_c(&self, ns: Option<&CStr>, prefix: &[u8], callback: WatchFn) -> Result<Watch<'_>> {
        let slot = Box::new(WatchSlot { callback: Mutex::new(callback) });
        let ctx = &*slot as *const WatchSlot as *mut c_void;
        let mut id = 0u64;
        // SAFETY: ctx points to the boxed slot, kept until the library stops
        // calling it; the other pointers are valid during the call.
        check(unsafe {
            sys::masq_watch(
                self.raw(),
                ns.map_or(ptr::null(), CStr::as_ptr),
                prefix.as_ptr(),
                prefix.len(),
                Some(on_change),
                ctx,
                &mut id,
            )
        })?;
        // (An unwatch of this id before the insert finds no slot and frees
        // nothing: the slot then lives until the store closes.)
        lock(&self.shared().watches).insert(id, slot);
        Ok(Watch { store: self, id: Some(WatchId(id)) })
    }

    /// Stop a watch by id (`masq_unwatch`). When this returns (outside a
    /// callback) the callback is not running and will not run again; its
    /// closure is dropped. `ErrorKind::NotFound` for an unknown id.
    pub fn unwatch(&self, id: WatchId) -> Result<()> {
        // SAFETY: open handle.
        let status = unsafe { sys::masq_unwatch(self.raw(), id.0) };
        let result = check(status);
        // Only after a successful unwatch is the callback known not to run
        // (after NOT_FOUND, another thread's unwatch may still be waiting
        // for it): the slot then stays until the store closes.
        if status == sys::MASQ_OK {
            let slot = lock(&self.shared().watches).remove(&id.0);
            if let Some(slot) = slot {
                if in_library_callback() {
                    // It may be the callback running now: free it at close.
                    lock(&self.shared().retired).push(slot);
                } else {
                    drop(slot);
                }
            }
        }
        result
    }

    // ---- counters ----

    /// Add `delta` (may be negative) to the counter at `key`. Counters merge
    /// across devices so concurrent additions all count. A key holding a
    /// plain value is `ErrorKind::Invalid`.
    pub fn counter_add(&self, ns: &str, key: impl AsRef<[u8]>, delta: i64) -> Result<()> {
        self.counter_add_c(&c_string(ns, "namespace")?, key.as_ref(), delta)
    }

    /// The counter's total (0 for an absent key).
    pub fn counter(&self, ns: &str, key: impl AsRef<[u8]>) -> Result<i64> {
        self.counter_c(&c_string(ns, "namespace")?, key.as_ref())
    }

    // ---- sync ----

    /// Sync with the paired devices over the config's transports, in the
    /// background, until [`Store::sync_stop`] or close. `ErrorKind::Config`
    /// without a transport, `ErrorKind::Busy` if already running.
    pub fn sync_start(&self) -> Result<()> {
        // SAFETY: open handle.
        check(unsafe { sys::masq_sync_start(self.raw()) })
    }

    /// Stop background sync (no progress callback runs after it returns).
    pub fn sync_stop(&self) -> Result<()> {
        // SAFETY: open handle.
        check(unsafe { sys::masq_sync_stop(self.raw()) })
    }

    /// Catch up with every paired device present, then return;
    /// `ErrorKind::Timeout` after `timeout`.
    pub fn sync_once(&self, timeout: Duration) -> Result<()> {
        // SAFETY: open handle.
        check(unsafe { sys::masq_sync_once(self.raw(), timeout.as_secs_f64()) })
    }

    /// Sync status: running, connected, per-device state, frame counters.
    pub fn sync_status(&self) -> Result<SyncStatus> {
        SyncStatus::parse(&self.sync_status_json()?)
    }

    /// Sync status as the library's JSON text.
    pub fn sync_status_json(&self) -> Result<String> {
        self.text_out(|out| unsafe { sys::masq_sync_status(self.raw(), out) })
    }

    /// Call `callback(device_id, received, remaining)` as commits from a
    /// device arrive (from a library thread), replacing any previous one.
    /// A panic in it is caught. Do not call `sync_stop` or close the store
    /// from it: libmasq 0.1.0 aborts the process when `masq_sync_stop` or
    /// `masq_close` runs inside its own progress callback.
    pub fn set_sync_progress<F>(&self, callback: F) -> Result<()>
    where
        F: FnMut(&str, u64, u64) + Send + 'static,
    {
        let slot = &self.shared().progress;
        *lock(&slot.callback) = Some(Arc::new(Mutex::new(callback)));
        let ctx = slot as *const ProgressSlot as *mut c_void;
        // SAFETY: the slot lives until masq_close returned.
        check(unsafe { sys::masq_sync_set_progress(self.raw(), Some(on_progress), ctx) })
    }

    /// Remove the progress callback.
    pub fn clear_sync_progress(&self) -> Result<()> {
        // SAFETY: open handle; NULL removes the callback.
        let result = check(unsafe { sys::masq_sync_set_progress(self.raw(), None, ptr::null_mut()) });
        *lock(&self.shared().progress.callback) = None;
        result
    }

    /// Call `callback(blob_id, fetched, size)` as a blob's chunks arrive by
    /// sync (from a library thread; `fetched == size`: complete), replacing
    /// any previous one. Keep it short, and do not stop sync from it
    /// (masq.h). A panic in it is caught.
    pub fn set_blob_progress<F>(&self, callback: F) -> Result<()>
    where
        F: FnMut(&str, u64, u64) + Send + 'static,
    {
        let slot = &self.shared().blob_progress;
        *lock(&slot.callback) = Some(Arc::new(Mutex::new(callback)));
        let ctx = slot as *const ProgressSlot as *mut c_void;
        // SAFETY: the slot lives until masq_close returned ("ctx must stay
        // valid until the callback is removed or the store closed").
        check(unsafe { sys::masq_blob_set_progress(self.raw(), Some(on_progress), ctx) })
    }

    /// Remove the blob progress callback.
    pub fn clear_blob_progress(&self) -> Result<()> {
        // SAFETY: open handle; NULL removes the callback.
        let result = check(unsafe { sys::masq_blob_set_progress(self.raw(), None, ptr::null_mut()) });
        *lock(&self.shared().blob_progress.callback) = None;
        result
    }

    // ---- encryption at rest ----

    /// Unlock a passphrase-protected store. `ErrorKind::Denied` for a wrong
    /// passphrase, `ErrorKind::Invalid` if the store has none.
    pub fn unlock(&self, passphrase: impl AsRef<[u8]>) -> Result<()> {
        let p = passphrase.as_ref();
        // SAFETY: valid buffer, not retained.
        check(unsafe { sys::masq_unlock(self.raw(), p.as_ptr(), p.len()) })
    }

    /// Forget the keys in memory; data calls fail with `ErrorKind::Denied`
    /// until [`Store::unlock`]. No-op on an unprotected store.
    pub fn lock(&self) -> Result<()> {
        // SAFETY: open handle.
        check(unsafe { sys::masq_lock(self.raw()) })
    }

    /// Protect an unprotected store with a (non-empty) passphrase: all data
    /// is encrypted in one transaction.
    pub fn set_passphrase(&self, new: impl AsRef<[u8]>) -> Result<()> {
        self.passphrase(None, Some(new.as_ref()))
    }

    /// Change the passphrase of a protected, unlocked store (the master key
    /// is re-wrapped). `ErrorKind::Denied` if `old` is not the current one.
    pub fn change_passphrase(&self, old: impl AsRef<[u8]>, new: impl AsRef<[u8]>) -> Result<()> {
        self.passphrase(Some(old.as_ref()), Some(new.as_ref()))
    }

    /// Remove protection from an unlocked store (data is decrypted).
    pub fn remove_passphrase(&self, old: impl AsRef<[u8]>) -> Result<()> {
        self.passphrase(Some(old.as_ref()), None)
    }

    fn passphrase(&self, old: Option<&[u8]>, new: Option<&[u8]>) -> Result<()> {
        let raw = |p: Option<&[u8]>| p.map_or((ptr::null(), 0), |p| (p.as_ptr(), p.len()));
        let (o, ol) = raw(old);
        let (n, nl) = raw(new);
        // SAFETY: valid buffers (or NULL/0), not retained.
        check(unsafe { sys::masq_set_passphrase(self.raw(), o, ol, n, nl) })
    }

    /// Whether the store has a passphrase and whether it is locked now.
    pub fn protection(&self) -> Result<Protection> {
        let (mut protected, mut locked): (c_int, c_int) = (0, 0);
        // SAFETY: valid out pointers.
        check(unsafe { sys::masq_protection(self.raw(), &mut protected, &mut locked) })?;
        Ok(Protection { protected: protected != 0, locked: locked != 0 })
    }

    // ---- devices ----

    /// This device: id, name, public keys, fingerprint.
    /// `ErrorKind::Denied` while locked.
    pub fn device_info(&self) -> Result<DeviceInfo> {
        DeviceInfo::parse(&self.device_info_json()?, "masq_device_info")
    }

    /// This device as the library's JSON text.
    pub fn device_info_json(&self) -> Result<String> {
        self.text_out(|out| unsafe { sys::masq_device_info(self.raw(), out) })
    }

    /// The paired devices.
    pub fn devices(&self) -> Result<Vec<DeviceInfo>> {
        DeviceInfo::parse_list(&self.devices_json()?, "masq_devices")
    }

    /// The paired devices as the library's JSON text.
    pub fn devices_json(&self) -> Result<String> {
        self.text_out(|out| unsafe { sys::masq_devices(self.raw(), out) })
    }

    /// Set the name other devices see for this one (1..64 bytes).
    pub fn set_device_name(&self, name: &str) -> Result<()> {
        let name = c_string(name, "device name")?;
        // SAFETY: valid C string.
        check(unsafe { sys::masq_set_device_name(self.raw(), name.as_ptr()) })
    }

    /// Forget a paired device and its session. `ErrorKind::NotFound` for an
    /// unknown id.
    pub fn remove_device(&self, device_id: &str) -> Result<()> {
        let id = c_string(device_id, "device id")?;
        // SAFETY: valid C string.
        check(unsafe { sys::masq_device_remove(self.raw(), id.as_ptr()) })
    }

    /// Seal `plaintext` for a paired device with its Double Ratchet session
    /// (`ad` is authenticated, not sent). Only with a session made or renewed
    /// since the store was opened: `ErrorKind::Denied` otherwise (renew with
    /// [`Store::renew_begin`]).
    pub fn seal_for_device(&self, device_id: &str, plaintext: &[u8], ad: &[u8]) -> Result<Bytes> {
        let id = c_string(device_id, "device id")?;
        self.bytes_out(|out, len| unsafe {
            sys::masq_seal_for_device(
                self.raw(),
                id.as_ptr(),
                ad.as_ptr(),
                ad.len(),
                plaintext.as_ptr(),
                plaintext.len(),
                out,
                len,
            )
        })
    }

    /// Open a message from a paired device. `ErrorKind::BadSignature` for a
    /// tampered, replayed or foreign message (the session is unchanged).
    pub fn open_from_device(&self, device_id: &str, message: &[u8], ad: &[u8]) -> Result<Bytes> {
        let id = c_string(device_id, "device id")?;
        self.bytes_out(|out, len| unsafe {
            sys::masq_open_from_device(
                self.raw(),
                id.as_ptr(),
                ad.as_ptr(),
                ad.len(),
                message.as_ptr(),
                message.len(),
                out,
                len,
            )
        })
    }

    /// Session renewal, step 1 (this side): the message to send to the device.
    pub fn renew_begin(&self, device_id: &str) -> Result<Bytes> {
        let id = c_string(device_id, "device id")?;
        self.bytes_out(|out, len| unsafe { sys::masq_device_renew_begin(self.raw(), id.as_ptr(), out, len) })
    }

    /// Session renewal, step 2 (the other side): the answer to send back.
    pub fn renew_answer(&self, device_id: &str, message: &[u8]) -> Result<Bytes> {
        let id = c_string(device_id, "device id")?;
        self.bytes_out(|out, len| unsafe {
            sys::masq_device_renew_answer(self.raw(), id.as_ptr(), message.as_ptr(), message.len(), out, len)
        })
    }

    /// Session renewal, step 3 (this side): the new session replaces the old.
    pub fn renew_complete(&self, device_id: &str, answer: &[u8]) -> Result<()> {
        let id = c_string(device_id, "device id")?;
        // SAFETY: valid C string and buffer.
        check(unsafe { sys::masq_device_renew_complete(self.raw(), id.as_ptr(), answer.as_ptr(), answer.len()) })
    }

    // ---- pairing ----

    /// Offer pairing: [`Pairing::link`] is the single-use link to show the
    /// other device (valid for `ttl`); then feed it the joiner's frames with
    /// [`Pairing::receive`]. `via` names where this device waits (may be None).
    pub fn pairing_offer(&self, via: Option<&str>, ttl: Duration) -> Result<Pairing<'_>> {
        let via = match via {
            Some(v) => Some(c_string(v, "via")?),
            None => None,
        };
        let ttl = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        let mut link: *mut c_char = ptr::null_mut();
        let mut handle = ptr::null_mut();
        // SAFETY: valid C string or NULL, valid out pointers.
        check(unsafe {
            sys::masq_pairing_offer(
                self.raw(),
                via.as_ref().map_or(ptr::null(), |v| v.as_ptr()),
                ttl,
                &mut link,
                &mut handle,
            )
        })?;
        // SAFETY: the link is ours to release; the handle ours to free.
        let link = unsafe { take_text(link) };
        Ok(unsafe { Pairing::from_raw(handle, Some(link)) })
    }

    /// Join with a link from [`Store::pairing_offer`] on the other device
    /// (`ErrorKind::Invalid` if damaged); then [`Pairing::start`] gives the
    /// first frame to send.
    pub fn pairing_join(&self, link: &str) -> Result<Pairing<'_>> {
        let link = c_string(link, "link")?;
        let mut handle = ptr::null_mut();
        // SAFETY: valid C string, out pointer.
        check(unsafe { sys::masq_pairing_join(self.raw(), link.as_ptr(), &mut handle) })?;
        Ok(unsafe { Pairing::from_raw(handle, None) })
    }

    /// Offer a pairing through a relay, the library carrying the frames on
    /// its own thread (`masq_pair_offer`): [`PairTask::link`] is the link to
    /// show at once; the task waits up to `ttl` (zero: the default, 10
    /// minutes) for a device to join. `relay_url` (ws:// or wss://) or, when
    /// `None`, the store's configured relay transport (`ErrorKind::Config` if
    /// there is none). A relay that cannot be reached fails here.
    pub fn pair_offer(&self, relay_url: Option<&str>, ttl: Duration) -> Result<PairTask<'_>> {
        PairTask::offer::<fn(Result<DeviceInfo>)>(self, relay_url, ttl, None)
    }

    /// [`Store::pair_offer`], calling `done` once when the task ends (from the
    /// task's thread) with the paired device or the task's error. If this
    /// returns an error, `done` is dropped uncalled.
    pub fn pair_offer_with<F>(&self, relay_url: Option<&str>, ttl: Duration, done: F) -> Result<PairTask<'_>>
    where
        F: FnOnce(Result<DeviceInfo>) + Send + 'static,
    {
        PairTask::offer(self, relay_url, ttl, Some(done))
    }

    /// Join from a link another device offers, through the link's relay
    /// (`masq_pair_join`; `ErrorKind::Invalid` for a damaged or foreign link).
    /// The task tries for up to `timeout` (zero: 60 s).
    pub fn pair_join(&self, link: &str, timeout: Duration) -> Result<PairTask<'_>> {
        PairTask::join::<fn(Result<DeviceInfo>)>(self, link, timeout, None)
    }

    /// [`Store::pair_join`], calling `done` once when the task ends.
    pub fn pair_join_with<F>(&self, link: &str, timeout: Duration, done: F) -> Result<PairTask<'_>>
    where
        F: FnOnce(Result<DeviceInfo>) + Send + 'static,
    {
        PairTask::join(self, link, timeout, Some(done))
    }

    // ---- helpers over &CStr namespaces ----

    fn put_c(&self, ns: &CStr, key: &[u8], value: &[u8]) -> Result<()> {
        // SAFETY: valid buffers and C string, not retained.
        check(unsafe { sys::masq_put(self.raw(), ns.as_ptr(), key.as_ptr(), key.len(), value.as_ptr(), value.len()) })
    }

    fn get_c(&self, ns: &CStr, key: &[u8]) -> Result<Option<Bytes>> {
        let mut value: *mut u8 = ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: valid buffers and out pointers.
        let status = unsafe { sys::masq_get(self.raw(), ns.as_ptr(), key.as_ptr(), key.len(), &mut value, &mut len) };
        if status == sys::MASQ_E_NOT_FOUND {
            return Ok(None);
        }
        check(status)?;
        // SAFETY: on success value is ours to masq_free.
        Ok(Some(unsafe { Bytes::from_raw(value, len) }))
    }

    fn delete_c(&self, ns: &CStr, key: &[u8]) -> Result<()> {
        // SAFETY: valid buffers.
        check(unsafe { sys::masq_delete(self.raw(), ns.as_ptr(), key.as_ptr(), key.len()) })
    }

    fn visit<F>(&self, ns: &CStr, prefix: &[u8], flags: u32, f: F) -> Result<()>
    where
        F: FnMut(&[u8], Option<&[u8]>) -> bool,
    {
        let mut visit = Visit { f, panic: None };
        let status = {
            let ctx = &mut visit as *mut Visit<F> as *mut c_void;
            // SAFETY: on_entry::<F> matches ctx's type; ctx outlives the
            // call; the callback runs on this thread during the call.
            unsafe {
                sys::masq_list(self.raw(), ns.as_ptr(), prefix.as_ptr(), prefix.len(), flags, Some(on_entry::<F>), ctx)
            }
        };
        visit.finish(status)
    }

    fn get_all_c(&self, ns: &CStr) -> Result<Entries> {
        let mut entries: *mut sys::masq_entry = ptr::null_mut();
        let mut count = 0usize;
        // SAFETY: valid out pointers.
        check(unsafe { sys::masq_get_all(self.raw(), ns.as_ptr(), &mut entries, &mut count) })?;
        // SAFETY: one allocation of count entries, ours to masq_free.
        Ok(unsafe { Entries::from_raw(entries, count) })
    }

    fn set_all_c<I, K, V>(&self, ns: &CStr, entries: I, flags: u32) -> Result<()>
    where
        I: IntoIterator<Item = (K, Option<V>)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        // Keep the caller's data alive while the array points into it.
        let owned: Vec<(K, Option<V>)> = entries.into_iter().collect();
        let raw: Vec<sys::masq_entry> = owned
            .iter()
            .map(|(k, v)| {
                let k = k.as_ref();
                // A present value, even empty, gets a non-NULL pointer: NULL deletes.
                let (value, value_len) = match v {
                    Some(v) => (v.as_ref().as_ptr(), v.as_ref().len()),
                    None => (ptr::null(), 0),
                };
                sys::masq_entry { key: k.as_ptr(), key_len: k.len(), value, value_len }
            })
            .collect();
        // SAFETY: raw.len() entries pointing into `owned`, both alive during the call.
        check(unsafe { sys::masq_set_all(self.raw(), ns.as_ptr(), raw.as_ptr(), raw.len(), flags) })
    }

    fn clear_c(&self, ns: &CStr) -> Result<()> {
        // SAFETY: valid C string.
        check(unsafe { sys::masq_clear(self.raw(), ns.as_ptr()) })
    }

    fn counter_add_c(&self, ns: &CStr, key: &[u8], delta: i64) -> Result<()> {
        // SAFETY: valid buffers.
        check(unsafe { sys::masq_counter_add(self.raw(), ns.as_ptr(), key.as_ptr(), key.len(), delta) })
    }

    fn counter_c(&self, ns: &CStr, key: &[u8]) -> Result<i64> {
        let mut value = 0i64;
        // SAFETY: valid buffers and out pointer.
        check(unsafe { sys::masq_counter_get(self.raw(), ns.as_ptr(), key.as_ptr(), key.len(), &mut value) })?;
        Ok(value)
    }

    fn text_out(&self, call: impl FnOnce(*mut *mut c_char) -> c_int) -> Result<String> {
        text_out(call)
    }

    fn bytes_out(&self, call: impl FnOnce(*mut *mut u8, *mut usize) -> c_int) -> Result<Bytes> {
        bytes_out(call)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            if in_library_callback() {
                // masq_close would refuse (or wait for this very callback):
                // close on a thread of our own once the callback returned.
                let closer = std::thread::Builder::new().name("masq-close".into()).spawn(move || {
                    let _ = inner.close();
                });
                if let Err(e) = closer {
                    // Without a thread the store stays open: leaking is safe,
                    // closing here is not.
                    eprintln!("masq: cannot close a store dropped inside a callback: {}", e);
                }
            } else {
                let _ = inner.close();
            }
        }
    }
}

/// Call a function returning text to `masq_free` through `out`.
pub(crate) fn text_out(call: impl FnOnce(*mut *mut c_char) -> c_int) -> Result<String> {
    let mut out: *mut c_char = ptr::null_mut();
    let status = call(&mut out);
    if status != sys::MASQ_OK {
        let error = Error::last(status);
        // SAFETY: whatever the library left there is ours (NULL is fine).
        unsafe { sys::masq_free(out as *mut c_void) };
        return Err(error);
    }
    // SAFETY: on success the text is ours to release.
    Ok(unsafe { take_text(out) })
}

/// Call a function returning bytes to `masq_free` through (out, len).
pub(crate) fn bytes_out(call: impl FnOnce(*mut *mut u8, *mut usize) -> c_int) -> Result<Bytes> {
    let mut out: *mut u8 = ptr::null_mut();
    let mut len = 0usize;
    let status = call(&mut out, &mut len);
    if status != sys::MASQ_OK {
        let error = Error::last(status);
        // SAFETY: as above.
        unsafe { sys::masq_free(out as *mut c_void) };
        return Err(error);
    }
    // SAFETY: on success the buffer is ours.
    Ok(unsafe { Bytes::from_raw(out, len) })
}

// ---- Namespace -----------------------------------------------------------------------------------

/// One namespace of a store, its name checked once ([`Store::namespace`]).
/// Every method is the [`Store`] method of the same name.
#[derive(Debug, Clone)]
pub struct Namespace<'s> {
    store: &'s Store,
    name: CString,
    text: String,
}

impl<'s> Namespace<'s> {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.text
    }

    /// The store.
    pub fn store(&self) -> &'s Store {
        self.store
    }

    /// See [`Store::put`].
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.store.put_c(&self.name, key.as_ref(), value.as_ref())
    }

    /// See [`Store::get`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        self.store.get_c(&self.name, key.as_ref())
    }

    /// Whether `key` holds a live value.
    pub fn contains(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// See [`Store::delete`].
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        self.store.delete_c(&self.name, key.as_ref())
    }

    /// See [`Store::for_each`].
    pub fn for_each<F: FnMut(&[u8], &[u8]) -> bool>(&self, prefix: impl AsRef<[u8]>, mut f: F) -> Result<()> {
        self.store.visit(&self.name, prefix.as_ref(), 0, |k, v| f(k, v.unwrap_or(&[])))
    }

    /// See [`Store::for_each_key`].
    pub fn for_each_key<F: FnMut(&[u8]) -> bool>(&self, prefix: impl AsRef<[u8]>, mut f: F) -> Result<()> {
        self.store.visit(&self.name, prefix.as_ref(), sys::MASQ_LIST_KEYS_ONLY, |k, _| f(k))
    }

    /// See [`Store::items`].
    pub fn items(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_each(prefix, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })?;
        Ok(out)
    }

    /// See [`Store::keys`].
    pub fn keys(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.for_each_key(prefix, |k| {
            out.push(k.to_vec());
            true
        })?;
        Ok(out)
    }

    /// See [`Store::get_all`].
    pub fn get_all(&self) -> Result<Entries> {
        self.store.get_all_c(&self.name)
    }

    /// See [`Store::set_all`].
    pub fn set_all<I, K, V>(&self, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = (K, Option<V>)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        self.store.set_all_c(&self.name, entries, 0)
    }

    /// See [`Store::replace_all`].
    pub fn replace_all<I, K, V>(&self, entries: I) -> Result<()>
    where
        I: IntoIterator<Item = (K, Option<V>)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        self.store.set_all_c(&self.name, entries, sys::MASQ_SET_ALL_REPLACE)
    }

    /// See [`Store::clear`].
    pub fn clear(&self) -> Result<()> {
        self.store.clear_c(&self.name)
    }

    /// See [`Store::watch`] (this namespace only).
    pub fn watch<F>(&self, prefix: impl AsRef<[u8]>, callback: F) -> Result<Watch<'s>>
    where
        F: FnMut(&Change<'_>) + Send + 'static,
    {
        self.store.watch_c(Some(&self.name), prefix.as_ref(), Box::new(callback))
    }

    /// See [`Store::counter_add`].
    pub fn counter_add(&self, key: impl AsRef<[u8]>, delta: i64) -> Result<()> {
        self.store.counter_add_c(&self.name, key.as_ref(), delta)
    }

    /// See [`Store::counter`].
    pub fn counter(&self, key: impl AsRef<[u8]>) -> Result<i64> {
        self.store.counter_c(&self.name, key.as_ref())
    }
}

// ---- watches -------------------------------------------------------------------------------------

/// The id of a watch (non-zero), for [`Store::unwatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId(pub u64);

/// A registered watch; dropping it stops the watch (`masq_unwatch`).
#[must_use = "dropping a Watch stops it at once; use .detach() to keep it"]
pub struct Watch<'s> {
    store: &'s Store,
    id: Option<WatchId>,
}

impl<'s> Watch<'s> {
    /// The watch's id.
    pub fn id(&self) -> WatchId {
        self.id.expect("a Watch has an id until cancelled or detached")
    }

    /// Stop the watch and report an error, if any (dropping ignores it).
    pub fn cancel(mut self) -> Result<()> {
        match self.id.take() {
            Some(id) => self.store.unwatch(id),
            None => Ok(()),
        }
    }

    /// Keep the watch running until [`Store::unwatch`] with this id or the
    /// store closes.
    pub fn detach(mut self) -> WatchId {
        self.id.take().expect("a Watch has an id until cancelled or detached")
    }
}

impl<'s> Drop for Watch<'s> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let _ = self.store.unwatch(id);
        }
    }
}

impl<'s> fmt::Debug for Watch<'s> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").field("id", &self.id).finish()
    }
}

/// What a change did (`MASQ_CHANGE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeKind {
    /// The key now holds the value.
    Put,
    /// The key was deleted.
    Delete,
    /// Two devices wrote the key concurrently: the value (None if a delete)
    /// won everywhere, the lost value is reported too.
    Conflict,
    /// A kind this version of the binding does not know.
    Other(i32),
}

/// Where a change came from (`MASQ_ORIGIN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// Written through this store handle.
    Local,
    /// Arrived from another replica by sync.
    Remote,
    /// An origin this version of the binding does not know.
    Other(i32),
}

/// One committed change, borrowed from the library for the duration of a
/// watch callback; [`Change::to_record`] copies it.
pub struct Change<'a> {
    raw: &'a sys::masq_change,
}

impl<'a> Change<'a> {
    /// Whether the library's struct has the member ending at `end` bytes
    /// ("new members may be appended; check struct_size", masq.h).
    fn has(&self, end: usize) -> bool {
        self.raw.struct_size as usize >= end
    }

    /// Put, delete or conflict.
    pub fn kind(&self) -> ChangeKind {
        match self.raw.kind {
            sys::MASQ_CHANGE_PUT => ChangeKind::Put,
            sys::MASQ_CHANGE_DELETE => ChangeKind::Delete,
            sys::MASQ_CHANGE_CONFLICT => ChangeKind::Conflict,
            other => ChangeKind::Other(other),
        }
    }

    /// Local or remote.
    pub fn origin(&self) -> Origin {
        match self.raw.origin {
            sys::MASQ_ORIGIN_LOCAL => Origin::Local,
            sys::MASQ_ORIGIN_REMOTE => Origin::Remote,
            other => Origin::Other(other),
        }
    }

    /// The namespace (UTF-8; the library checks it).
    pub fn namespace(&self) -> &'a str {
        if self.raw.ns.is_null() {
            return "";
        }
        // SAFETY: NUL-terminated, valid during the callback.
        let bytes = unsafe { CStr::from_ptr(self.raw.ns) }.to_bytes();
        std::str::from_utf8(bytes).unwrap_or("")
    }

    /// The key.
    pub fn key(&self) -> &'a [u8] {
        // SAFETY: valid during the callback.
        unsafe { slice(self.raw.key, self.raw.key_len) }
    }

    /// The new value; `None` for a delete (or a conflict a delete won).
    pub fn value(&self) -> Option<&'a [u8]> {
        if self.raw.value.is_null() {
            None
        } else {
            // SAFETY: valid during the callback.
            Some(unsafe { slice(self.raw.value, self.raw.value_len) })
        }
    }

    /// Hybrid logical clock timestamp of the write.
    pub fn timestamp(&self) -> u64 {
        self.raw.timestamp
    }

    /// Replica id of the writer.
    pub fn replica(&self) -> u64 {
        self.raw.replica
    }

    /// For a conflict: the value that lost (`None` if the loser was a delete,
    /// and for other kinds).
    pub fn lost_value(&self) -> Option<&'a [u8]> {
        let end = offset_end(|c| unsafe { ptr::addr_of!((*c).lost_value_len) }, std::mem::size_of::<usize>());
        if self.kind() != ChangeKind::Conflict || !self.has(end) || self.raw.lost_value.is_null() {
            return None;
        }
        // SAFETY: valid during the callback.
        Some(unsafe { slice(self.raw.lost_value, self.raw.lost_value_len) })
    }

    /// For a conflict: whether the loser was a delete.
    pub fn lost_was_deleted(&self) -> bool {
        let end = offset_end(|c| unsafe { ptr::addr_of!((*c).lost_was_deleted) }, std::mem::size_of::<c_int>());
        self.kind() == ChangeKind::Conflict && self.has(end) && self.raw.lost_was_deleted != 0
    }

    /// A copy that outlives the callback.
    pub fn to_record(&self) -> ChangeRecord {
        ChangeRecord {
            kind: self.kind(),
            origin: self.origin(),
            namespace: self.namespace().to_string(),
            key: self.key().to_vec(),
            value: self.value().map(<[u8]>::to_vec),
            timestamp: self.timestamp(),
            replica: self.replica(),
            lost_value: self.lost_value().map(<[u8]>::to_vec),
            lost_was_deleted: self.lost_was_deleted(),
        }
    }
}

impl<'a> fmt::Debug for Change<'a> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_record().fmt(f)
    }
}

/// Offset just past a member of masq_change, computed without a value.
fn offset_end<T>(member: impl FnOnce(*const sys::masq_change) -> *const T, size: usize) -> usize {
    let probe = std::mem::MaybeUninit::<sys::masq_change>::uninit();
    let base = probe.as_ptr();
    member(base) as usize - base as usize + size
}

/// An owned copy of a [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    /// Put, delete or conflict.
    pub kind: ChangeKind,
    /// Local or remote.
    pub origin: Origin,
    /// The namespace.
    pub namespace: String,
    /// The key.
    pub key: Vec<u8>,
    /// The new value (`None` for a delete).
    pub value: Option<Vec<u8>>,
    /// Hybrid logical clock timestamp of the write.
    pub timestamp: u64,
    /// Replica id of the writer.
    pub replica: u64,
    /// For a conflict: the value that lost (`None` if a delete lost).
    pub lost_value: Option<Vec<u8>>,
    /// For a conflict: whether the loser was a delete.
    pub lost_was_deleted: bool,
}
