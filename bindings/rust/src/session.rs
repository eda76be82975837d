//! Crypto sessions (`masq_session_*`): a Noise handshake, then a Double Ratchet.

use std::fmt;
use std::os::raw::c_int;
use std::ptr;

use crate::bytes::{c_string, Bytes};
use crate::error::{check, Result};
use crate::store::{bytes_out, text_out, Store};
use crate::sys;

/// Which side of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `MASQ_ROLE_INITIATOR`: writes the first handshake message.
    Initiator,
    /// `MASQ_ROLE_RESPONDER`: sends the first ratchet message.
    Responder,
}

/// Where a session is (`MASQ_SESSION_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionState {
    /// The handshake is in progress.
    Handshaking,
    /// Messages may be sealed and opened.
    Established,
    /// The handshake failed; the session is unusable.
    Failed,
    /// A state this version of the binding does not know.
    Other(i32),
}

/// [`Session::status`]: the state, whether this side writes the next
/// handshake message, and whether it may seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStatus {
    /// The state.
    pub state: SessionState,
    /// This side writes the next handshake message.
    pub write_next: bool,
    /// This side may seal messages.
    pub can_send: bool,
}

/// Options of [`Session::new`] (`masq_session_options`); keys are borrowed,
/// never copied by the binding.
#[derive(Clone, Copy)]
pub struct SessionOptions<'a> {
    pattern: &'a str,
    role: Role,
    prologue: &'a [u8],
    static_key: Option<&'a [u8; 32]>,
    remote_static: Option<&'a [u8]>,
    psk: Option<&'a [u8]>,
}

impl<'a> SessionOptions<'a> {
    /// A Noise `pattern` ("NN", "KK", "IK", "XX", "NNpsk0", "XXpsk3",
    /// "IKpsk2") in `role`.
    pub fn new(pattern: &'a str, role: Role) -> SessionOptions<'a> {
        SessionOptions { pattern, role, prologue: &[], static_key: None, remote_static: None, psk: None }
    }

    /// Bytes both sides bind into the handshake.
    pub fn prologue(mut self, prologue: &'a [u8]) -> Self {
        self.prologue = prologue;
        self
    }

    /// This side's X25519 private key (default: the store's device key).
    pub fn static_key(mut self, key: &'a [u8; 32]) -> Self {
        self.static_key = Some(key);
        self
    }

    /// The peer's static public key, for patterns that know it in advance (KK, IK).
    pub fn remote_static(mut self, key: &'a [u8]) -> Self {
        self.remote_static = Some(key);
        self
    }

    /// The 32-byte pre-shared key of the psk patterns.
    pub fn psk(mut self, psk: &'a [u8]) -> Self {
        self.psk = Some(psk);
        self
    }
}

impl<'a> fmt::Debug for SessionOptions<'a> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys are secrets: show only whether they are set.
        f.debug_struct("SessionOptions")
            .field("pattern", &self.pattern)
            .field("role", &self.role)
            .field("prologue_len", &self.prologue.len())
            .field("static_key", &self.static_key.is_some())
            .field("remote_static", &self.remote_static.is_some())
            .field("psk", &self.psk.is_some())
            .finish()
    }
}

/// A session between two parties who carry their own frames (masq.h,
/// "Crypto sessions"): a Noise handshake authenticating both static keys,
/// then a Double Ratchet (a fresh key per message, out-of-order delivery,
/// replays rejected). The handshake *responder* sends the first ratchet
/// message. Its keys are wiped when dropped.
///
/// `Send` but not `Sync`: masq.h allows one thread at a time per session.
///
/// ```compile_fail
/// fn shared<T: Sync>(_: &T) {}
/// fn check(s: &masq::Session) { shared(s) } // Session is not Sync
/// ```
pub struct Session {
    raw: *mut sys::masq_session,
}

// SAFETY: "use it from one thread at a time" (masq.h): it may move between
// threads; without Sync it is never used by two at once.
unsafe impl Send for Session {}

impl Session {
    /// Create a session. `store` provides the device key when the options
    /// give no static key (and may be `None` otherwise); the session does not
    /// keep the store. `ErrorKind::Invalid` for an unknown pattern or
    /// missing or ill-sized keys.
    pub fn new(store: Option<&Store>, options: &SessionOptions<'_>) -> Result<Session> {
        let pattern = c_string(options.pattern, "pattern")?;
        let opt = |b: Option<&[u8]>| b.map_or((ptr::null(), 0), |b| (b.as_ptr(), b.len()));
        let (remote_static, remote_static_len) = opt(options.remote_static);
        let (psk, psk_len) = opt(options.psk);
        let raw = sys::masq_session_options {
            struct_size: std::mem::size_of::<sys::masq_session_options>() as u32,
            pattern: pattern.as_ptr(),
            role: match options.role {
                Role::Initiator => sys::MASQ_ROLE_INITIATOR,
                Role::Responder => sys::MASQ_ROLE_RESPONDER,
            },
            prologue: options.prologue.as_ptr(),
            prologue_len: options.prologue.len(),
            static_key: options.static_key.map_or(ptr::null(), |k| k.as_ptr()),
            remote_static,
            remote_static_len,
            psk,
            psk_len,
        };
        let mut session = ptr::null_mut();
        // SAFETY: the options point to buffers alive during the call, not retained.
        check(unsafe { sys::masq_session_new(store.map_or(ptr::null_mut(), Store::raw), &raw, &mut session) })?;
        Ok(Session { raw: session })
    }

