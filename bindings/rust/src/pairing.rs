//! Pairing two devices of one user (`masq_pairing_*`).

use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Mutex;
use std::time::Duration;

use crate::bytes::{c_string, take_text, Bytes};
use crate::device::DeviceInfo;
use crate::error::{check, text, Error, ErrorKind, Result};
use crate::store::{bytes_out, in_library_callback, text_out, CallbackScope, Store};
use crate::sys;

/// One side of a pairing: the offering side ([`Store::pairing_offer`], which
/// has the [`Pairing::link`]) or the joining side ([`Store::pairing_join`]).
/// The two exchange frames over any transport, each handed to
/// [`Pairing::receive`], until both report paired. The handshake (Noise
/// XXpsk3) authenticates both devices' keys with the link's secret.
///
/// A pairing borrows its store (it stores the other device there). It may be
/// moved to another thread (`Send`) but not shared (`!Sync`): masq.h allows
/// one thread at a time per pairing handle.
///
/// ```compile_fail
/// fn shared<T: Sync>(_: &T) {}
/// fn check(p: &masq::Pairing<'_>) { shared(p) } // Pairing is not Sync
/// ```
pub struct Pairing<'s> {
    raw: *mut sys::masq_pairing,
    link: Option<String>,
    paired: bool,
    _store: PhantomData<&'s Store>,
}

// SAFETY: masq.h: "call from one thread at a time" — so it may move between
// threads, and the absence of Sync keeps it to one at a time.
unsafe impl<'s> Send for Pairing<'s> {}

/// What [`Pairing::receive`] gives back.
#[derive(Debug)]
pub struct Received {
    /// The frame to send to the other side, if any.
    pub reply: Option<Bytes>,
    /// Whether this side has now stored the other device.
    pub paired: bool,
}

/// A refused pairing frame: the error, and a refusal frame to send so the
/// other side learns why (when the library made one). Converts into
/// [`Error`] with `?`.
#[derive(Debug)]
pub struct Refusal {
    /// Why (e.g. `ErrorKind::Denied` for a wrong secret, an expired or used link).
    pub error: Error,
    /// The refusal frame to deliver to the other side.
    pub reply: Option<Bytes>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Refusal {}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Error {
        refusal.error
    }
}

impl<'s> Pairing<'s> {
    /// # Safety
    /// `raw` must be a pairing handle that nothing else frees.
    pub(crate) unsafe fn from_raw(raw: *mut sys::masq_pairing, link: Option<String>) -> Pairing<'s> {
        Pairing { raw, link, paired: false, _store: PhantomData }
    }

    /// The single-use link `masq://pair/<room>?via=...#<secret>` to show the
    /// other device (offering side only).
    pub fn link(&self) -> Option<&str> {
        self.link.as_deref()
    }

    /// Whether this side has stored the other device.
    pub fn is_paired(&self) -> bool {
        self.paired
    }

    /// The joiner's first frame (joining side).
    pub fn start(&mut self) -> Result<Bytes> {
        let raw = self.raw;
        // SAFETY: our handle, used by one thread (&mut self).
        bytes_out(|out, len| unsafe { sys::masq_pairing_start(raw, out, len) })
    }

    /// Hand over the other side's frame. On success: the frame to send back
    /// (if any) and whether this side is now paired. On failure: the error
    /// and, if the library made one, a refusal frame to send.
    pub fn receive(&mut self, frame: &[u8]) -> std::result::Result<Received, Refusal> {
        let mut out: *mut u8 = ptr::null_mut();
        let mut len = 0usize;
        let mut paired: c_int = 0;
        // SAFETY: our handle; valid buffers and out pointers.
        let status = unsafe {
            sys::masq_pairing_receive(self.raw, frame.as_ptr(), frame.len(), &mut out, &mut len, &mut paired)
        };
        // The message first: releasing the reply is a call into the library.
        let error = if status == sys::MASQ_OK { None } else { Some(Error::last(status)) };
        // SAFETY: the frame, if any, is ours to masq_free.
        let reply = if out.is_null() { None } else { Some(unsafe { Bytes::from_raw(out, len) }) };
        match error {
            None => {
                self.paired = paired != 0;
                Ok(Received { reply, paired: self.paired })
            }
            Some(error) => Err(Refusal { error, reply }),
        }
    }

    /// The other device, once paired.
    pub fn peer(&self) -> Result<DeviceInfo> {
        DeviceInfo::parse(&self.peer_json()?, "masq_pairing_peer")
    }

    /// The other device as the library's JSON text, once paired.
    pub fn peer_json(&self) -> Result<String> {
        if self.raw.is_null() {
            return Err(Error::new(ErrorKind::Closed, "pairing handle is gone"));
        }
        let raw = self.raw;
        // SAFETY: our handle.
        text_out(|out| unsafe { sys::masq_pairing_peer(raw, out) })
    }
}

