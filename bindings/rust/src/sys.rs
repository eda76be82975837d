//! Raw declarations of every function, type and constant of `include/masq.h`,
//! written by hand, one to one with the header.
//!
//! Everything here is `unsafe` to call and follows the header's rules
//! (ownership, threads, errors); the safe API lives in the rest of the crate.
//!
//! The declarations are written through small macros that also record each
//! signature as text ([`FUNCTIONS`], [`CALLBACKS`], [`STRUCTS`],
//! [`CONSTANTS`], [`struct_layouts`]). `tests/header.rs` compares those
//! records with `include/masq.h` twice: with a parser of the header's
//! prototypes, structs and `#define`s, and with a C program compiled by the
//! system `cc` that checks every prototype, callback type and struct member
//! type with `__builtin_types_compatible_p` and prints each struct's size,
//! alignment and member offsets for comparison with Rust's. A declaration
//! here that drifts from the header fails that test.

#![allow(non_camel_case_types)]

use std::marker::{PhantomData, PhantomPinned};
pub use std::os::raw::{c_char, c_int, c_void};

/// One declared function or callback type: its name, the Rust spelling of
/// each parameter type, and of the return type (`"()"` for none).
#[derive(Debug, Clone, Copy)]
pub struct Signature {
    /// The C name.
    pub name: &'static str,
    /// Parameter types as written in this module.
    pub params: &'static [&'static str],
    /// Return type as written in this module (`"()"` for `void`).
    pub ret: &'static str,
}

/// One declared struct: its name and members (name, Rust type) in order.
#[derive(Debug, Clone, Copy)]
pub struct StructDecl {
    /// The C name (also the typedef's).
    pub name: &'static str,
    /// Members in declaration order: (name, type as written in this module).
    pub fields: &'static [(&'static str, &'static str)],
}

