//! Memory the library hands over ([`Bytes`], [`Entries`]) and the
//! conversions of Rust arguments into what the C API takes.

use std::ffi::{CStr, CString};
use std::fmt;
use std::ops::Deref;
use std::os::raw::{c_char, c_void};
use std::path::Path;

use crate::error::{Error, Result};
use crate::sys;

/// Bytes allocated by the library (a value, a message, an image), released
/// with `masq_free` when dropped. Dereferences to `[u8]`; no copy is made
/// until you ask for one ([`Bytes::to_vec`]).
pub struct Bytes {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is plain memory owned by this value alone; masq_free is
// thread-safe (masq.h), so it may be read from and released on any thread.
unsafe impl Send for Bytes {}
unsafe impl Sync for Bytes {}

impl Bytes {
    /// Take ownership of `len` bytes at `ptr`, allocated by the library (NULL
    /// is allowed with any length and gives an empty value).
    ///
    /// # Safety
    /// `ptr` must be NULL or a `masq_free`-able allocation of at least `len`
    /// bytes that nothing else releases.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> Bytes {
        Bytes { ptr, len: if ptr.is_null() { 0 } else { len } }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: from_raw's contract; NULL and empty give the empty slice.
        unsafe { slice(self.ptr, self.len) }
    }

    /// A copy as a `Vec` (this buffer is released when `self` drops).
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_slice().to_vec()
    }

    /// Copy into a `Vec` and release the library's buffer now.
    pub fn into_vec(self) -> Vec<u8> {
        self.to_vec()
    }
}

impl Drop for Bytes {
    fn drop(&mut self) {
        // SAFETY: ours to release (from_raw); masq_free accepts NULL.
        unsafe { sys::masq_free(self.ptr as *mut c_void) }
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.as_slice().escape_ascii())
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Bytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Bytes {}

impl PartialEq<[u8]> for Bytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl<'a> PartialEq<&'a [u8]> for Bytes {
    fn eq(&self, other: &&'a [u8]) -> bool {
        self.as_slice() == *other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Bytes {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.as_slice() == &other[..]
    }
}

impl<'a, const N: usize> PartialEq<&'a [u8; N]> for Bytes {
    fn eq(&self, other: &&'a [u8; N]) -> bool {
        self.as_slice() == &other[..]
    }
}

impl PartialEq<Vec<u8>> for Bytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl From<Bytes> for Vec<u8> {
    fn from(bytes: Bytes) -> Vec<u8> {
        bytes.into_vec()
    }
}

/// Every live key of a namespace with its value, from one snapshot
/// (`masq_get_all`): one library allocation holding the entry array and the
/// bytes it points to, released with a single `masq_free` when dropped.
/// Entries are in ascending bytewise key order.
pub struct Entries {
    ptr: *mut sys::masq_entry,
    count: usize,
}

// SAFETY: as for Bytes: plain memory owned by this value alone.
unsafe impl Send for Entries {}
unsafe impl Sync for Entries {}

impl Entries {
    /// Take ownership of `count` entries at `ptr` (one allocation).
    ///
    /// # Safety
    /// `ptr` must be NULL (with `count` 0) or what `masq_get_all` returned.
    pub(crate) unsafe fn from_raw(ptr: *mut sys::masq_entry, count: usize) -> Entries {
        Entries { ptr, count: if ptr.is_null() { 0 } else { count } }
    }

    fn raw(&self) -> &[sys::masq_entry] {
        if self.ptr.is_null() || self.count == 0 {
            &[]
        } else {
            // SAFETY: masq_get_all's contract: count entries at ptr.
            unsafe { std::slice::from_raw_parts(self.ptr, self.count) }
        }
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the namespace was empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entry at `index` (key, value).
    pub fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        self.raw().get(index).map(entry_slices)
    }

    /// The value of `key`, found by binary search (entries are in key order).
    pub fn value(&self, key: impl AsRef<[u8]>) -> Option<&[u8]> {
        let key = key.as_ref();
        let raw = self.raw();
        raw.binary_search_by(|e| entry_slices(e).0.cmp(key)).ok().map(|i| entry_slices(&raw[i]).1)
    }

    /// The entries in key order.
    pub fn iter(&self) -> EntriesIter<'_> {
        EntriesIter { inner: self.raw().iter() }
    }

    /// Copies of every (key, value).
    pub fn to_vec(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }
}

fn entry_slices(e: &sys::masq_entry) -> (&[u8], &[u8]) {
    // SAFETY: the pointers point into the same allocation as the array,
    // which lives as long as the Entries borrowed here.
    unsafe { (slice(e.key, e.key_len), slice(e.value, e.value_len)) }
}

impl Drop for Entries {
    fn drop(&mut self) {
        // SAFETY: one allocation, released once (masq.h).
        unsafe { sys::masq_free(self.ptr as *mut c_void) }
    }
}

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k.escape_ascii().to_string(), v.escape_ascii().to_string())))
            .finish()
    }
}

/// Iterator over [`Entries`]: `(key, value)` slices borrowed from the snapshot.
pub struct EntriesIter<'a> {
    inner: std::slice::Iter<'a, sys::masq_entry>,
}

impl<'a> Iterator for EntriesIter<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(entry_slices)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<'a> ExactSizeIterator for EntriesIter<'a> {}

impl<'a> IntoIterator for &'a Entries {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = EntriesIter<'a>;
    fn into_iter(self) -> EntriesIter<'a> {
        self.iter()
    }
}

// ---- helpers ------------------------------------------------------------------------------

/// A slice of `len` bytes at `ptr`; NULL or 0 give the empty slice.
pub(crate) unsafe fn slice<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(ptr, len)
    }
}

/// A NUL-terminated copy of `text`; a NUL inside is `MASQ_E_INVALID` naming `what`.
pub(crate) fn c_string(text: &str, what: &str) -> Result<CString> {
    CString::new(text)
        .map_err(|e| Error::invalid(format!("{} contains a NUL byte (at byte {})", what, e.nul_position())))
}

/// A path as the library takes it (bytes, NUL-terminated; Unix).
pub(crate) fn c_path(path: &Path, what: &str) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| Error::invalid(format!("{} contains a NUL byte (at byte {})", what, e.nul_position())))
}

/// Copy and release a NUL-terminated string the library allocated.
pub(crate) unsafe fn take_text(ptr: *mut c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    let text = String::from_utf8_lossy(CStr::from_ptr(ptr).to_bytes()).into_owned();
    sys::masq_free(ptr as *mut c_void);
    text
}