impl<'s> Drop for Pairing<'s> {
    fn drop(&mut self) {
        // SAFETY: ours to release; NULL allowed.
        unsafe { sys::masq_pairing_free(self.raw) }
    }
}

impl<'s> fmt::Debug for Pairing<'s> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pairing").field("offer", &self.link.is_some()).field("paired", &self.paired).finish()
    }
}

// ---- pairing through a relay, carried by a library task ----------------------------------------

type DoneFn = Box<dyn FnOnce(Result<DeviceInfo>) + Send>;

/// What the library's `ctx` points to for one task's done callback: owned
/// by the [`PairTask`], freed after `masq_pair_free` returned (the callback
/// has then returned, masq.h).
struct DoneSlot {
    callback: Mutex<Option<DoneFn>>,
}

unsafe extern "C" fn on_pair_done(ctx: *mut c_void, status: c_int, message: *const c_char, device_json: *const c_char) {
    if ctx.is_null() {
        return;
    }
    let _scope = CallbackScope::enter();
    // SAFETY: ctx is the task's DoneSlot, alive until masq_pair_free returned.
    let slot = &*(ctx as *const DoneSlot);
    let callback = match slot.callback.lock() {
        Ok(mut c) => c.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    let callback = match callback {
        Some(c) => c,
        None => return,
    };
    let result = if status == sys::MASQ_OK {
        DeviceInfo::parse(&text(device_json), "masq_pairing_done_fn")
    } else {
        Err(Error::from_parts(status, text(message)))
    };
    // Nothing may unwind into the library; the panic hook reported it.
    let _ = catch_unwind(AssertUnwindSafe(move || callback(result)));
}

/// A pairing carried through a relay by a library thread
/// ([`Store::pair_offer`], [`Store::pair_join`]): the offering side shows
/// [`PairTask::link`] and waits in the background; the joining side opens
/// the link. It ends once: paired, expired, failed or cancelled — see
/// [`PairTask::wait`], or give a closure to the `_with` constructors.
///
/// Dropping it cancels the task if it still runs and waits until it ended
/// (`masq_pair_free`). It borrows its store, which it pairs. `Send` and
/// `Sync`: waiting and cancelling are thread-safe (masq.h).
pub struct PairTask<'s> {
    raw: *mut sys::masq_pairing_task,
    link: Option<String>,
    done: Option<Box<DoneSlot>>,
    _store: PhantomData<&'s Store>,
}

// SAFETY: masq_pair_wait and masq_pair_cancel are thread-safe; the done slot
// holds a Send closure behind a mutex; masq_pair_free needs ownership (Drop).
unsafe impl<'s> Send for PairTask<'s> {}
unsafe impl<'s> Sync for PairTask<'s> {}

fn done_slot<F>(done: Option<F>) -> Option<Box<DoneSlot>>
where
    F: FnOnce(Result<DeviceInfo>) + Send + 'static,
{
    done.map(|f| Box::new(DoneSlot { callback: Mutex::new(Some(Box::new(f) as DoneFn)) }))
}

fn slot_ctx(slot: &Option<Box<DoneSlot>>) -> (Option<sys::masq_pairing_done_fn>, *mut c_void) {
    match slot {
        Some(s) => (Some(on_pair_done as sys::masq_pairing_done_fn), &**s as *const DoneSlot as *mut c_void),
        None => (None, ptr::null_mut()),
    }
}

impl<'s> PairTask<'s> {
    pub(crate) fn offer<F>(
        store: &'s Store,
        relay_url: Option<&str>,
        ttl: Duration,
        done: Option<F>,
    ) -> Result<PairTask<'s>>
    where
        F: FnOnce(Result<DeviceInfo>) + Send + 'static,
    {
        let url = match relay_url {
            Some(u) => Some(c_string(u, "relay url")?),
            None => None,
        };
        let slot = done_slot(done);
        let (done_fn, ctx) = slot_ctx(&slot);
        let mut link: *mut c_char = ptr::null_mut();
        let mut raw = ptr::null_mut();
        // SAFETY: valid strings and out pointers; ctx lives in the returned
        // task until masq_pair_free. On failure done is not called (masq.h)
        // and the slot is dropped here.
        check(unsafe {
            sys::masq_pair_offer(
                store.raw(),
                url.as_ref().map_or(ptr::null(), |u| u.as_ptr()),
                seconds(ttl),
                done_fn,
                ctx,
                &mut link,
                &mut raw,
            )
        })?;
        Ok(PairTask { raw, link: Some(unsafe { take_text(link) }), done: slot, _store: PhantomData })
    }