/// Size, alignment and member offsets of one struct as Rust lays it out.
#[derive(Debug, Clone)]
pub struct StructLayout {
    /// The C name.
    pub name: &'static str,
    /// `size_of` the Rust struct.
    pub size: usize,
    /// `align_of` the Rust struct.
    pub align: usize,
    /// Byte offset of each member, in declaration order.
    pub offsets: Vec<(&'static str, usize)>,
}

macro_rules! ret_text {
    () => {
        "()"
    };
    ($t:ty) => {
        stringify!($t)
    };
}

macro_rules! constants {
    ($( $(#[$m:meta])* $name:ident : $t:ty = $v:expr; )*) => {
        $( $(#[$m])* pub const $name: $t = $v; )*
        /// Every integer constant above with its value, for the header check.
        pub const CONSTANTS: &[(&str, i128)] = &[ $( (stringify!($name), $v as i128) ),* ];
    };
}

macro_rules! opaque {
    ($( $(#[$m:meta])* $name:ident; )*) => {
        $(
            $(#[$m])*
            #[repr(C)]
            pub struct $name {
                _private: [u8; 0],
                _marker: PhantomData<(*mut u8, PhantomPinned)>,
            }
        )*
        /// The opaque handle types above, for the header check.
        pub const OPAQUE: &[&str] = &[ $( stringify!($name) ),* ];
    };
}

macro_rules! callbacks {
    ($( $(#[$m:meta])* pub type $name:ident = fn ( $($arg:ident : $t:ty),* $(,)? ) $(-> $ret:ty)? ; )*) => {
        $(
            $(#[$m])*
            pub type $name = unsafe extern "C" fn($($arg: $t),*) $(-> $ret)?;
        )*
        /// Every callback type above, for the header check.
        pub const CALLBACKS: &[Signature] = &[ $( Signature {
            name: stringify!($name),
            params: &[ $( stringify!($t) ),* ],
            ret: ret_text!($($ret)?),
        } ),* ];
    };
}

macro_rules! structs {
    ($( $(#[$m:meta])* pub struct $name:ident { $( $(#[$fm:meta])* pub $field:ident : $t:ty ),* $(,)? } )*) => {
        $(
            $(#[$m])*
            #[repr(C)]
            #[derive(Debug, Clone, Copy)]
            pub struct $name { $( $(#[$fm])* pub $field: $t ),* }
        )*
        /// Every struct above with its members, for the header check.
        pub const STRUCTS: &[StructDecl] = &[ $( StructDecl {
            name: stringify!($name),
            fields: &[ $( (stringify!($field), stringify!($t)) ),* ],
        } ),* ];

        /// Size, alignment and member offsets of every struct above, as
        /// compiled (compared with the C compiler's by the header check).
        pub fn struct_layouts() -> Vec<StructLayout> {
            vec![ $( {
                let probe = std::mem::MaybeUninit::<$name>::uninit();
                let base = probe.as_ptr();
                StructLayout {
                    name: stringify!($name),
                    size: std::mem::size_of::<$name>(),
                    align: std::mem::align_of::<$name>(),
                    // SAFETY: addr_of! computes a member address without reading it.
                    offsets: vec![ $( (stringify!($field),
                        unsafe { std::ptr::addr_of!((*base).$field) as usize - base as usize }) ),* ],
                }
            } ),* ]
        }
    };
}

macro_rules! functions {
    ($( $(#[$m:meta])* pub fn $name:ident ( $($arg:ident : $t:ty),* $(,)? ) $(-> $ret:ty)? ; )*) => {
        #[link(name = "masq")]
        extern "C" {
            $( $(#[$m])* pub fn $name($($arg: $t),*) $(-> $ret)?; )*
        }
        /// Every function above, for the header check.
        pub const FUNCTIONS: &[Signature] = &[ $( Signature {
            name: stringify!($name),
            params: &[ $( stringify!($t) ),* ],
            ret: ret_text!($($ret)?),
        } ),* ];
    };
}

/// `MASQ_VERSION_STRING`: the version of the header these declarations copy.
pub const MASQ_VERSION_STRING: &str = "0.1.0";

constants! {
    /// Header version, major part.
    MASQ_VERSION_MAJOR: c_int = 0;
    /// Header version, minor part.
    MASQ_VERSION_MINOR: c_int = 1;
    /// Header version, patch part.
    MASQ_VERSION_PATCH: c_int = 0;
    /// MAJOR * 10000 + MINOR * 100 + PATCH.
    MASQ_VERSION_NUMBER: c_int = 100;

    /// Success.
    MASQ_OK: c_int = 0;
    /// Invalid argument: NULL, bad UTF-8, bad flags.
    MASQ_E_INVALID: c_int = 1;
    /// No such key, entry or object.
    MASQ_E_NOT_FOUND: c_int = 2;
    /// Beyond a configured limit.
    MASQ_E_TOO_LARGE: c_int = 3;
    /// Configuration missing, malformed or invalid.
    MASQ_E_CONFIG: c_int = 4;
    /// Plugin not found, not a plugin, wrong kind.
    MASQ_E_PLUGIN: c_int = 5;
    /// Plugin built for another ABI version.
    MASQ_E_ABI: c_int = 6;
    /// I/O or storage engine failure.
    MASQ_E_IO: c_int = 7;
    /// Stored data is not in a format we understand.
    MASQ_E_CORRUPT: c_int = 8;
    /// The handle was closed or is shutting down.
    MASQ_E_CLOSED: c_int = 9;
    /// Resource locked by someone else; retry later.
    MASQ_E_BUSY: c_int = 10;
    /// Out of memory.
    MASQ_E_NOMEM: c_int = 11;
    /// Operation not supported by this plugin/build.
    MASQ_E_UNSUPPORTED: c_int = 12;
    /// Not permitted.
    MASQ_E_DENIED: c_int = 13;
    /// Signature or authentication tag invalid.
    MASQ_E_BAD_SIGNATURE: c_int = 14;
    /// Wallet: insufficient funds.
    MASQ_E_FUNDS: c_int = 15;
    /// Peer, network or service unreachable.
    MASQ_E_UNAVAILABLE: c_int = 16;
    /// Operation timed out.
    MASQ_E_TIMEOUT: c_int = 17;
    /// A bug in Masq or a plugin.
    MASQ_E_INTERNAL: c_int = 18;

    /// Log level: errors.
    MASQ_LOG_ERROR: c_int = 0;
    /// Log level: warnings.
    MASQ_LOG_WARN: c_int = 1;
    /// Log level: information.
    MASQ_LOG_INFO: c_int = 2;
    /// Log level: debugging.
    MASQ_LOG_DEBUG: c_int = 3;

    /// `masq_list` flag: value is NULL and value_len 0 in callbacks.
    MASQ_LIST_KEYS_ONLY: u32 = 1;
    /// `masq_set_all` flag: also delete every key of ns not in entries.
    MASQ_SET_ALL_REPLACE: u32 = 1;

    /// Change kind: key now holds value.
    MASQ_CHANGE_PUT: c_int = 1;
    /// Change kind: key was deleted (value is NULL).
    MASQ_CHANGE_DELETE: c_int = 2;
    /// Change kind: two devices wrote the key concurrently.
    MASQ_CHANGE_CONFLICT: c_int = 3;

    /// Change origin: written through this store handle.
    MASQ_ORIGIN_LOCAL: c_int = 1;
    /// Change origin: arrived from another replica by sync.
    MASQ_ORIGIN_REMOTE: c_int = 2;

    /// Plugin kind: storage.
    MASQ_PLUGIN_KIND_STORAGE: c_int = 1;
    /// Plugin kind: transport.
    MASQ_PLUGIN_KIND_TRANSPORT: c_int = 2;
    /// Plugin kind: wallet.
    MASQ_PLUGIN_KIND_WALLET: c_int = 3;

    /// Session role: handshake initiator.
    MASQ_ROLE_INITIATOR: c_int = 1;
    /// Session role: handshake responder.
    MASQ_ROLE_RESPONDER: c_int = 2;

    /// Session state: handshake in progress.
    MASQ_SESSION_HANDSHAKING: c_int = 1;
    /// Session state: established.
    MASQ_SESSION_ESTABLISHED: c_int = 2;
    /// Session state: failed for good.
    MASQ_SESSION_FAILED: c_int = 3;

    /// AEAD algorithm: ChaCha20-Poly1305.
    MASQ_AEAD_CHACHA20_POLY1305: c_int = 1;
    /// AEAD algorithm: AES-256-GCM.
    MASQ_AEAD_AES_256_GCM: c_int = 2;

    /// `masq_share_create` flag: the other person may read, not write.
    MASQ_SHARE_READ_ONLY: u32 = 1;
    /// `masq_share_accept` flag: merge into the existing namespace as_ns.
    MASQ_SHARE_MERGE: u32 = 2;

    /// `masq_blob_get_*` length meaning "up to the end of the blob".
    MASQ_BLOB_TO_END: u64 = u64::MAX;
}

opaque! {
    /// An open store (`masq_store`).
    masq_store;
    /// One side of a pairing (`masq_pairing`).
    masq_pairing;
    /// A pairing carried through a relay by a library thread (`masq_pairing_task`).
    masq_pairing_task;
    /// A Noise handshake + Double Ratchet session (`masq_session`).
    masq_session;
}

callbacks! {
    /// Receives one log line; strings valid only during the call; any thread.
    pub type masq_log_fn = fn(ctx: *mut c_void, level: c_int, component: *const c_char, message: *const c_char);
    /// Called once per live key by `masq_list`; non-zero stops.
    pub type masq_list_fn = fn(ctx: *mut c_void, key: *const u8, key_len: usize, value: *const u8,
                               value_len: usize) -> c_int;
    /// Called once per namespace by `masq_list_namespaces`; non-zero stops.
    pub type masq_namespace_fn = fn(ctx: *mut c_void, ns: *const c_char) -> c_int;
    /// Receives committed changes, from a library thread.
    pub type masq_watch_fn = fn(ctx: *mut c_void, change: *const masq_change);
    /// Sync progress, from a library thread.
    pub type masq_progress_fn = fn(ctx: *mut c_void, device_id: *const c_char, received: u64, remaining: u64);
    /// Called once when a pairing task ends, from the task's own thread.
    pub type masq_pairing_done_fn = fn(ctx: *mut c_void, status: c_int, message: *const c_char,
                                       device_json: *const c_char);
    /// Produces a blob's bytes for `masq_blob_put_stream`: bytes written to
    /// buf, 0 at the end, negative for an error.
    pub type masq_blob_read_fn = fn(ctx: *mut c_void, buf: *mut u8, len: usize) -> i64;
    /// Receives a blob's bytes from `masq_blob_get_stream`; non-zero stops.
    pub type masq_blob_write_fn = fn(ctx: *mut c_void, data: *const u8, len: usize) -> c_int;
    /// Blob progress as chunks arrive by sync, from a library thread.
    pub type masq_blob_progress_fn = fn(ctx: *mut c_void, blob_id: *const c_char, fetched: u64, size: u64);
    /// Receives one plugin report from `masq_plugins_scan`; non-zero stops.
    pub type masq_plugin_info_fn = fn(ctx: *mut c_void, info: *const masq_plugin_info) -> c_int;
}

structs! {
    /// One key/value pair, for `masq_get_all` and `masq_set_all`.
    pub struct masq_entry {
        /// Key bytes.
        pub key: *const u8,
        /// Key length.
        pub key_len: usize,
        /// Value bytes; `masq_set_all`: NULL (with value_len 0) deletes.
        pub value: *const u8,
        /// Value length.
        pub value_len: usize,
    }

    /// One committed change, valid only during the watch callback.
    pub struct masq_change {
        /// sizeof(masq_change) as the library was built.
        pub struct_size: u32,
        /// MASQ_CHANGE_*.
        pub kind: c_int,
        /// MASQ_ORIGIN_*.
        pub origin: c_int,
        /// Namespace (NUL-terminated UTF-8).
        pub ns: *const c_char,
        /// Key bytes.
        pub key: *const u8,
        /// Key length.
        pub key_len: usize,
        /// Value bytes; NULL for a delete.
        pub value: *const u8,
        /// Value length.
        pub value_len: usize,
        /// Hybrid logical clock timestamp of the write.
        pub timestamp: u64,
        /// Replica id of the writer.
        pub replica: u64,
        /// MASQ_CHANGE_CONFLICT: the value that lost (NULL if a delete lost).
        pub lost_value: *const u8,
        /// Length of lost_value.
        pub lost_value_len: usize,
        /// MASQ_CHANGE_CONFLICT: whether the loser was a delete.
        pub lost_was_deleted: c_int,
    }

    /// What `masq_plugins_scan` reports about one candidate file.
    pub struct masq_plugin_info {
        /// sizeof(masq_plugin_info) as the library was built.
        pub struct_size: u32,
        /// MASQ_OK if the kernel would load it, else why not.
        pub status: c_int,
        /// Absolute path of the shared object.
        pub path: *const c_char,
        /// MASQ_PLUGIN_KIND_*, or 0 if unknown.
        pub kind: c_int,
        /// Plugin name, or NULL.
        pub name: *const c_char,
        /// Plugin version, or NULL.
        pub version: *const c_char,
        /// Plugin description, or NULL.
        pub description: *const c_char,
        /// The ABI the plugin was built for (0 unknown).
        pub abi_version: u32,
        /// Why it cannot load; "" when status is MASQ_OK.
        pub message: *const c_char,
    }

    /// Options of `masq_session_new`.
    pub struct masq_session_options {
        /// sizeof(masq_session_options).
        pub struct_size: u32,
        /// Noise pattern name, e.g. "XXpsk3".
        pub pattern: *const c_char,
        /// MASQ_ROLE_*.
        pub role: c_int,
        /// Bound into the handshake; may be NULL.
        pub prologue: *const u8,
        /// Length of prologue.
        pub prologue_len: usize,
        /// 32-byte X25519 private key, or NULL for the store's device key.
        pub static_key: *const u8,
        /// The peer's 32-byte static key for KK and IK.
        pub remote_static: *const u8,
        /// Length of remote_static.
        pub remote_static_len: usize,
        /// 32-byte pre-shared key for the psk patterns.
        pub psk: *const u8,
        /// Length of psk.
        pub psk_len: usize,
    }
}

functions! {
    /// The library's version string (static storage).
    pub fn masq_version() -> *const c_char;
    /// The library's version as MASQ_VERSION_NUMBER computes it.
    pub fn masq_version_number() -> c_int;
    /// Message of this thread's last failed call ("" after a success).
    pub fn masq_last_error() -> *const c_char;
    /// Status code of this thread's last call.
    pub fn masq_last_error_code() -> c_int;
    /// Symbolic name of a status code (static storage).
    pub fn masq_status_name(status: c_int) -> *const c_char;
    /// Release memory returned by the library.
    pub fn masq_free(ptr: *mut c_void);
    /// Route log lines with level <= max_level to fn (NULL: standard error).
    pub fn masq_set_log_callback(max_level: c_int, fn_: Option<masq_log_fn>, ctx: *mut c_void) -> c_int;

    /// Open the store a JSON config file describes.
    pub fn masq_open(config_path: *const c_char, store_out: *mut *mut masq_store) -> c_int;
    /// Open the store a JSON config text describes.
    pub fn masq_open_config(config_json: *const c_char, base_dir: *const c_char,
                            store_out: *mut *mut masq_store) -> c_int;
    /// Close a store (waits for running calls and queued callbacks).
    pub fn masq_close(store: *mut masq_store) -> c_int;
    /// This store's replica id.
    pub fn masq_replica_id(store: *mut masq_store, replica_out: *mut u64) -> c_int;

    /// Set key to value in ns.
    pub fn masq_put(store: *mut masq_store, ns: *const c_char, key: *const u8, key_len: usize,
                    value: *const u8, value_len: usize) -> c_int;
    /// Read key in ns into a masq_free'd copy.
    pub fn masq_get(store: *mut masq_store, ns: *const c_char, key: *const u8, key_len: usize,
                    value_out: *mut *mut u8, value_len_out: *mut usize) -> c_int;
    /// Delete key in ns (a tombstone).
    pub fn masq_delete(store: *mut masq_store, ns: *const c_char, key: *const u8, key_len: usize) -> c_int;
    /// Call fn for every live key of ns starting with prefix.
    pub fn masq_list(store: *mut masq_store, ns: *const c_char, prefix: *const u8, prefix_len: usize,
                     flags: u32, fn_: Option<masq_list_fn>, ctx: *mut c_void) -> c_int;
    /// Every live key of ns in one snapshot, in one masq_free'd allocation.
    pub fn masq_get_all(store: *mut masq_store, ns: *const c_char, entries_out: *mut *mut masq_entry,
                        count_out: *mut usize) -> c_int;
    /// Apply count entries to ns in one transaction.
    pub fn masq_set_all(store: *mut masq_store, ns: *const c_char, entries: *const masq_entry, count: usize,
                        flags: u32) -> c_int;
    /// Delete every key of ns in one transaction.
    pub fn masq_clear(store: *mut masq_store, ns: *const c_char) -> c_int;
    /// Call fn for every namespace holding a live key.
    pub fn masq_list_namespaces(store: *mut masq_store, fn_: Option<masq_namespace_fn>, ctx: *mut c_void) -> c_int;

    /// Call fn for every later change to ns (NULL: all) under prefix.
    pub fn masq_watch(store: *mut masq_store, ns: *const c_char, prefix: *const u8, prefix_len: usize,
                      fn_: Option<masq_watch_fn>, ctx: *mut c_void, watch_id_out: *mut u64) -> c_int;
    /// Stop a watch.
    pub fn masq_unwatch(store: *mut masq_store, watch_id: u64) -> c_int;

    /// Add delta to the counter at key.
    pub fn masq_counter_add(store: *mut masq_store, ns: *const c_char, key: *const u8, key_len: usize,
                            delta: i64) -> c_int;
    /// The counter's total (0 for an absent key).
    pub fn masq_counter_get(store: *mut masq_store, ns: *const c_char, key: *const u8, key_len: usize,
                            value_out: *mut i64) -> c_int;

    /// Sync with the paired devices in the background.
    pub fn masq_sync_start(store: *mut masq_store) -> c_int;
    /// Stop background sync.
    pub fn masq_sync_stop(store: *mut masq_store) -> c_int;
    /// Catch up with every paired device present, then return.
    pub fn masq_sync_once(store: *mut masq_store, timeout_seconds: f64) -> c_int;
    /// Sync status as JSON (masq_free).
    pub fn masq_sync_status(store: *mut masq_store, json_out: *mut *mut c_char) -> c_int;
    /// Install (fn non-NULL) or remove the sync progress callback.
    pub fn masq_sync_set_progress(store: *mut masq_store, fn_: Option<masq_progress_fn>, ctx: *mut c_void) -> c_int;

    /// Report every plugin file on the search path.
    pub fn masq_plugins_scan(config_path: *const c_char, fn_: Option<masq_plugin_info_fn>, ctx: *mut c_void) -> c_int;

    /// Unlock a passphrase-protected store.
    pub fn masq_unlock(store: *mut masq_store, passphrase: *const u8, passphrase_len: usize) -> c_int;
    /// Forget the keys in memory.
    pub fn masq_lock(store: *mut masq_store) -> c_int;
    /// Set, change or remove the passphrase.
    pub fn masq_set_passphrase(store: *mut masq_store, old_passphrase: *const u8, old_len: usize,
                               new_passphrase: *const u8, new_len: usize) -> c_int;
    /// Whether the store has a passphrase and whether it is locked.
    pub fn masq_protection(store: *mut masq_store, protected_out: *mut c_int, locked_out: *mut c_int) -> c_int;

    /// This device as JSON (masq_free).
    pub fn masq_device_info(store: *mut masq_store, json_out: *mut *mut c_char) -> c_int;
    /// Paired devices as a JSON array (masq_free).
    pub fn masq_devices(store: *mut masq_store, json_out: *mut *mut c_char) -> c_int;
    /// Set the name other devices see for this one.
    pub fn masq_set_device_name(store: *mut masq_store, name: *const c_char) -> c_int;
    /// Forget a paired device and its session.
    pub fn masq_device_remove(store: *mut masq_store, device_id: *const c_char) -> c_int;
    /// Seal a message for one paired device.
    pub fn masq_seal_for_device(store: *mut masq_store, device_id: *const c_char, ad: *const u8, ad_len: usize,
                                plaintext: *const u8, plaintext_len: usize, message_out: *mut *mut u8,
                                message_len_out: *mut usize) -> c_int;
    /// Open a message from a paired device.
    pub fn masq_open_from_device(store: *mut masq_store, device_id: *const c_char, ad: *const u8, ad_len: usize,
                                 message: *const u8, message_len: usize, plaintext_out: *mut *mut u8,
                                 plaintext_len_out: *mut usize) -> c_int;
    /// Session renewal, first step (this side).
    pub fn masq_device_renew_begin(store: *mut masq_store, device_id: *const c_char, message_out: *mut *mut u8,
                                   message_len_out: *mut usize) -> c_int;
    /// Session renewal, answer (the other side).
    pub fn masq_device_renew_answer(store: *mut masq_store, device_id: *const c_char, message: *const u8,
                                    message_len: usize, answer_out: *mut *mut u8, answer_len_out: *mut usize) -> c_int;
    /// Session renewal, last step (this side).
    pub fn masq_device_renew_complete(store: *mut masq_store, device_id: *const c_char, answer: *const u8,
                                      answer_len: usize) -> c_int;

    /// Offer pairing: a link to show and a handle receiving the joiner's frames.
    pub fn masq_pairing_offer(store: *mut masq_store, via: *const c_char, ttl_seconds: u32,
                              link_out: *mut *mut c_char, pairing_out: *mut *mut masq_pairing) -> c_int;
    /// Join with a link.
    pub fn masq_pairing_join(store: *mut masq_store, link: *const c_char, pairing_out: *mut *mut masq_pairing) -> c_int;
    /// The joiner's first frame (masq_free).
    pub fn masq_pairing_start(pairing: *mut masq_pairing, frame_out: *mut *mut u8, frame_len_out: *mut usize) -> c_int;
    /// Hand the peer's frame over; maybe a frame to send back.
    pub fn masq_pairing_receive(pairing: *mut masq_pairing, frame: *const u8, frame_len: usize,
                                frame_out: *mut *mut u8, frame_len_out: *mut usize, paired_out: *mut c_int) -> c_int;
    /// The paired device as JSON (masq_free).
    pub fn masq_pairing_peer(pairing: *mut masq_pairing, json_out: *mut *mut c_char) -> c_int;
    /// Release a pairing handle.
    pub fn masq_pairing_free(pairing: *mut masq_pairing);
    /// A QR code of text as a binary PGM image (masq_free).
    pub fn masq_qr_pgm(text: *const c_char, scale: u32, image_out: *mut *mut u8, image_len_out: *mut usize) -> c_int;

    /// Write a file as a blob and set key to its reference.
    pub fn masq_blob_put_file(store: *mut masq_store, ns: *const c_char, key: *const u8, key_len: usize,
                              path: *const c_char, content_type: *const c_char, info_json_out: *mut *mut c_char) -> c_int;
    /// Write a stream as a blob and set key to its reference.
    pub fn masq_blob_put_stream(store: *mut masq_store, ns: *const c_char, key: *const u8, key_len: usize,
                                fn_: Option<masq_blob_read_fn>, ctx: *mut c_void, content_type: *const c_char,
                                name: *const c_char, info_json_out: *mut *mut c_char) -> c_int;
    /// Write a range of a blob to a file.
    pub fn masq_blob_get_file(store: *mut masq_store, ns: *const c_char, key: *const u8, key_len: usize,
                              path: *const c_char, offset: u64, length: u64) -> c_int;
    /// Hand a range of a blob to a stream.
    pub fn masq_blob_get_stream(store: *mut masq_store, ns: *const c_char, key: *const u8, key_len: usize,
                                offset: u64, length: u64, fn_: Option<masq_blob_write_fn>, ctx: *mut c_void) -> c_int;
    /// The blob info of the blob key references (masq_free).
    pub fn masq_blob_info(store: *mut masq_store, ns: *const c_char, key: *const u8, key_len: usize,
                          json_out: *mut *mut c_char) -> c_int;
    /// Read a blob reference without a store (masq_free).
    pub fn masq_blob_parse(value: *const u8, value_len: usize, json_out: *mut *mut c_char) -> c_int;
    /// Ask sync for the contents of the blob key references.
    pub fn masq_blob_fetch(store: *mut masq_store, ns: *const c_char, key: *const u8, key_len: usize) -> c_int;
    /// Delete unreferenced chunks and manifests.
    pub fn masq_blob_gc(store: *mut masq_store, report_json_out: *mut *mut c_char) -> c_int;
    /// Install (fn non-NULL) or remove the blob progress callback.
    pub fn masq_blob_set_progress(store: *mut masq_store, fn_: Option<masq_blob_progress_fn>, ctx: *mut c_void) -> c_int;

    /// Offer a pairing through a relay, carried by a library task.
    pub fn masq_pair_offer(store: *mut masq_store, relay_url: *const c_char, ttl_seconds: u32,
                           done: Option<masq_pairing_done_fn>, ctx: *mut c_void, link_out: *mut *mut c_char,
                           task_out: *mut *mut masq_pairing_task) -> c_int;
    /// Join from a link, through the link's relay, as a library task.
    pub fn masq_pair_join(store: *mut masq_store, link: *const c_char, timeout_seconds: u32,
                          done: Option<masq_pairing_done_fn>, ctx: *mut c_void,
                          task_out: *mut *mut masq_pairing_task) -> c_int;
    /// Wait for a pairing task to end; its status (MASQ_E_BUSY: still running).
    pub fn masq_pair_wait(task: *mut masq_pairing_task, timeout_ms: u32, device_json_out: *mut *mut c_char) -> c_int;
    /// Ask a pairing task to stop.
    pub fn masq_pair_cancel(task: *mut masq_pairing_task);
    /// Cancel, wait for and release a pairing task.
    pub fn masq_pair_free(task: *mut masq_pairing_task);

    /// Create a session.
    pub fn masq_session_new(store: *mut masq_store, options: *const masq_session_options,
                            session_out: *mut *mut masq_session) -> c_int;
    /// Write the next handshake message.
    pub fn masq_session_write_handshake(session: *mut masq_session, payload: *const u8, payload_len: usize,
                                        message_out: *mut *mut u8, message_len_out: *mut usize) -> c_int;
    /// Read the peer's handshake message.
    pub fn masq_session_read_handshake(session: *mut masq_session, message: *const u8, message_len: usize,
                                       payload_out: *mut *mut u8, payload_len_out: *mut usize) -> c_int;
    /// State, whether this side writes next, whether it may seal.
    pub fn masq_session_status(session: *mut masq_session, state_out: *mut c_int, write_next_out: *mut c_int,
                               can_send_out: *mut c_int) -> c_int;
    /// Seal one message.
    pub fn masq_session_seal(session: *mut masq_session, ad: *const u8, ad_len: usize, plaintext: *const u8,
                             plaintext_len: usize, message_out: *mut *mut u8, message_len_out: *mut usize) -> c_int;
    /// Open one message.
    pub fn masq_session_open(session: *mut masq_session, ad: *const u8, ad_len: usize, message: *const u8,
                             message_len: usize, plaintext_out: *mut *mut u8, plaintext_len_out: *mut usize) -> c_int;
    /// An established session's state as (secret) bytes.
    pub fn masq_session_save(session: *mut masq_session, state_out: *mut *mut u8, state_len_out: *mut usize) -> c_int;
    /// Resume a saved session.
    pub fn masq_session_load(state: *const u8, state_len: usize, session_out: *mut *mut masq_session) -> c_int;
    /// The peer's static X25519 key (32 bytes).
    pub fn masq_session_peer_key(session: *mut masq_session, key_out: *mut u8) -> c_int;
    /// The peer's fingerprint text (masq_free).
    pub fn masq_session_peer_fingerprint(session: *mut masq_session, text_out: *mut *mut c_char) -> c_int;
    /// Release a session (keys wiped).
    pub fn masq_session_free(session: *mut masq_session);

    /// len cryptographically secure random bytes.
    pub fn masq_crypto_random(out: *mut u8, len: usize) -> c_int;
    /// X25519 public key of a 32-byte private key.
    pub fn masq_crypto_x25519_public(private_key: *const u8, public_out: *mut u8) -> c_int;
    /// X25519 shared secret.
    pub fn masq_crypto_x25519(private_key: *const u8, peer_public: *const u8, shared_out: *mut u8) -> c_int;
    /// Ed25519 signature (64 bytes).
    pub fn masq_crypto_ed25519_sign(private_key: *const u8, msg: *const u8, msg_len: usize, sig_out: *mut u8) -> c_int;
    /// Ed25519 verification (MASQ_E_BAD_SIGNATURE if invalid).
    pub fn masq_crypto_ed25519_verify(public_key: *const u8, msg: *const u8, msg_len: usize, sig: *const u8,
                                      sig_len: usize) -> c_int;
    /// HKDF-SHA256 into out.
    pub fn masq_crypto_hkdf_sha256(salt: *const u8, salt_len: usize, ikm: *const u8, ikm_len: usize,
                                   info: *const u8, info_len: usize, out: *mut u8, out_len: usize) -> c_int;
    /// AEAD seal: ciphertext || tag.
    pub fn masq_crypto_aead_seal(algorithm: c_int, key: *const u8, nonce: *const u8, ad: *const u8, ad_len: usize,
                                 plaintext: *const u8, plaintext_len: usize, out: *mut u8) -> c_int;
    /// AEAD open of ciphertext || tag.
    pub fn masq_crypto_aead_open(algorithm: c_int, key: *const u8, nonce: *const u8, ad: *const u8, ad_len: usize,
                                 in_: *const u8, in_len: usize, out: *mut u8) -> c_int;

    /// Write an encrypted backup of the store (passphrase).
    pub fn masq_backup(store: *mut masq_store, path: *const c_char, passphrase: *const u8, passphrase_len: usize) -> c_int;
    /// Write an encrypted backup under a new recovery key (masq_free).
    pub fn masq_backup_with_recovery_key(store: *mut masq_store, path: *const c_char,
                                         recovery_key_out: *mut *mut c_char) -> c_int;
    /// What a backup file says about itself, as JSON (masq_free).
    pub fn masq_backup_info(path: *const c_char, json_out: *mut *mut c_char) -> c_int;
    /// Decrypt and check a whole backup; its manifest as JSON (masq_free).
    pub fn masq_backup_verify(path: *const c_char, secret: *const u8, secret_len: usize, json_out: *mut *mut c_char) -> c_int;
    /// Restore a backup into the store a config file describes.
    pub fn masq_restore(config_path: *const c_char, backup_path: *const c_char, secret: *const u8,
                        secret_len: usize) -> c_int;
    /// Restore a backup into the store a config text describes.
    pub fn masq_restore_config(config_json: *const c_char, base_dir: *const c_char, backup_path: *const c_char,
                               secret: *const u8, secret_len: usize) -> c_int;
    /// Export every live key as JSON lines (in clear).
    pub fn masq_export(store: *mut masq_store, path: *const c_char) -> c_int;

    /// Share a namespace with another person: a single-use link.
    pub fn masq_share_create(store: *mut masq_store, ns: *const c_char, nickname: *const c_char, flags: u32,
                             base_url: *const c_char, link_out: *mut *mut c_char, json_out: *mut *mut c_char) -> c_int;
    /// Accept another person's share link.
    pub fn masq_share_accept(store: *mut masq_store, link: *const c_char, nickname: *const c_char,
                             as_ns: *const c_char, flags: u32, json_out: *mut *mut c_char) -> c_int;
    /// Every share of this store as a JSON array (masq_free).
    pub fn masq_shares(store: *mut masq_store, json_out: *mut *mut c_char) -> c_int;
    /// One share as a JSON object (masq_free).
    pub fn masq_share_info(store: *mut masq_store, share_id: *const c_char, json_out: *mut *mut c_char) -> c_int;
    /// Change the nickname of the other person of a share.
    pub fn masq_share_set_nickname(store: *mut masq_store, share_id: *const c_char, nickname: *const c_char) -> c_int;
    /// End a share.
    pub fn masq_unshare(store: *mut masq_store, share_id: *const c_char) -> c_int;
    /// Run sharing in the background.
    pub fn masq_share_sync_start(store: *mut masq_store) -> c_int;
    /// Stop background sharing.
    pub fn masq_share_sync_stop(store: *mut masq_store) -> c_int;
    /// Run sharing until nothing sent waits for an answer.
    pub fn masq_share_sync_once(store: *mut masq_store, timeout_seconds: f64) -> c_int;
}