    /// Resume a session from [`Session::save`]'s bytes. `ErrorKind::Invalid`
    /// for damaged state.
    pub fn load(state: &[u8]) -> Result<Session> {
        let mut session = ptr::null_mut();
        // SAFETY: valid buffer and out pointer.
        check(unsafe { sys::masq_session_load(state.as_ptr(), state.len(), &mut session) })?;
        Ok(Session { raw: session })
    }

    /// The state, whether this side writes next, whether it may seal.
    pub fn status(&self) -> Result<SessionStatus> {
        let (mut state, mut write_next, mut can_send): (c_int, c_int, c_int) = (0, 0, 0);
        // SAFETY: our handle, valid out pointers.
        check(unsafe { sys::masq_session_status(self.raw, &mut state, &mut write_next, &mut can_send) })?;
        Ok(SessionStatus {
            state: match state {
                sys::MASQ_SESSION_HANDSHAKING => SessionState::Handshaking,
                sys::MASQ_SESSION_ESTABLISHED => SessionState::Established,
                sys::MASQ_SESSION_FAILED => SessionState::Failed,
                other => SessionState::Other(other),
            },
            write_next: write_next != 0,
            can_send: can_send != 0,
        })
    }

    /// Write the next handshake message, carrying `payload` (encrypted once
    /// the pattern allows).
    pub fn write_handshake(&mut self, payload: &[u8]) -> Result<Bytes> {
        let raw = self.raw;
        // SAFETY: our handle; valid buffer.
        bytes_out(|out, len| unsafe {
            sys::masq_session_write_handshake(raw, payload.as_ptr(), payload.len(), out, len)
        })
    }

    /// Read the peer's handshake message and return its payload. Any failure
    /// (`ErrorKind::BadSignature` for a wrong key or PSK, `ErrorKind::Invalid`
    /// for a malformed message) ends the session.
    pub fn read_handshake(&mut self, message: &[u8]) -> Result<Bytes> {
        let raw = self.raw;
        // SAFETY: our handle; valid buffer.
        bytes_out(|out, len| unsafe {
            sys::masq_session_read_handshake(raw, message.as_ptr(), message.len(), out, len)
        })
    }

    /// Seal one message (`ad` is authenticated, not sent).
    pub fn seal(&mut self, plaintext: &[u8], ad: &[u8]) -> Result<Bytes> {
        let raw = self.raw;
        // SAFETY: our handle; valid buffers.
        bytes_out(|out, len| unsafe {
            sys::masq_session_seal(raw, ad.as_ptr(), ad.len(), plaintext.as_ptr(), plaintext.len(), out, len)
        })
    }

    /// Open one message. `ErrorKind::BadSignature` if tampered, replayed or
    /// not for this session; the session is then unchanged.
    pub fn open(&mut self, message: &[u8], ad: &[u8]) -> Result<Bytes> {
        let raw = self.raw;
        // SAFETY: our handle; valid buffers.
        bytes_out(|out, len| unsafe {
            sys::masq_session_open(raw, ad.as_ptr(), ad.len(), message.as_ptr(), message.len(), out, len)
        })
    }

    /// An established session's state, to resume with [`Session::load`].
    /// The bytes are secret: keep them encrypted.
    pub fn save(&self) -> Result<Bytes> {
        let raw = self.raw;
        // SAFETY: our handle.
        bytes_out(|out, len| unsafe { sys::masq_session_save(raw, out, len) })
    }

    /// The peer's static X25519 public key, once authenticated.
    pub fn peer_key(&self) -> Result<[u8; 32]> {
        let mut key = [0u8; 32];
        // SAFETY: our handle; 32 writable bytes.
        check(unsafe { sys::masq_session_peer_key(self.raw, key.as_mut_ptr()) })?;
        Ok(key)
    }

    /// The peer's fingerprint, "ddddd ddddd ddddd ddddd ddddd ddddd" (the
    /// digits the devices list shows for that device).
    pub fn peer_fingerprint(&self) -> Result<String> {
        let raw = self.raw;
        // SAFETY: our handle.
        text_out(|out| unsafe { sys::masq_session_peer_fingerprint(raw, out) })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: ours to release (keys are wiped); NULL allowed.
        unsafe { sys::masq_session_free(self.raw) }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}