    pub(crate) fn join<F>(store: &'s Store, link: &str, timeout: Duration, done: Option<F>) -> Result<PairTask<'s>>
    where
        F: FnOnce(Result<DeviceInfo>) + Send + 'static,
    {
        let link = c_string(link, "link")?;
        let slot = done_slot(done);
        let (done_fn, ctx) = slot_ctx(&slot);
        let mut raw = ptr::null_mut();
        // SAFETY: as for offer.
        check(unsafe { sys::masq_pair_join(store.raw(), link.as_ptr(), seconds(timeout), done_fn, ctx, &mut raw) })?;
        Ok(PairTask { raw, link: None, done: slot, _store: PhantomData })
    }

    /// The link to show the other device (offering side only), e.g. as a QR
    /// code ([`crate::qr_pgm`]).
    pub fn link(&self) -> Option<&str> {
        self.link.as_deref()
    }

    /// Wait until the task ends: the paired device, or the task's error
    /// (`ErrorKind::Timeout`: expired or nobody answered; `Closed`:
    /// cancelled; `Denied`: a wrong secret or used link; `Unavailable`: the
    /// relay cannot be reached).
    pub fn wait(&self) -> Result<DeviceInfo> {
        match self.wait_ms(0)? {
            Some(device) => Ok(device),
            None => {
                Err(Error::new(ErrorKind::Internal, "masq_pair_wait without a timeout returned while the task runs"))
            }
        }
    }

    /// Wait at most `timeout`: `Ok(None)` if the task still runs
    /// (`MASQ_E_BUSY`), else as [`PairTask::wait`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<DeviceInfo>> {
        // 0 would mean "until it ends": wait at least a millisecond.
        let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX).max(1);
        self.wait_ms(ms)
    }

    fn wait_ms(&self, ms: u32) -> Result<Option<DeviceInfo>> {
        let mut json: *mut c_char = ptr::null_mut();
        // SAFETY: our task; valid out pointer.
        let status = unsafe { sys::masq_pair_wait(self.raw, ms, &mut json) };
        if status == sys::MASQ_E_BUSY && ms != 0 {
            // SAFETY: NULL on failure; masq_free accepts it.
            unsafe { sys::masq_free(json as *mut c_void) };
            return Ok(None);
        }
        if status != sys::MASQ_OK {
            let error = Error::last(status);
            unsafe { sys::masq_free(json as *mut c_void) };
            return Err(error);
        }
        // SAFETY: on success the text is ours.
        DeviceInfo::parse(&unsafe { take_text(json) }, "masq_pair_wait").map(Some)
    }

    /// Ask the task to stop; it ends soon with `ErrorKind::Closed` unless it
    /// ended already.
    pub fn cancel(&self) {
        // SAFETY: our task; thread-safe.
        unsafe { sys::masq_pair_cancel(self.raw) }
    }
}

impl<'s> Drop for PairTask<'s> {
    fn drop(&mut self) {
        let raw = std::mem::replace(&mut self.raw, ptr::null_mut());
        let slot = self.done.take();
        if in_library_callback() {
            // Possibly this task's own done callback, where masq_pair_free
            // must not be called: free it from a thread of our own.
            struct Task(*mut sys::masq_pairing_task, Option<Box<DoneSlot>>);
            // SAFETY: masq_pair_free may run on any thread; the slot is Send.
            unsafe impl Send for Task {}
            let task = Task(raw, slot);
            let spawned = std::thread::Builder::new().name("masq-pair-free".into()).spawn(move || {
                let task = task;
                // SAFETY: ours to release; it waits for the callback to return.
                unsafe { sys::masq_pair_free(task.0) };
                drop(task.1);
            });
            if let Err(e) = spawned {
                eprintln!("masq: cannot release a pairing task dropped inside a callback: {}", e);
            }
        } else {
            // SAFETY: ours; cancels, waits until the done callback returned.
            unsafe { sys::masq_pair_free(raw) };
            drop(slot);
        }
    }
}

impl<'s> fmt::Debug for PairTask<'s> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairTask").field("offer", &self.link.is_some()).finish()
    }
}

fn seconds(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}
